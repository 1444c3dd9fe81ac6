//! gRPC calls: the gateway's own answers are gRPC statuses, `grpc-timeout`
//! bounds the wait, `TE: trailers` reaches the origin, and listed statuses
//! answered before any message are tried again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

use super::{peer, run_with};
use crate::config::Config;
use crate::pipeline::Gateway;
use crate::ports::testing::{FakeHttp, FakePorts};

const CONFIG: &str = r#"
[services.greeter]
targets = [{ url = "http://a.internal" }, { url = "http://b.internal" }]
http2 = true
request_timeout = "3s"
[services.greeter.retry]
attempts = 2
on_grpc_status = ["UNAVAILABLE", "resource_exhausted"]

[services.plain]
url = "http://a.internal"
http2 = true

[[routes]]
path = "/greet.Greeter/{method}"
methods = ["POST"]
service = "greeter"

[[routes]]
path = "/plain.Plain/{method}"
methods = ["POST"]
service = "plain"
"#;

fn gateway() -> Gateway {
    Gateway::new(Config::parse(CONFIG, "t.toml", &Default::default()).unwrap())
}

fn call(path: &str) -> http::request::Builder {
    Request::post(path).header("host", "gw.test").header("content-type", "application/grpc")
}

fn grpc_status(code: u8) -> Response<Bytes> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", u16::from(code))
        .body(Bytes::new())
        .unwrap()
}

#[test]
fn the_gateways_own_answers_to_a_call_are_grpc_statuses() {
    let ports = FakePorts::new(FakeHttp::ok());
    let ex = run_with(&gateway(), &ports, call("/nowhere").body(Bytes::new()).unwrap(), peer("192.0.2.1"));
    let h = ex.response.headers();
    assert_eq!(
        (ex.response.status().as_u16(), h["grpc-status"].as_bytes(), h["content-type"].as_bytes()),
        (200, &b"12"[..], &b"application/grpc"[..])
    );
    assert!(ex.response.body().is_empty());
    assert_eq!(ex.log.problem, Some("no-route"), "the log keeps the problem");
    assert!(h.contains_key("x-request-id"));

    // The same request without the gRPC content type: a problem document.
    let plain = Request::post("/nowhere").header("host", "gw.test").body(Bytes::new()).unwrap();
    let ex = run_with(&gateway(), &ports, plain, peer("192.0.2.1"));
    assert_eq!(ex.response.status(), 404);
    assert_eq!(ex.response.headers()["content-type"], "application/problem+json");

    let bad = call("/greet.Greeter/Hello").header("grpc-timeout", "soon").body(Bytes::new()).unwrap();
    let ex = run_with(&gateway(), &ports, bad, peer("192.0.2.1"));
    assert_eq!(&ex.response.headers()["grpc-status"], "3", "INVALID_ARGUMENT");
    assert_eq!(&ex.response.headers()["grpc-message"], "grpc-timeout is malformed");
    assert!(ports.http.sent.lock().unwrap().is_empty(), "nothing reached the origin");
}

#[test]
fn grpc_timeout_bounds_the_wait_and_te_trailers_reaches_the_origin() {
    let ports = FakePorts::new(FakeHttp::new(|_| Ok(grpc_status(0))));
    let gw = gateway();
    let req = call("/greet.Greeter/Hello").header("grpc-timeout", "250m").header("te", "gzip").body(Bytes::new());
    let ex = run_with(&gw, &ports, req.unwrap(), peer("192.0.2.1"));
    assert_eq!(&ex.response.headers()["grpc-status"], "0");
    let sent = ports.http.sent.lock().unwrap();
    let (req, opts) = &sent[0];
    assert_eq!(opts.request_timeout, Duration::from_millis(250), "the call's deadline, under the service's 3 s");
    assert!(opts.http2);
    assert_eq!(req.headers()["te"], "trailers", "gRPC's TE, whatever the client sent");
    drop(sent);

    let long = call("/greet.Greeter/Hello").header("grpc-timeout", "1H").body(Bytes::new()).unwrap();
    run_with(&gw, &ports, long, peer("192.0.2.1"));
    assert_eq!(ports.http.sent.lock().unwrap()[1].1.request_timeout, Duration::from_secs(3), "the service's bound");
}

#[test]
fn listed_grpc_statuses_are_tried_again_on_another_target() {
    let tries = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = tries.clone();
    let ports = FakePorts::new(FakeHttp::new(move |_| {
        Ok(grpc_status(if seen.fetch_add(1, Ordering::SeqCst) == 0 { 14 } else { 0 }))
    }));
    let gw = gateway();
    let ex = run_with(
        &gw,
        &ports,
        call("/greet.Greeter/Hello").body(Bytes::from_static(b"msg")).unwrap(),
        peer("192.0.2.1"),
    );
    assert_eq!(&ex.response.headers()["grpc-status"], "0", "the second try answered");
    assert_eq!(ex.log.attempts, Some(2));
    let sent = ports.http.sent.lock().unwrap();
    assert_ne!(sent[0].0.uri().host(), sent[1].0.uri().host());
    assert_eq!(sent[1].0.body(), "msg", "the body, sent again");
    drop(sent);

    // A status not listed (or a service without the list) is the answer.
    let ports = FakePorts::new(FakeHttp::new(|_| Ok(grpc_status(13))));
    let ex = run_with(&gw, &ports, call("/greet.Greeter/Hello").body(Bytes::new()).unwrap(), peer("192.0.2.1"));
    assert_eq!((ex.response.headers()["grpc-status"].as_bytes(), ex.log.attempts), (&b"13"[..], Some(1)));
    let ports = FakePorts::new(FakeHttp::new(|_| Ok(grpc_status(14))));
    let ex = run_with(&gw, &ports, call("/plain.Plain/Hello").body(Bytes::new()).unwrap(), peer("192.0.2.1"));
    assert_eq!((ex.response.headers()["grpc-status"].as_bytes(), ex.log.attempts), (&b"14"[..], Some(1)));
}
