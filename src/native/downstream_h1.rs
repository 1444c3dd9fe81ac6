//! HTTP/1.1 from clients on a fast path of our own, in the connection's
//! task: request heads parsed with `httparse` (hyper's parser, with its
//! settings) from a buffer kept for the connection's life into a header
//! map kept with it, each response head and its first bytes written with
//! one write.
//!
//! It takes only what it understands whole: an HTTP/1.1 request without a
//! body (no `Content-Length`, no `Transfer-Encoding`), without `Upgrade`,
//! `Expect` or `TE`, not `CONNECT`, whose head fits hyper's limits. Anything
//! else — another request, a head hyper would refuse, a head past its
//! buffer — hands the connection, with the bytes already read, to hyper's
//! server ([`Ended::HandOff`]), which serves it from then on. So every
//! refusal is hyper's own. What it answers, it answers as hyper's server
//! would: the same head bytes (framing, `date`, `connection`), the same
//! keep-alive rules, the same header-read deadline (from when a head is
//! awaited, idle time included), the request cancelled when the client
//! goes away mid-request. The differential tests (`downstream_h1/tests.rs`)
//! feed both the same bytes and responses and require the same outcome.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::NodeBody;
use crate::body::BoxError;
use crate::ports::Clock;
use crate::shared::headers::has_token;

/// Read at least this much at a time (hyper's first buffer size).
const READ_AT_LEAST: usize = 8192;
/// Header lines the fast path parses; a head with more goes to hyper,
/// which applies the configured bound.
const FAST_HEADERS: usize = 128;
/// hyper's bound on a request target.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Body chunks up to this size are copied behind the head (one write);
/// larger ones go out in a vectored write.
const COPY_AT_MOST: usize = 4096;

/// The bounds hyper's server is built with (`listeners::connection_builders`)
/// that the fast path applies too. (hyper's `max_buf_size` is never below
/// 8 KiB, and a head longer than that is hyper's to read.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `max_headers`: header lines in a head.
    pub(crate) max_headers: usize,
    /// `header_read_timeout`: from when a head is awaited to its end.
    pub(crate) header_read_timeout: Duration,
}

/// How the fast path left a connection.
pub(crate) enum Ended<IO> {
    /// Closed (by the client, by a response that closes it, or asked to).
    Closed,
    /// For hyper's server from here on, with the bytes already read.
    HandOff(IO, Bytes),
}

/// Set by the connection's owner to finish the request in flight and close
/// (a drain, an idle deadline); an idle connection closes at once.
#[derive(Debug, Default)]
pub(crate) struct Closing(AtomicBool);

impl Closing {
    pub(crate) fn close(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn asked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("read header from client timeout")]
    HeaderTimeout,
    #[error("connection closed before message completed")]
    Incomplete,
    #[error("user body write aborted: early end, expected {0} more bytes")]
    BodyAborted(u64),
    #[error("error from user's Body stream: {0}")]
    Body(BoxError),
    #[error("user header is invalid")]
    Header,
    #[error("response has 1xx status code, not supported by server")]
    Informational,
}

/// Serves requests on `io` until it closes or hands off to hyper.
pub(crate) async fn serve<IO, F, Fut, B>(
    mut io: IO,
    mut handler: F,
    settings: Settings,
    closing: Arc<Closing>,
) -> Result<Ended<IO>, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<NodeBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut read = BytesMut::with_capacity(READ_AT_LEAST);
    let mut write = Vec::with_capacity(1024);
    let mut cached = HeaderMap::new();
    let mut at = Vec::new();
    let mut deadline = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        let mut waited = false;
        // Bytes at hand when the head was last found incomplete: as hyper,
        // it is parsed again only once new bytes could end it.
        let mut partial = None;
        let head = loop {
            if !read.is_empty() && partial.is_none_or(|at| may_end(&read, at)) {
                match parse(&mut read, &settings, &mut cached, &mut at) {
                    Parsed::Request(head) => break head,
                    Parsed::Other => return Ok(Ended::HandOff(io, read.freeze())),
                    Parsed::Partial => {}
                }
            }
            if read.len() >= READ_AT_LEAST {
                // Longer heads are hyper's, read as it reads them.
                return Ok(Ended::HandOff(io, read.freeze()));
            }
            partial = (!read.is_empty()).then_some(read.len());
            if !waited {
                // hyper's header-read deadline runs from here, idle time included.
                waited = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + settings.header_read_timeout);
            }
            let room = READ_AT_LEAST - read.len();
            let filled = poll_fn(|cx| {
                if closing.asked() {
                    return Poll::Ready(Ok(None));
                }
                if let Poll::Ready(n) = fill(&mut io, &mut read, room, cx) {
                    return Poll::Ready(n.map(Some));
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::other(Failed::HeaderTimeout)));
                }
                Poll::Pending
            })
            .await?;
            match filled {
                None => return close(io).await,
                // Only empty lines before the end: a clean close, as in hyper.
                Some(0) if read.iter().all(|b| matches!(b, b'\r' | b'\n')) => return close(io).await,
                Some(0) => return Err(Failed::Incomplete.into()),
                Some(_) => {}
            }
        };
        let method = head.method().clone();
        let keep_alive = !head.headers().get_all(CONNECTION).iter().any(|v| has_token(v, "close"));
        let answered = watch_eof(&mut io, &mut read, std::pin::pin!(handler(head))).await?;
        let (mut parts, body) = answered.into_parts();
        let length = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact().map_or(Length::Unknown, Length::Known))
        };
        write.clear();
        let encoded = encode_head(&mut parts, length, &method, keep_alive && !closing.asked(), &mut write);
        parts.headers.clear();
        cached = parts.headers;
        let mut encoder = match encoded {
            Ok(encoder) => encoder,
            Err(Failed::Informational) => {
                flush(&mut io, &mut write, None).await?;
                return Err(Failed::Informational.into());
            }
            Err(e) => return Err(e.into()),
        };
        let reuse = send_body(&mut io, &mut read, &mut write, &mut encoder, body).await?;
        if !reuse || closing.asked() {
            return close(io).await;
        }
    }
}

/// Whether bytes read since `at` could end a head (hyper's test before it
/// parses a partial head again).
fn may_end(read: &[u8], at: usize) -> bool {
    let new = &read[at.saturating_sub(3)..];
    new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
}

/// Closes the write side, as hyper does before it drops a connection.
async fn close<IO: AsyncWrite + Unpin>(mut io: IO) -> Result<Ended<IO>, BoxError> {
    let _ = io.shutdown().await;
    Ok(Ended::Closed)
}

/// Reads up to `room` bytes more into `read`; 0 at the end of the stream.
fn fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_AT_LEAST / 4 {
        read.reserve(READ_AT_LEAST);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut read.limit(room))
}

/// Runs `work` while watching the client: if it closes its side while
/// `work` waits, the work is dropped and the connection ends (hyper's
/// server does the same). Bytes it sends meanwhile (a pipelined request)
/// are kept, and reading stops until they are taken.
async fn watch_eof<IO, W>(io: &mut IO, read: &mut BytesMut, mut work: Pin<&mut W>) -> Result<W::Output, BoxError>
where
    IO: AsyncRead + Unpin,
    W: Future,
{
    // The client first, as hyper polls it: gone is gone, even if the work is done.
    poll_fn(|cx| match watching(io, read, cx) {
        Poll::Ready(gone) => Poll::Ready(Err(gone)),
        Poll::Pending => work.as_mut().poll(cx).map(Ok),
    })
    .await
}

/// Reads while nothing is buffered: ready with an error when the client
/// has closed its side or its socket failed; bytes it sends are kept.
fn watching<IO: AsyncRead + Unpin>(io: &mut IO, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<BoxError> {
    if !read.is_empty() {
        return Poll::Pending;
    }
    match fill(io, read, READ_AT_LEAST, cx) {
        Poll::Ready(Ok(0)) => Poll::Ready(Failed::Incomplete.into()),
        Poll::Ready(Err(e)) => Poll::Ready(e.into()),
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

/// What a head at the front of the buffer is to the fast path.
// Inline: a request is what it is nearly always, and boxing it would cost
// an allocation a request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Request<NodeBody>),
    /// Not complete yet.
    Partial,
    /// Not the fast path's: a request it does not take, or one hyper refuses.
    Other,
}

/// Where a field's name and value sit in its head: start and end of each.
type Field = (usize, usize, usize, usize);

/// Parses a request head off the front of `buf`, into `cached` (empty),
/// if the fast path takes it.
fn parse(buf: &mut BytesMut, settings: &Settings, cached: &mut HeaderMap, at: &mut Vec<Field>) -> Parsed {
    let mut lines = [const { std::mem::MaybeUninit::uninit() }; FAST_HEADERS];
    let lines = &mut lines[..settings.max_headers.min(FAST_HEADERS)];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Other };
    if method == Method::CONNECT || target.len() > MAX_URI_LEN {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let target = (target.as_ptr() as usize - base, target.len());
    at.clear();
    at.extend(req.headers.iter().map(|line| {
        let (name, value) = (line.name.as_ptr() as usize - base, line.value.as_ptr() as usize - base);
        (name, name + line.name.len(), value, value + line.value.len())
    }));
    // Requests the fast path does not take are told by their fields' names
    // before the head leaves the buffer.
    if at.iter().any(|&(name_at, name_end, ..)| not_ours(&buf[name_at..name_end])) {
        return Parsed::Other;
    }
    let head = buf.split_to(len).freeze();
    let mut headers = std::mem::take(cached);
    headers.reserve(at.len());
    let uri = http::Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1));
    let fields = at.iter().try_for_each(|&(name_at, name_end, value_at, value_end)| {
        let name = HeaderName::from_bytes(&head[name_at..name_end]).map_err(drop)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_end)).map_err(drop)?;
        headers.append(name, value);
        Ok::<_, ()>(())
    });
    let (Ok(uri), Ok(())) = (uri, fields) else {
        // hyper's to refuse: the head goes back in front of what follows.
        headers.clear();
        *cached = headers;
        let rest = std::mem::take(buf);
        buf.extend_from_slice(&head);
        buf.extend_from_slice(&rest);
        return Parsed::Other;
    };
    let mut request = Request::new(NodeBody::from(Bytes::new()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Parsed::Request(request)
}

/// Fields that take a request off the fast path: a body, an upgrade, an
/// expectation, trailers.
fn not_ours(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"expect", b"upgrade", b"te"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// A response body's length as its head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Known(u64),
    Unknown,
}

/// How the body after a head is written.
#[derive(Debug, PartialEq, Eq)]
struct Encoder {
    kind: Kind,
    /// The connection closes after this response.
    last: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

fn can_chunk(method: &Method, status: StatusCode) -> bool {
    method != Method::HEAD && !status.is_informational() && !matches!(status.as_u16(), 204 | 304)
}

fn can_have_length(status: StatusCode) -> bool {
    !status.is_informational() && !matches!(status.as_u16(), 204 | 304)
}

/// Appends the response head as hyper's server writes it to an HTTP/1.1
/// client (lower-case names, its framing and `connection` rules, `date`),
/// and says how the body follows. `keep_alive`: what the request and the
/// connection allow; without it the head says `connection: close`.
fn encode_head(
    parts: &mut http::response::Parts,
    mut length: Option<Length>,
    method: &Method,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<Encoder, Failed> {
    if !keep_alive {
        let close = HeaderValue::from_static("close");
        match parts.headers.entry(CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| has_token(v, "close")) {
                    e.append(close);
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(close);
            }
        }
    }
    let (mut last, informational) = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        (true, false)
    } else if parts.status.is_informational() {
        // hyper answers 500 instead, with an empty head, and ends the connection.
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.version = Version::HTTP_11;
        parts.headers.clear();
        parts.extensions.clear();
        length = None;
        (true, true)
    } else {
        (!keep_alive, false)
    };
    let (status, version) = (parts.status, parts.version);
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if version == Version::HTTP_11 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let chunkable = version != Version::HTTP_10 && can_chunk(method, status);
    let mut kind = Kind::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    // A line whose values are joined (`content-length`, `transfer-encoding`,
    // `connection`, `trailer`) is open until the next name.
    let mut open_line = false;
    let mut add_chunked = false;
    let mut first_length = None;
    let mut name: Option<HeaderName> = None;
    let rewind = dst.len();
    // Drained: the map keeps its room for the next request's head.
    for (next, value) in parts.headers.drain() {
        if let Some(next) = next {
            end_line(dst, open_line, add_chunked);
            open_line = false;
            name = Some(next);
        }
        let Some(name) = &name else { continue };
        match *name {
            CONTENT_LENGTH => {
                if wrote_len && !open_line {
                    dst.truncate(rewind);
                    return Err(Failed::Header);
                }
                match length {
                    Some(Length::Known(len)) => {
                        if !open_line {
                            kind = Kind::Length(len);
                            dst.extend_from_slice(b"content-length: ");
                            dst.extend_from_slice(value.as_bytes());
                            wrote_len = true;
                            open_line = true;
                        }
                        continue;
                    }
                    Some(Length::Unknown) => {
                        let Some(len) = digits(value.as_bytes()) else {
                            dst.truncate(rewind);
                            return Err(Failed::Header);
                        };
                        match first_length {
                            Some(first) if first != len => {
                                dst.truncate(rewind);
                                return Err(Failed::Header);
                            }
                            Some(_) => {}
                            None => {
                                kind = Kind::Length(len);
                                dst.extend_from_slice(b"content-length: ");
                                dst.extend_from_slice(value.as_bytes());
                                wrote_len = true;
                                open_line = true;
                                first_length = Some(len);
                            }
                        }
                        continue;
                    }
                    None if method != Method::HEAD => continue,
                    None => wrote_len = true,
                }
            }
            TRANSFER_ENCODING => {
                if wrote_len && !open_line {
                    dst.truncate(rewind);
                    return Err(Failed::Header);
                }
                if !chunkable {
                    continue;
                }
                wrote_len = true;
                add_chunked = !is_chunked(&value);
                if open_line {
                    dst.extend_from_slice(b", ");
                } else {
                    kind = Kind::Chunked;
                    open_line = true;
                    dst.extend_from_slice(b"transfer-encoding: ");
                }
                dst.extend_from_slice(value.as_bytes());
                continue;
            }
            CONNECTION => {
                last |= has_token(&value, "close");
                join(dst, &mut open_line, "connection: ", &value);
                continue;
            }
            TRAILER => {
                if chunkable {
                    join(dst, &mut open_line, "trailer: ", &value);
                }
                continue;
            }
            DATE => wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    end_line(dst, open_line, add_chunked);
    if !wrote_len {
        kind = match length {
            Some(Length::Unknown) if chunkable => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Kind::Chunked
            }
            Some(Length::Unknown) => Kind::Close,
            None | Some(Length::Known(0)) => {
                if can_have_length(status) && method != Method::HEAD {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Kind::Length(0)
            }
            Some(Length::Known(len)) if can_have_length(status) => {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                dst.extend_from_slice(b"\r\n");
                Kind::Length(len)
            }
            Some(Length::Known(_)) => Kind::Length(0),
        };
    }
    if !can_chunk(method, status) {
        kind = Kind::Length(0);
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        http_date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    if informational {
        return Err(Failed::Informational);
    }
    Ok(Encoder { kind, last })
}

/// Writes `value` on the open line of `name`, or opens it.
fn join(dst: &mut Vec<u8>, open_line: &mut bool, name: &str, value: &HeaderValue) {
    if *open_line {
        dst.extend_from_slice(b", ");
    } else {
        *open_line = true;
        dst.extend_from_slice(name.as_bytes());
    }
    dst.extend_from_slice(value.as_bytes());
}

fn end_line(dst: &mut Vec<u8>, open_line: bool, add_chunked: bool) {
    if open_line {
        dst.extend_from_slice(if add_chunked { b", chunked\r\n" } else { b"\r\n" });
    }
}

/// Whether `chunked` is the last coding listed.
fn is_chunked(value: &HeaderValue) -> bool {
    value.to_str().ok().and_then(|s| s.rsplit(',').next()).is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// Decimal digits only (no sign, no space), as a `u64`.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

thread_local! {
    /// The `date` value, formatted once a second on each thread.
    static DATE_CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an HTTP date (`Mon, 07 Dec 2026 11:31:19 GMT`).
fn http_date(dst: &mut Vec<u8>) {
    let now = super::NodeClock::default().now();
    DATE_CACHE.with(|cache| {
        let (second, mut text) = cache.get();
        if second != now.as_secs() {
            let formatted = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs()));
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                cache.set((now.as_secs(), text));
            } else {
                return dst.extend_from_slice(formatted.as_bytes());
            }
        }
        dst.extend_from_slice(&text);
    });
}

/// Writes the head in `write` and the body after it as `encoder` frames
/// it, as hyper's server does: the head goes out with the body's first
/// bytes when they are at hand, and on its own when the body must wait; a
/// trailers frame (never sent: the fast path takes no request that allows
/// them) ends the body; a body longer than its length is cut; one that
/// ends short at its last data closes the connection after it, one that
/// ends short without data fails it. Whether the connection may carry
/// another request.
async fn send_body<IO, B>(
    io: &mut IO,
    read: &mut BytesMut,
    write: &mut Vec<u8>,
    encoder: &mut Encoder,
    mut body: B,
) -> Result<bool, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut reuse = !encoder.last;
    // Nothing to write once the length is met: what is left of the body is dropped.
    while encoder.kind != Kind::Length(0) {
        let step = poll_fn(|cx| {
            // The client first, as hyper polls it.
            if let Poll::Ready(gone) = watching(io, read, cx) {
                return Poll::Ready(Step::Gone(gone));
            }
            match Pin::new(&mut body).poll_frame(cx) {
                // The error is boxed at once: the body's own need not be `Send`.
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame.map(|f| f.map_err(|e| Failed::Body(e.into()))))),
                Poll::Pending if !write.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let frame = match step {
            Step::Flush => {
                flush(io, write, None).await?;
                continue;
            }
            Step::Gone(e) => return Err(e),
            Step::Frame(frame) => frame,
        };
        let Some(frame) = frame else {
            end_body(encoder, write, &mut reuse)?;
            break;
        };
        let Ok(mut data) = frame?.into_data() else {
            end_body(encoder, write, &mut reuse)?; // trailers
            break;
        };
        let end = body.is_end_stream();
        if data.is_empty() {
            if end {
                end_body(encoder, write, &mut reuse)?;
                break;
            }
            continue;
        }
        match &mut encoder.kind {
            Kind::Chunked => {
                // The size line in hex, written in place (no `String` a chunk).
                std::io::Write::write_fmt(write, format_args!("{:X}\r\n", data.len()))?;
                put(io, write, data).await?;
                write.extend_from_slice(if end { b"\r\n0\r\n\r\n" } else { b"\r\n" });
            }
            Kind::Length(left) => {
                let n = data.len() as u64;
                if n >= *left {
                    data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left = 0;
                } else {
                    *left -= n;
                    reuse &= !end; // short of its length at its end
                }
                put(io, write, data).await?;
            }
            Kind::Close => {
                reuse = false;
                put(io, write, data).await?;
            }
        }
        if end {
            break;
        }
    }
    drop(body);
    flush(io, write, None).await?;
    Ok(reuse)
}

/// A body's next step while it is written.
enum Step<F> {
    Frame(Option<F>),
    /// The body waits: what is queued goes out first.
    Flush,
    /// The client went away (or its socket failed) while the body waited.
    Gone(BoxError),
}

/// Ends a body without more data: the chunked end; a length not met fails
/// the connection.
fn end_body(encoder: &mut Encoder, write: &mut Vec<u8>, reuse: &mut bool) -> Result<(), Failed> {
    match encoder.kind {
        Kind::Length(0) => Ok(()),
        Kind::Length(left) => Err(Failed::BodyAborted(left)),
        Kind::Chunked => {
            write.extend_from_slice(b"0\r\n\r\n");
            Ok(())
        }
        Kind::Close => {
            *reuse = false;
            Ok(())
        }
    }
}

/// Queues `data` behind what `write` holds, copied if small, else written
/// out with it in one vectored write.
async fn put<IO: AsyncWrite + Unpin>(io: &mut IO, write: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() <= COPY_AT_MOST {
        write.extend_from_slice(&data);
        return Ok(());
    }
    flush(io, write, Some(data)).await
}

/// Writes out `write` (and `then` after it), emptying it.
async fn flush<IO: AsyncWrite + Unpin>(io: &mut IO, write: &mut Vec<u8>, then: Option<Bytes>) -> io::Result<()> {
    let mut then = then.unwrap_or_default();
    let mut head = &write[..];
    while !head.is_empty() || !then.is_empty() {
        // One slice, one plain write: an empty second one still costs the
        // kernel an iovec to copy in and walk.
        let n = if then.is_empty() {
            poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, head)).await?
        } else {
            let slices = [io::IoSlice::new(head), io::IoSlice::new(&then)];
            poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &slices)).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        then.advance(n - from_head);
    }
    write.clear();
    io.flush().await
}

#[cfg(test)]
mod tests;
