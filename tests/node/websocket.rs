//! WebSocket through the node: a real echo server as the origin, real
//! clients over HTTP/1.1 (Upgrade) and HTTP/2 (extended CONNECT, RFC 8441);
//! one log line when the connection ends; the idle timeout, the cap on
//! upgraded connections, and a drain that closes what stays open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::support::Node;

/// An origin that echoes every message back.
async fn echo_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(origin: SocketAddr) -> String {
    format!(
        r#"
[services.chat]
url = "http://{origin}"

[[routes]]
path = "/chat"
service = "chat"
websocket = true

[[routes]]
path = "/quiet"
service = "chat"
websocket = true
websocket_idle_timeout = "600ms"
"#
    )
}

async fn connect(node: &Node, path: &str) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let url = format!("ws://gw.test{path}");
    client_async(url, tcp).await.map(|(ws, _)| ws).map_err(|e| e.to_string())
}

async fn echoes<S>(ws: &mut WebSocketStream<S>, msg: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_both_ways_over_http1_and_one_line_is_logged_at_the_end() {
    let node = Node::start(&config(echo_origin().await), &[]);
    let mut ws = connect(&node, "/chat").await.unwrap();
    echoes(&mut ws, Message::text("hello")).await;
    echoes(&mut ws, Message::binary(vec![7u8; 40_000])).await;
    assert!(node.access_log().iter().all(|l| l["path"] != "/chat"), "no line while it is open");
    ws.close(None).await.unwrap();
    drop(ws);
    let line = node.wait_for_log(|l| l["path"] == "/chat");
    assert_eq!(line["status"], 101);
    assert!(line["bytes_in"].as_u64().unwrap() > 40_000, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 40_000, "{line}");
    assert!(line["upgraded_us"].as_u64().is_some(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_over_http2_extended_connect() {
    let node = Node::start(&config(echo_origin().await), &[]);
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let extended_connect = || {
        let mut req = Request::connect("http://gw.test/chat")
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        req
    };
    // The node must have said it takes extended CONNECT (its SETTINGS) first.
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        sender.ready().await.unwrap();
        match sender.send_request(extended_connect()).await {
            Ok(resp) => break resp,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(resp.status(), 200, "RFC 8441: 200, not 101");
    assert!(!resp.headers().contains_key("upgrade") && !resp.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    echoes(&mut ws, Message::text("over h2")).await;
    echoes(&mut ws, Message::binary(vec![1u8; 100_000])).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let line = node.wait_for_log(|l| l["path"] == "/chat");
    assert_eq!(line["method"], "GET", "the core saw the upgrade it stands for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_is_closed_after_its_idle_timeout() {
    let node = Node::start(&config(echo_origin().await), &[]);
    let mut ws = connect(&node, "/quiet").await.unwrap();
    echoes(&mut ws, Message::text("still here")).await;
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed by the node");
    assert!(!matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    let line = node.wait_for_log(|l| l["path"] == "/quiet");
    assert!(line["error"].as_str().unwrap_or_default().contains("without a byte"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_capped_and_a_closed_one_frees_its_place() {
    let node = Node::start_args(&config(echo_origin().await), &[], &["--max-upgraded", "1"]);
    let mut first = connect(&node, "/chat").await.unwrap();
    echoes(&mut first, Message::text("one")).await;
    let refused = connect(&node, "/chat").await.unwrap_err();
    assert!(refused.contains("503"), "{refused}");
    let line = node.wait_for_log(|l| l["problem"] == "upgrades-full");
    assert_eq!(line["status"], 503);
    first.close(None).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match connect(&node, "/chat").await {
            Ok(ws) => break ws,
            Err(e) if Instant::now() < deadline => {
                assert!(e.contains("503"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the place was never given back: {e}"),
        }
    };
    echoes(&mut again, Message::text("two")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_upgraded_connections_after_its_timeout() {
    let mut node = Node::start_args(&config(echo_origin().await), &[], &["--drain-timeout", "1s"]);
    let mut ws = connect(&node, "/chat").await.unwrap();
    echoes(&mut ws, Message::text("before")).await;
    node.signal("TERM");
    let started = Instant::now();
    assert_eq!(node.wait(Duration::from_secs(10)), Some(0), "the node stopped");
    assert!(started.elapsed() >= Duration::from_millis(900), "it gave the connection its drain timeout");
    assert!(node.access_log().iter().any(|l| l["path"] == "/chat" && l["status"] == 101), "its line was written");
}
