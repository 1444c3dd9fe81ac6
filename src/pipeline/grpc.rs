//! The gRPC phase, last before the request is shaped for the origin: a
//! gRPC call's (`Content-Type: application/grpc…`) `grpc-timeout` bounds
//! the wait for the origin's answer, and a home that cannot carry it
//! (HTTP/2 to origins, trailers) refuses it — after every other phase, so
//! each refusal before it is the same in every home. Every answer the
//! gateway gives such a call itself is a gRPC status
//! ([`crate::shared::grpc::answer`]).

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, StatusCode};

use super::{Ctx, Flow, Gateway};
use crate::ports::{Body, HttpClient, Ports};
use crate::shared::problem::{Answer, Problem, Source};

/// Why a gRPC call is refused before it reaches an origin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrpcError {
    #[error("grpc-timeout `{0}` is not a timeout (1 to 8 digits, then H, M, S, m, u or n)")]
    BadTimeout(String),
    #[error("gRPC needs HTTP/2 and trailers to the origin, which this home does not carry")]
    Unsupported,
}

impl Answer for GrpcError {
    fn problem(&self) -> Problem {
        match self {
            Self::BadTimeout(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-request", "grpc-timeout is malformed", Source::Client)
            }
            Self::Unsupported => Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "grpc-unsupported",
                "gRPC is served by the node, not by the edge component",
                Source::Client,
            ),
        }
    }
}

/// Whether a request is a gRPC call: `application/grpc`, alone or with a
/// `+format` or parameters (gRPC-Web, `application/grpc-web…`, is not).
pub(crate) fn is_call(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(is_call_type)
}

/// [`is_call`] for a content type already looked up.
pub(crate) fn is_call_type(content_type: &HeaderValue) -> bool {
    let v = content_type.as_bytes();
    v.len() >= 16
        && v[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(v.get(16), None | Some(b'+' | b';' | b' '))
}

pub(crate) async fn phase<P: Ports>(
    _gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, GrpcError> {
    if !ctx.grpc {
        return Ok(Flow::Continue);
    }
    if let Some(value) = req.headers().get("grpc-timeout") {
        ctx.grpc_timeout = Some(timeout(value)?);
    }
    if !<P::Http as HttpClient>::CARRIES_GRPC {
        return Err(GrpcError::Unsupported);
    }
    Ok(Flow::Continue)
}

/// A `grpc-timeout` value: up to 8 digits and a unit (gRPC over HTTP/2).
fn timeout(value: &HeaderValue) -> Result<Duration, GrpcError> {
    let bad = || GrpcError::BadTimeout(String::from_utf8_lossy(value.as_bytes()).into_owned());
    let text = value.to_str().map_err(|_| bad())?;
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_by_content_type() {
        let mut h = HeaderMap::new();
        for (ct, call) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web-text", false),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_call(&h), call, "{ct}");
        }
        assert!(!is_call(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts_by_unit_and_malformed_ones_refused() {
        let t = |s: &'static str| timeout(&HeaderValue::from_static(s)).ok();
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "123456789S", "1s", "-1S", "1.5S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
