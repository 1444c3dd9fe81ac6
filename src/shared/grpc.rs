//! gRPC status codes (grpc/doc/statuscodes.md): what a gateway refusal
//! becomes for a gRPC client, and what a retry policy may name.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::problem::Problem;

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Code(pub(crate) u8);

/// Every code by its name, in order of value.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Code {
    pub(crate) const INVALID_ARGUMENT: Code = Code(3);
    pub(crate) const DEADLINE_EXCEEDED: Code = Code(4);
    pub(crate) const PERMISSION_DENIED: Code = Code(7);
    pub(crate) const RESOURCE_EXHAUSTED: Code = Code(8);
    pub(crate) const UNIMPLEMENTED: Code = Code(12);
    pub(crate) const INTERNAL: Code = Code(13);
    pub(crate) const UNAVAILABLE: Code = Code(14);
    pub(crate) const UNAUTHENTICATED: Code = Code(16);

    /// `UNAVAILABLE`, `unavailable` or `14`.
    pub(crate) fn parse(text: &str) -> Result<Code, String> {
        let upper = text.trim().to_ascii_uppercase();
        if let Some(i) = NAMES.iter().position(|n| *n == upper) {
            return Ok(Code(i as u8));
        }
        match upper.parse::<u8>() {
            Ok(n) if usize::from(n) < NAMES.len() => Ok(Code(n)),
            _ => Err(format!("`{text}` is not a gRPC status: a name such as \"UNAVAILABLE\", or 0 to 16")),
        }
    }

    /// A `grpc-status` value, if it is a code.
    pub(crate) fn from_header(value: &[u8]) -> Option<Code> {
        let n: u8 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        (usize::from(n) < NAMES.len()).then_some(Code(n))
    }

    /// The code a gateway answer with `status` means to a gRPC client:
    /// gRPC's own HTTP mapping where it has one (401, 403, 404, 429,
    /// 502–504), the closer code where the gateway knows more (a limit or a
    /// size is `RESOURCE_EXHAUSTED`, a timeout `DEADLINE_EXCEEDED`, a
    /// malformed request `INVALID_ARGUMENT`).
    pub(crate) fn for_status(status: StatusCode) -> Code {
        match status.as_u16() {
            401 => Code::UNAUTHENTICATED,
            403 => Code::PERMISSION_DENIED,
            404 | 405 | 501 => Code::UNIMPLEMENTED,
            408 | 504 => Code::DEADLINE_EXCEEDED,
            413 | 429 | 431 => Code::RESOURCE_EXHAUSTED,
            421 | 502 | 503 => Code::UNAVAILABLE,
            400..=499 => Code::INVALID_ARGUMENT,
            _ => Code::INTERNAL,
        }
    }
}

/// A gateway answer for a gRPC (or gRPC-Web: `content_type`) client: HTTP 200 with the status in the
/// headers and no message (a trailers-only response); the problem's detail
/// as `grpc-message`, its headers kept, and a `Retry-After` also as
/// `grpc-retry-pushback-ms` (gRPC's retry policy reads that).
pub(crate) fn answer(problem: &Problem, content_type: HeaderValue) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(Code::for_status(problem.status).0)));
    if let Ok(message) = HeaderValue::from_str(&percent_encoded(&problem.detail)) {
        headers.insert(GRPC_MESSAGE, message);
    }
    for (name, value) in &problem.headers {
        if name == RETRY_AFTER
            && let Some(seconds) = value.to_str().ok().and_then(|v| v.parse::<u64>().ok())
        {
            headers.insert(GRPC_PUSHBACK, HeaderValue::from(seconds.saturating_mul(1000)));
        }
        headers.append(name.clone(), value.clone());
    }
    resp
}

pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// `grpc-message` text: printable ASCII but `%` as is, the rest as `%XX` of its UTF-8.
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_by_name_or_number() {
        assert_eq!(Code::parse("UNAVAILABLE"), Ok(Code::UNAVAILABLE));
        assert_eq!(Code::parse("resource_exhausted"), Ok(Code::RESOURCE_EXHAUSTED));
        assert_eq!(Code::parse("16"), Ok(Code::UNAUTHENTICATED));
        assert!(Code::parse("17").is_err() && Code::parse("BUSY").is_err());
        assert_eq!(Code::from_header(b"14"), Some(Code::UNAVAILABLE));
        assert_eq!(Code::from_header(b"99"), None);
        assert_eq!(Code::parse("deadline_exceeded"), Ok(Code::DEADLINE_EXCEEDED));
    }

    #[test]
    fn a_gateway_answer_is_a_trailers_only_status_keeping_its_headers() {
        use super::super::problem::{Problem, Source};
        let p = Problem::new(http::StatusCode::TOO_MANY_REQUESTS, "rate-limited", "100% used — wait", Source::Client)
            .header(http::header::RETRY_AFTER, http::HeaderValue::from(3));
        let resp = super::answer(&p, http::HeaderValue::from_static("application/grpc"));
        let h = resp.headers();
        assert_eq!(resp.status(), 200);
        assert!(resp.body().is_empty());
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["grpc-message"], "100%25 used %E2%80%94 wait");
        assert_eq!((h["retry-after"].as_bytes(), h["grpc-retry-pushback-ms"].as_bytes()), (&b"3"[..], &b"3000"[..]));
        let code = |s: u16| Code::for_status(http::StatusCode::from_u16(s).unwrap());
        assert_eq!(
            [code(401), code(403), code(404), code(400)],
            [Code::UNAUTHENTICATED, Code::PERMISSION_DENIED, Code::UNIMPLEMENTED, Code::INVALID_ARGUMENT]
        );
        assert_eq!(
            [code(413), code(503), code(504), code(500)],
            [Code::RESOURCE_EXHAUSTED, Code::UNAVAILABLE, Code::DEADLINE_EXCEEDED, Code::INTERNAL]
        );
    }
}
