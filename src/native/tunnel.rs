//! Upgraded connections (WebSocket): the client's and the origin's, joined
//! once both switched protocols, carry bytes both ways until the origin
//! closes (a client that closes first has its end passed on, and the
//! origin then closes), nothing crosses for the route's idle timeout, or
//! the node has been draining for its drain timeout. The request's access-log line is
//! written when the tunnel ends, with the bytes each way and how long it
//! was open.
//!
//! HTTP/2 clients ask with an extended CONNECT (RFC 8441); the core sees
//! the HTTP/1.1 form of the same upgrade ([`from_extended_connect`]), the
//! origin gets that form, and the client gets `200` instead of `101`
//! ([`to_extended_connect`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::Emit;
use crate::pipeline::log::{AccessLog, micros};
use crate::pipeline::upgrade::Tunnel;
use crate::shared::entropy::Entropy;

/// An HTTP/2 extended CONNECT for WebSocket, made the HTTP/1.1 upgrade it
/// stands for (a fresh `Sec-WebSocket-Key`: HTTP/2 has none). Returns
/// whether it was one.
pub(crate) fn from_extended_connect<B>(req: &mut Request<B>) -> bool {
    let websocket = req.method() == Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if websocket {
        *req.method_mut() = Method::GET;
        let key = base64::engine::general_purpose::STANDARD.encode(&Entropy::draw(0).bytes()[..16]);
        let headers = req.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(key) = HeaderValue::from_str(&key) {
            headers.insert(SEC_WEBSOCKET_KEY, key);
        }
    }
    websocket
}

/// The origin's `101` as HTTP/2 answers an extended CONNECT: `200`, without
/// the HTTP/1.1 upgrade's headers.
pub(crate) fn to_extended_connect<B>(resp: &mut Response<B>) {
    *resp.status_mut() = StatusCode::OK;
    for name in [UPGRADE, CONNECTION, SEC_WEBSOCKET_ACCEPT] {
        resp.headers_mut().remove(name);
    }
}

/// Both ends of an upgrade, and what ends it.
pub(crate) struct Ends {
    pub(crate) client: OnUpgrade,
    pub(crate) origin: OnUpgrade,
    pub(crate) drain: watch::Receiver<bool>,
    pub(crate) drain_timeout: Duration,
}

/// Carries the bytes, then writes the request's log line (its response
/// head already counted: `log` is finished up to it).
pub(crate) async fn carry(ends: Ends, tunnel: Tunnel, mut log: AccessLog, emit: impl Emit) {
    let opened = Instant::now();
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ended = match tokio::try_join!(ends.client, ends.origin) {
        Ok((client, origin)) => {
            let client = Counted { io: TokioIo::new(client), read: up.clone() };
            let origin = Counted { io: TokioIo::new(origin), read: down.clone() };
            let copy = both_ways(client, origin);
            watch_over(copy, &up, &down, tunnel.idle, ends.drain, ends.drain_timeout).await
        }
        Err(e) => Some(format!("the upgrade did not complete: {e}")),
    };
    log.bytes_in += up.load(Ordering::Relaxed);
    log.bytes_out += down.load(Ordering::Relaxed);
    log.upgraded_us = Some(micros(opened.elapsed()));
    if let Some(why) = ended {
        log.error.get_or_insert(why);
    }
    emit.emit(&log);
    // Given back after the line: a draining node waits for both.
    drop(tunnel.slot);
}

/// Copies both ways until the origin's side ends; the client's end, if it
/// comes first, is passed on to the origin.
async fn both_ways<C, O>(client: C, origin: O) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let ((mut from_client, mut to_client), (mut from_origin, mut to_origin)) =
        (tokio::io::split(client), tokio::io::split(origin));
    let up = async {
        tokio::io::copy(&mut from_client, &mut to_origin).await?;
        to_origin.shutdown().await
    };
    let down = async {
        tokio::io::copy(&mut from_origin, &mut to_client).await?;
        to_client.shutdown().await
    };
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    tokio::select! {
        done = &mut down => done,
        done = &mut up => {
            done?;
            down.await
        }
    }
}

/// Runs the copy until it ends, or until nothing crossed for `idle`, or
/// `drain_timeout` after the node began draining. Why it was cut, if it was.
async fn watch_over(
    copy: impl Future<Output = std::io::Result<()>>,
    up: &AtomicU64,
    down: &AtomicU64,
    idle: Duration,
    mut drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> Option<String> {
    let mut copy = std::pin::pin!(copy);
    let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    let mut seen = (0, 0);
    let mut quiet_since = Instant::now();
    let mut draining = *drain.borrow();
    let cut = tokio::time::sleep(if draining { drain_timeout } else { Duration::from_secs(u32::MAX.into()) });
    let mut cut = std::pin::pin!(cut);
    loop {
        tokio::select! {
            done = &mut copy => return done.err().map(|e| format!("the upgraded connection failed: {e}")),
            _ = tick.tick() => {
                let now = Instant::now();
                let counts = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
                if counts != seen {
                    (seen, quiet_since) = (counts, now);
                } else if now.duration_since(quiet_since) >= idle {
                    return Some(format!("closed after {idle:?} without a byte either way"));
                }
            }
            () = &mut cut => return Some("closed: the node drained".into()),
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    cut.as_mut().reset(Instant::now() + drain_timeout);
                }
            }
        }
    }
}

/// One side of a tunnel, counting what is read from it.
struct Counted<T> {
    io: T,
    read: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.read.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
