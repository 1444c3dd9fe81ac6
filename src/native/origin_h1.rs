//! HTTP/1.1 to origins, written and read in the task that serves the
//! client: a request without a body goes out with one write on a kept
//! connection, its response head is parsed with `httparse` from a buffer
//! the connection keeps for its life, and the response body is read from
//! the socket as the client's side polls it, the connection going back to
//! its pool the moment the body's last byte is read. No channel, oneshot
//! or connection task stands between the two sides (hyper's client
//! dispatch had all three per request).
//!
//! It refuses what hyper's client refuses, alike: the same parser and
//! settings, the same framing rules (RFC 9112 §6.3 as hyper reads them) and
//! the same chunked decoder states and limits; the differential tests
//! (`origin_h1/tests.rs`) feed both the same responses and require the same
//! outcome. Requests
//! with a body, upgrades, HTTP/1.0 and HTTP/2 go over hyper's client
//! (`client`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::client::{Home, Open};
use crate::shared::headers::has_token;

/// A byte stream to an origin, plain or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Stream for T {}

/// hyper's client limits, kept so that both paths refuse alike: header
/// lines in a response head, and the head's size (`max_buf_size`).
const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEAD: usize = 1 << 20;
/// Read at least this much at a time (hyper's first buffer size).
const READ_AT_LEAST: usize = 8192;
/// Chunk-extension bytes in a whole body, and trailer bytes (hyper's).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
const TRAILERS_LIMIT: usize = 16 * 1024;

/// A connection to an origin: its buffers, where it goes back, and the
/// response being read on it. Boxed once, when opened: the body, the pool
/// and the exchange move a pointer, not the connection (a response body
/// of its size, moved through the pipeline's futures, cost ~10k
/// instructions a request in copies).
pub(crate) struct Conn {
    wire: Wire,
    write: Vec<u8>,
    /// Where it goes back once a response is read (`None`: closed then).
    home: Option<Home>,
    framing: Framing,
    keep_alive: bool,
    _open: Open,
}

/// Why an exchange failed; `unsent`: the request never left (the kept
/// connection had closed), so another connection may take it.
pub(super) struct Failed {
    pub(super) unsent: bool,
    pub(super) why: String,
}

impl Failed {
    fn new(why: impl Into<String>) -> Self {
        Self { unsent: false, why: why.into() }
    }
}

/// Whether this path can carry `req`: no body, no upgrade (else hyper's
/// client does).
pub(super) fn carries<B: http_body::Body>(req: &Request<B>) -> bool {
    req.body().is_end_stream()
        && req.version() != Version::HTTP_10
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(UPGRADE)
}

impl Conn {
    pub(super) fn new(io: Box<dyn Stream>, open: Open, home: Option<Home>) -> Box<Self> {
        Box::new(Self {
            wire: Wire { io, read: BytesMut::with_capacity(READ_AT_LEAST), at: Vec::new() },
            write: Vec::new(),
            home,
            framing: Framing::Done,
            keep_alive: false,
            _open: open,
        })
    }

    pub(super) fn home(&mut self) -> &mut Option<Home> {
        &mut self.home
    }

    /// Whether a kept connection can no longer carry a request: the origin
    /// closed it, or sent bytes no request asked for. Looks without waiting.
    pub(super) fn is_closed(&mut self) -> bool {
        if !self.wire.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        !matches!(Pin::new(&mut self.wire.io).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Sends a request without a body (see [`carries`]) and reads its
    /// response head; the response body reads the rest from this
    /// connection, and gives it back to its home once read (if it may be
    /// kept). Once the request is written its header map holds the
    /// response's, as in hyper: grown to the request's size, it needs no
    /// allocation again.
    pub(super) async fn send<B>(mut self: Box<Self>, req: &mut Request<B>) -> Result<Response<Body>, Failed> {
        self.encode(req);
        let written = async {
            self.wire.io.write_all(&self.write).await?;
            self.wire.io.flush().await
        };
        if let Err(e) = written.await {
            return Err(Failed { unsent: true, why: format!("writing the request: {e}") });
        }
        let close_asked = req.headers().get_all(CONNECTION).iter().any(|v| has_token(v, "close"));
        let mut headers = std::mem::take(req.headers_mut());
        headers.clear();
        let head = self.read_head(req.method(), headers).await?;
        self.framing = head.framing;
        self.keep_alive = head.keep_alive && !close_asked;
        let mut body = Body { conn: Some(self), failed: None };
        body.settle();
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            resp.extensions_mut().insert(reason);
        }
        Ok(resp)
    }

    /// The request head as hyper's client writes it for a request without
    /// a body: its own header lines, in order, less `Transfer-Encoding`.
    fn encode<B>(&mut self, req: &Request<B>) {
        let w = &mut self.write;
        w.clear();
        w.extend_from_slice(req.method().as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in req.headers() {
            if name == TRANSFER_ENCODING {
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
    }

    /// Reads until a final response head is complete (skipping 1xx heads).
    async fn read_head(&mut self, method: &Method, mut headers: HeaderMap) -> Result<Head, Failed> {
        let wire = &mut self.wire;
        loop {
            if !wire.read.is_empty()
                && let Some(head) = parse(&mut wire.read, &mut wire.at, method, &mut headers)?
            {
                return Ok(head);
            }
            if wire.read.len() >= MAX_HEAD {
                return Err(Failed::new("message head is too large"));
            }
            match std::future::poll_fn(|cx| wire.poll_fill(cx)).await {
                Ok(0) => return Err(Failed::new("connection closed before message completed")),
                Ok(_) => {}
                Err(e) => return Err(Failed::new(format!("reading the response: {e}"))),
            }
        }
    }
}

/// A connection's byte stream, what has been read from it, and where a
/// head's fields were found in it (kept, so no head clears a new array).
struct Wire {
    io: Box<dyn Stream>,
    read: BytesMut,
    at: Vec<Field>,
}

/// Where a field's name and value sit in its head: start and end of each.
type Field = (usize, usize, usize, usize);

impl Wire {
    /// Reads more into the buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_AT_LEAST / 4 {
            self.read.reserve(READ_AT_LEAST);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Up to `max` bytes at hand, reading if none are; empty at the end of the stream.
    fn poll_bytes(&mut self, cx: &mut Context<'_>, max: u64) -> Poll<io::Result<Bytes>> {
        if self.read.is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(Bytes::new()));
        }
        let n = usize::try_from(max).unwrap_or(usize::MAX).min(self.read.len());
        Poll::Ready(Ok(self.read.split_to(n).freeze()))
    }

    /// The next byte, reading if none is at hand; `None` at the end of the stream.
    fn poll_byte(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<u8>>> {
        if self.read.is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(self.read.get_u8())))
    }
}

/// A final response head, and how its body is framed.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a response head off the front of `buf`, its fields into
/// `headers` (empty): `None` while it is incomplete. Informational heads
/// (1xx but 101) are taken off and skipped.
fn parse(
    buf: &mut BytesMut,
    at: &mut Vec<Field>,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<Option<Head>, Failed> {
    loop {
        let mut lines = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut lines)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Failed::new(format!("invalid HTTP response parsed: {e}"))),
        };
        let code = res.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| Failed::new("invalid HTTP status-code parsed"))?;
        let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        let reason = res.reason.unwrap_or_default();
        let reason = (Some(reason) != status.canonical_reason())
            .then(|| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok())
            .flatten();
        // Where each line's name and value sit in the head, to slice them
        // out of it once it is taken off the buffer.
        let base = buf.as_ptr() as usize;
        at.clear();
        at.extend(res.headers.iter().map(|line| {
            let (name, value) = (line.name.as_ptr() as usize - base, line.value.as_ptr() as usize - base);
            (name, name + line.name.len(), value, value + line.value.len())
        }));
        let head = buf.split_to(len).freeze();
        headers.clear();
        headers.reserve(at.len());
        let mut keep_alive = version == Version::HTTP_11;
        let mut saw_close = false;
        for &(name_at, name_end, value_at, value_end) in at.iter() {
            let name = HeaderName::from_bytes(&head[name_at..name_end])
                .map_err(|_| Failed::new("invalid HTTP header parsed"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_end))
                .map_err(|_| Failed::new("invalid HTTP header parsed"))?;
            if name == CONNECTION {
                // Once a line asks to close, a later `keep-alive` does not undo it.
                if saw_close || has_token(&value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(&value, "keep-alive");
                }
            }
            headers.append(name, value);
        }
        let framing = match code {
            101 => Some((Framing::Done, false)),
            100 | 102..=199 => None,
            204 | 304 => Some((Framing::Done, true)),
            _ if method == Method::HEAD => Some((Framing::Done, true)),
            _ => Some((framing(headers, version)?, true)),
        };
        if let Some((framing, reusable)) = framing {
            // An HTTP/1.0 origin is not kept: hyper would speak 1.0 to it after.
            let keep_alive = keep_alive && reusable && version == Version::HTTP_11;
            let headers = std::mem::take(headers);
            return Ok(Some(Head { status, version, headers, reason, framing, keep_alive }));
        }
        if buf.is_empty() {
            return Ok(None);
        }
    }
}

/// How a response body is framed (RFC 9112 §6.3, as hyper's client reads it).
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Failed> {
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        if version == Version::HTTP_10 {
            return Err(Failed::new("unexpected transfer-encoding parsed"));
        }
        let chunked = last
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked { Framing::Chunked(Chunked::default()) } else { Framing::Eof });
    }
    if !headers.contains_key(CONTENT_LENGTH) {
        return Ok(Framing::Eof);
    }
    match content_length(headers) {
        Some(len) if len <= u64::MAX - 2 => Ok(Framing::Length(len)),
        Some(_) => Err(Failed::new("message head is too large")),
        None => Err(Failed::new("invalid content-length parsed")),
    }
}

/// Every `Content-Length` value (lines and comma-separated lists) as one
/// length: `None` unless all are the same digits.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for line in headers.get_all(CONTENT_LENGTH) {
        for v in line.to_str().ok()?.split(',') {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = v.parse().ok()?;
            if *length.get_or_insert(n) != n {
                return None;
            }
        }
    }
    length
}

/// How much of a response body is left to read.
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// Until the origin closes the connection.
    Eof,
    Done,
}

/// A response body read from its connection as it is polled; a failure
/// is told one poll after it is found, so that what came before it is
/// flushed to the client first (the head and the bytes read: hyper's
/// server writes nothing it holds once a body fails).
pub(crate) struct Body {
    conn: Option<Box<Conn>>,
    failed: Option<io::Error>,
}

impl Body {
    /// Once the body is read, its connection goes back to the pool (if
    /// nothing follows it and it may be kept) or closes.
    fn settle(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let done = match &conn.framing {
            Framing::Done | Framing::Length(0) => true,
            Framing::Chunked(c) => c.state == State::End && c.trailers.is_none(),
            _ => false,
        };
        if !done {
            return;
        }
        conn.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && conn.keep_alive
            && conn.wire.read.is_empty()
        {
            Home::keep(conn);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(conn) = this.conn.as_deref_mut() else { return Poll::Ready(None) };
        let Conn { wire, framing, keep_alive, .. } = conn;
        let polled = match framing {
            Framing::Done => Ok(None),
            Framing::Length(left) => match ready!(wire.poll_bytes(cx, *left)) {
                Ok(data) if data.is_empty() => Err(incomplete()),
                Ok(data) => {
                    *left -= data.len() as u64;
                    Ok(Some(Frame::data(data)))
                }
                Err(e) => Err(e),
            },
            Framing::Chunked(chunked) => ready!(chunked.poll_frame(cx, wire)),
            Framing::Eof => match ready!(wire.poll_bytes(cx, u64::MAX)) {
                Ok(data) if data.is_empty() => {
                    *keep_alive = false;
                    *framing = Framing::Done;
                    Ok(None)
                }
                Ok(data) => Ok(Some(Frame::data(data))),
                Err(e) => Err(e),
            },
        };
        match polled {
            Ok(frame) => {
                this.settle();
                Poll::Ready(frame.map(Ok))
            }
            Err(e) => {
                this.conn = None;
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none()
            && self.conn.as_ref().is_none_or(|c| matches!(c.framing, Framing::Done | Framing::Length(0)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.conn.as_ref().map(|c| &c.framing) {
            _ if self.failed.is_some() => SizeHint::default(),
            Some(Framing::Length(left)) => SizeHint::with_exact(*left),
            None | Some(Framing::Done) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn incomplete() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "end of file before message length reached")
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Where a chunked body's decoder is: hyper's states, one byte at a time
/// outside chunk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// A chunked body's decoder (RFC 9112 §7.1, with hyper's leniencies and limits).
#[derive(Default)]
struct Chunked {
    state: State,
    size: u64,
    extensions: u64,
    trailers: Option<BytesMut>,
    trailer_lines: usize,
}

impl Chunked {
    /// The next data or trailers frame; `None` at the end of the body.
    fn poll_frame(&mut self, cx: &mut Context<'_>, conn: &mut Wire) -> Poll<io::Result<Option<Frame<Bytes>>>> {
        loop {
            if self.state == State::Data {
                let data = ready!(conn.poll_bytes(cx, self.size))?;
                if data.is_empty() {
                    return Poll::Ready(Err(incomplete()));
                }
                self.size -= data.len() as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Poll::Ready(Ok(Some(Frame::data(data))));
            }
            if self.state == State::End {
                return Poll::Ready(match self.trailers.take() {
                    Some(trailers) => trailers_of(&trailers, self.trailer_lines).map(|t| Some(Frame::trailers(t))),
                    None => Ok(None),
                });
            }
            let Some(byte) = ready!(conn.poll_byte(cx))? else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "unexpected EOF during chunk size line",
                )));
            };
            self.state = self.step(byte)?;
        }
    }

    /// The state after `byte` (any state but `Data` and `End`).
    fn step(&mut self, byte: u8) -> io::Result<State> {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b + 10 - b'a'),
            b'A'..=b'F' => Some(b + 10 - b'A'),
            _ => None,
        };
        Ok(match (self.state, byte) {
            (State::Start | State::Size, b) if digit(b).is_some() => {
                let d = u64::from(digit(b).unwrap_or_default());
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or_else(|| invalid("invalid chunk size: overflow"))?;
                State::Size
            }
            (State::Start, _) => return Err(invalid("Invalid chunk size line: missing size digit")),
            (State::Size | State::SizeLws, b'\t' | b' ') => State::SizeLws,
            (State::Size | State::SizeLws, b';') => State::Extension,
            (State::Size | State::SizeLws | State::Extension, b'\r') => State::SizeLf,
            (State::Size, _) => return Err(invalid("Invalid chunk size line: Invalid Size")),
            (State::SizeLws, _) => return Err(invalid("Invalid chunk size linear white space")),
            (State::Extension, b'\n') => return Err(invalid("invalid chunk extension contains newline")),
            (State::Extension, _) => {
                self.extensions += 1;
                if self.extensions >= EXTENSIONS_LIMIT {
                    return Err(invalid("chunk extensions over limit"));
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
            (State::SizeLf, b'\n') => State::Data,
            (State::SizeLf, _) => return Err(invalid("Invalid chunk size LF")),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return Err(invalid("Invalid chunk body CR")),
            (State::DataLf, b'\n') => State::Start,
            (State::DataLf, _) => return Err(invalid("Invalid chunk body LF")),
            (State::Trailer, b) => {
                self.trailer_byte(b)?;
                if b == b'\r' { State::TrailerLf } else { State::Trailer }
            }
            (State::TrailerLf, b'\n') => {
                if self.trailer_lines >= MAX_HEADERS {
                    return Err(invalid("chunk trailers count overflow"));
                }
                self.trailer_lines += 1;
                self.trailer_byte(b'\n')?;
                State::EndCr
            }
            (State::TrailerLf, _) => return Err(invalid("Invalid trailer end LF")),
            (State::EndCr, b'\r') => {
                if self.trailers.is_some() {
                    self.trailer_byte(b'\r')?;
                }
                State::EndLf
            }
            (State::EndCr, b) => {
                match &mut self.trailers {
                    None => self.trailers = Some(BytesMut::from(&[b][..])),
                    Some(_) => self.trailer_byte(b)?,
                }
                State::Trailer
            }
            (State::EndLf, b'\n') => {
                if self.trailers.is_some() {
                    self.trailer_byte(b'\n')?;
                }
                State::End
            }
            (State::EndLf, _) => return Err(invalid("Invalid chunk end LF")),
            (State::Data | State::End, _) => return Err(invalid("chunk decoder out of step")),
        })
    }

    fn trailer_byte(&mut self, byte: u8) -> io::Result<()> {
        let trailers = self.trailers.get_or_insert_with(BytesMut::new);
        trailers.extend_from_slice(&[byte]);
        if trailers.len() >= TRAILERS_LIMIT {
            return Err(invalid("chunk trailers bytes over limit"));
        }
        Ok(())
    }
}

/// The trailer fields of a chunked body, parsed as hyper parses them.
fn trailers_of(buf: &[u8], lines: usize) -> io::Result<HeaderMap> {
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "Invalid header name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "Invalid header value"))?;
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(io::Error::new(io::ErrorKind::InvalidInput, "Partial header")),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
    }
}

#[cfg(test)]
mod tests;
