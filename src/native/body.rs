//! The node's body type: streams hyper bodies through without buffering,
//! counts bytes for the access log, and cuts off request bodies that grow
//! past the route's limit (the core can only check `Content-Length`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared between a request body and whoever needs to know how it went.
#[derive(Debug, Default)]
pub struct BodyProbe {
    bytes: AtomicU64,
    outcome: AtomicU8,
}

const TOO_LARGE: u8 = 1;
const CLIENT_FAILED: u8 = 2;

/// How reading a request body ended, if not well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge,
    ClientFailed,
}

impl BodyProbe {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// `None` while the body is fine (outcome 0).
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.outcome.load(Ordering::Relaxed) {
            TOO_LARGE => Some(BodyFailure::TooLarge),
            CLIENT_FAILED => Some(BodyFailure::ClientFailed),
            _ => None,
        }
    }
}

/// A body as the node moves it: bytes made by the gateway, or a stream.
pub struct NodeBody {
    inner: Inner,
    limit: u64,
    seen: u64,
    probe: Option<Arc<BodyProbe>>,
}

enum Inner {
    Full(Option<Bytes>),
    Stream(Incoming),
}

#[derive(Debug, thiserror::Error)]
#[error("body exceeds {0} bytes")]
struct TooLarge(u64);

impl NodeBody {
    /// A streamed body; `probe` (for request bodies) counts and watches it.
    pub fn stream(incoming: Incoming, probe: Option<Arc<BodyProbe>>) -> Self {
        Self { inner: Inner::Stream(incoming), limit: u64::MAX, seen: 0, probe }
    }

    /// Fails the stream (and marks the probe) once more than `limit` bytes pass.
    pub fn limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    pub fn probe(&self) -> Option<Arc<BodyProbe>> {
        self.probe.clone()
    }

    fn mark(&self, outcome: u8) {
        if let Some(p) = &self.probe {
            p.outcome.store(outcome, Ordering::Relaxed);
        }
    }
}

impl From<Bytes> for NodeBody {
    fn from(bytes: Bytes) -> Self {
        let inner = Inner::Full((!bytes.is_empty()).then_some(bytes));
        Self { inner, limit: u64::MAX, seen: 0, probe: None }
    }
}

impl Body for NodeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
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
                        return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.mark(CLIENT_FAILED);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => other.map_err(|e| -> BoxError { Box::new(e) }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(incoming) => incoming.size_hint(),
        }
    }
}
