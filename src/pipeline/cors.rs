//! The CORS phase, right after routing and before authentication and
//! limits (a preflight carries no credentials), on routes with a policy
//! (`config/cors.rs`):
//!
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   was routed by the method it asks for (the route phase); the gateway
//!   answers it here, 204 with what the page may send, and the origin
//!   never sees it. An origin, method or header the policy does not allow
//!   is 403 with no CORS headers, so the browser's check fails;
//! - any other call from an allowed origin goes on, and its answer,
//!   whatever makes it (the origin, a fallback, a refusal), carries
//!   `Access-Control-Allow-Origin` and what the page may read
//!   ([`finish`], called by `respond::finish`); one from another origin
//!   goes on without them, or is 403 where the policy refuses other origins.
//!
//! The route's answers are the gateway's to describe: CORS headers an
//! origin sends are replaced, and `Vary: Origin` is on every answer of a
//! route whose policy lists origins.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::{Ctx, Flow, Gateway};
use crate::config::cors::Cors;
use crate::ports::{Body, Ports};
use crate::shared::problem::{Answer, Problem, Source};

/// Why a page's call or preflight is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CorsError {
    #[error("the page origin `{0}` may not call this route")]
    Origin(String),
    #[error("pages may not call this route with {0}")]
    Method(Method),
    #[error("pages may not send the header `{0}` to this route")]
    Header(String),
}

impl Answer for CorsError {
    fn problem(&self) -> Problem {
        match self {
            Self::Origin(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "origin-refused",
                "pages at this origin may not call this route",
                Source::Client,
            ),
            Self::Method(_) | Self::Header(_) => {
                Problem::new(StatusCode::FORBIDDEN, "cors-refused", self.to_string(), Source::Client)
            }
        }
    }
}

/// What the phase decided, for the access log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CorsOutcome {
    /// A preflight answered by the gateway.
    Preflight,
    /// A call from an allowed page.
    Allowed,
    /// A call or preflight from a page the policy does not allow.
    Refused,
}

impl CorsOutcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::Allowed => "allowed",
            Self::Refused => "refused",
        }
    }
}

/// The method a preflight asks for, if the request is one.
pub(crate) fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, CorsError> {
    let Some(policy) = gateway.route(ctx).and_then(|r| r.cors.as_deref()) else { return Ok(Flow::Continue) };
    let Some(origin) = req.headers().get(ORIGIN) else { return Ok(Flow::Continue) };
    if !policy.allows(origin) {
        ctx.cors = Some(CorsOutcome::Refused);
        if ctx.preflight.is_some() || policy.refuse_other_origins {
            return Err(CorsError::Origin(String::from_utf8_lossy(origin.as_bytes()).into_owned()));
        }
        return Ok(Flow::Continue);
    }
    let Some(asked) = ctx.preflight.clone() else {
        ctx.cors = Some(CorsOutcome::Allowed);
        ctx.cors_origin = Some(policy.allow_origin(origin));
        return Ok(Flow::Continue);
    };
    ctx.cors = Some(CorsOutcome::Refused);
    if !policy.allows_method(&asked) {
        return Err(CorsError::Method(asked));
    }
    let asked_headers = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS);
    let asked_text = asked_headers.map(|v| v.to_str().unwrap_or("\u{fffd}")).unwrap_or_default();
    if let Some(name) = policy.refused_header(asked_text) {
        return Err(CorsError::Header(name.to_string()));
    }
    ctx.cors = Some(CorsOutcome::Preflight);
    ctx.cors_origin = Some(policy.allow_origin(origin));
    Ok(Flow::Respond(preflight_answer(policy, &asked, asked_headers.filter(|v| is_header_list(v)))))
}

/// 204 with what the page may send; `finish` adds the origin.
fn preflight_answer<B: From<bytes::Bytes>>(
    policy: &Cors,
    asked: &Method,
    asked_headers: Option<&HeaderValue>,
) -> Response<B> {
    let mut answer = Response::new(B::from(bytes::Bytes::new()));
    *answer.status_mut() = StatusCode::NO_CONTENT;
    let headers = answer.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, policy.allow_methods(asked));
    if let Some(allowed) = policy.allow_headers(asked_headers) {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    }
    headers.insert(ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
    if policy.reflects() {
        // What it allows depends on what was asked.
        headers.append(VARY, HeaderValue::from_static("access-control-request-method, access-control-request-headers"));
    }
    answer
}

/// A comma-separated list of header names.
fn is_header_list(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| v.split(',').all(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).is_ok()))
}

/// The CORS headers of an answer on a route with a policy: the origin's
/// own are replaced by the gateway's decision. A preflight's answer says
/// nothing of what the page may read (browsers ignore it there).
pub(crate) fn finish(policy: &Cors, headers: &mut HeaderMap, allowed: Option<HeaderValue>, preflight: bool) {
    for name in [ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_EXPOSE_HEADERS] {
        headers.remove(name);
    }
    if policy.varies() {
        headers.append(VARY, HeaderValue::from_static("origin"));
    }
    let Some(origin) = allowed else { return };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if policy.credentials {
        headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if !preflight {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, policy.expose.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_header_lists() {
        assert!(is_header_list(&HeaderValue::from_static("content-type, x-grpc-web,grpc-timeout")));
        assert!(!is_header_list(&HeaderValue::from_static("content-type, bad header")));
    }

    #[test]
    fn a_preflight_is_an_options_request_from_a_page_asking_for_a_method() {
        let mut h = HeaderMap::new();
        h.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("PUT"));
        assert_eq!(preflight_method(&Method::OPTIONS, &h), None, "no Origin");
        h.insert(ORIGIN, HeaderValue::from_static("https://a.test"));
        assert_eq!(preflight_method(&Method::OPTIONS, &h), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &h), None);
        h.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("BAD METHOD"));
        assert_eq!(preflight_method(&Method::OPTIONS, &h), None);
    }
}
