//! Errors of every phase, and the one place they become HTTP answers.
//!
//! Each phase has its own error type; [`GatewayError`] gathers them and knows
//! who is at fault ([`Fault`]), which decides the status family. Clients get
//! an RFC 9457 problem document that never carries internal detail (origin
//! addresses, library messages); the full error goes to the access log.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use thiserror::Error;

use crate::pipeline::authn::{self, AuthError};
use crate::pipeline::limit::LimitError;
use crate::pipeline::normalize::PathError;
use crate::pipeline::route::RouteError;
use crate::pipeline::sweep::SweepError;
use crate::ports::UpstreamError;

/// Phase 1, accept: the request head is unacceptable as sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AcceptError {
    #[error("request headers total {size} bytes, more than the {limit} allowed")]
    HeadersTooLarge { size: u64, limit: u64 },
    #[error("the request has {count} headers, more than the {limit} allowed")]
    TooManyHeaders { count: usize, limit: u32 },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("the Content-Length header is not a number")]
    BadContentLength,
    #[error("the request body is {size} bytes, more than the {limit} allowed")]
    BodyTooLarge { size: u64, limit: u64 },
}

/// Any reason the gateway answers a request itself.
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Accept(#[from] AcceptError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    /// The config could not be compiled (only possible at the edge, whose
    /// config is embedded; the node refuses to start or reload instead).
    #[error("the gateway config is invalid: {0}")]
    Misconfigured(String),
}

/// Who caused an error: the client (4xx), the origin (502/504) or the gateway (5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Gateway,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
}

impl GatewayError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::Accept(_) | Self::Route(_) => Fault::Client,
            Self::Auth(AuthError::KeysUnavailable) => Fault::Upstream,
            Self::Auth(_) => Fault::Client,
            Self::Limit(LimitError::Exceeded { .. }) => Fault::Client,
            Self::Limit(LimitError::StoreDown(_)) => Fault::Gateway,
            Self::Upstream(UpstreamError::BodyTooLarge { .. } | UpstreamError::ClientBody(_)) => Fault::Client,
            Self::Upstream(_) => Fault::Upstream,
            Self::Sweep(SweepError::Store(_)) => Fault::Gateway,
            Self::Sweep(_) => Fault::Client,
            Self::Misconfigured(_) => Fault::Gateway,
        }
    }

    /// Status, problem-type slug and the detail a client may see.
    fn describe(&self) -> (StatusCode, &'static str, String) {
        use AcceptError as A;
        use UpstreamError as U;
        match self {
            Self::Accept(e @ (A::HeadersTooLarge { .. } | A::TooManyHeaders { .. })) => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", e.to_string())
            }
            Self::Accept(A::Path(e)) => (StatusCode::BAD_REQUEST, "bad-path", e.to_string()),
            Self::Accept(e @ A::BadContentLength) => (StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
            Self::Accept(e @ A::BodyTooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", e.to_string())
            }
            Self::Route(e @ RouteError::NotFound) => (StatusCode::NOT_FOUND, "no-route", e.to_string()),
            Self::Route(e @ RouteError::MethodNotAllowed { .. }) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", e.to_string())
            }
            Self::Auth(e @ (AuthError::Missing { .. } | AuthError::InvalidToken { .. })) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            Self::Auth(e @ AuthError::InvalidRequest { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid-credential", e.to_string())
            }
            Self::Auth(e @ AuthError::KeysUnavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "keys-unavailable", e.to_string())
            }
            Self::Auth(e @ (AuthError::InsufficientScope { .. } | AuthError::Forbidden { .. })) => {
                (StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            Self::Limit(LimitError::Exceeded { retry_after: Some(s), .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate-limited", format!("too many requests; retry after {s} seconds"))
            }
            Self::Limit(LimitError::Exceeded { retry_after: None, .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "this request costs more than the rate limit ever allows".into(),
            ),
            Self::Limit(LimitError::StoreDown(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "rate-limit-unavailable",
                "rate limits cannot be checked right now".into(),
            ),
            Self::Upstream(e @ U::BodyTooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", e.to_string())
            }
            Self::Upstream(U::ClientBody(_)) => {
                (StatusCode::BAD_REQUEST, "bad-request", "the request body could not be read".into())
            }
            Self::Upstream(U::Connect(_)) => {
                (StatusCode::BAD_GATEWAY, "upstream-unavailable", "the upstream service could not be reached".into())
            }
            Self::Upstream(U::Protocol(_)) => {
                (StatusCode::BAD_GATEWAY, "upstream-invalid", "the upstream service sent an invalid response".into())
            }
            Self::Upstream(U::ConnectTimeout | U::Timeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", "the upstream service did not answer in time".into())
            }
            Self::Sweep(e @ SweepError::Method) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", e.to_string())
            }
            Self::Sweep(e @ SweepError::Unauthorized) => (StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
            Self::Sweep(e @ SweepError::BadCursor) => (StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
            Self::Sweep(SweepError::Store(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "the key-value store failed".into())
            }
            Self::Misconfigured(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "gateway-misconfigured", "the gateway is misconfigured".into())
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.describe().0
    }

    /// The answer to the client: status, problem body and the headers the error implies.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Bytes> {
        let (status, slug, detail) = self.describe();
        let problem = Problem {
            kind: format!("urn:portcullis:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            request_id: request_id.to_str().unwrap_or_default().to_string(),
        };
        let mut resp = problem_response(&problem);
        match self {
            Self::Route(RouteError::MethodNotAllowed { allow }) => {
                resp.headers_mut().insert(header::ALLOW, allow.clone());
            }
            Self::Sweep(SweepError::Method) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::Sweep(SweepError::Unauthorized) => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sweep\""));
            }
            Self::Auth(e) => {
                for challenge in authn::www_authenticate(e) {
                    resp.headers_mut().append(header::WWW_AUTHENTICATE, challenge);
                }
            }
            Self::Limit(LimitError::Exceeded { retry_after, headers }) => {
                for (name, value) in headers {
                    resp.headers_mut().insert(name.clone(), value.clone());
                }
                if let Some(s) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*s));
                }
            }
            _ => {}
        }
        resp
    }
}

/// Serialises a problem document as a response.
pub fn problem_response(problem: &Problem) -> Response<Bytes> {
    // Serialising a struct of strings and numbers cannot fail.
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let len = resp.body().len();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Framed by length, not chunks: a client has the whole answer even if
    // the connection is reset after it (a request body left unread).
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn body_json(resp: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(resp.body()).unwrap()
    }

    #[test]
    fn statuses_follow_the_cause() {
        let cases: Vec<(GatewayError, u16, Fault)> = vec![
            (AcceptError::HeadersTooLarge { size: 9, limit: 1 }.into(), 431, Fault::Client),
            (AcceptError::Path(PathError::ForbiddenEscape).into(), 400, Fault::Client),
            (AcceptError::BodyTooLarge { size: 9, limit: 1 }.into(), 413, Fault::Client),
            (RouteError::NotFound.into(), 404, Fault::Client),
            (UpstreamError::BodyTooLarge { limit: 1 }.into(), 413, Fault::Client),
            (UpstreamError::Connect("refused".into()).into(), 502, Fault::Upstream),
            (UpstreamError::Protocol("bad".into()).into(), 502, Fault::Upstream),
            (UpstreamError::ConnectTimeout.into(), 504, Fault::Upstream),
            (UpstreamError::Timeout(Duration::from_secs(1)).into(), 504, Fault::Upstream),
            (GatewayError::Misconfigured("x".into()), 500, Fault::Gateway),
        ];
        for (err, status, fault) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.fault(), fault, "{err}");
        }
    }

    #[test]
    fn problem_bodies_never_leak_internals() {
        let id = HeaderValue::from_static("req-1");
        let err = GatewayError::from(UpstreamError::Connect("tcp connect error: 10.9.8.7:5432 refused".into()));
        let resp = err.to_response(&id);
        let text = String::from_utf8(resp.body().to_vec()).unwrap();
        assert!(!text.contains("10.9.8.7"), "{text}");
        let json = body_json(&resp);
        assert_eq!(json["status"], 502);
        assert_eq!(json["type"], "urn:portcullis:problem:upstream-unavailable");
        assert_eq!(json["title"], "Bad Gateway");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(resp.headers()["content-length"], resp.body().len().to_string().as_str());
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let err = GatewayError::from(RouteError::MethodNotAllowed { allow: HeaderValue::from_static("GET, HEAD") });
        let resp = err.to_response(&HeaderValue::from_static("r"));
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
    }
}
