//! The node's HTTP/1.1 fast path for clients (`downstream_h1`), over real
//! sockets: requests on one connection are answered in order whether the
//! fast path or hyper's server (which the connection moves to at the first
//! request the fast path does not take) answers them, and hyper's
//! header-read deadline holds on both, idle time included.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::origin::Origin;
use crate::support::{Node, raw};

/// The echoed paths in `answers`, in order, with the status of each answer.
fn answered(answers: &str) -> Vec<(u16, String)> {
    answers
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| {
            let status = answer.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let path = answer.split("\"path\":\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
            (status, path.to_owned())
        })
        .collect()
}

fn node(origin: &Origin, args: &[&str]) -> Node {
    Node::start_args(&super::config(origin), &[], args)
}

#[tokio::test]
async fn a_connection_moves_to_hyper_at_the_first_request_the_fast_path_does_not_take_and_keeps_its_order() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = node(&origin, &[]);
    // Fast, then a body (hyper's from here), then one hyper serves though
    // the fast path would have: all in one write, answered in order.
    let requests = "GET /echo/one HTTP/1.1\r\nhost: gw.test\r\n\r\n\
                    POST /echo/two HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5\r\n\r\nhello\
                    GET /echo/three HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n";
    let answers = raw(node.addr, requests.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        answered(&answers),
        [(200, "/one".to_owned()), (200, "/two".to_owned()), (200, "/three".to_owned())],
        "{answers}"
    );
    assert!(answers.contains("\"body\":\"hello\""), "the body reached the origin: {answers}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_asked_closes() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = node(&origin, &[]);
    let mut requests = String::new();
    for i in 0..5 {
        requests.push_str(&format!("GET /echo/{i} HTTP/1.1\r\nhost: gw.test\r\n\r\n"));
    }
    requests.push_str("HEAD /echo/head HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n");
    requests.push_str("GET /echo/after-close HTTP/1.1\r\nhost: gw.test\r\n\r\n");
    let answers = raw(node.addr, requests.as_bytes(), Duration::from_secs(5)).await;
    let expected: Vec<(u16, String)> = (0..5).map(|i| (200, format!("/{i}"))).chain([(200, String::new())]).collect();
    assert_eq!(answered(&answers), expected, "five answers, the HEAD's without a body, none after close: {answers}");
    assert!(answers.ends_with("\r\n\r\n"), "the HEAD's answer is last and has no body: {answers}");
    assert_eq!(answers.matches("connection: close").count(), 1, "{answers}");
}

/// hyper's header-read deadline runs from when a head is awaited: a kept
/// connection idle that long is closed (the idle deadline is longer), on
/// the fast path as on hyper's server (a request with a body moved it
/// there), and so is one that began a head and stopped, without an answer.
#[tokio::test]
async fn the_header_read_deadline_holds_idle_and_mid_head() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = node(&origin, &["--header-read-timeout", "1s", "--workers", "1"]);

    let fast = "GET /echo/kept HTTP/1.1\r\nhost: gw.test\r\n\r\n";
    let hyper = "POST /echo/kept HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 2\r\n\r\nhi";
    for (server, request) in [("the fast path", fast), ("hyper", hyper)] {
        let mut kept = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        kept.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = kept.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"), "{server}: {}", String::from_utf8_lossy(&answer[..n]));
        let idle = Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{server}: an idle kept connection outlived the header-read deadline"))
            .unwrap();
        assert!(idle.elapsed() >= Duration::from_millis(900), "{server}: closed after {:?}", idle.elapsed());
    }

    let started = Instant::now();
    let answer = raw(node.addr, b"GET /echo/half HTTP/1.1\r\nhost: gw", Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert_eq!(answer, "", "no answer to half a head");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "closed after {waited:?}");
}
