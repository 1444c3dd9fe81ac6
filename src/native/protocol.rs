//! Which HTTP a client connection speaks. Plaintext: HTTP/2 when it opens
//! with the HTTP/2 preface (h2c with prior knowledge), HTTP/1.1 otherwise.
//! TLS: what ALPN chose. HTTP/1.1 starts on our fast path
//! (`downstream_h1`), which hands the connection to hyper's server, with
//! the bytes it read, at the first request it does not take.
//!
//! Decided by peeking at the socket, so hyper's first read takes the whole
//! head. (hyper-util's `auto` connection reads the first 24 bytes itself and
//! hands them to hyper; hyper's next read then finds its 8 KiB read buffer
//! short by those bytes and doubles it, 16 KiB for the connection's life.)

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::NodeBody;
use super::conn::Graceful;
use super::downstream_h1::{self, Closing, Ended};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// When a client has sent only part of the preface, how long until the
/// next look (readiness stays set while the bytes wait unread): doubling
/// from the first to the last, so a client that stops there costs at most
/// 16 wake-ups a second until its first-request deadline drops it.
const LOOK_AGAIN: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(64));

type BoxError = Box<dyn StdError + Send + Sync>;

/// How each protocol is served.
pub(crate) struct Builders {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
}

/// How a connection's requests are answered: hyper's service, and the
/// same handler as the fast path calls it.
pub(crate) struct Handlers<S, F> {
    pub(crate) service: S,
    pub(crate) fast: F,
    pub(crate) fast_settings: downstream_h1::Settings,
}

/// A client connection, served once its protocol is known.
// Served inline: it is what a connection is for its whole life; peeking is brief.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Connection<S: HttpService<Incoming>, F> {
    Peeking(Peeking<S, F>),
    Serving(Protocol<TcpStream, S>),
    /// Shut down or closed before its protocol was known.
    Closed,
}

/// The fast path's future: what serving a connection is until it ends or
/// hands off (boxed once a connection: its handler's future is inside).
type FastFuture<IO> = Pin<Box<dyn Future<Output = Result<Ended<IO>, BoxError>> + Send>>;

/// A connection served in its protocol: told by its first bytes
/// (plaintext) or by ALPN (TLS).
// HTTP/1.1 inline: it is what most connections are for their whole life.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Protocol<IO, S: HttpService<Incoming>> {
    /// HTTP/1.1 on the fast path, with what a hand-off to hyper needs.
    Fast { serving: FastFuture<IO>, closing: Arc<Closing>, hyper: Option<(S, http1::Builder)> },
    /// With upgrades: a WebSocket's connection leaves hyper for its tunnel.
    Http1(http1::UpgradeableConnection<TokioIo<Rewind<IO>>, S>),
    /// Boxed: hyper's HTTP/2 connection is over twice the size of its
    /// HTTP/1.1 one, and every HTTP/1.1 connection would carry the difference.
    Http2(Box<http2::Connection<TokioIo<IO>, S, TokioExecutor>>),
}

/// A connection whose first bytes have not told its protocol yet.
pub(crate) struct Peeking<S, F> {
    stream: TcpStream,
    handlers: Handlers<S, F>,
    builders: Builders,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    next_look: Duration,
}

impl<S: HttpService<Incoming>, F> Connection<S, F> {
    pub(crate) fn new(stream: TcpStream, handlers: Handlers<S, F>, builders: Builders) -> Self {
        Connection::Peeking(Peeking { stream, handlers, builders, wait: None, next_look: LOOK_AGAIN.0 })
    }
}

impl<IO, S> Protocol<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming>,
{
    /// Serves `io` in HTTP/2, or in HTTP/1.1 on the fast path.
    pub(crate) fn new<F>(io: IO, http2: bool, handlers: Handlers<S, F>, builders: Builders) -> Self
    where
        S::ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
        <S::ResBody as Body>::Error: Into<BoxError>,
        TokioExecutor: Http2ServerConnExec<S::Future, S::ResBody>,
        F: FastHandler<S::ResBody>,
    {
        let Handlers { service, fast, fast_settings } = handlers;
        if http2 {
            return Protocol::Http2(Box::new(builders.http2.serve_connection(TokioIo::new(io), service)));
        }
        let closing = Arc::new(Closing::default());
        let serving = Box::pin(downstream_h1::serve(io, fast, fast_settings, closing.clone()));
        Protocol::Fast { serving, closing, hyper: Some((service, builders.http1)) }
    }
}

/// What the first bytes say: `None` while they are a strict prefix of the
/// preface (more must come), `Some(true)` for the preface.
fn is_http2(first: &[u8]) -> Option<bool> {
    if !PREFACE.starts_with(first) {
        Some(false)
    } else if first.len() == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// The fast path's handler: a request in, its response out.
pub(crate) trait FastHandler<B>: FnMut(Request<NodeBody>) -> Self::Answer + Send + Unpin + 'static {
    type Answer: Future<Output = Response<B>> + Send + 'static;
}

impl<F, Fut, B> FastHandler<B> for F
where
    F: FnMut(Request<NodeBody>) -> Fut + Send + Unpin + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
{
    type Answer = Fut;
}

impl<S, F, B> Future for Connection<S, F>
where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
    F: FastHandler<B>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this {
                Connection::Peeking(peeking) => {
                    if let Some(wait) = &mut peeking.wait {
                        ready!(wait.as_mut().poll(cx));
                        peeking.wait = None;
                    }
                    let mut first = [0u8; PREFACE.len()];
                    let mut buf = ReadBuf::new(&mut first);
                    ready!(peeking.stream.poll_peek(cx, &mut buf))?;
                    if buf.filled().is_empty() {
                        *this = Connection::Closed; // closed before a byte
                        continue;
                    }
                    let Some(http2) = is_http2(buf.filled()) else {
                        peeking.wait = Some(Box::pin(tokio::time::sleep(peeking.next_look)));
                        peeking.next_look = (peeking.next_look * 2).min(LOOK_AGAIN.1);
                        continue;
                    };
                    if let Connection::Peeking(peeking) = std::mem::replace(this, Connection::Closed) {
                        let Peeking { stream, handlers, builders, .. } = peeking;
                        *this = Connection::Serving(Protocol::new(stream, http2, handlers, builders));
                    }
                }
                Connection::Serving(conn) => return Pin::new(conn).poll(cx),
                Connection::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<IO, S, B> Future for Protocol<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this {
                Protocol::Fast { serving, closing, hyper } => match ready!(serving.as_mut().poll(cx)) {
                    Ok(Ended::Closed) => return Poll::Ready(Ok(())),
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Ended::HandOff(io, read)) => {
                        let Some((service, builder)) = hyper.take() else { return Poll::Ready(Ok(())) };
                        let mut conn =
                            builder.serve_connection(TokioIo::new(Rewind { read, io }), service).with_upgrades();
                        if closing.asked() {
                            Pin::new(&mut conn).graceful_shutdown();
                        }
                        *this = Protocol::Http1(conn);
                    }
                },
                Protocol::Http1(conn) => return Pin::new(conn).poll(cx).map_err(Into::into),
                Protocol::Http2(conn) => return Pin::new(&mut **conn).poll(cx).map_err(Into::into),
            }
        }
    }
}

impl<S, F, B> Graceful for Connection<S, F>
where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
    F: FastHandler<B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        match this {
            // No request begun: nothing to finish.
            Connection::Peeking(_) => *this = Connection::Closed,
            Connection::Serving(conn) => Pin::new(conn).graceful_shutdown(),
            Connection::Closed => {}
        }
    }
}

impl<IO, S, B> Graceful for Protocol<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.get_mut() {
            Protocol::Fast { closing, .. } => closing.close(),
            Protocol::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Protocol::Http2(conn) => Pin::new(&mut **conn).graceful_shutdown(),
        }
    }
}

/// A stream with bytes already read from it put back in front (what the
/// fast path read before it handed the connection to hyper).
pub(crate) struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_alone_means_http2() {
        assert_eq!(is_http2(PREFACE), Some(true));
        assert_eq!(is_http2(b"PRI * HTTP/2.0\r\n"), None, "more must come");
        assert_eq!(is_http2(b"P"), None);
        assert_eq!(is_http2(b"POST / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_http2(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"), Some(false));
        assert_eq!(is_http2(b"PRI * HTTP/1.1\r\n\r\n"), Some(false));
    }
}
