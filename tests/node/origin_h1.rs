//! The node's own HTTP/1.1 client to origins (requests without a body),
//! against a scripted origin on loopback that answers with exact bytes and
//! counts its connections: each framing reaches the client whole, a kept
//! connection is reused only when it may be, and one the origin closed
//! while it was kept is never written to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Node, get, send};

/// What the origin writes for a path, and whether it closes the
/// connection after (`Close`), keeps it without reading more (`Stop`), or
/// reads the next request (`Keep`).
#[derive(Clone, Copy, PartialEq)]
enum Then {
    Keep,
    Close,
    Stop,
}

fn answer(path: &str) -> (&'static [u8], Then) {
    match path {
        "/length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength", Then::Keep),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nchu\r\n4\r\nnked\r\n0\r\nx-t: 1\r\n\r\n",
            Then::Keep,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the origin closes", Then::Close),
        "/then-closed" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Close),
        "/says-close" => (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", Then::Stop),
        "/informational" => {
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal", Then::Keep)
        }
        "/two-lengths" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc", Then::Close),
        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", Then::Close),
        _ => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", Then::Keep),
    }
}

/// The scripted origin: its port and the connections it accepted.
struct Origin {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the origin");
    let port = listener.local_addr().expect("its address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (bytes, then) = answer(&path);
                    if stream.write_all(bytes).await.is_err() {
                        return;
                    }
                    match then {
                        Then::Keep => {}
                        Then::Close => return,
                        Then::Stop => {
                            // Open, but deaf: a request written here is never answered.
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Origin { port, accepted }
}

fn node_for(origin: &Origin) -> Node {
    let config = format!(
        "[services.origin]\nurl = \"http://127.0.0.1:{}\"\nrequest_timeout = \"3s\"\n\n\
         [[routes]]\npath = \"/{{*rest}}\"\nmethods = [\"GET\", \"HEAD\"]\nservice = \"origin\"\n",
        origin.port
    );
    Node::start_args(&config, &[], &["--workers", "1"])
}

#[tokio::test]
async fn every_framing_reaches_the_client_whole() {
    let origin = origin().await;
    let node = node_for(&origin);
    for (path, body) in [
        ("/length", "length"),
        ("/chunked", "chunked"),
        ("/until-close", "until the origin closes"),
        ("/informational", "final"),
    ] {
        let reply = send(node.addr, get(path)).await;
        assert_eq!((reply.status, reply.body_error.as_deref()), (200, None), "{path}");
        assert_eq!(String::from_utf8_lossy(&reply.body), body, "{path}");
    }
}

#[tokio::test]
async fn a_kept_connection_is_reused_for_the_next_request() {
    let origin = origin().await;
    let node = node_for(&origin);
    for path in ["/length", "/chunked", "/length", "/informational", "/chunked"] {
        assert_eq!(send(node.addr, get(path)).await.status, 200, "{path}");
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 1, "one connection for five requests, each read whole");
}

/// The origin closes each connection after its answer, without saying so:
/// the node must notice that a kept one closed before it writes a request
/// there (else the request meets a closed socket and the client a 502).
#[tokio::test]
async fn a_kept_connection_the_origin_closed_is_not_written_to() {
    let origin = origin().await;
    let node = node_for(&origin);
    for i in 0..10 {
        let reply = send(node.addr, get("/then-closed")).await;
        assert_eq!((reply.status, &reply.body[..]), (200, &b"ok"[..]), "request {i}: {:?}", reply.body);
        // Time for the origin's close to reach the node's socket.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 10);
}

/// An origin that says `connection: close` reads no more requests on that
/// connection; the node must not lend it again.
#[tokio::test]
async fn a_response_that_says_close_is_not_kept() {
    let origin = origin().await;
    let node = node_for(&origin);
    for i in 0..3 {
        let reply = send(node.addr, get("/says-close")).await;
        assert_eq!(reply.status, 200, "request {i}: {:?}", reply.body);
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_response_head_the_client_refuses_is_a_502_problem() {
    let origin = origin().await;
    let node = node_for(&origin);
    let reply = send(node.addr, get("/two-lengths")).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        reply.json()["type"].as_str().map(|t| t.ends_with("upstream-invalid")),
        Some(true),
        "{:?}",
        reply.json()
    );
}

/// A body shorter than its length: the client gets the head and what came,
/// then the connection breaks (no complete-looking body).
#[tokio::test]
async fn a_body_that_breaks_off_breaks_off_at_the_client() {
    let origin = origin().await;
    let node = node_for(&origin);
    let reply = send(node.addr, get("/short")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_some(), "the body ended as if whole: {:?}", reply.body);
}
