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
