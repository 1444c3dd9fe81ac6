//! What an operator sees of a node: `/metrics`, the admin API, spans at
//! an OTLP collector, and the access log's sampling and redaction.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use jsonwebtoken::Algorithm;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;

use super::support::idp::{self, Idp};
use super::support::origin::Origin;
use super::support::otlp::{Collector, hex};
use super::support::{self, Node, get, get_with, send};

const GOOD_KEY: &str = "acme-key-0001";
const BAD_KEY: &str = "not-a-key-7f3a";

fn config(origin: &Origin, idp_port: u16, extra_gateway: &str) -> String {
    format!(
        r#"
[gateway]
{extra_gateway}

[services.echo]
url = "http://127.0.0.1:{port}"

[auth.api_key.partners]
consumers = [{{ id = "acme", key_sha256 = "d1616373cb070ca29992c92c1fa716bcda2a13abcd3efd637e85e13243ed7434" }}]

[auth.jwt.corp]
issuer = "https://idp.test/"
audiences = ["api://test"]
algorithms = ["RS256"]
jwks_uri = "http://127.0.0.1:{idp_port}/jwks"
jwks_cache = {{ refetch_interval = "1s" }}

[limits.per_consumer]
rate = "3/hour"
key = "consumer"

[[routes]]
name = "open"
path = "/open/{{*rest}}"
service = "echo"

[[routes]]
name = "keyed"
path = "/keyed"
service = "echo"
auth = {{ any_of = ["partners"] }}
limits = ["per_consumer"]

[[routes]]
name = "signed"
path = "/signed"
service = "echo"
auth = {{ any_of = ["corp"] }}
"#,
        port = origin.port()
    )
}

fn keyed(key: Option<&str>, path: &str) -> Request<Bytes> {
    key.map_or_else(|| get(path), |key| get_with(path, "x-api-key", key))
}

/// The exposition, as series name + labels → value.
async fn scrape(node: &Node) -> (String, HashMap<String, f64>) {
    let reply = send(node.metrics_addr.expect("metrics listener"), get("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    (text, series)
}

fn value(series: &HashMap<String, f64>, name: &str) -> f64 {
    series.get(name).copied().unwrap_or_else(|| panic!("no series {name}"))
}

#[tokio::test]
async fn metrics_count_what_requests_did_with_labels_bounded_by_the_config() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let key = idp::key("rsa1", "k1", Algorithm::RS256);
    let idp = Idp::start(&[&key], 300).await;
    let node = Node::start(&config(&origin, idp.port, ""), &[]);
    for i in 0..5 {
        assert_eq!(send(node.addr, get(&format!("/open/a?secret=q{i}"))).await.status, 200);
    }
    // Many distinct paths, keys and callers: none may become a label.
    for i in 0..20 {
        assert_eq!(send(node.addr, get(&format!("/nowhere-{i}"))).await.status, 404);
        let bad = format!("{BAD_KEY}-{i}");
        assert_eq!(send(node.addr, keyed(Some(&bad), "/keyed")).await.status, 401);
    }
    assert_eq!(send(node.addr, keyed(None, "/keyed")).await.status, 401);
    for expected in [200, 200, 200, 429] {
        assert_eq!(send(node.addr, keyed(Some(GOOD_KEY), "/keyed")).await.status, expected);
    }
    // The body is done just after the answer; give the last record a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (text, series) = scrape(&node).await;

    let requests = |route: &str, service: &str, class: &str| {
        let name = format!(
            "portcullis_requests_total{{route=\"{route}\",service=\"{service}\",method=\"GET\",status_class=\"{class}\"}}"
        );
        value(&series, &name)
    };
    assert_eq!(requests("open", "echo", "2xx"), 5.0);
    assert_eq!(requests("(unmatched)", "(none)", "4xx"), 20.0);
    assert_eq!(requests("keyed", "(none)", "4xx"), 22.0, "21 refused by auth, 1 by the limit");
    assert_eq!(requests("keyed", "echo", "2xx"), 3.0);
    assert_eq!(value(&series, r#"portcullis_auth_total{provider="partners",outcome="unknown_key"}"#), 20.0);
    assert_eq!(value(&series, r#"portcullis_auth_total{provider="(none)",outcome="missing"}"#), 1.0);
    assert_eq!(value(&series, r#"portcullis_auth_total{provider="partners",outcome="ok"}"#), 4.0);
    assert_eq!(
        value(&series, r#"portcullis_rate_limit_decisions_total{policy="per_consumer",outcome="admitted"}"#),
        3.0
    );
    assert_eq!(
        value(&series, r#"portcullis_rate_limit_decisions_total{policy="per_consumer",outcome="limited"}"#),
        1.0
    );
    assert_eq!(value(&series, r#"portcullis_upstream_tries_total{service="echo"}"#), 8.0);
    // Eight tries, one client after another: each worker's pool (two, the
    // tests' default) kept its connection (one or two a worker).
    let opened = value(&series, "portcullis_upstream_connections_opened_total");
    assert!((1.0..=4.0).contains(&opened), "{opened} connections for 8 sequential tries");
    assert!(value(&series, "portcullis_upstream_connections_open") >= 1.0, "the idle one stays open");
    // Latency buckets fine enough to see 50 µs; every route's histogram counts its requests.
    assert!(text.contains(r#"portcullis_gateway_overhead_seconds_bucket{le="0.00005",route="open"}"#), "{text}");
    assert_eq!(value(&series, r#"portcullis_request_duration_seconds_count{route="open"}"#), 5.0);
    assert_eq!(value(&series, r#"portcullis_upstream_duration_seconds_count{service="echo"}"#), 8.0);
    // The key set was fetched once at start (readiness), and counted.
    assert_eq!(value(&series, r#"portcullis_jwks_fetches_total{provider="corp",outcome="ok"}"#), 1.0);
    let hash = support::hex_sha256(&std::fs::read(&node.config_path).unwrap());
    assert!(text.contains(&format!("portcullis_config_info{{sha256=\"{hash}\"")), "{text}");
    assert!(value(&series, "process_resident_memory_bytes") > 1e6);
    assert!(value(&series, "process_open_fds") > 3.0);
    let target =
        format!("portcullis_target_healthy{{service=\"echo\",target=\"echo http://127.0.0.1:{}\"}}", origin.port());
    assert_eq!(value(&series, &target), 1.0);

    // Bounded: the label values are route, service, provider and policy
    // names and fixed words; no path, key or query reached a label.
    for leaked in ["nowhere-", BAD_KEY, GOOD_KEY, "secret", "127.0.0.1\",method"] {
        assert!(!text.contains(leaked), "{leaked} in /metrics");
    }
    let names: BTreeSet<&str> = ["open", "keyed", "signed", "(unmatched)"].into();
    for series in series.keys().filter(|s| s.starts_with("portcullis_requests_total")) {
        let route = series.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert!(names.contains(route), "{series}");
    }
    let request_series = series.keys().filter(|s| s.starts_with("portcullis_requests_total")).count();
    assert!(request_series <= 4, "{request_series} request series from 3 routes");
}

#[tokio::test]
async fn the_admin_api_reports_readiness_config_and_upstreams_and_reloads() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let key = idp::key("rsa1", "k1", Algorithm::RS256);
    let idp = Idp::start(&[&key], 300).await;
    idp.set_mode(idp::Mode::Fail);
    let node = Node::start(&config(&origin, idp.port, ""), &[]);
    let admin = node.admin_addr.expect("admin listener");
    assert_eq!(send(admin, get("/healthz")).await.json(), json!({"status": "ok"}));
    // Not ready while the IdP fails: a JWT route would answer 503.
    let ready = send(admin, get("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["checks"],
        json!({"config": true, "key_sets": false, "health_checks": true, "certificates": true})
    );
    idp.set_mode(idp::Mode::Serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(admin, get("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = idp::mint(
        &key,
        &json!({"iss": "https://idp.test/", "aud": "api://test", "sub": "u", "exp": idp::now_secs() + 60}),
    );
    let signed = Request::get("/signed")
        .header("host", "gw.test")
        .header("authorization", format!("Bearer {token}"))
        .body(Bytes::new())
        .unwrap();
    assert_eq!(send(node.addr, signed).await.status, 200, "ready means keys at hand");

    let config = send(admin, get("/config")).await.json();
    let text = std::fs::read(&node.config_path).unwrap();
    assert_eq!(config["sha256"], support::hex_sha256(&text));
    assert_eq!((config["routes"].as_u64(), config["services"].as_u64()), (Some(3), Some(1)));
    assert!(!config.to_string().contains("d1616373"), "no secrets: {config}");
    let upstreams = send(admin, get("/upstreams")).await.json();
    let echo = &upstreams["services"][0];
    assert_eq!(echo["service"], "echo");
    assert_eq!(echo["targets"][0]["healthy"], true);
    assert_eq!(echo["targets"][0]["target"], format!("echo http://127.0.0.1:{}", origin.port()));

    // A rejected reload answers every error and leaves the config running.
    let good = String::from_utf8(text).unwrap();
    std::fs::write(
        &node.config_path,
        "[[routes]]\npath = \"/x\"\nservice = \"missing\"\n[gateway]\nmax_header_count = 0\n",
    )
    .unwrap();
    let post = |path: &str| Request::post(path).header("host", "admin").body(Bytes::new()).unwrap();
    let rejected = send(admin, post("/reload")).await;
    assert_eq!(rejected.status, 422);
    let errors = rejected.json()["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e["key"] == "routes[0].service" && e["line"] == 3), "{errors:?}");
    assert_eq!(send(node.addr, get("/open/x")).await.status, 200);
    std::fs::write(&node.config_path, good.replace("name = \"open\"", "name = \"opened\"")).unwrap();
    let reloaded = send(admin, post("/reload")).await;
    assert_eq!(reloaded.status, 200);
    assert_ne!(reloaded.json()["sha256"], config["sha256"]);
    assert_eq!(send(admin, get("/config")).await.json()["sha256"], reloaded.json()["sha256"]);
    let (_, series) = scrape(&node).await;
    assert_eq!(value(&series, r#"portcullis_config_reloads_total{result="rejected"}"#), 1.0);
    assert_eq!(value(&series, r#"portcullis_config_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(send(admin, get("/reload")).await.status, 405);
    assert_eq!(send(admin, get("/nothing")).await.status, 404);
}

#[tokio::test]
async fn an_admin_listener_beyond_loopback_needs_a_token_in_the_config() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let path = support::temp_path("admin.toml");
    std::fs::write(&path, support::api_config(&format!("url = \"http://127.0.0.1:{}\"", origin.port()))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--admin-listen",
            "0.0.0.0:0",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[admin] token_sha256"));
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_with_the_right_parents() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let k1 = idp::key("rsa1", "k1", Algorithm::RS256);
    let k2 = idp::key("rsa2", "k2", Algorithm::RS256);
    let idp = Idp::start(&[&k1], 300).await;
    let (collector, port) = Collector::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let node =
        Node::start_args(&config(&origin, idp.port, "trace_sample_ratio = 0.0"), &[], &["--otlp-endpoint", &endpoint]);
    // Wait for the start-up fetch, then rotate: the request's token has a
    // new kid, so the request fetches the key set itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(node.admin_addr.unwrap(), get("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.set_keys(&[&k1, &k2]);
    let token = idp::mint(
        &k2,
        &json!({"iss": "https://idp.test/", "aud": "api://test", "sub": "u", "exp": idp::now_secs() + 60}),
    );
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traced = |path: &str, flags: &str| {
        Request::get(path)
            .header("host", "gw.test")
            .header("authorization", format!("Bearer {token}"))
            .header("traceparent", format!("00-{client_trace}-{client_span}-{flags}"))
            .body(Bytes::new())
            .unwrap()
    };
    assert_eq!(send(node.addr, traced("/signed", "01")).await.status, 200);
    let keyed_traced = Request::get("/keyed")
        .header("host", "gw.test")
        .header("x-api-key", GOOD_KEY)
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .body(Bytes::new())
        .unwrap();
    assert_eq!(send(node.addr, keyed_traced).await.status, 200);
    // Not sampled by the client, and new traces at a ratio of 0: no spans.
    assert_eq!(send(node.addr, traced("/signed", "00")).await.status, 200);
    assert_eq!(send(node.addr, get("/open/x")).await.status, 200);

    let spans = collector.wait_for(8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = if spans.len() > 8 { spans } else { collector.spans() };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 8, "two sampled requests: {names:?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) == client_trace), "every span is in the client's trace");
    let by_name = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let requests = by_name("portcullis.request");
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(hex(&r.parent_span_id), client_span, "the request span continues the client's");
    }
    let children_of = |parent: &Span| {
        spans.iter().filter(|s| s.parent_span_id == parent.span_id).map(|s| s.name.as_str()).collect::<BTreeSet<_>>()
    };
    let first = requests.iter().find(|r| children_of(r).len() == 2).expect("the JWT request's span");
    assert_eq!(children_of(first), ["portcullis.authn", "portcullis.upstream"].into());
    let authn = spans.iter().find(|s| s.name == "portcullis.authn" && s.parent_span_id == first.span_id).unwrap();
    assert_eq!(children_of(authn), ["portcullis.jwks_fetch"].into(), "the rotation's fetch is the request's own");
    let second = requests.iter().find(|r| r.span_id != first.span_id).unwrap();
    assert_eq!(children_of(second), ["portcullis.authn", "portcullis.rate_limit", "portcullis.upstream"].into());

    // The origin's parent is the upstream span.
    let sent: Vec<String> = origin
        .received()
        .iter()
        .filter_map(|r| r.headers.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v.clone()))
        .collect();
    for upstream in by_name("portcullis.upstream") {
        let expected = format!("00-{client_trace}-{}-01", hex(&upstream.span_id));
        assert!(sent.contains(&expected), "{expected} not among {sent:?}");
    }
    // The access log names the trace.
    let line = node.wait_for_log(|l| l["route"] == "keyed");
    assert_eq!(line["trace_id"], client_trace);
}

/// Rate-limit keys of callers seen once leave the in-memory store when
/// they expire, not when the store fills.
#[tokio::test]
async fn expired_keys_leave_the_memory_store() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        "[limits.per_client]\nrate = \"1/s\"\nkey = \"header:x-client\"\n{}limits = [\"per_client\"]\n",
        support::api_config(&format!("url = \"http://127.0.0.1:{}\"", origin.port()))
    );
    let node = Node::start(&config, &[]);
    let keys = || async {
        let (_, series) = scrape(&node).await;
        value(&series, "portcullis_store_keys")
    };
    // Distinct callers for longer than a purge interval: a purge sees them.
    let mut seen = 0.0_f64;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(7) {
        assert_eq!(send(node.addr, get_with("/x", "x-client", &format!("c{i}"))).await.status, 200);
        i += 1;
        seen = seen.max(keys().await);
    }
    assert!(seen >= 1.0, "a purge while {i} callers' keys were live saw none");
    // Idle, the keys expire within a second and the next purge drops them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while keys().await > 0.0 {
        assert!(Instant::now() < deadline, "expired keys stayed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Spans still queued at SIGTERM are sent before the node exits, even with
/// one worker (whose runtime the exporter's calls run on). (The collector
/// needs a runtime thread of its own while the test waits for the exit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_queued_at_shutdown_are_flushed() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let (collector, port) = Collector::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = support::api_config(&format!("url = \"http://127.0.0.1:{}\"", origin.port()));
    let mut node = Node::start_args(&config, &[], &["--workers", "1", "--otlp-endpoint", &endpoint]);
    for _ in 0..3 {
        assert_eq!(send(node.addr, get("/x")).await.status, 200);
    }
    // Well before the batch processor's 5 s delay.
    node.signal("TERM");
    let started = Instant::now();
    assert_eq!(node.wait(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?} to stop", started.elapsed());
    let spans = collector.spans();
    assert_eq!(spans.iter().filter(|s| s.name == "portcullis.request").count(), 3, "sent before exit");
}

#[tokio::test]
async fn the_access_log_samples_successes_keeps_failures_and_redacts_credentials() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let key = idp::key("rsa1", "k1", Algorithm::RS256);
    let idp = Idp::start(&[&key], 300).await;
    let node = Node::start(&config(&origin, idp.port, "access_log_sample = 0.0"), &[]);
    let token = idp::mint(
        &key,
        &json!({"iss": "https://idp.test/", "aud": "api://test", "sub": "u", "exp": idp::now_secs() + 60}),
    );
    for _ in 0..5 {
        assert_eq!(send(node.addr, get("/open/ok?token=querysecret")).await.status, 200);
    }
    assert_eq!(send(node.addr, keyed(Some(BAD_KEY), "/keyed?api_key=querysecret")).await.status, 401);
    // Signed by another key under k1's name: a bad signature.
    let forged = idp::mint(
        &idp::key("rsa2", "k1", Algorithm::RS256),
        &json!({"iss": "https://idp.test/", "aud": "api://test", "sub": "u", "exp": idp::now_secs() + 60}),
    );
    let signed = get_with("/signed?x=querysecret", "authorization", &format!("Bearer {forged}"));
    assert_eq!(send(node.addr, signed).await.status, 401);
    assert_eq!(send(node.addr, get("/missing")).await.status, 404);
    for _ in 0..3 {
        assert_eq!(send(node.addr, keyed(Some(GOOD_KEY), "/keyed")).await.status, 200);
    }
    assert_eq!(send(node.addr, keyed(Some(GOOD_KEY), "/keyed")).await.status, 429);
    let limited = node.wait_for_log(|l| l["status"] == 429);
    assert_eq!(limited["limits"], json!([{"policy": "per_consumer", "outcome": "limited"}]));
    assert_eq!(limited["auth"], json!({"provider": "partners", "outcome": "ok"}));
    let bad_key = node.wait_for_log(|l| l["status"] == 401 && l["route"] == "keyed");
    assert_eq!(bad_key["auth"], json!({"provider": "partners", "outcome": "unknown_key"}));
    let bad_sig = node.wait_for_log(|l| l["status"] == 401 && l["route"] == "signed");
    assert_eq!(bad_sig["auth"]["outcome"], "bad_signature");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = node.access_log();
    assert_eq!(lines.iter().filter(|l| l["status"] == 200).count(), 0, "successes sampled at 0");
    assert_eq!(lines.len(), 4, "every failure is logged: {lines:?}");
    let all = format!("{lines:?}");
    for secret in ["querysecret", BAD_KEY, GOOD_KEY, &token[token.len() - 40..], &forged[forged.len() - 40..]] {
        assert!(!all.contains(secret), "{secret} in the access log");
    }
    assert!(lines.iter().all(|l| l["overhead_us"].as_u64().is_some()));

    // At the default rate every success is logged, with its decisions.
    let node = Node::start(&config(&origin, idp.port, ""), &[]);
    assert_eq!(send(node.addr, keyed(Some(GOOD_KEY), "/keyed")).await.status, 200);
    let line = node.wait_for_log(|l| l["status"] == 200);
    assert_eq!(line["service"], "echo");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["limits"], json!([{"policy": "per_consumer", "outcome": "admitted"}]));
    let (total, upstream, overhead) = (
        line["total_latency_us"].as_u64().unwrap(),
        line["upstream_latency_us"].as_u64().unwrap(),
        line["overhead_us"].as_u64().unwrap(),
    );
    assert!(overhead + upstream <= total + 1_000, "{line}");
}
