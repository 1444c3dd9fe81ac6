//! Differential tests: a connection served as the node serves it (the
//! fast path, handing off to hyper's server when it does not take a
//! request) and one served by hyper's server alone get the same bytes —
//! written in random pieces, from request heads with the shapes the
//! request-smuggling literature uses, then mutated — and must agree: the
//! same requests reach the handler (method, target, version, header lines,
//! body bytes) and the client gets the same bytes back (the `date` value
//! aside). A second test gives both servers the same responses (statuses,
//! versions, reason phrases, framing and `connection` fields, bodies of
//! known and unknown length, short, long, with trailers or failing) and
//! requires the same bytes on the wire. `cargo test` runs 256 cases of
//! each; a longer run, as for the other fuzz targets:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release --lib fuzz_downstream_h1
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::Settings;
use crate::body::BoxError;
use crate::native::protocol::{Builders, Handlers, Protocol};

const SETTINGS: Settings = Settings { max_headers: 20, header_read_timeout: Duration::from_secs(30) };
/// hyper's read buffer bound in these tests: a little past the fast path's 8 KiB.
const MAX_BUF: usize = 8192 + 512;

/// A request as the handler saw it: method, target, version, header lines
/// in order, and the body (`None`: it broke off).
type Seen = (String, String, String, Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(SETTINGS.header_read_timeout)
        .max_buf_size(MAX_BUF)
        .max_headers(SETTINGS.max_headers);
    b
}

async fn seen<B: Body<Data = Bytes>>(req: Request<B>) -> Seen {
    let (parts, body) = req.into_parts();
    let lines = parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let body = body.collect().await.ok().map(|c| c.to_bytes().to_vec());
    (parts.method.to_string(), parts.uri.to_string(), format!("{:?}", parts.version), lines, body)
}

/// What a test's responses are made of.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    version: http::Version,
    reason: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    frames: Vec<Piece>,
    /// The length the body claims (`size_hint`), if it claims one.
    exact: Option<u64>,
}

#[derive(Debug, Clone)]
enum Piece {
    Data(&'static [u8]),
    /// The body waits once (waking itself) before what follows.
    Wait,
    Trailers,
    Fail,
}

/// A body that plays its pieces.
struct Played {
    pieces: VecDeque<Piece>,
    exact: Option<u64>,
}

impl Body for Played {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.pieces.pop_front() {
            None => Poll::Ready(None),
            Some(Piece::Data(d)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(d))))),
            Some(Piece::Wait) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Piece::Trailers) => {
                let mut t = http::HeaderMap::new();
                t.insert("x-t", http::HeaderValue::from_static("1"));
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Some(Piece::Fail) => Poll::Ready(Some(Err("the body failed".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.exact.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

impl Answer {
    fn ok() -> Self {
        Answer {
            status: 200,
            version: http::Version::HTTP_11,
            reason: None,
            headers: vec![("content-type", "text/plain")],
            frames: vec![Piece::Data(b"ok")],
            exact: Some(2),
        }
    }

    fn response(&self) -> Response<Played> {
        let mut resp = Response::new(Played { pieces: self.frames.clone().into(), exact: self.exact });
        *resp.status_mut() = http::StatusCode::from_u16(self.status).expect("a status");
        *resp.version_mut() = self.version;
        for (n, v) in &self.headers {
            resp.headers_mut().append(*n, http::HeaderValue::from_static(v));
        }
        if let Some(reason) = self.reason {
            resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
        }
        resp
    }
}

/// The client: writes `pieces` one at a time (yielding between them),
/// then reads until the server closes or has been quiet for a second
/// (time is paused: a quiet second passes at once).
async fn client(mut io: DuplexStream, pieces: Vec<Vec<u8>>) -> Vec<u8> {
    for piece in pieces {
        if io.write_all(&piece).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Each `date` value as `X`: the two servers read the clock apart.
fn undated(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(6).position(|w| w == b"date: ").map(|i| i + at) {
        let end = (i + 6 + 29).min(bytes.len());
        bytes.splice(i + 6..end, *b"X");
        at = i + 7;
    }
    bytes
}

type Record = Arc<Mutex<Vec<Seen>>>;

/// The bytes the client got and the requests the handler saw, from hyper
/// alone (`ours` false) or as the node serves (fast path, then hyper).
fn serve(pieces: Vec<Vec<u8>>, answer: &Answer, ours: bool) -> (Vec<u8>, Vec<Seen>) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime");
    runtime.block_on(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let record: Record = Arc::default();
        let (r, a) = (record.clone(), answer.clone());
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let (r, a) = (r.clone(), a.clone());
            async move {
                let s = seen(req).await;
                r.lock().expect("the record").push(s);
                Ok::<_, Infallible>(a.response())
            }
        });
        let server = if ours {
            let (r, a) = (record.clone(), answer.clone());
            let fast = move |req: Request<crate::native::NodeBody>| {
                let (r, a) = (r.clone(), a.clone());
                async move {
                    let s = seen(req).await;
                    r.lock().expect("the record").push(s);
                    a.response()
                }
            };
            let handlers = Handlers { service, fast, fast_settings: SETTINGS };
            let builders =
                Builders { http1: builder(), http2: hyper::server::conn::http2::Builder::new(TokioExecutor::new()) };
            tokio::spawn(async move {
                let _ = Protocol::new(server_io, false, handlers, builders).await;
            })
        } else {
            tokio::spawn(async move {
                let _ = builder().serve_connection(TokioIo::new(server_io), service).with_upgrades().await;
            })
        };
        let got = client(client_io, pieces).await;
        server.abort();
        let seen = record.lock().expect("the record").clone();
        (undated(got), seen)
    })
}

fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// Request lines: the first ones well-formed, then tricks.
const REQUEST_LINES: &[&str] = &[
    "GET / HTTP/1.1",
    "GET /v1/users/42?x=1 HTTP/1.1",
    "HEAD /a HTTP/1.1",
    "DELETE /a HTTP/1.1",
    "OPTIONS * HTTP/1.1",
    "POST /submit HTTP/1.1",
    "GET http://example.test/abs HTTP/1.1",
    "GET / HTTP/1.0",
    "CONNECT example.test:443 HTTP/1.1",
    "GET /a%20b HTTP/1.1",
    "GET /caf\u{e9} HTTP/1.1",
    "GET /a b HTTP/1.1",
    "GET  / HTTP/1.1",
    "GET / HTTP/1.2",
    "GET / HTTP/2.0",
    "get / HTTP/1.1",
    "G\u{1}T / HTTP/1.1",
    "GET /\u{7f} HTTP/1.1",
    "GET",
    "GET / http/1.1",
    "\r\nGET / HTTP/1.1",
    "PRI * HTTP/2.0",
    "GET example.test HTTP/1.1",
    "GET //a HTTP/1.1",
];
const WELL_FORMED_LINES: usize = 7;

/// Header lines a well-behaved client writes, as on the wire (without
/// their CRLF).
const WELL_BEHAVED: &[&str] = &[
    "Host: example.test",
    "Host: example.test",
    "Accept: */*",
    "User-Agent: test/1.0",
    "Connection: keep-alive",
    "Connection: close",
    "Content-Length: 5",
    "Content-Length: 0",
    "Transfer-Encoding: chunked",
    "X-Dup: 1\r\nX-Dup: 2",
    "Cookie: a=1; b=2",
    "X-High: caf\u{e9}",
    "X-Tab: a\tb",
    "X-Empty:",
];
/// Tricks of this side's own (the field-syntax ones are `h1_fields`').
const TRICKS: &[&str] = &[
    "Content-Length: 5, 5",
    "Content-Length: 5\r\nContent-Length: 6",
    "Content-Length: +5",
    "Content-Length: 5\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: xchunked",
    "Transfer-Encoding : chunked",
    " Transfer-Encoding: chunked",
    "Transfer_Encoding: chunked",
    "Upgrade: websocket",
    "Expect: 100-continue",
    "TE: trailers",
    "Connection: Keep-Alive, close",
    "Connection: close\r\nConnection: keep-alive",
    "Host: a\r\nHost: b",
    "Host: a@b",
    "Host:",
    "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// A field: mostly well-behaved ones, a trick one time in four.
fn field() -> impl Strategy<Value = &'static str> {
    crate::native::h1_fields::field(WELL_BEHAVED, TRICKS)
}

/// One request: its line, its fields (sometimes more than the bound, or a
/// head past the buffer), and a body of a few bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![3 => 0..WELL_FORMED_LINES, 1 => 0..REQUEST_LINES.len()];
    (line, prop::collection::vec(field(), 0..6), 0u8..10, prop::option::of(0usize..12)).prop_map(
        |(line, fields, extra, body)| {
            let mut head = format!("{}\r\n", REQUEST_LINES[line]);
            for f in fields {
                head.push_str(f);
                head.push_str("\r\n");
            }
            match extra {
                0 => (0..25).for_each(|i| head.push_str(&format!("x-many-{i}: v\r\n"))),
                1 => head.push_str(&format!("x-huge: {}\r\n", "h".repeat(9000))),
                _ => {}
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            if let Some(n) = body {
                bytes.extend(b"0\r\n\r\nhello, world".iter().take(n));
            }
            bytes
        },
    )
}

/// Up to three requests on one connection, some bytes mutated.
fn requests() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(request(), 1..4), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3))
        .prop_map(|(requests, mutations)| {
            let mut bytes = requests.concat();
            for (at, byte) in mutations {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        })
}

proptest! {
    #[test]
    fn fuzz_downstream_h1_requests_against_hyper(bytes in requests(), cuts in prop::collection::vec(any::<usize>(), 0..4)) {
        let pieces = cut(&bytes, &cuts);
        let theirs = serve(pieces.clone(), &Answer::ok(), false);
        let ours = serve(pieces, &Answer::ok(), true);
        prop_assert!(ours.1 == theirs.1, "requests seen: ours {} theirs {}", shown(&ours.1), shown(&theirs.1));
        let (mut ours, mut theirs) = (ours.0, theirs.0);
        if bytes.len() > super::READ_AT_LEAST {
            // A malformed head past the fast path's buffer, without its
            // end: hyper, handed it, parses it whole and answers 400 at
            // once; alone, it parses again only at an end of head, so it
            // answers 431 when its buffer fills, or 400 later, or nothing
            // if the client goes. Both refuse; which refusal may differ.
            for answered in [&mut ours, &mut theirs] {
                strip_refusal(answered);
            }
        }
        prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "bytes answered");
    }
}

/// Takes a last refusal (400 or 431, closing the connection) off the end.
fn strip_refusal(answered: &mut Vec<u8>) {
    for status in ["400 Bad Request", "431 Request Header Fields Too Large"] {
        let refusal = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: X\r\n\r\n");
        if answered.ends_with(refusal.as_bytes()) {
            answered.truncate(answered.len() - refusal.len());
        }
    }
}

/// Requests seen, short enough to read.
fn shown(seen: &[Seen]) -> String {
    let mut text = format!("{seen:?}");
    text.truncate(600);
    text
}

const STATUSES: &[u16] = &[200, 200, 201, 204, 304, 404, 500, 101, 103, 999];
const RESPONSE_FIELDS: &[(&str, &str)] = &[
    ("content-type", "text/plain"),
    ("content-length", "2"),
    ("content-length", "0"),
    ("content-length", "abc"),
    ("content-length", "7"),
    ("transfer-encoding", "chunked"),
    ("transfer-encoding", "gzip"),
    ("connection", "close"),
    ("connection", "keep-alive"),
    ("connection", "x-hop"),
    ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("trailer", "x-t"),
    ("set-cookie", "a=1"),
    ("set-cookie", "b=2"),
    ("x-high", "caf\u{e9}"),
];
const PIECES: &[Piece] =
    &[Piece::Data(b"ok"), Piece::Data(b""), Piece::Data(b"hello"), Piece::Wait, Piece::Trailers, Piece::Fail];

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::sample::select(STATUSES),
        prop::sample::select(
            &[http::Version::HTTP_11, http::Version::HTTP_11, http::Version::HTTP_10, http::Version::HTTP_2][..],
        ),
        prop::option::weighted(0.2, prop::sample::select(&["Fine", "Not So"][..])),
        prop::collection::vec(prop::sample::select(RESPONSE_FIELDS), 0..4),
        prop::collection::vec(prop::sample::select(PIECES), 0..4),
        prop::option::of(0u64..8),
    )
        .prop_map(|(status, version, reason, headers, frames, exact)| Answer {
            status,
            version,
            reason,
            headers,
            frames,
            exact,
        })
        // hyper's debug builds assert that a length header matches the
        // length a body claims; a handler that breaks that is not ours.
        .prop_filter("a length header agrees with the body's claim", |a| {
            a.headers
                .iter()
                .filter(|(n, _)| *n == "content-length")
                .all(|(_, v)| a.exact.is_none_or(|e| v.parse() == Ok(e)))
        })
}

proptest! {
    #[test]
    fn fuzz_downstream_h1_responses_against_hyper(
        answer in answer(),
        head in any::<bool>(),
        close in any::<bool>(),
    ) {
        let method = if head { "HEAD" } else { "GET" };
        let connection = if close { "connection: close\r\n" } else { "" };
        let bytes = format!("{method} /1 HTTP/1.1\r\nhost: a\r\n{connection}\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\n");
        let pieces = vec![bytes.into_bytes()];
        let theirs = serve(pieces.clone(), &answer, false);
        let ours = serve(pieces, &answer, true);
        prop_assert_eq!(&ours.1, &theirs.1, "requests seen");
        prop_assert_eq!(String::from_utf8_lossy(&ours.0), String::from_utf8_lossy(&theirs.0), "bytes answered");
    }
}

/// The comparison compares something: requests and responses with known
/// bytes, each as hyper's server answers them.
#[test]
fn known_exchanges_are_answered_as_hyper_answers_them() {
    let cases: &[(&str, Answer, &str)] = &[
        (
            "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
            Answer::ok(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\ndate: X\r\n\r\nok",
        ),
        (
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
            Answer::ok(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 2\r\ndate: X\r\n\r\nok",
        ),
        (
            "HEAD / HTTP/1.1\r\nhost: a\r\n\r\n",
            Answer::ok(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\ndate: X\r\n\r\n",
        ),
        (
            "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
            Answer {
                exact: None,
                frames: vec![Piece::Data(b"ok"), Piece::Wait, Piece::Data(b"hello")],
                ..Answer::ok()
            },
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ndate: X\r\n\r\n2\r\nok\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
            Answer { status: 204, reason: Some("Nothing"), ..Answer::ok() },
            "HTTP/1.1 204 Nothing\r\ncontent-type: text/plain\r\ndate: X\r\n\r\n",
        ),
        (
            // Two on one connection, the second with a body: on hyper's server.
            "GET /1 HTTP/1.1\r\nhost: a\r\n\r\nPOST /2 HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi",
            Answer::ok(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\ndate: X\r\n\r\nok\
             HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\ndate: X\r\n\r\nok",
        ),
        (
            "GET /a b HTTP/1.1\r\nhost: a\r\n\r\n",
            Answer::ok(),
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: X\r\n\r\n",
        ),
    ];
    for (request, answer, expected) in cases {
        let pieces = vec![request.as_bytes().to_vec()];
        let (theirs, ours) = (serve(pieces.clone(), answer, false), serve(pieces, answer, true));
        assert_eq!(String::from_utf8_lossy(&theirs.0), *expected, "hyper, {request:?}");
        assert_eq!(String::from_utf8_lossy(&ours.0), *expected, "ours, {request:?}");
        assert_eq!(ours.1, theirs.1, "{request:?}");
    }
}
