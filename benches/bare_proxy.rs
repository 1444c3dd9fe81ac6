//! The bare-hyper proxy the node's plain route is measured against
//! (`benches/run.sh proxy`): hyper 1's HTTP/1.1 server on one
//! current-thread runtime, every request forwarded to one origin through
//! hyper-util's pooled client, with no pipeline at all — what hyper alone
//! costs, so the node's own work can be told from the engine's.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:8081 127.0.0.1:9080
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a bench tool: sockets and a runtime

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN ORIGIN (e.g. 127.0.0.1:8081 127.0.0.1:9080)";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse().map_err(|e| format!("LISTEN: {e}"))?;
    let origin: http::uri::Authority = args.next().ok_or(usage)?.parse().map_err(|e| format!("ORIGIN: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(serve(listen, origin))
}

async fn serve(listen: SocketAddr, origin: http::uri::Authority) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("{listen}: {e}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (client, origin) = (client.clone(), origin.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| forward(client.clone(), origin.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    origin: http::uri::Authority,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().cloned();
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(origin)
        .path_and_query(path.map_or("/".into(), |p| p.to_string()))
        .build();
    let Ok(uri) = uri else { return Ok(bad_gateway()) };
    parts.uri = uri;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(http_body_util::Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
