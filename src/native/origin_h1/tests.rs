//! Differential tests: our client and hyper's read the same response
//! bytes — written in random pieces, from a list of the shapes the
//! request-smuggling and response-splitting literature uses, then mutated —
//! and must agree: the same status, version, reason, header lines, body
//! bytes and trailers, or both refuse (the head, or the body part way).
//! `cargo test` runs 256 cases; a longer run, as for the other fuzz targets:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release --lib fuzz_origin_h1
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{Conn, MAX_HEAD};
use crate::native::client::{Connections, Open};

/// Header lines as they came, in order.
type Lines = Vec<(String, Vec<u8>)>;

/// What a client made of a response.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The head was refused.
    Refused,
    Answered {
        status: u16,
        version: http::Version,
        reason: Option<Vec<u8>>,
        headers: Lines,
        /// The body and its trailers, or `None` if it broke off.
        body: Option<(Vec<u8>, Option<Lines>)>,
    },
    /// Neither an answer nor a refusal within the time.
    Hung,
}

fn lines(headers: &http::HeaderMap) -> Lines {
    headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

async fn outcome<B>(resp: Response<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let (status, version) = (resp.status().as_u16(), resp.version());
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec());
    let headers = lines(resp.headers());
    let body = match resp.into_body().collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().map(lines);
            Some((collected.to_bytes().to_vec(), trailers))
        }
        Err(_) => None,
    };
    Outcome::Answered { status, version, reason, headers, body }
}

/// The origin: reads the request head, writes `pieces` one at a time
/// (yielding between them, so the client reads them apart), then closes.
async fn origin(mut io: DuplexStream, pieces: Vec<Vec<u8>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    for piece in pieces {
        if io.write_all(&piece).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    let _ = io.shutdown().await;
}

fn request(method: &Method) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = http::Uri::from_static("/");
    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("origin.test"));
    req
}

async fn hyper_reads(pieces: Vec<Vec<u8>>, method: &Method) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(origin(server, pieces));
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::Builder::new().max_buf_size(MAX_HEAD).handshake(TokioIo::new(client)).await
    else {
        return Outcome::Refused;
    };
    tokio::spawn(conn);
    match sender.send_request(request(method)).await {
        Ok(resp) => outcome(resp).await,
        Err(_) => Outcome::Refused,
    }
}

async fn we_read(pieces: Vec<Vec<u8>>, method: &Method) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(origin(server, pieces));
    let conn = Conn::new(Box::new(client), Open::new(Arc::new(Connections::default())), None);
    match conn.send(&mut request(method)).await {
        Ok(resp) => outcome(resp).await,
        Err(_) => Outcome::Refused,
    }
}

/// Both clients' outcomes for `response` cut at `cuts`.
fn both(response: &[u8], cuts: &[usize], method: &Method) -> (Outcome, Outcome) {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (response.len() + 1)).collect();
    at.extend([0, response.len()]);
    at.sort_unstable();
    at.dedup();
    let pieces: Vec<Vec<u8>> = at.windows(2).map(|w| response[w[0]..w[1]].to_vec()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let theirs = within(hyper_reads(pieces.clone(), method)).await;
        let ours = within(we_read(pieces, method)).await;
        (theirs, ours)
    })
}

async fn within(read: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), read).await.unwrap_or(Outcome::Hung)
}

/// Status lines: the first five well-formed, then tricks.
const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.0 200 OK",
    "HTTP/1.1 201 Made It",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified",
    "HTTP/1.1 101 Switching Protocols",
    "HTTP/1.1 404 Gone Fishing",
    "HTTP/1.1 599 x",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 1000 High",
    "HTTP/1.1 200",
    "HTTP/1.1 200 ",
    "HTTP/1.1  200 OK",
    "HTTP/2 200 OK",
    "HTTP/1.2 200 OK",
    "http/1.1 200 OK",
    "HTTP/1.1 2OO OK",
    "HTTP/1.1 200 O\u{7f}K",
    "HTTP/1.1 200 caf\u{e9}",
    "\r\nHTTP/1.1 200 OK",
    "ICY 200 OK",
];

const INFORMATIONAL: &[&str] = &[
    "",
    "",
    "",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
    "HTTP/1.1 102 P\r\n\r\nHTTP/1.1 100 C\r\n\r\n",
];

/// Header lines a well-behaved origin writes, each as on the wire
/// (without its CRLF).
const WELL_BEHAVED: &[&str] = &[
    "Content-Length: 5",
    "Content-Length: 0",
    "Content-Length: 12",
    "Content-Length: 5, 5",
    "Content-Length: 5\r\nContent-Length: 5",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: Chunked",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: identity",
    "Connection: close",
    "Connection: keep-alive",
    "Trailer: x-t",
    "X-Dup: 1\r\nX-Dup: 2",
    "Set-Cookie: a=1\r\nSet-Cookie: b=2",
    "Content-Type: text/plain",
    "Date: Mon, 07 Dec 2026 09:00:00 GMT",
    "X-Custom-Name-Longer-Than-Most: v",
    "X-High: caf\u{e9}",
    "X-Tab: a\tb",
    "X-Empty:",
    "X-Spaces:   padded   ",
];
/// Tricks of this side's own (the field-syntax ones are `h1_fields`').
const TRICKS: &[&str] = &[
    "Content-Length: 5, 6",
    "Content-Length: 5\r\nContent-Length: 6",
    "Content-Length: +5",
    "Content-Length: -1",
    "Content-Length: 5 ",
    "Content-Length:  5",
    "Content-Length: 0x5",
    "Content-Length: 5.0",
    "Content-Length: ",
    "Content-Length: 99999999999999999999999",
    "Content-Length: 18446744073709551615",
    "Content-Length: 18446744073709551613",
    "Content-Length : 5",
    "Content-Length\t: 5",
    "Transfer-Encoding: CHUNKED",
    "Transfer-Encoding:  chunked ",
    "Transfer-Encoding: chunked\t",
    "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
    "Transfer-Encoding: xchunked",
    "Transfer-Encoding: chunked;q=1",
    "Transfer-Encoding: ,chunked",
    "Transfer-Encoding: chunked,",
    "Transfer-Encoding : chunked",
    "Transfer-Encoding:\r\n chunked",
    " Transfer-Encoding: chunked",
    "Transfer_Encoding: chunked",
    "Connection: Keep-Alive, Upgrade",
    "Connection: close\r\nConnection: keep-alive",
];

/// A field: mostly well-behaved ones, a trick one time in four.
fn field() -> impl Strategy<Value = &'static str> {
    crate::native::h1_fields::field(WELL_BEHAVED, TRICKS)
}

/// A chunked body from chunk sizes and the tricks each chunk line plays.
fn chunked() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (0usize..20, 0u8..12);
    (prop::collection::vec(chunk, 0..5), 0u8..8, prop::collection::vec(field(), 0..3)).prop_map(
        |(chunks, last, trailers)| {
            let mut body = Vec::new();
            for (size, trick) in chunks.into_iter().filter(|(s, _)| *s > 0) {
                let line = match trick {
                    0 => format!("{size:X}\r\n"),
                    1 => format!("{size:x};ext=1\r\n"),
                    2 => format!("{size:x} \r\n"),
                    3 => format!("{size:x}\t;a\r\n"),
                    4 => format!("00{size:x}\r\n"),
                    5 => format!("{size:x}\n"),
                    6 => format!("0x{size:x}\r\n"),
                    7 => format!(" {size:x}\r\n"),
                    8 => format!("{size:x};a\nb\r\n"),
                    9 => format!("{:x}\r\n", size + 1),
                    10 => "ffffffffffffffffff\r\n".to_string(),
                    _ => format!("{size:x}\r\n"),
                };
                body.extend_from_slice(line.as_bytes());
                body.extend(std::iter::repeat_n(b'c', size));
                body.extend_from_slice(if trick == 11 { b"\n" } else { b"\r\n" });
            }
            body.extend_from_slice(match last {
                0 => b"0\r\n".as_slice(),
                1 => b"0;last\r\n",
                2 => b"000\r\n",
                3 => b"0\n",
                _ => b"0\r\n",
            });
            for t in trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            if last != 4 {
                body.extend_from_slice(b"\r\n");
            }
            body
        },
    )
}

/// A whole response: informational heads, a status line, fields, a body,
/// maybe a second response after it.
fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..INFORMATIONAL.len(),
        prop_oneof![3 => 0usize..5, 1 => 0..STATUS_LINES.len()],
        prop::collection::vec(field(), 0..5),
        0u8..8,
        prop_oneof![chunked(), prop::collection::vec(any::<u8>(), 0..24), "[a-z]{0,16}".prop_map(String::into_bytes)],
        any::<bool>(),
    )
        .prop_map(|(info, status, fields, many, body, second)| {
            let mut r = Vec::from(INFORMATIONAL[info].as_bytes());
            r.extend_from_slice(STATUS_LINES[status].as_bytes());
            r.extend_from_slice(b"\r\n");
            for f in fields {
                r.extend_from_slice(f.as_bytes());
                r.extend_from_slice(b"\r\n");
            }
            if many == 0 {
                // Past hyper's (and our) 100 header lines.
                r.extend_from_slice("X-Many: 1\r\n".repeat(101).as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r.extend_from_slice(&body);
            if second {
                r.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
            }
            r
        })
}

/// Bytes changed, inserted or removed at random places.
fn mutated(mut bytes: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    for (at, op, byte) in edits {
        let at = at % (bytes.len() + 1);
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    /// Both clients make the same of any response, whole or mutated, in any pieces.
    #[test]
    fn fuzz_origin_h1_against_hyper(
        response in response(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(0u8), Just(b':'), any::<u8>()]), 0..3),
        mutate in 0u8..4,
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        head in any::<bool>(),
    ) {
        let bytes = if mutate == 0 { mutated(response, edits) } else { response };
        let method = if head { Method::HEAD } else { Method::GET };
        let (theirs, ours) = both(&bytes, &cuts, &method);
        prop_assert_eq!(theirs, ours, "{} response:\n{:?}", method, String::from_utf8_lossy(&bytes));
    }
}

/// A few responses spelled out: each must come out as hyper reads it, and
/// as the test says (so the comparison above compares something).
#[test]
fn known_responses_read_as_hyper_reads_them() {
    let cases: &[(&[u8], Option<&[u8]>)] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Some(b"hello")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", Some(b"hello")),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Some(b"ok")),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", Some(b"until the end")),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", Some(b"")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", None),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", Some(b"broken")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", Some(b"broken")),
    ];
    for (response, expected) in cases {
        let (theirs, ours) = both(response, &[], &Method::GET);
        assert_eq!(theirs, ours, "{:?}", String::from_utf8_lossy(response));
        match (expected, &ours) {
            (None, Outcome::Refused) => {}
            (Some(b"broken"), Outcome::Answered { body: None, .. }) => {}
            (Some(want), Outcome::Answered { body: Some((got, _)), .. }) => assert_eq!(got, want),
            (_, other) => panic!("{:?}: {other:?}", String::from_utf8_lossy(response)),
        }
    }
    let (_, trailed) =
        both(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: 1\r\n\r\n", &[], &Method::GET);
    let Outcome::Answered { body: Some((_, Some(trailers))), .. } = trailed else { panic!("{trailed:?}") };
    assert_eq!(trailers, [("x-t".to_owned(), b"1".to_vec())]);
}
