//! The upstream phase with in-memory ports: retries, their budget, passive
//! health, the all-down choice and the fallback.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::config::Config;
use crate::pipeline::tests::run_with;
use crate::pipeline::{Downstream, Exchange, Gateway, Scheme};
use crate::ports::testing::{FakeHttp, FakePorts};
use crate::ports::{Clock, UpstreamError};

const CONFIG: &str = r#"
[services.pair]
targets = [{ url = "http://a.internal" }, { url = "http://b.internal" }]
request_timeout = "3s"
[services.pair.retry]
attempts = 3

[services.lonely]
url = "http://a.internal"
[services.lonely.health]
failures = 2
eject_for = "10s"
max_ejected = "100%"
when_all_down = "refuse"

[services.guarded]
url = "http://a.internal"
[services.guarded.retry]
attempts = 1
[services.guarded.breaker]
consecutive_failures = 2
open_for = "5s"
probes = 1

[services.crowded]
url = "http://a.internal"
max_in_flight = 1

[services.single]
url = "http://a.internal"

[services.single_retried]
url = "http://a.internal"
[services.single_retried.retry]
attempts = 2

[services.pair_default]
targets = [{ url = "http://a.internal" }, { url = "http://b.internal" }]

[[routes]]
path = "/pair"
service = "pair"

[[routes]]
path = "/guarded"
service = "guarded"
fallback = { status = 200, body = "cached" }

[[routes]]
path = "/guarded/plain"
service = "guarded"

[[routes]]
path = "/crowded"
service = "crowded"

[[routes]]
path = "/pair/post"
methods = ["POST"]
service = "pair"
retry_non_idempotent = true

[[routes]]
path = "/lonely"
service = "lonely"

[[routes]]
path = "/single"
service = "single"

[[routes]]
path = "/single/retried"
service = "single_retried"

[[routes]]
path = "/pair/default"
service = "pair_default"

[[routes]]
path = "/lonely/fallback"
service = "lonely"
fallback = { status = 200, headers = { "content-type" = "application/json", "x-fallback" = "1" }, body = '{"items":[]}' }
"#;

fn gateway() -> Gateway {
    Gateway::new(Config::parse(CONFIG, "t.toml", &Default::default()).unwrap())
}

/// An origin whose targets answer by host: `a` with `a`, `b` with `b`.
fn origin(
    a: impl Fn() -> Result<Response<Bytes>, UpstreamError> + Send + Sync + 'static,
    b: impl Fn() -> Result<Response<Bytes>, UpstreamError> + Send + Sync + 'static,
) -> FakePorts {
    FakePorts::new(FakeHttp::new(move |req| if req.uri().host() == Some("a.internal") { a() } else { b() }))
}

fn status(code: u16) -> Result<Response<Bytes>, UpstreamError> {
    Ok(Response::builder().status(code).body(Bytes::from_static(b"origin")).unwrap())
}

fn refused() -> Result<Response<Bytes>, UpstreamError> {
    Err(UpstreamError::Connect("connection refused".into()))
}

fn run(gw: &Gateway, ports: &FakePorts, req: http::request::Builder, body: &'static [u8]) -> Exchange<Bytes> {
    let req = req.header("host", "gw.test").body(Bytes::from_static(body)).unwrap();
    run_with(gw, ports, req, Downstream::plain(IpAddr::from([192, 0, 2, 1]), Scheme::Http))
}

/// The hosts the origin was sent, in order.
fn hosts(ports: &FakePorts) -> Vec<String> {
    let sent = ports.http.sent.lock().unwrap();
    sent.iter().map(|(r, _)| r.uri().host().unwrap_or_default().to_string()).collect()
}

#[test]
fn a_failed_try_is_retried_on_the_other_target() {
    let (gw, ports) = (gateway(), origin(refused, || status(200)));
    for _ in 0..10 {
        let ex = run(&gw, &ports, Request::get("/pair"), b"");
        assert_eq!(ex.response.status(), 200);
        assert_eq!(ex.response.body(), "origin");
        assert_eq!(ex.log.upstream.as_deref(), Some("pair http://b.internal:80"), "the target that answered");
        assert!(matches!(ex.log.attempts, Some(1 | 2)), "{:?}", ex.log.attempts);
    }
    let hosts = hosts(&ports);
    for (i, h) in hosts.iter().enumerate() {
        if h == "a.internal" {
            assert_eq!(hosts.get(i + 1).map(String::as_str), Some("b.internal"), "{hosts:?}");
        }
    }
    // 503 from one target, then the other: idempotent methods retry 5xx too.
    let ports = origin(|| status(503), || status(200));
    let answers: Vec<u16> =
        (0..10).map(|_| run(&gw, &ports, Request::get("/pair"), b"").response.status().as_u16()).collect();
    assert_eq!(answers, [200; 10]);
}

#[test]
fn without_a_retry_table_a_request_is_tried_again_only_on_another_target() {
    let gw = gateway();
    let malformed = || Err(UpstreamError::Protocol("invalid HTTP framing".into()));
    for failure in [malformed as fn() -> _, refused] {
        for (path, tries) in [("/single", 1), ("/single/retried", 2), ("/pair/default", 2)] {
            let ports = origin(failure, failure);
            let ex = run(&gw, &ports, Request::get(path), b"");
            assert_eq!(ex.response.status(), 502, "{path}");
            assert_eq!(ex.log.attempts, Some(tries), "{path}");
            let sent = hosts(&ports);
            assert_eq!(sent.len(), tries as usize, "{path}: {sent:?}");
            if path == "/pair/default" {
                assert_ne!(sent[0], sent[1], "the retry went to the other target: {sent:?}");
            }
        }
    }
}

#[test]
fn a_post_is_retried_only_where_it_never_reached_the_origin_unless_the_route_opts_in() {
    let gw = gateway();
    let ports = origin(|| status(503), || status(503));
    let ex = run(&gw, &ports, Request::post("/pair").header("content-length", "5"), b"hello");
    assert_eq!((ex.response.status().as_u16(), ex.log.attempts), (503, Some(1)), "a 503 to a POST is final");
    let ports = origin(refused, refused);
    let ex = run(&gw, &ports, Request::post("/pair").header("content-length", "5"), b"hello");
    assert_eq!(
        (ex.response.status().as_u16(), ex.log.attempts),
        (502, Some(3)),
        "refused connections are safe to retry"
    );
    assert!(ports.http.sent.lock().unwrap().iter().all(|(r, _)| r.body() == "hello"), "the body is replayed whole");
    let ports = origin(|| status(503), || status(200));
    let ex = run(&gw, &ports, Request::post("/pair/post").header("content-length", "5"), b"hello");
    assert_eq!(ex.response.status(), 200, "retry_non_idempotent");
}

#[test]
fn only_a_body_of_known_small_size_is_kept_for_another_try() {
    use http::HeaderMap;
    use http_body::SizeHint;
    let with_length = |n: &str| HeaderMap::from_iter([(http::header::CONTENT_LENGTH, n.parse().unwrap())]);
    let unknown = SizeHint::new();
    assert!(super::replayable(&with_length("100"), &unknown, 100));
    assert!(!super::replayable(&with_length("101"), &unknown, 100));
    assert!(super::replayable(&HeaderMap::new(), &SizeHint::with_exact(0), 100), "no body");
    assert!(super::replayable(&HeaderMap::new(), &SizeHint::with_exact(60), 100), "read already (the edge)");
    assert!(!super::replayable(&HeaderMap::new(), &unknown, 100), "streamed (chunked)");
}

#[test]
fn an_origins_retry_after_is_honoured_within_the_deadline() {
    let gw = gateway();
    let soon = || Ok(Response::builder().status(503).header("retry-after", "1").body(Bytes::new()).unwrap());
    let ports = origin(soon, soon);
    let start = ports.clock.monotonic();
    let ex = run(&gw, &ports, Request::get("/pair"), b"");
    assert_eq!((ex.response.status().as_u16(), ex.log.attempts), (503, Some(3)));
    assert_eq!(ports.clock.monotonic() - start, Duration::from_secs(2), "waited 1 s before each retry");
    let late = || Ok(Response::builder().status(503).header("retry-after", "60").body(Bytes::new()).unwrap());
    let ports = origin(late, late);
    let ex = run(&gw, &ports, Request::get("/pair"), b"");
    assert_eq!(ex.log.attempts, Some(1), "a wait past the deadline is not taken");
}

#[test]
fn the_retry_budget_holds_in_a_full_outage() {
    let (gw, ports) = (gateway(), origin(|| status(503), || status(503)));
    let start = ports.clock.monotonic();
    let requests = 2000;
    for _ in 0..requests {
        assert_eq!(run(&gw, &ports, Request::get("/pair"), b"").response.status(), 503);
        ports.clock.advance(Duration::from_millis(5));
    }
    let seconds = (ports.clock.monotonic() - start).as_secs_f64();
    let sent = ports.http.sent.lock().unwrap().len() as f64;
    // 20 % of requests, plus 3 a second (counted over 10 s windows).
    let bound = requests as f64 * 1.2 + 3.0 * (seconds + 10.0);
    assert!(sent <= bound, "{sent} tries for {requests} requests in {seconds:.1} s (bound {bound})");
    assert!(sent > requests as f64, "some retries were made");
}

#[test]
fn a_failing_target_is_ejected_logged_passed_over_and_tried_again_later() {
    let gw = gateway();
    let ports = origin(refused, || status(200));
    for _ in 0..40 {
        assert_eq!(run(&gw, &ports, Request::get("/pair"), b"").response.status(), 200);
    }
    let to_a = |p: &FakePorts| hosts(p).iter().filter(|h| *h == "a.internal").count();
    assert_eq!(to_a(&ports), 5, "five failures in a row eject it");
    let events = ports.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("ejected: pair http://a.internal:80 failed 5 times in a row; out for 10s"),
        "{events:?}"
    );
    ports.clock.advance(Duration::from_secs(11));
    for _ in 0..40 {
        assert_eq!(run(&gw, &ports, Request::get("/pair"), b"").response.status(), 200);
    }
    assert_eq!(to_a(&ports), 10, "back in after 10 s, then out after five more failures");
    let events = ports.events.lock().unwrap().clone();
    assert!(events[1].contains("out for 20s (ejection 2 in a row)"), "{events:?}");
}

#[test]
fn with_every_target_out_the_service_refuses_or_the_fallback_answers() {
    let gw = gateway();
    let ports = origin(|| status(500), || status(500));
    for _ in 0..2 {
        assert_eq!(run(&gw, &ports, Request::get("/lonely"), b"").response.status(), 500);
    }
    let ex = run(&gw, &ports, Request::get("/lonely"), b"");
    assert_eq!(ex.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ex.log.problem, Some("no-healthy-upstream"));
    assert_eq!(ex.response.headers()["retry-after"], "1");
    let ex = run(&gw, &ports, Request::get("/lonely/fallback"), b"");
    assert_eq!(ex.response.status(), 200);
    assert_eq!(ex.response.body(), r#"{"items":[]}"#);
    assert_eq!(ex.response.headers()["x-fallback"], "1");
    assert!(ex.log.fallback && ex.log.problem == Some("no-healthy-upstream"), "{:?}", ex.log);
    assert!(ex.log.to_line().contains(r#""fallback":true"#));
    let refused_ports = origin(refused, refused);
    let ex = run(&gateway(), &refused_ports, Request::get("/lonely/fallback"), b"");
    assert!(ex.log.fallback && ex.response.status() == 200, "an unreachable origin gets the fallback too");
    let ex = run(&gateway(), &origin(|| status(500), || status(500)), Request::get("/lonely/fallback"), b"");
    assert_eq!(ex.response.status(), 500, "an origin that answers is not replaced");
}

#[test]
fn an_open_circuit_answers_at_once_and_a_probe_closes_it() {
    let gw = gateway();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let ports = origin(
        move || if f.load(std::sync::atomic::Ordering::SeqCst) { status(500) } else { status(200) },
        || status(200),
    );
    for _ in 0..2 {
        assert_eq!(run(&gw, &ports, Request::get("/guarded/plain"), b"").response.status(), 500);
    }
    let sent = ports.http.sent.lock().unwrap().len();
    let ex = run(&gw, &ports, Request::get("/guarded/plain"), b"");
    assert_eq!(ex.response.status(), 503);
    assert_eq!(ex.log.problem, Some("circuit-open"));
    assert_eq!(ex.response.headers()["retry-after"], "5");
    let ex = run(&gw, &ports, Request::get("/guarded"), b"");
    assert_eq!((ex.response.status().as_u16(), ex.response.body().as_ref()), (200, &b"cached"[..]), "the fallback");
    assert!(ex.log.fallback);
    assert_eq!(ports.http.sent.lock().unwrap().len(), sent, "the service was not called while open");
    assert!(
        ports
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("circuit opened: service guarded (2 requests failed in a row)"))
    );
    ports.clock.advance(Duration::from_secs(5));
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(run(&gw, &ports, Request::get("/guarded/plain"), b"").response.status(), 200, "the probe");
    assert_eq!(run(&gw, &ports, Request::get("/guarded/plain"), b"").response.status(), 200, "closed");
    assert!(ports.events.lock().unwrap().iter().any(|e| e.contains("circuit closed: service guarded")));
}

#[test]
fn the_bulkhead_refuses_past_max_in_flight() {
    let gw = gateway();
    let ports = origin(|| status(200), || status(200));
    let state = &gw.upstreams[gw.config.services.iter().position(|s| &*s.name == "crowded").unwrap()];
    state.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ex = run(&gw, &ports, Request::get("/crowded"), b"");
    assert_eq!((ex.response.status().as_u16(), ex.log.problem), (503, Some("upstream-overloaded")));
    assert_eq!(ex.response.headers()["retry-after"], "1");
    state.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(run(&gw, &ports, Request::get("/crowded"), b"").response.status(), 200);
    assert_eq!(state.active.load(std::sync::atomic::Ordering::Relaxed), 0, "every request left the bulkhead");
}

/// The most tries the config accepts all fit the record of tried targets:
/// a request at that limit, every try refused, makes exactly that many
/// tries (a record smaller than the limit would panic here).
#[test]
fn a_request_at_the_attempts_limit_makes_every_try() {
    let config = |attempts: u32| {
        format!(
            "[services.s]\nurl = \"http://a.internal\"\n[services.s.retry]\nattempts = {attempts}\nbackoff = \"1ms\"\nmax_backoff = \"1ms\"\nmin_per_second = 1000\n[[routes]]\npath = \"/s\"\nservice = \"s\"\n"
        )
    };
    let accepted = |n: u32| Config::parse(&config(n), "t.toml", &Default::default()).is_ok();
    let limit = (1..=1000).take_while(|&n| accepted(n)).last().expect("1 is accepted");
    assert!(limit > 1 && !accepted(limit + 1), "the limit is {limit}");
    let mut tried = super::Tried::default();
    (0..limit as usize).for_each(|i| tried.add(i));
    assert_eq!(tried.targets().len(), limit as usize, "the record of tried targets holds the limit");
    let gw = Gateway::new(Config::parse(&config(limit), "t.toml", &Default::default()).unwrap());
    let ports = origin(refused, refused);
    let ex = run(&gw, &ports, Request::get("/s"), b"");
    assert_eq!(ex.response.status(), 502);
    assert_eq!(ex.log.attempts, Some(limit), "every try made");
    assert_eq!(hosts(&ports).len(), limit as usize);
}
