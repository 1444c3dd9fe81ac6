//! The spans of a sampled request, as plain data: ids from the request's
//! randomness, times from the Clock port. The core records them only where
//! the home exports them ([`crate::ports::Ports::spans`]: the node, over
//! OTLP); the ids it sends upstream in `traceparent` are those of the spans.
//!
//! A request's spans: `portcullis.request` (server; its parent is the
//! client's span from `traceparent`), and under it `portcullis.authn` (with
//! `portcullis.jwks_fetch` when the request fetched a key set),
//! `portcullis.rate_limit` (the store call) and one `portcullis.upstream`
//! (client) per try, whose id the origin gets as its parent.

use std::time::Duration;

use crate::shared::entropy::Entropy;
use crate::shared::hex::hex;

/// The role of a span, as OpenTelemetry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    Server,
    Client,
    Internal,
}

/// One finished span. Times are monotonic readings (the home maps them
/// to wall-clock time with the request's arrival). Only an exporting home
/// (the node) reads them.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct SpanRecord {
    pub(crate) name: &'static str,
    pub(crate) kind: SpanKind,
    /// Lower-case hex, 16 digits.
    pub(crate) span_id: String,
    /// `None`: the request's own span, whose parent is the client's.
    pub(crate) parent_id: Option<String>,
    pub(crate) start: Duration,
    pub(crate) end: Duration,
    pub(crate) attributes: Vec<(&'static str, String)>,
    /// Why the span's work failed, if it did.
    pub(crate) error: Option<String>,
}

impl SpanRecord {
    /// A span under `parent`, with a fresh id.
    pub(crate) fn new(name: &'static str, kind: SpanKind, parent: &str, start: Duration, end: Duration) -> Self {
        Self {
            name,
            kind,
            span_id: new_id(end),
            parent_id: Some(parent.to_string()),
            start,
            end,
            attributes: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn attr(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((key, value.into()));
        self
    }

    pub(crate) fn failed(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }
}

/// A fresh span id (16 hex digits).
pub(crate) fn new_id(seed: Duration) -> String {
    hex(&Entropy::more(seed.as_nanos()))
}
