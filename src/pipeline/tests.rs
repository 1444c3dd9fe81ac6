//! The whole pipeline with in-memory ports: no socket, no runtime.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use http_body_util::Full;

use super::{Downstream, Exchange, Gateway, handle};
use crate::config::Config;
use crate::ports::testing::{FakeHttp, FakePorts, block_on};
use crate::ports::{UpstreamError, read_body};
use crate::shared::problem::Source;

const CONFIG: &str = r#"
[gateway]
trusted_proxies = ["10.0.0.0/8"]
max_header_count = 20
max_header_size = "2KiB"

[services.users]
url = "http://users.internal:8080/base/"
connect_timeout = "1s"
request_timeout = "3s"

[services.admin]
url = "http://admin.internal"

[services.split]
targets = [{ url = "http://a.internal", weight = 1 }, { url = "http://b.internal", weight = 3 }]

[[routes]]
name = "users"
path = "/v1/users/{id}"
methods = ["GET", "PUT"]
service = "users"
rewrite = "/u/{id}"
max_body_size = 100
[routes.request_headers]
remove = ["x-debug"]
set = { "x-gateway" = "portcullis" }
add = { "x-tag" = "b" }
[routes.response_headers]
remove = ["server"]
set = { "x-frame-options" = "DENY" }

[[routes]]
name = "public"
path = "/v1/{*rest}"
service = "users"
strip_prefix = "/v1"

[[routes]]
name = "admin"
path = "/admin"
methods = ["GET"]
service = "admin"

[[routes]]
name = "only-api"
host = "api.example.com"
path = "/host-only"
service = "split"
"#;

fn config() -> Config {
    Config::parse(CONFIG, "test.toml", &Default::default()).unwrap()
}

fn peer(ip: &str) -> Downstream {
    Downstream { peer: ip.parse::<IpAddr>().unwrap(), scheme: "http" }
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "gw.example.com:8443")
}

fn run(ports: &FakePorts, req: Request<Bytes>, from: Downstream) -> Exchange<Bytes> {
    run_with(&Gateway::new(config()), ports, req, from)
}

/// Runs a request, reading the answer's body whole (the phases' own tests use it too).
pub(super) fn run_with(gateway: &Gateway, ports: &FakePorts, req: Request<Bytes>, from: Downstream) -> Exchange<Bytes> {
    block_on(async {
        let ex = handle(gateway, ports, req.map(Full::new), from).await;
        let (parts, body) = ex.response.into_parts();
        let body = read_body(body, usize::MAX).await.unwrap();
        Exchange { response: Response::from_parts(parts, body), log: ex.log }
    })
}

fn problem(resp: &Response<Bytes>) -> serde_json::Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    serde_json::from_slice(resp.body()).unwrap()
}

#[test]
fn rewrites_path_keeps_query_and_sets_origin_authority() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/v1/users/42?x=1&y=%20").header("x-debug", "1").header("x-tag", "a").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::OK);
    let sent = ports.http.last().unwrap();
    assert_eq!(sent.uri().to_string(), "http://users.internal:8080/base/u/42?x=1&y=%20");
    assert_eq!(sent.headers()["host"], "users.internal:8080");
    assert_eq!(sent.headers()["x-forwarded-host"], "gw.example.com:8443");
    assert!(sent.headers().get("x-debug").is_none());
    assert_eq!(sent.headers()["x-gateway"], "portcullis");
    let tags: Vec<_> = sent.headers().get_all("x-tag").iter().collect();
    assert_eq!(tags, ["a", "b"]);
    let (_, opts) = ports.http.sent.lock().unwrap().last().cloned().unwrap();
    assert_eq!(opts.connect_timeout, Duration::from_secs(1));
    assert_eq!(opts.request_timeout, Duration::from_secs(3));
    assert_eq!(opts.max_request_body, 100);
    assert_eq!(ex.log.route.as_deref(), Some("users"));
    assert_eq!(ex.log.path, "/v1/users/42");
}

#[test]
fn strip_prefix_and_catch_all() {
    let ports = FakePorts::new(FakeHttp::ok());
    run(&ports, get("/v1/docs/a/b.html").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ports.http.last().unwrap().uri().path(), "/base/docs/a/b.html");
}

#[test]
fn dot_segments_cannot_reach_another_routes_rules() {
    let ports = FakePorts::new(FakeHttp::ok());
    // Without normalisation this would match `/v1/{*rest}` (any method) and
    // reach the admin path through the users service.
    let req = Request::post("/v1/../admin").header("host", "gw.example.com").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(ex.response.headers()["allow"], "GET, HEAD");
    assert!(ports.http.last().is_none(), "nothing reached an origin");

    let ex = run(
        &ports,
        Request::get("/v1/%2e%2e/admin").header("host", "gw.example.com").body(Bytes::new()).unwrap(),
        peer("198.51.100.7"),
    );
    assert_eq!(ex.response.status(), StatusCode::OK);
    assert_eq!(ports.http.last().unwrap().uri().to_string(), "http://admin.internal/admin");

    let ex = run(
        &ports,
        Request::get("/v1/..%2fadmin").header("host", "gw.example.com").body(Bytes::new()).unwrap(),
        peer("198.51.100.7"),
    );
    assert_eq!(ex.response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:bad-path");
}

#[test]
fn spoofed_forwarding_headers_from_untrusted_peers_are_replaced() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/admin")
        .header("x-forwarded-for", "1.1.1.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=1.1.1.1")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-forwarded-for"], "198.51.100.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gw.example.com:8443");
    assert_eq!(h["forwarded"], "for=198.51.100.7;host=\"gw.example.com:8443\";proto=http");
    assert_eq!(ex.log.client_ip.to_string(), "198.51.100.7");
}

#[test]
fn underscore_headers_go_or_only_those_disguising_the_gateways_own() {
    let req = || {
        get("/admin")
            .header("x_forwarded_for", "6.6.6.6")
            .header("x_request_id", "mine")
            .header("x_user", "mallory")
            .header("my_header", "v")
            .header("x-real-ip", "6.6.6.6")
            .body(Bytes::new())
            .unwrap()
    };
    let ports = FakePorts::new(FakeHttp::ok());
    run(&ports, req(), peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
    assert!(h.get("x-real-ip").is_none());

    let partners = r#"
[auth.api_key.partners]
forward = { "x-user" = "id" }
consumers = [{ id = "a", key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]
"#;
    let text = format!("{CONFIG}{partners}");
    let text = text.replace("[gateway]\n", "[gateway]\nunderscores_in_headers = \"keep\"\n");
    let keep = Gateway::new(Config::parse(&text, "test.toml", &Default::default()).unwrap());
    let ports = FakePorts::new(FakeHttp::ok());
    run_with(&keep, &ports, req(), peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["my_header"], "v", "kept");
    for disguised in ["x_forwarded_for", "x_request_id", "x_user", "x-real-ip"] {
        assert!(h.get(disguised).is_none(), "{disguised} reached the origin");
    }
}

#[test]
fn the_host_must_be_unambiguous() {
    let ports = FakePorts::new(FakeHttp::ok());
    let two = get("/admin").header("host", "evil.example").body(Bytes::new()).unwrap();
    let none = Request::get("/admin").body(Bytes::new()).unwrap();
    let h2 = |host: &str| {
        Request::get("http://gw.example.com/admin")
            .version(http::Version::HTTP_2)
            .header("host", host)
            .body(Bytes::new())
            .unwrap()
    };
    let host = |value: &str| Request::get("/admin").header("host", value).body(Bytes::new()).unwrap();
    let h2_bare = Request::get("/admin").version(http::Version::HTTP_2).body(Bytes::new()).unwrap();
    let userinfo = Request::get("http://user@gw.example.com/admin")
        .version(http::Version::HTTP_2)
        .header("host", "user@gw.example.com")
        .body(Bytes::new())
        .unwrap();
    for (what, req) in [
        ("two Host headers", two),
        ("HTTP/1.1 without Host", none),
        ("Host ≠ :authority", h2("b.example")),
        ("HTTP/2 without :authority or Host", h2_bare),
        ("user information in Host", host("user@a.example")),
        ("user information in :authority", userinfo),
        ("an empty Host on an origin-form request", host("")),
        ("a path in Host", host("a.example/admin")),
        ("a port that is not a number", host("a.example:8o")),
        ("a space in Host", host("a.example b")),
        ("an unclosed IP literal", host("[::1")),
        (
            "a port that is not a number in the authority",
            Request::get("http://gw.example.com:80a/admin").body(Bytes::new()).unwrap(),
        ),
    ] {
        let ex = run(&ports, req, peer("198.51.100.7"));
        assert_eq!(ex.response.status(), 400, "{what}");
        assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:ambiguous-host", "{what}");
    }
    assert!(ports.http.last().is_none(), "nothing reached the origin");
    let absolute_empty_host =
        Request::get("http://gw.example.com/admin").header("host", "").body(Bytes::new()).unwrap();
    for ok in [
        h2("GW.example.com"),
        Request::get("http://gw.example.com/admin").body(Bytes::new()).unwrap(),
        absolute_empty_host,
        host("gw.example.com:8443"),
        host("[::1]:8080"),
        host("192.0.2.1"),
        Request::get("/admin").version(http::Version::HTTP_10).body(Bytes::new()).unwrap(),
    ] {
        assert_eq!(run(&ports, ok, peer("198.51.100.7")).response.status(), 200);
    }
}

#[test]
fn trusted_proxies_extend_the_chain() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/admin")
        .header("x-forwarded-for", "203.0.113.5, 10.0.0.9")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.5")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, Downstream { peer: "::ffff:10.1.2.3".parse().unwrap(), scheme: "http" });
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-forwarded-for"], "203.0.113.5, 10.0.0.9, 10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=203.0.113.5, for=10.1.2.3;host=\"gw.example.com:8443\";proto=http");
    assert_eq!(ex.log.client_ip.to_string(), "203.0.113.5");
}

#[test]
fn request_id_and_traceparent_are_propagated() {
    let ports = FakePorts::new(FakeHttp::ok());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = get("/admin")
        .header("x-request-id", "client-id-1")
        .header("traceparent", tp)
        .header("tracestate", "vendor=1")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.headers()["x-request-id"], "client-id-1");
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-request-id"], "client-id-1");
    let sent_tp = h["traceparent"].to_str().unwrap();
    assert!(sent_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent_tp.ends_with("-01"));
    assert_ne!(sent_tp, tp);
    assert_eq!(h["tracestate"], "vendor=1");
    assert_eq!(ex.log.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

    // A bad traceparent starts a new trace and drops the orphaned tracestate.
    let req = get("/admin").header("traceparent", "nonsense").header("tracestate", "v=1").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert!(h.get("tracestate").is_none());
    assert_eq!(h["traceparent"].len(), 55);
    assert_eq!(ex.response.headers()["x-request-id"].len(), 36);
}

#[test]
fn not_found_and_host_specific_routes() {
    let ports = FakePorts::new(FakeHttp::ok());
    let ex = run(&ports, get("/host-only").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::NOT_FOUND);
    let p = problem(&ex.response);
    assert_eq!(p["status"], 404);
    assert_eq!(p["request_id"], ex.response.headers()["x-request-id"].to_str().unwrap());
    assert!(ex.log.route.is_none());

    let req = Request::get("/host-only").header("host", "API.example.com:443").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::OK);
}

#[test]
fn head_limits_answer_431() {
    let ports = FakePorts::new(FakeHttp::ok());
    let mut req = get("/admin");
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let ex = run(&ports, req.body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let req = get("/admin").header("x-big", "a".repeat(3000)).body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(ports.http.last().is_none());
}

#[test]
fn declared_body_over_the_route_limit_answers_413() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "101")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "100")
        .body(Bytes::from(vec![0; 100]))
        .unwrap();
    assert_eq!(run(&ports, req, peer("198.51.100.7")).response.status(), StatusCode::OK);
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "ten")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(run(&ports, req, peer("198.51.100.7")).response.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn upstream_failures_map_to_502_and_504_without_detail() {
    for (err, status) in [
        (UpstreamError::Connect("connection refused (10.0.0.1:80)".into()), 502),
        (UpstreamError::ConnectTimeout, 504),
        (UpstreamError::Timeout(Duration::from_secs(3)), 504),
        (UpstreamError::BodyTooLarge { limit: 100 }, 413),
    ] {
        let e = err.clone();
        let ports = FakePorts::new(FakeHttp::new(move |_| Err(e.clone())));
        let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
        assert_eq!(ex.response.status().as_u16(), status, "{err}");
        assert!(!String::from_utf8_lossy(ex.response.body()).contains("10.0.0.1"));
        assert_eq!(ex.log.error.as_deref(), Some(err.to_string().as_str()));
        assert!(ex.log.upstream.as_deref().unwrap().starts_with("admin http://admin.internal:80"));
    }
}

#[test]
fn response_headers_are_edited_and_hop_by_hop_dropped() {
    let ports = FakePorts::new(FakeHttp::new(|_| {
        Ok(Response::builder()
            .header("server", "origin/1.0")
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-request-id", "origin-made-up")
            .body(Bytes::from_static(b"hi"))
            .unwrap())
    }));
    let ex = run(&ports, get("/v1/users/7").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    let h = ex.response.headers();
    assert!(h.get("server").is_none() && h.get("connection").is_none() && h.get("keep-alive").is_none());
    assert_eq!(h["x-internal"], "secret", "Connection cannot name more hop-by-hop headers");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-request-id"], ex.log.request_id, "the gateway's id wins");
}

#[test]
fn origin_framing_and_head_size() {
    let ports = FakePorts::new(FakeHttp::new(|_| {
        Ok(Response::builder()
            .header("transfer-encoding", "chunked")
            .header("content-length", "5")
            .body(Bytes::from_static(b"0123456789"))
            .unwrap())
    }));
    let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert!(ex.response.headers().get("content-length").is_none(), "the origin's length is not the body's");
    let ports = FakePorts::new(FakeHttp::new(|_| {
        let mut resp = Response::builder();
        for i in 0..70 {
            resp = resp.header(format!("x-filler-{i}"), "f".repeat(1000));
        }
        Ok(resp.body(Bytes::new()).unwrap())
    }));
    let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), 502);
    assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:upstream-invalid");
}

#[test]
fn weighted_targets_split_traffic() {
    let ports = FakePorts::new(FakeHttp::ok());
    let mut b = 0;
    for _ in 0..400 {
        let req = Request::get("/host-only").header("host", "api.example.com").body(Bytes::new()).unwrap();
        run(&ports, req, peer("198.51.100.7"));
        if ports.http.last().unwrap().uri().host() == Some("b.internal") {
            b += 1;
        }
    }
    // Weight 3 of 4: expect 300; 230..370 is more than 7 standard deviations wide.
    assert!((230..370).contains(&b), "{b} of 400 went to b");
}

const LIMITED: &str = r#"
[limits.per_client]
rate = "2/s"
key = "header:x-client"
legacy_headers = true

[limits.hourly]
rate = "100/hour"
burst = 5

[limits.gold]
rate = "1000/s"
groups = ["gold"]

[limits.pricey]
rate = "10/s"
burst = 3
cost = 5

[limits.strict]
rate = "10/s"
on_store_error = "deny"

[limits.loose]
rate = "2/s"
consistency = "best_effort"
on_store_error = "deny"

[auth.api_key.keys]
consumers = [{ id = "acme", groups = ["gold"], key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]

[services.s]
url = "http://o.test"

[[routes]]
path = "/limited"
service = "s"
limits = ["per_client", "hourly"]

[[routes]]
path = "/tiered"
service = "s"
auth = { any_of = ["keys"] }
limits = ["gold"]

[[routes]]
path = "/pricey"
service = "s"
limits = ["pricey"]

[[routes]]
path = "/strict"
service = "s"
limits = ["strict", "hourly"]

[[routes]]
path = "/loose"
service = "s"
limits = ["loose"]
"#;

fn limited(ports: &FakePorts, gw: &Gateway, path: &str, client: &str) -> Exchange<Bytes> {
    let req = Request::get(path)
        .header("host", "gw.example.com")
        .header("x-client", client)
        .header("x-api-key", "acme-secret-key")
        .body(Bytes::new())
        .unwrap();
    run_with(gw, ports, req, peer("198.51.100.7"))
}

/// The statuses of `n` requests in a row from client `a`.
fn statuses(ports: &FakePorts, gw: &Gateway, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| limited(ports, gw, path, "a").response.status().as_u16()).collect()
}

fn limited_gateway() -> Gateway {
    Gateway::new(Config::parse(LIMITED, "limits.toml", &Default::default()).unwrap())
}

#[test]
fn rate_limits_answer_with_ietf_headers_and_429() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    let first = limited(&ports, &gw, "/limited", "a");
    assert_eq!(first.response.status(), StatusCode::OK);
    let h = first.response.headers();
    assert_eq!(h["ratelimit-policy"], "\"per_client\";q=2;w=1, \"hourly\";q=5;w=180");
    assert_eq!(h["ratelimit"], "\"per_client\";r=1;t=1, \"hourly\";r=4;t=36");
    assert_eq!(
        (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
        (&"2".parse::<http::HeaderValue>().unwrap(), &"1".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(limited(&ports, &gw, "/limited", "a").response.status(), StatusCode::OK);
    let refused = limited(&ports, &gw, "/limited", "a");
    assert_eq!(refused.response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.response.headers()["retry-after"], "1");
    assert_eq!(problem(&refused.response)["type"], "urn:portcullis:problem:rate-limited");
    assert!(refused.response.headers().contains_key("ratelimit"));
    assert_eq!(ports.http.sent.lock().unwrap().len(), 2, "the refused request never reached the origin");
    // Another client has its own per-client bucket; the hourly one is shared by IP.
    let other = limited(&ports, &gw, "/limited", "b");
    assert_eq!(other.response.status(), StatusCode::OK);
    assert_eq!(
        other.response.headers()["ratelimit"],
        "\"per_client\";r=1;t=1, \"hourly\";r=2;t=108",
        "the refusal charged no limit"
    );
    // Waiting Retry-After admits it again.
    ports.clock.advance(Duration::from_secs(1));
    assert_eq!(limited(&ports, &gw, "/limited", "a").response.status(), StatusCode::OK);
}

#[test]
fn tiers_apply_to_their_groups_only_and_costs_beyond_the_burst_never_pass() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    let tiered = limited(&ports, &gw, "/tiered", "a");
    assert_eq!(tiered.response.headers()["ratelimit-policy"], "\"gold\";q=1000;w=1");
    assert!(tiered.log.to_line().contains("\"identity\":\"keys:acme\""), "{}", tiered.log.to_line());
    assert!(limited(&ports, &gw, "/limited", "a").log.to_line().contains("\"identity\":null"));
    let pricey = limited(&ports, &gw, "/pricey", "a");
    assert_eq!(pricey.response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(pricey.response.headers().get("retry-after").is_none(), "waiting would not help");
}

#[test]
fn a_store_outage_fails_open_or_closed_per_policy() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    ports.kv.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let open = limited(&ports, &gw, "/limited", "a");
    assert_eq!(open.response.status(), StatusCode::OK);
    assert!(open.log.error.as_deref().unwrap().contains("request allowed"), "{:?}", open.log.error);
    assert_eq!((open.log.problem, open.log.source), (None, Some(Source::Store)), "survived, and logged by source");
    let closed = limited(&ports, &gw, "/strict", "a");
    assert_eq!(closed.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem(&closed.response)["type"], "urn:portcullis:problem:rate-limit-unavailable");
    assert_eq!((closed.log.problem, closed.log.source), (Some("rate-limit-unavailable"), Some(Source::Store)));
    let line: serde_json::Value = serde_json::from_str(&closed.log.to_line()).unwrap();
    assert_eq!((line["problem"].as_str(), line["source"].as_str()), (Some("rate-limit-unavailable"), Some("store")));
    ports.kv.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(limited(&ports, &gw, "/strict", "a").response.status(), StatusCode::OK, "recovers with the store");
}

#[test]
fn compare_and_swap_limits_match_the_memory_store() {
    // Also where the store reports each swap as failed after committing it.
    for lying in [false, true] {
        let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
        ports.kv.spin_like.store(true, std::sync::atomic::Ordering::SeqCst);
        ports.kv.spin.store.set_lying(lying);
        assert_eq!(statuses(&ports, &gw, "/limited", 3), [200, 200, 429], "lying: {lying}");
        let other = limited(&ports, &gw, "/limited", "b");
        assert_eq!(other.response.headers()["ratelimit"], "\"per_client\";r=1;t=1, \"hourly\";r=2;t=108");
        assert_eq!(ports.kv.spin.store.swaps(), 2 * 2 + 2, "each admitted request wrote each of its keys once");
    }
}

#[test]
fn best_effort_limits_work_on_a_store_without_atomics_and_exact_ones_do_not() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    ports.kv.spin_like.store(true, std::sync::atomic::Ordering::SeqCst);
    ports.kv.spin.store.set_no_atomics(true);
    // Exact, fail-closed: the missing compare-and-swap is a store failure.
    let strict = limited(&ports, &gw, "/strict", "a");
    assert_eq!(strict.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(strict.log.error.as_deref().unwrap().contains("no atomic"), "{:?}", strict.log.error);
    // Best effort (also fail-closed): counted with plain sets, still limits.
    assert_eq!(statuses(&ports, &gw, "/loose", 3), [200, 200, 429]);
    ports.clock.advance(Duration::from_millis(500));
    let again = limited(&ports, &gw, "/loose", "a");
    assert_eq!(again.response.status(), StatusCode::OK, "one token back after half a second");
    assert_eq!(again.response.headers()["ratelimit"], "\"loose\";r=0;t=1");
}
