//! Request smuggling at the node, one classic case per test: raw bytes go to
//! the node over TCP, and a recording origin keeps every request it parsed
//! (method, path, body as hyper decoded it) and the exact head each one
//! crossed the wire with. Each test proves that one client byte stream is
//! never read as a different request sequence by the origin: a smuggled
//! `GET /admin` never reaches it as a request of its own, ambiguous framing
//! is refused with 400 and the connection closed (or, where RFC 9112 lets
//! Transfer-Encoding win, decoded, forwarded with one framing and the
//! connection closed), and legitimate pipelining stays in order.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::support::Node;

/// The longest any exchange may take.
const WAIT: Duration = Duration::from_secs(5);

/// The request an attacker wants the origin to read on its own.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nhost: gw.test\r\n\r\n";

/// `hello`, chunked (15 bytes).
const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";

// The recording origin.

/// What the origin saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// The head as it crossed the wire (empty if it could not be found).
    head: String,
    /// The body as hyper decoded it: `None` while it is being read, `Err`
    /// if it broke off.
    body: Option<Result<Bytes, String>>,
}

/// The bytes read on one connection.
type Wire = Arc<Mutex<Vec<u8>>>;

/// An HTTP/1.1 origin on loopback that records every request it parses and
/// every byte it reads.
#[derive(Clone, Default)]
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The bytes read on each connection, in accept order.
    wires: Arc<Mutex<Vec<Wire>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the origin");
        let port = listener.local_addr().expect("origin address").port();
        let recorder = Recorder { port, ..Recorder::default() };
        let accepting = recorder.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let wire = Arc::new(Mutex::new(Vec::new()));
                accepting.wires.lock().expect("wires").push(wire.clone());
                let (seen, cursor) = (accepting.seen.clone(), Arc::new(Mutex::new(0usize)));
                let tee = Tee { inner: stream, wire: wire.clone() };
                let service = service_fn(move |req| record(req, seen.clone(), wire.clone(), cursor.clone()));
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tee), service));
            }
        });
        recorder
    }

    /// Everything seen so far, once every body in reading has ended (a
    /// request the node gave up on ends when its connection does).
    async fn settled(&self) -> Vec<Seen> {
        // Bytes still in flight from the node arrive first.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.seen.lock().expect("seen").clone();
            if seen.iter().all(|s| s.body.is_some()) {
                return seen;
            }
            assert!(Instant::now() < deadline, "a body at the origin never ended: {seen:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every byte the origin read, all connections.
    fn wire(&self) -> String {
        let wires = self.wires.lock().expect("wires");
        wires.iter().map(|w| String::from_utf8_lossy(&w.lock().expect("wire")).into_owned()).collect()
    }
}

/// Records the request (head found on the wire from `cursor` on), reads its
/// body, and answers `seen {method} {path} {body length}`.
async fn record(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    wire: Wire,
    cursor: Arc<Mutex<usize>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (method, path) = (req.method().to_string(), req.uri().to_string());
    // hyper has read the whole head before calling us: it is on the wire.
    let head = {
        let wire = wire.lock().expect("wire");
        let mut at = cursor.lock().expect("cursor");
        let line = format!("{method} {path} HTTP/1.1\r\n");
        let start = find(&wire, line.as_bytes(), *at);
        let end = start.and_then(|s| find(&wire, b"\r\n\r\n", s));
        match (start, end) {
            (Some(s), Some(e)) => {
                *at = e + 4;
                String::from_utf8_lossy(&wire[s..e + 4]).into_owned()
            }
            _ => String::new(),
        }
    };
    let index = {
        let mut seen = seen.lock().expect("seen");
        seen.push(Seen { method: method.clone(), path: path.clone(), head, body: None });
        seen.len() - 1
    };
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string());
    let answer = match &body {
        Ok(bytes) => Response::new(Full::new(Bytes::from(format!("seen {method} {path} {}", bytes.len())))),
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"broken body")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
    };
    if let Some(entry) = seen.lock().expect("seen").get_mut(index) {
        entry.body = Some(body);
    }
    Ok(answer)
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// A TCP stream that keeps a copy of every byte it reads.
struct Tee {
    inner: TcpStream,
    wire: Wire,
}

impl AsyncRead for Tee {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.wire.lock().expect("wire").extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Tee {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// The node and the client.

/// A node sending every path, as is, to `origin`; PUT is not routed (405,
/// answered without reading the body).
fn node_for(origin: &Recorder) -> Node {
    let config = format!(
        r#"
[services.origin]
url = "http://127.0.0.1:{port}"
request_timeout = "5s"

[[routes]]
path = "/{{*rest}}"
methods = ["GET", "POST"]
service = "origin"
"#,
        port = origin.port
    );
    Node::start(&config, &[])
}

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    text: String,
    /// The node closed the connection (EOF or reset) within [`WAIT`].
    closed: bool,
}

impl Answer {
    /// The status codes of the responses, in order.
    fn statuses(&self) -> Vec<u16> {
        let text = &self.text;
        text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok()).collect()
    }

    /// Where the origin's answer for `what` (`POST /path`) is in the text.
    fn position(&self, what: &str) -> Option<usize> {
        self.text.find(&format!("seen {what} "))
    }
}

/// Writes `bytes` to the node on a new connection and reads until it
/// closes, or [`WAIT`] passes.
async fn exchange(node: &Node, bytes: &str) -> Answer {
    exchange_then(node, bytes, false).await
}

/// Like [`exchange`]; with `half_close`, the client's side is shut after
/// the bytes (no more will come).
async fn exchange_then(node: &Node, bytes: &str, half_close: bool) -> Answer {
    let mut stream = TcpStream::connect(node.addr).await.expect("connect to the node");
    stream.write_all(bytes.as_bytes()).await.expect("write the request bytes");
    if half_close {
        stream.shutdown().await.expect("shut the client's side");
    }
    let mut out = Vec::new();
    // Data read before a reset is kept in `out`; a reset is a close too.
    let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await.is_ok();
    Answer { text: String::from_utf8_lossy(&out).into_owned(), closed }
}

// Assertions shared by the cases.

/// Refused: one 400 that says `connection: close` (RFC 9112 §9.6), then
/// the connection closed.
fn assert_refused(what: &str, answer: &Answer) {
    assert_eq!(answer.statuses(), [400], "{what}: {answer:?}");
    assert!(answer.text.contains("\r\nconnection: close\r\n"), "{what}: no `connection: close`: {answer:?}");
    assert!(answer.closed, "{what}: the connection stayed open after the refusal: {answer:?}");
}

/// Refused by hyper while parsing the head: its bare 400 (no body), then
/// the close.
fn assert_head_refused(what: &str, answer: &Answer) {
    assert_refused(what, answer);
    let bare = answer.text.contains("\r\ncontent-length: 0\r\n") && answer.text.ends_with("\r\n\r\n");
    assert!(bare, "{what}: not hyper's bare 400: {answer:?}");
}

/// Refused by the node when hyper failed the body it was streaming to the
/// origin: the gateway's problem, then the close.
fn assert_body_refused(what: &str, answer: &Answer) {
    assert_refused(what, answer);
    assert!(answer.text.contains(r#""type":"urn:portcullis:problem:bad-request""#), "{what}: {answer:?}");
    assert!(answer.text.contains("the request body could not be read"), "{what}: {answer:?}");
}

/// One 200 for a request with Transfer-Encoding and Content-Length both:
/// hyper answers with `connection: close` and closes (RFC 9112 §6.1).
fn assert_served_then_closed(what: &str, answer: &Answer) {
    assert_eq!(answer.statuses(), [200], "{what}: {answer:?}");
    assert!(answer.text.contains("\r\nconnection: close\r\n"), "{what}: no `connection: close`: {answer:?}");
    assert!(answer.closed, "{what}: the connection must close after CL+TE: {answer:?}");
}

/// The origin got `head` framed by the node's own chunked encoding: the
/// client's Content-Length is gone (RFC 9112 §6.3 (3)).
fn assert_rechunked(what: &str, seen: &Seen) {
    let head = seen.head.to_ascii_lowercase();
    assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"), "{what}: {:?}", seen.head);
    assert!(!head.contains("\r\ncontent-length:"), "{what}: Content-Length was forwarded: {:?}", seen.head);
}

/// Not a request, not a byte reached the origin.
async fn assert_nothing_reached(origin: &Recorder) {
    let seen = origin.settled().await;
    assert!(seen.is_empty(), "refused requests reached the origin: {seen:#?}");
    assert!(origin.wire().is_empty(), "bytes reached the origin: {}", origin.wire());
}

/// The smuggled request never reached the origin as a request, and every
/// forwarded head has one framing: one Content-Length, or
/// Transfer-Encoding, never both (RFC 9112 §6.3).
fn assert_not_smuggled(what: &str, seen: &[Seen]) {
    assert!(seen.iter().all(|s| s.path != "/admin"), "{what}: the smuggled request reached the origin: {seen:#?}");
    for s in seen {
        let head = s.head.to_ascii_lowercase();
        assert!(!head.is_empty(), "{what}: no head on the wire for {} {}", s.method, s.path);
        let lengths = head.matches("\r\ncontent-length:").count();
        let encodings = head.matches("\r\ntransfer-encoding:").count();
        assert!(lengths + encodings <= 1, "{what}: forwarded with ambiguous framing: {:?}", s.head);
    }
}

/// The bodies the origin read whole, by path.
fn complete(seen: &[Seen]) -> Vec<(&str, &[u8])> {
    seen.iter().filter_map(|s| Some((s.path.as_str(), &s.body.as_ref()?.as_ref().ok()?[..]))).collect()
}

// The cases.

/// CL.TE: `Content-Length` (covering the chunked body and the smuggled
/// request after it) then `Transfer-Encoding: chunked`. RFC 9112 §6.3 (3):
/// Transfer-Encoding overrides Content-Length, and an intermediary that
/// forwards such a message must first remove Content-Length; §6.1: the
/// server must close the connection after responding. hyper does exactly
/// that: the body is the chunked one (`hello`), the origin gets it with one
/// framing, and the connection closes, so the bytes after the last chunk
/// are never read as a request.
#[tokio::test]
async fn cl_te_transfer_encoding_wins_content_length_is_dropped_and_the_connection_closes() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let body = format!("{HELLO_CHUNKED}{SMUGGLED}");
    let request = format!(
        "POST /clte HTTP/1.1\r\nhost: gw.test\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&node, &request).await;
    assert_served_then_closed("CL.TE", &answer);
    assert!(answer.text.ends_with("seen POST /clte 5"), "{answer:?}");

    let seen = origin.settled().await;
    assert_not_smuggled("CL.TE", &seen);
    assert_eq!(complete(&seen), [("/clte", &b"hello"[..])], "{seen:#?}");
    assert_rechunked("CL.TE", &seen[0]);
    assert!(!origin.wire().contains("/admin"), "the smuggled bytes crossed: {}", origin.wire());
}

/// TE.CL: `Transfer-Encoding: chunked` then a short `Content-Length: 4`
/// (just the chunk-size line), the smuggled request inside the chunk. By
/// RFC 9112 §6.3 (3) Transfer-Encoding wins: the smuggled bytes are body
/// data and reach the origin as body data of the one request, never as a
/// request (an origin honouring a forwarded `Content-Length: 4` would read
/// them as one); the connection closes after the response (§6.1).
#[tokio::test]
async fn te_cl_transfer_encoding_wins_and_the_smuggled_bytes_stay_body_data() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = format!(
        "POST /tecl HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n\
         {:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    let answer = exchange(&node, &request).await;
    assert_served_then_closed("TE.CL", &answer);
    assert!(answer.text.ends_with(&format!("seen POST /tecl {}", SMUGGLED.len())), "{answer:?}");

    let seen = origin.settled().await;
    assert_not_smuggled("TE.CL", &seen);
    assert_eq!(complete(&seen), [("/tecl", SMUGGLED.as_bytes())], "{seen:#?}");
    assert_rechunked("TE.CL", &seen[0]);
}

/// The TE.TE request: `Content-Length` covering exactly `hello` chunked,
/// the Transfer-Encoding lines given, then the smuggled request. A node
/// that ignored a Transfer-Encoding and framed by Content-Length would
/// read the smuggled request as the next one and send it to the origin.
fn te_te(request_line: &str, transfer_encoding: &str) -> String {
    format!(
        "{request_line}\r\nhost: gw.test\r\ncontent-length: {}\r\n{transfer_encoding}\r\n\r\n{HELLO_CHUNKED}{SMUGGLED}",
        HELLO_CHUNKED.len()
    )
}

/// TE.TE, obfuscations that do not end in a valid `chunked`: hyper answers
/// 400 and closes, and nothing reaches the origin. RFC 9112 §6.3 (4): a
/// request whose Transfer-Encoding does not end in chunked has no reliable
/// length, the server must answer 400 and close; §5.1: whitespace between
/// field name and colon must get 400; §5.2: obs-fold in a request is
/// rejected with 400 or replaced by spaces (hyper rejects); RFC 9110 §5.5:
/// a vertical tab is no field-value octet; RFC 9112 §6.1: Transfer-Encoding
/// in HTTP/1.0 is faulty framing.
#[tokio::test]
async fn te_te_obfuscated_transfer_encodings_are_refused_with_400() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let post = "POST /tete HTTP/1.1";
    let cases = [
        ("xchunked", post, "transfer-encoding: xchunked"),
        ("space before the colon", post, "transfer-encoding : chunked"),
        ("chunked, identity", post, "transfer-encoding: chunked, identity"),
        ("quoted", post, "transfer-encoding: \"chunked\""),
        ("vertical tab", post, "transfer-encoding: \x0bchunked"),
        ("chunked then identity", post, "transfer-encoding: chunked\r\ntransfer-encoding: identity"),
        ("obs-fold of the value", post, "transfer-encoding:\r\n chunked"),
        ("obs-fold after another value", post, "transfer-encoding: identity\r\n chunked"),
        ("obs-fold into another header", post, "x-padding: a\r\n transfer-encoding: chunked"),
        ("HTTP/1.0", "POST /tete HTTP/1.0", "transfer-encoding: chunked"),
    ];
    for (what, line, te) in cases {
        assert_head_refused(what, &exchange(&node, &te_te(line, te)).await);
    }
    assert_nothing_reached(&origin).await;
}

/// TE.TE, Transfer-Encodings whose last coding is `chunked` (a tab as
/// whitespace, the coding's case, a repeated line, `identity` before it):
/// valid framing to hyper. Transfer-Encoding wins over Content-Length
/// (RFC 9112 §6.3 (3)), the body is `hello`, the origin gets one framing,
/// and the connection closes (§6.1), so the smuggled request is never read.
#[tokio::test]
async fn te_te_transfer_encodings_ending_in_chunked_are_decoded_and_the_connection_closes() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let post = "POST /tete HTTP/1.1";
    let cases = [
        ("a tab before the value", "transfer-encoding:\tchunked"),
        ("upper case", "transfer-encoding: CHUNKED"),
        ("repeated line", "transfer-encoding: chunked\r\ntransfer-encoding: chunked"),
        ("identity then chunked", "transfer-encoding: identity\r\ntransfer-encoding: chunked"),
    ];
    for (what, te) in cases {
        let before = origin.settled().await.len();
        assert_served_then_closed(what, &exchange(&node, &te_te(post, te)).await);
        let seen = origin.settled().await;
        let new = &seen[before..];
        assert_not_smuggled(what, new);
        assert_eq!(complete(new), [("/tete", &b"hello"[..])], "{what}: {new:#?}");
        assert_rechunked(what, &new[0]);
    }
    assert!(!origin.wire().contains("/admin"), "the smuggled bytes crossed: {}", origin.wire());
}

/// CL.CL with different values, as two lines or one list: RFC 9112 §6.3
/// (5): an invalid Content-Length is unrecoverable, 400 and close.
#[tokio::test]
async fn cl_cl_content_lengths_that_disagree_are_refused_with_400() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let cases = [
        ("two lines", "content-length: 5\r\ncontent-length: 44"),
        ("two lines, the longer first", "content-length: 44\r\ncontent-length: 5"),
        ("one list", "content-length: 5, 44"),
    ];
    for (what, lengths) in cases {
        let request = format!("POST /clcl HTTP/1.1\r\nhost: gw.test\r\n{lengths}\r\n\r\nhello{SMUGGLED}");
        assert_head_refused(what, &exchange(&node, &request).await);
    }
    assert_nothing_reached(&origin).await;
}

/// CL.CL with equal values. RFC 9110 §8.6 lets a recipient take a list of
/// one repeated value as that value, or reject it (RFC 9112 §6.3 (5)
/// otherwise: 400 and close). hyper takes two equal
/// lines as one length (the origin gets `hello` with a single
/// `content-length: 5`, and a request after it is the next one, in order),
/// but refuses the one-line list `5, 5` with 400 and closes.
#[tokio::test]
async fn cl_cl_equal_lines_are_one_length_and_an_equal_list_is_refused() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = "POST /clcl HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello\
                   GET /next HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n";
    let answer = exchange(&node, request).await;
    assert_eq!(answer.statuses(), [200, 200], "{answer:?}");
    let (first, next) = (answer.position("POST /clcl"), answer.position("GET /next"));
    assert!(first.is_some() && first < next, "answered in order: {answer:?}");
    assert!(answer.closed, "{answer:?}");
    let seen = origin.settled().await;
    assert_not_smuggled("two equal lines", &seen);
    assert_eq!(complete(&seen), [("/clcl", &b"hello"[..]), ("/next", &b""[..])], "{seen:#?}");
    assert!(seen[0].head.to_ascii_lowercase().contains("\r\ncontent-length: 5\r\n"), "{:?}", seen[0].head);

    let request = format!("POST /clcl HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5, 5\r\n\r\nhello{SMUGGLED}");
    assert_head_refused("the list 5, 5", &exchange(&node, &request).await);
    assert_eq!(origin.settled().await.len(), 2, "the refused request reached the origin");
}

/// Chunk sizes a lenient parser might read differently (a sign, a `0x`
/// prefix, a hex number past 64 bits, whitespace inside or before the
/// size, a bare LF for CRLF, chunk data longer or shorter than its size, a
/// last chunk without its final CRLF and a request after it). RFC 9112 §7.1
/// allows only `1*HEXDIG` and CRLF; hyper's decoder fails the body, and the
/// node answers 400 (the body could not be read) and closes. The origin
/// may have seen the request's head, but never a complete body, and never
/// the smuggled request.
#[tokio::test]
async fn chunk_size_tricks_are_refused_and_nothing_is_smuggled() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let cases = [
        ("a plus sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("a minus sign", "-5\r\nhello\r\n0\r\n\r\n"),
        ("a 0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("past 64 bits", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("a space inside the size", "1 0\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ("a space before the size", " 5\r\nhello\r\n0\r\n\r\n"),
        ("a bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("a bare LF after the data", "5\r\nhello\n0\r\n\r\n"),
        ("a bare LF after the last chunk", "5\r\nhello\r\n0\n\r\n"),
        ("data longer than the size", "3\r\nhello\r\n0\r\n\r\n"),
        ("data shorter than the size", "8\r\nhello\r\n0\r\n\r\n"),
        ("no final CRLF", "5\r\nhello\r\n0\r\n"),
    ];
    for (what, body) in cases {
        let request =
            format!("POST /chunks HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\n\r\n{body}{SMUGGLED}");
        assert_body_refused(what, &exchange(&node, &request).await);
        let seen = origin.settled().await;
        assert_not_smuggled(what, &seen);
        assert!(complete(&seen).is_empty(), "{what}: a body the node could not read reached the origin: {seen:#?}");
    }
    assert!(!origin.wire().contains("/admin"), "the smuggled bytes crossed: {}", origin.wire());
}

/// Chunk extensions (RFC 9112 §7.1.1) are read past: the origin gets
/// exactly the decoded bytes, and none of the extensions (they belong to
/// the client's framing, which the node does not forward).
#[tokio::test]
async fn chunk_extensions_are_accepted_and_the_body_forwarded_exactly() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = "POST /ext HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
                   5;foo=bar\r\nhello\r\n6;name=\"quoted;value\";flag\r\n world\r\n0;last=yes\r\n\r\n";
    let answer = exchange(&node, request).await;
    assert_eq!(answer.statuses(), [200], "{answer:?}");
    assert!(answer.text.ends_with("seen POST /ext 11"), "{answer:?}");
    assert!(answer.closed, "{answer:?}");
    let seen = origin.settled().await;
    assert_not_smuggled("chunk extensions", &seen);
    assert_eq!(complete(&seen), [("/ext", &b"hello world"[..])], "{seen:#?}");
    assert!(!origin.wire().contains("foo=bar"), "the client's chunk extensions crossed: {}", origin.wire());
}

/// Trailers after the last chunk end the body (RFC 9112 §7.1.2); a request
/// after the CRLF that ends them is the next pipelined request: answered
/// on the same connection, second, and not merged into the body. The
/// trailer fields are not merged into the forwarded head either (RFC 9110
/// §6.5.1).
#[tokio::test]
async fn trailers_end_the_body_and_a_request_after_them_is_the_next_one() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = "POST /trailers HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\nx-checksum: abc\r\nx-other: def\r\n\r\n\
                   GET /second HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n";
    let answer = exchange(&node, request).await;
    assert_eq!(answer.statuses(), [200, 200], "{answer:?}");
    let (first, second) = (answer.position("POST /trailers"), answer.position("GET /second"));
    assert!(first.is_some() && first < second, "answered in order: {answer:?}");
    assert!(answer.text.contains("seen POST /trailers 5"), "{answer:?}");
    assert!(answer.closed, "{answer:?}");
    let seen = origin.settled().await;
    assert_not_smuggled("trailers", &seen);
    assert_eq!(complete(&seen), [("/trailers", &b"hello"[..]), ("/second", &b""[..])], "{seen:#?}");
    assert!(!seen[0].head.contains("x-checksum"), "a trailer became a header: {:?}", seen[0].head);
}

/// A `Content-Length` body followed by the bytes of another request is two
/// requests, answered in order on the one connection (pipelining, RFC 9112
/// §9.3.2); the origin sees exactly those two, with their own bodies.
#[tokio::test]
async fn a_content_length_body_then_another_request_is_two_requests_in_order() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = "POST /first HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5\r\n\r\nhello\
                   POST /second HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye";
    let answer = exchange(&node, request).await;
    assert_eq!(answer.statuses(), [200, 200], "{answer:?}");
    let (first, second) = (answer.position("POST /first"), answer.position("POST /second"));
    assert!(first.is_some() && first < second, "answered in order: {answer:?}");
    assert!(answer.closed, "{answer:?}");
    let seen = origin.settled().await;
    assert_not_smuggled("pipelined", &seen);
    assert_eq!(complete(&seen), [("/first", &b"hello"[..]), ("/second", &b"bye"[..])], "{seen:#?}");
}

/// A request the node answers itself without reading its body (a PUT the
/// route does not take: 405): the body, which holds the bytes of a request,
/// is skipped by its declared length or chunked framing, never read as a
/// request; the request after it is served.
#[tokio::test]
async fn a_body_the_node_does_not_read_is_skipped_not_read_as_a_request() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let after = "GET /after HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n";
    let framings = [
        ("content-length", format!("content-length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())),
        ("chunked", format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len())),
    ];
    for (what, framed) in framings {
        let before = origin.settled().await.len();
        let answer = exchange(&node, &format!("PUT /early HTTP/1.1\r\nhost: gw.test\r\n{framed}{after}")).await;
        assert_eq!(answer.statuses(), [405, 200], "{what}: {answer:?}");
        assert!(answer.position("GET /after").is_some(), "{what}: {answer:?}");
        assert!(answer.closed, "{what}: {answer:?}");
        let seen = origin.settled().await;
        let new = &seen[before..];
        assert_not_smuggled(what, new);
        assert_eq!(complete(new), [("/after", &b""[..])], "{what}: {new:#?}");
    }
}

/// A chunked body whose last chunk never gets its final CRLF, the client's
/// side then shut: the node answers 400 (the body could not be read) and
/// closes; the origin, which may have had the head, never gets the body
/// whole.
#[tokio::test]
async fn a_chunked_body_cut_off_before_its_final_crlf_is_refused_and_never_forwarded_whole() {
    let origin = Recorder::start().await;
    let node = node_for(&origin);
    let request = "POST /cut HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
    assert_body_refused("cut off", &exchange_then(&node, request, true).await);
    let seen = origin.settled().await;
    assert_not_smuggled("cut off", &seen);
    assert!(complete(&seen).is_empty(), "a body cut off reached the origin whole: {seen:#?}");
}
