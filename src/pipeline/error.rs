//! Every reason the gateway answers a request itself, gathered. Each phase's
//! error knows its answer ([`Answer`], next to where it is defined); this
//! type only lets a phase chart pass any of them on.

use thiserror::Error;

use super::accept::AcceptError;
use super::authn::AuthError;
use super::cors::CorsError;
use super::grpc::GrpcError;
use super::ip_rules::IpRefused;
use super::listener::Misdirected;
use super::rate_limit::LimitError;
use super::sweep::SweepError;
use super::upgrade::UpgradeError;
use super::upstream::Refusal;
use crate::config::router::RouteError;
use crate::ports::UpstreamError;
use crate::shared::problem::{Answer, Problem};

#[derive(Debug, Error)]
pub(crate) enum GatewayError {
    #[error(transparent)]
    Accept(#[from] AcceptError),
    #[error(transparent)]
    Listener(#[from] Misdirected),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Ip(#[from] IpRefused),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The config could not be compiled (only possible at the edge, whose
    /// config is embedded; the node refuses to start or reload instead).
    #[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
    #[error("the gateway config is invalid: {0}")]
    Misconfigured(String),
}

/// Phases that cannot fail pass their `Infallible` on like any error.
impl From<std::convert::Infallible> for GatewayError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl Answer for GatewayError {
    fn problem(&self) -> Problem {
        match self {
            Self::Accept(e) => e.problem(),
            Self::Listener(e) => e.problem(),
            Self::Route(e) => e.problem(),
            Self::Grpc(e) => e.problem(),
            Self::Cors(e) => e.problem(),
            Self::Ip(e) => e.problem(),
            Self::Upgrade(e) => e.problem(),
            Self::Auth(e) => e.problem(),
            Self::Limit(e) => e.problem(),
            Self::Upstream(e) => e.problem(),
            Self::Sweep(e) => e.problem(),
            Self::Refused(e) => e.problem(),
            #[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
            Self::Misconfigured(_) => Problem::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "gateway-misconfigured",
                "the gateway is misconfigured",
                crate::shared::problem::Source::Internal,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::shared::path::PathError;
    use crate::shared::problem::Source;

    #[test]
    fn each_error_answers_with_its_status_source_and_retry() {
        let cases: Vec<(GatewayError, u16, &str, Source, bool)> = vec![
            (
                AcceptError::HeadersTooLarge { size: 9, limit: 1 }.into(),
                431,
                "headers-too-large",
                Source::Client,
                false,
            ),
            (AcceptError::Path(PathError::ForbiddenEscape).into(), 400, "bad-path", Source::Client, false),
            (AcceptError::BodyTooLarge { size: 9, limit: 1 }.into(), 413, "body-too-large", Source::Client, false),
            (Misdirected("a.test".into()).into(), 421, "misdirected-request", Source::Client, false),
            (RouteError::NotFound.into(), 404, "no-route", Source::Client, false),
            (GrpcError::BadTimeout("x".into()).into(), 400, "bad-request", Source::Client, false),
            (GrpcError::Unsupported.into(), 501, "grpc-unsupported", Source::Client, false),
            (CorsError::Origin("https://x.test".into()).into(), 403, "origin-refused", Source::Client, false),
            (CorsError::Method(http::Method::PUT).into(), 403, "cors-refused", Source::Client, false),
            (CorsError::Header("x-a".into()).into(), 403, "cors-refused", Source::Client, false),
            (UpgradeError::Unsupported.into(), 501, "upgrade-unsupported", Source::Client, false),
            (AuthError::KeysUnavailable.into(), 503, "keys-unavailable", Source::Upstream, false),
            (AuthError::IdpUnavailable.into(), 503, "idp-unavailable", Source::Upstream, false),
            (LimitError::StoreDown("down".into()).into(), 503, "rate-limit-unavailable", Source::Store, false),
            (UpstreamError::BodyTooLarge { limit: 1 }.into(), 413, "body-too-large", Source::Client, false),
            (UpstreamError::Connect("refused".into()).into(), 502, "upstream-unavailable", Source::Upstream, true),
            (UpstreamError::ConnectTimeout.into(), 504, "upstream-timeout", Source::Upstream, true),
            (UpstreamError::Timeout(Duration::from_secs(1)).into(), 504, "upstream-timeout", Source::Upstream, false),
            (UpstreamError::Protocol("bad".into()).into(), 502, "upstream-invalid", Source::Upstream, false),
            (SweepError::Unauthorized.into(), 401, "unauthorized", Source::Client, false),
            (Refusal::NoHealthyTarget.into(), 503, "no-healthy-upstream", Source::Upstream, false),
            (Refusal::Overloaded(5).into(), 503, "upstream-overloaded", Source::Upstream, false),
            (GatewayError::Misconfigured("x".into()), 500, "gateway-misconfigured", Source::Internal, false),
        ];
        for (err, status, slug, source, retryable) in cases {
            let p = err.problem();
            assert_eq!((p.status.as_u16(), p.slug, p.source, p.retryable), (status, slug, source, retryable), "{err}");
        }
    }

    #[test]
    fn problem_bodies_never_leak_internals() {
        let err = GatewayError::from(UpstreamError::Connect("tcp connect error: 10.9.8.7:5432 refused".into()));
        let resp = err.problem().to_response(&HeaderValue::from_static("req-1"));
        let text = String::from_utf8(resp.body().to_vec()).unwrap();
        assert!(!text.contains("10.9.8.7"), "{text}");
        assert!(err.to_string().contains("10.9.8.7"), "the log keeps the cause");
    }

    #[test]
    fn answers_carry_the_headers_their_error_implies() {
        let err = GatewayError::from(RouteError::MethodNotAllowed { allow: HeaderValue::from_static("GET, HEAD") });
        let resp = err.problem().to_response(&HeaderValue::from_static("r"));
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
        let limited = LimitError::Exceeded { retry_after: Some(7), headers: Vec::new(), quota: false };
        assert_eq!(limited.problem().to_response(&HeaderValue::from_static("r")).headers()["retry-after"], "7");
        let spent = LimitError::Exceeded { retry_after: Some(90), headers: Vec::new(), quota: true };
        assert_eq!(
            (spent.problem().status, spent.problem().slug),
            (http::StatusCode::TOO_MANY_REQUESTS, "quota-exceeded")
        );
        assert_eq!(spent.problem().to_response(&HeaderValue::from_static("r")).headers()["retry-after"], "90");
    }
}
