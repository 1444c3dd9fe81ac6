//! How the gateway answers when it answers itself: an RFC 9457 problem
//! document. Every error that can end a request implements [`Answer`] next
//! to where it is defined: its status, problem type, the detail a client may
//! see, who caused it and whether another attempt may succeed. Clients never
//! see internal detail (origin addresses, library messages); the error's
//! own text goes to the access log.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

/// Who caused a failure; logs (and metrics) count by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The request itself (4xx).
    Client,
    /// An origin or an identity provider.
    Upstream,
    /// The key-value store.
    Store,
    /// The gateway itself: its config (only the edge compiles one per
    /// request) or its own capacity (the node's upgraded connections).
    Internal,
}

impl Source {
    /// As the access log writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Store => "store",
            Self::Internal => "internal",
        }
    }
}

/// The answer an error gives.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    /// The problem type: `urn:portcullis:problem:<slug>`.
    pub(crate) slug: &'static str,
    /// What the client may see.
    pub(crate) detail: Cow<'static, str>,
    pub(crate) source: Source,
    /// Whether the same request may succeed on another attempt (another
    /// target): nothing reached an origin, or nothing was answered.
    pub(crate) retryable: bool,
    /// Headers the answer carries (`Allow`, `WWW-Authenticate`, `Retry-After` …).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// An error that knows its answer.
pub(crate) trait Answer: std::fmt::Display {
    fn problem(&self) -> Problem;
}

/// The body of a problem answer.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        slug: &'static str,
        detail: impl Into<Cow<'static, str>>,
        source: Source,
    ) -> Self {
        Self { status, slug, detail: detail.into(), source, retryable: false, headers: Vec::new() }
    }

    pub(crate) fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The answer: a problem document (framed by length: a client has it
    /// whole even if the connection is reset after it, as happens when a
    /// request body was left unread), its headers, never cached.
    pub(crate) fn to_response(&self, request_id: &HeaderValue) -> Response<Bytes> {
        let document = Document {
            kind: format!("urn:portcullis:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            request_id: request_id.to_str().unwrap_or_default(),
        };
        // Serialising strings and a number cannot fail.
        let body = serde_json::to_vec(&document).unwrap_or_default();
        let len = body.len();
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_documents_carry_type_status_and_request_id_framed_by_length() {
        let p = Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "cannot reach it", Source::Upstream)
            .header(header::RETRY_AFTER, HeaderValue::from(3));
        let resp = p.to_response(&HeaderValue::from_static("req-1"));
        let json: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(json["type"], "urn:portcullis:problem:upstream-unavailable");
        assert_eq!((json["status"].as_u64(), json["title"].as_str()), (Some(502), Some("Bad Gateway")));
        assert_eq!((json["detail"].as_str(), json["request_id"].as_str()), (Some("cannot reach it"), Some("req-1")));
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/problem+json");
        assert_eq!(h["content-length"], resp.body().len().to_string().as_str());
        assert_eq!((h["cache-control"].to_str().unwrap(), h["retry-after"].to_str().unwrap()), ("no-store", "3"));
    }
}
