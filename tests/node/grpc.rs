//! gRPC through the node: a real gRPC server (the standard health service)
//! as an h2c origin and a real gRPC client — unary calls and a server
//! stream cross with their trailers; the gateway's own refusals are gRPC
//! statuses a client library reads; `grpc-timeout` bounds the wait; listed
//! statuses are tried again on another target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use crate::support::{Node, hex_sha256};

/// The health service on loopback, over h2c.
async fn health_origin() -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("greeter", ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, reporter)
}

/// An h2c origin answering every call with `grpc-status: code` before any
/// message, after `delay`; it counts its calls.
async fn status_origin(code: u8, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", u16::from(code))
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

fn config(health: SocketAddr, down: SocketAddr, up: SocketAddr, slow: SocketAddr) -> String {
    format!(
        r#"
[services.health]
url = "http://{health}"
http2 = true

[services.flaky]
targets = [{{ url = "http://{down}" }}, {{ url = "http://{up}" }}]
http2 = true
[services.flaky.retry]
attempts = 2
on_grpc_status = ["UNAVAILABLE"]

[services.slow]
url = "http://{slow}"
http2 = true
request_timeout = "10s"

[auth.api_key.clients]
consumers = [{{ id = "tester", key_sha256 = "{key}" }}]

[[routes]]
path = "/grpc.health.v1.Health/{{method}}"
methods = ["POST"]
service = "health"

[[routes]]
host = "keyed.test"
path = "/grpc.health.v1.Health/{{method}}"
methods = ["POST"]
service = "health"
auth = {{ any_of = ["clients"] }}

[[routes]]
path = "/flaky.Flaky/{{method}}"
methods = ["POST"]
service = "flaky"

[[routes]]
path = "/slow.Slow/{{method}}"
methods = ["POST"]
service = "slow"
"#,
        key = hex_sha256(b"grpc-secret")
    )
}

async fn client(node: &Node, authority: &str) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.into() }
}

/// One raw call over h2c: the answer's headers and trailers.
async fn raw_call(node: &Node, path: &str, timeout: &str) -> (http::HeaderMap, Option<http::HeaderMap>, Duration) {
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://gw.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let started = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    (headers, collected.trailers().cloned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_crosses_the_node_unary_and_streaming_with_its_trailers() {
    let (health, reporter) = health_origin().await;
    let (down, _) = status_origin(14, Duration::ZERO).await;
    let node = Node::start(&config(health, down, down, down), &[]);
    let mut c = client(&node, "gw.test").await;

    let answer = c.check(check("greeter")).await.unwrap().into_inner();
    assert_eq!(answer.status, Wire::Serving as i32, "a message, then grpc-status 0 in the trailers");
    let missing = c.check(check("nope")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "the origin's own status: {missing:?}");

    let mut watch = c.watch(check("greeter")).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.status, Wire::Serving as i32);
    reporter.set_service_status("greeter", ServingStatus::NotServing).await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status, Wire::NotServing as i32, "the stream delivers as the origin sends");

    let line = node.wait_for_log(|l| l["path"] == "/grpc.health.v1.Health/Check" && l["status"] == 200);
    assert_eq!(line["service"], "health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_refusals_are_grpc_statuses_a_client_reads() {
    let (health, _reporter) = health_origin().await;
    let (down, _) = status_origin(14, Duration::ZERO).await;
    let node = Node::start(&config(health, down, down, down), &[]);

    let mut keyed = client(&node, "keyed.test").await;
    let refused = keyed.check(check("greeter")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut req = tonic::Request::new(check("greeter"));
    req.metadata_mut().insert("x-api-key", "grpc-secret".parse().unwrap());
    assert_eq!(keyed.check(req).await.unwrap().into_inner().status, Wire::Serving as i32);

    let (headers, _, _) = raw_call(&node, "/unknown.Service/Call", "5S").await;
    assert_eq!(headers["grpc-status"], "12", "no route: UNIMPLEMENTED");
    let (headers, _, _) = raw_call(&node, "/slow.Slow/Call", "forever").await;
    assert_eq!(headers["grpc-status"], "3", "a malformed grpc-timeout: INVALID_ARGUMENT");
    let line = node.wait_for_log(|l| l["path"] == "/unknown.Service/Call");
    assert_eq!((&line["status"], &line["problem"]), (&200.into(), &"no-route".into()), "the log keeps the problem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_wait_for_the_origin() {
    let (health, _reporter) = health_origin().await;
    let (down, _) = status_origin(14, Duration::ZERO).await;
    let (slow, _) = status_origin(0, Duration::from_secs(3)).await;
    let node = Node::start(&config(health, down, down, slow), &[]);
    let (headers, _, took) = raw_call(&node, "/slow.Slow/Call", "300m").await;
    assert_eq!(headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(took < Duration::from_secs(2), "answered at the call's deadline, not the service's 10 s: {took:?}");
    let (headers, trailers, _) = raw_call(&node, "/slow.Slow/Call", "10S").await;
    assert_eq!(headers.get("grpc-status").or(trailers.as_ref().and_then(|t| t.get("grpc-status"))).unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_status_is_tried_again_on_the_other_target() {
    let (health, _reporter) = health_origin().await;
    let (down, down_calls) = status_origin(14, Duration::ZERO).await;
    let (up, up_calls) = status_origin(0, Duration::ZERO).await;
    let node = Node::start(&config(health, down, up, up), &[]);
    for _ in 0..12 {
        let (headers, _, _) = raw_call(&node, "/flaky.Flaky/Call", "5S").await;
        assert_eq!(headers["grpc-status"], "0", "UNAVAILABLE from one target, tried again on the other");
    }
    let (down, up) = (down_calls.load(Ordering::SeqCst), up_calls.load(Ordering::SeqCst));
    assert_eq!(up, 12, "every call answered by the healthy target");
    assert!(down > 0, "some calls went to the failing one first");
}

/// gRPC-Web from an HTTP/1.1 client (what a browser library sends) to the
/// real health service: binary and base64 text, a message and the trailers
/// as a last frame; a trailers-only answer's status in the headers; a
/// preflight from a listed page origin answered by the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_are_bridged_to_a_grpc_origin_and_back() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use prost::Message as _;

    let (health, _reporter) = health_origin().await;
    let config = format!(
        "[services.health]\nurl = \"http://{health}\"\nhttp2 = true\n\n[[routes]]\npath = \"/grpc.health.v1.Health/{{method}}\"\nmethods = [\"POST\", \"OPTIONS\"]\nservice = \"health\"\ngrpc_web = true\ngrpc_web_origins = [\"https://app.test\"]\n"
    );
    let node = Node::start(&config, &[]);
    let message = HealthCheckRequest { service: "greeter".into() }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let call = |content_type: &str, body: Vec<u8>, service: &str| {
        Request::post(format!("/grpc.health.v1.Health/{service}"))
            .header("host", "grpc.test")
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .header("origin", "https://app.test")
            .body(Bytes::from(body))
            .unwrap()
    };
    // Frames of a gRPC-Web answer: (flag, payload) each.
    let frames = |mut body: &[u8]| {
        let mut out = Vec::new();
        while body.len() >= 5 {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            out.push((body[0], body[5..5 + len].to_vec()));
            body = &body[5 + len..];
        }
        assert!(body.is_empty(), "whole frames");
        out
    };
    let serving = |frames: &[(u8, Vec<u8>)]| {
        assert_eq!(frames.len(), 2, "a message, then the trailers: {frames:?}");
        let answer = tonic_health::pb::HealthCheckResponse::decode(&frames[0].1[..]).unwrap();
        assert_eq!((frames[0].0, answer.status), (0, Wire::Serving as i32));
        assert_eq!(frames[1].0, 0x80);
        let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
        assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
    };

    let reply = crate::support::send(node.addr, call("application/grpc-web+proto", framed.clone(), "Check")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/grpc-web+proto"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.test"));
    assert!(reply.header("access-control-expose-headers").is_some_and(|h| h.contains("grpc-status")));
    serving(&frames(&reply.body));

    let text = STANDARD.encode(&framed).into_bytes();
    let reply = crate::support::send(node.addr, call("application/grpc-web-text", text, "Check")).await;
    assert_eq!(reply.header("content-type"), Some("application/grpc-web-text"));
    serving(&frames(&STANDARD.decode(&reply.body).expect("base64")));

    // The origin's trailers-only answer (no such service): its status in the headers.
    let unknown = HealthCheckRequest { service: "nobody".into() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(unknown.len() as u32).to_be_bytes());
    body.extend_from_slice(&unknown);
    let reply = crate::support::send(node.addr, call("application/grpc-web", body, "Check")).await;
    assert_eq!((reply.status, reply.header("grpc-status")), (200, Some("5")), "NOT_FOUND");

    // A text body that is not base64 never reaches the service as a message.
    let reply = crate::support::send(node.addr, call("application/grpc-web-text", b"AAA*".to_vec(), "Check")).await;
    assert_ne!(reply.header("grpc-status"), Some("0"), "{:?}", reply.headers);

    // The page's preflight is the gateway's; another origin's call is refused.
    let preflight = Request::options("/grpc.health.v1.Health/Check")
        .header("host", "grpc.test")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web")
        .body(Bytes::new())
        .unwrap();
    let reply = crate::support::send(node.addr, preflight).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-headers"), Some("content-type,x-grpc-web"));
    let mut evil = call("application/grpc-web", framed, "Check");
    evil.headers_mut().insert("origin", "https://evil.test".parse().unwrap());
    let reply = crate::support::send(node.addr, evil).await;
    assert_eq!((reply.status, reply.header("grpc-status")), (200, Some("7")), "PERMISSION_DENIED");
    assert_eq!(reply.header("access-control-allow-origin"), None);
}
