//! Bodies as the adapters move them (shared by the node and the edge; not
//! part of the core, which never looks inside a body):
//! - [`GatewayBody`]: bytes made by the gateway, or a platform stream passed
//!   through untouched, counted, and cut off past a limit;
//! - [`Logged`]: a response body that writes its access-log line when done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::pipeline::log::AccessLog;
use crate::ports::BodyCopy;
use crate::shared::problem::Source;
use crate::system_clock;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared between a request body and whoever needs to know how it went.
#[derive(Debug, Default)]
pub(crate) struct BodyProbe {
    bytes: AtomicU64,
    outcome: AtomicU8,
}

const TOO_LARGE: u8 = 1;
const CLIENT_FAILED: u8 = 2;

/// How reading a request body ended, if not well (the node streams bodies
/// to origins and answers by it; the edge reads unsized bodies first).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    TooLarge,
    ClientFailed,
}

impl BodyProbe {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// `None` while the body is fine.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        match self.outcome.load(Ordering::Relaxed) {
            TOO_LARGE => Some(BodyFailure::TooLarge),
            CLIENT_FAILED => Some(BodyFailure::ClientFailed),
            _ => None,
        }
    }
}

/// A body made by the gateway (`Full`) or streamed from the platform (`S`).
pub(crate) struct GatewayBody<S> {
    inner: Inner<S>,
    limit: u64,
    seen: u64,
    probe: Option<Arc<BodyProbe>>,
    /// A copy kept for another try (a streamed request body of unknown size).
    copy: Option<Arc<BodyCopy>>,
    /// Bytes already read from the stream, sent before the rest of it.
    prefix: Option<Bytes>,
}

enum Inner<S> {
    Full(Option<Bytes>),
    Stream(S),
    /// A stream the adapter reframed (gRPC-Web on the node).
    #[cfg(not(target_arch = "wasm32"))]
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>),
}

#[derive(Debug, thiserror::Error)]
#[error("body exceeds {0} bytes")]
struct TooLarge(u64);

impl<S> GatewayBody<S> {
    /// A streamed body; `probe` (for request bodies) counts and watches it.
    pub(crate) fn stream(stream: S, probe: Option<Arc<BodyProbe>>) -> Self {
        Self { inner: Inner::Stream(stream), limit: u64::MAX, seen: 0, probe, copy: None, prefix: None }
    }

    /// A stream the adapter made of another (reframed).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn boxed(body: impl Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static) -> Self {
        Self { inner: Inner::Boxed(Box::pin(body)), limit: u64::MAX, seen: 0, probe: None, copy: None, prefix: None }
    }

    /// The body with `prefix` (already read from it) put back in front.
    pub(crate) fn prefixed(prefix: Bytes, mut rest: Self) -> Self {
        rest.prefix = match rest.prefix.take() {
            Some(earlier) => Some([earlier, prefix].concat().into()),
            None => (!prefix.is_empty()).then_some(prefix),
        };
        rest
    }

    /// Keeps what streams through, up to `limit` bytes (a body made whole
    /// needs no copy).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn keep_copy(&mut self, limit: u64) -> Option<Arc<BodyCopy>> {
        if let Inner::Full(_) = self.inner {
            return None;
        }
        let copy = Arc::new(BodyCopy::new(limit));
        self.copy = Some(copy.clone());
        Some(copy)
    }

    /// Fails the stream (and marks the probe) once more than `limit` bytes pass.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn probe(&self) -> Option<Arc<BodyProbe>> {
        self.probe.clone()
    }

    fn end_copy(&mut self, whole: bool) {
        if let Some(copy) = self.copy.take() {
            copy.end(whole);
        }
    }

    fn mark(&self, outcome: u8) {
        if let Some(p) = &self.probe {
            p.outcome.store(outcome, Ordering::Relaxed);
        }
    }
}

impl<S> From<Bytes> for GatewayBody<S> {
    fn from(bytes: Bytes) -> Self {
        let inner = Inner::Full((!bytes.is_empty()).then_some(bytes));
        Self { inner, limit: u64::MAX, seen: 0, probe: None, copy: None, prefix: None }
    }
}

impl<S> Body for GatewayBody<S>
where
    S: Body<Data = Bytes> + Unpin,
    S::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let polled = match &mut this.inner {
            Inner::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(stream) => Pin::new(stream).poll_frame(cx).map_err(Into::into),
            #[cfg(not(target_arch = "wasm32"))]
            Inner::Boxed(body) => body.as_mut().poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    this.seen += len;
                    if let Some(p) = &this.probe {
                        p.bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    if this.seen > this.limit {
                        this.mark(TOO_LARGE);
                        this.end_copy(false);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
                    }
                    if let Some(copy) = &this.copy {
                        copy.push(data);
                    }
                    // A sender may stop at the last data frame, never asking for the end.
                    if !matches!(this.inner, Inner::Full(_)) && this.is_end_stream() {
                        this.end_copy(true);
                    }
                } else {
                    this.end_copy(false); // trailers: not kept
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.mark(CLIENT_FAILED);
                this.end_copy(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.end_copy(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.prefix.is_some() {
            return false;
        }
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream(stream) => stream.is_end_stream(),
            #[cfg(not(target_arch = "wasm32"))]
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let hint = match &self.inner {
            Inner::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(stream) => stream.size_hint(),
            #[cfg(not(target_arch = "wasm32"))]
            Inner::Boxed(body) => body.size_hint(),
        };
        let Some(prefix) = &self.prefix else { return hint };
        let extra = prefix.len() as u64;
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower().saturating_add(extra));
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper.saturating_add(extra));
        }
        sum
    }
}

/// Where a finished access-log record goes: a home's metrics, traces and
/// log line.
pub(crate) trait Emit {
    fn emit(self, log: &AccessLog);
}

impl Emit for fn(&AccessLog) {
    fn emit(self, log: &AccessLog) {
        self(log);
    }
}

/// A response body, counted; its access-log record is handed to `emit`
/// when the body is done (sent in full, failed, or dropped because the
/// client went away).
pub(crate) struct Logged<B, F: Emit> {
    inner: B,
    sent: u64,
    pending: Option<(Box<AccessLog>, Arc<BodyProbe>, F)>,
}

impl<B, F: Emit> Logged<B, F> {
    /// `emit: None` turns logging off but keeps the type.
    pub(crate) fn new(inner: B, log: Box<AccessLog>, probe: Arc<BodyProbe>, emit: Option<F>) -> Self {
        Self { inner, sent: 0, pending: emit.map(|f| (log, probe, f)) }
    }

    /// A body that is never logged (the edge's answer while its config is
    /// invalid; a node's `101`, whose tunnel writes the line).
    pub(crate) fn unlogged(inner: B) -> Self {
        Self { inner, sent: 0, pending: None }
    }
}

impl<B, F> Body for Logged<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    F: Emit + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => this.sent += frame.data_ref().map_or(0, |d| d.len() as u64),
            Poll::Ready(Some(Err(e))) => {
                if let Some((log, _, _)) = &mut this.pending {
                    log.error = Some(format!("response body failed: {e}"));
                    log.source.get_or_insert(Source::Upstream);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, F: Emit> Drop for Logged<B, F> {
    fn drop(&mut self) {
        if let Some((mut log, probe, emit)) = self.pending.take() {
            log.finish(system_clock::monotonic(), probe.bytes(), self.sent);
            emit.emit(&log);
        }
    }
}
