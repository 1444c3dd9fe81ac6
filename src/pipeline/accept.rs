//! The accept phase: what the gateway is willing to read. Before routing, a
//! head within the configured size and count (431) and a path that can be
//! trusted (normalised, or 400); after routing, a declared body within the
//! route's limit (413, before any other work). Streamed bodies are cut off
//! by the adapters.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{HeaderValue, Request, StatusCode};
use thiserror::Error;

use super::{Ctx, Flow, Gateway};
use crate::config::GatewaySettings;
use crate::ports::{Body, Ports};
use crate::shared::path::{PathError, normalize_path};
use crate::shared::problem::{Answer, Problem, Source};

/// The request head or body is unacceptable as sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum AcceptError {
    #[error("request headers total {size} bytes, more than the {limit} allowed")]
    HeadersTooLarge { size: u64, limit: u64 },
    #[error("the request has {count} headers, more than the {limit} allowed")]
    TooManyHeaders { count: usize, limit: u32 },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    AmbiguousHost(&'static str),
    #[error("the Content-Length header is not a number")]
    BadContentLength,
    #[error("the request body is {size} bytes, more than the {limit} allowed")]
    BodyTooLarge { size: u64, limit: u64 },
    /// A method or target the `http` types refuse (an adapter's check).
    #[cfg(feature = "edge-p2")]
    #[error("{0}")]
    RequestLine(&'static str),
}

impl Answer for AcceptError {
    fn problem(&self) -> Problem {
        let (status, slug) = match self {
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders { .. } => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large")
            }
            Self::Path(_) => (StatusCode::BAD_REQUEST, "bad-path"),
            Self::BadContentLength => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::AmbiguousHost(_) => (StatusCode::BAD_REQUEST, "ambiguous-host"),
            #[cfg(feature = "edge-p2")]
            Self::RequestLine(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large"),
        };
        Problem::new(status, slug, self.to_string(), Source::Client)
    }
}

/// The accept phase before routing: one well-formed authority, a head
/// within the configured size and count, and a path that can be trusted
/// (normalised into `ctx.path`).
pub(crate) async fn head_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, AcceptError> {
    host(req)?;
    // `ctx.path` starts as the request's path: it changes only if that was not normal.
    if let Cow::Owned(path) = head(&gateway.config.gateway, req.headers(), req.uri().path())? {
        ctx.path = path;
    }
    Ok(Flow::Continue)
}

/// The accept phase after routing: a declared body within the route's limit.
pub(crate) async fn body_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, AcceptError> {
    if let Some(route) = gateway.route(ctx) {
        body_size(req.headers(), route.max_body_size)?;
    }
    Ok(Flow::Continue)
}

/// Before routing: the head's size and count, and the normalised path.
fn head<'a>(g: &GatewaySettings, headers: &HeaderMap, path: &'a str) -> Result<Cow<'a, str>, AcceptError> {
    let count = headers.len();
    if count > g.max_header_count as usize {
        return Err(AcceptError::TooManyHeaders { count, limit: g.max_header_count });
    }
    let size: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum();
    if size > g.max_header_size {
        return Err(AcceptError::HeadersTooLarge { size, limit: g.max_header_size });
    }
    Ok(normalize_path(path, g.path_parameters)?)
}

/// Before routing: one authority the request is for, and a well-formed one
/// (RFC 9112 §3.2, RFC 9113 §8.3.1, RFC 9110 §4.2.4). Refused: two `Host`
/// headers; a request with neither `Host` nor an authority in its target
/// (HTTP/1.1 and HTTP/2; HTTP/1.0 may omit both); a `Host` or authority
/// that is not `host[:port]` (user information, a path, an empty `Host`
/// on a request whose target has no authority); an HTTP/2 `:authority`
/// that differs from `Host`. (Spin itself refuses some of these before the
/// edge sees them.)
fn host<B>(req: &Request<B>) -> Result<(), AcceptError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(AcceptError::AmbiguousHost("the request has more than one Host header"));
    }
    let authority = req.uri().authority();
    if let Some(a) = authority {
        if a.as_str().contains('@') {
            return Err(AcceptError::AmbiguousHost("the request's authority carries user information"));
        }
        // The `http` crate takes any port text (`:80a` reads as no port).
        if !is_host_and_port(a.as_str().as_bytes()) {
            return Err(AcceptError::AmbiguousHost("the request's authority is not a host and an optional port"));
        }
    }
    if let Some(host) = first
        && !(authority.is_some() && host.is_empty())
        && !is_host_and_port(host.as_bytes())
    {
        return Err(AcceptError::AmbiguousHost("the Host header is not a host and an optional port"));
    }
    match (req.version(), first, authority) {
        (http::Version::HTTP_11 | http::Version::HTTP_2, None, None) => {
            Err(AcceptError::AmbiguousHost("the request names no host (no Host header, no authority)"))
        }
        (http::Version::HTTP_2, Some(host), Some(authority))
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(AcceptError::AmbiguousHost("the Host header differs from :authority"))
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3): a registered name, an IPv4
/// address or a bracketed IP literal, and digits after `:`. Not empty, no
/// user information, path or query.
fn is_host_and_port(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to the IPv6 literal.
        Some(i) if !value[i..].contains(&b']') => (&value[..i], Some(&value[i + 1..])),
        _ => (value, None),
    };
    let host_ok = match host {
        [] => false,
        [b'[', literal @ .., b']'] => {
            !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        name => name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')')
                || matches!(b, b'*' | b'+' | b',' | b';' | b'=')
        }),
    };
    host_ok && port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// The host a request names (`Host`, or the authority of an absolute
/// target) as `http`'s `Authority` reads it, lower-case and without brackets
/// or port; empty if the value is no authority.
pub(super) fn host_of(value: &HeaderValue) -> String {
    plain_host(value.as_bytes()).map_or_else(|| checked_host(value), str::to_owned)
}

/// The common shape, a lower-case name of letters, digits, `.` and `-`,
/// then at most `:` and digits: the name, read in one pass (parsing an
/// `Authority`, a copy, then lower-casing, cost ~800 instructions a request).
fn plain_host(value: &[u8]) -> Option<&str> {
    let (name, port) = value.split_at(value.iter().position(|&b| b == b':').unwrap_or(value.len()));
    let name_ok = !name.is_empty() && name.iter().all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'));
    let port_ok = port.get(1..).is_none_or(|digits| digits.iter().all(u8::is_ascii_digit));
    (name_ok && port_ok).then(|| std::str::from_utf8(name).ok()).flatten()
}

fn checked_host(value: &HeaderValue) -> String {
    let authority = value.to_str().ok().and_then(|h| h.parse::<Authority>().ok());
    authority.as_ref().map_or_else(String::new, |a| bare_host(a.host()))
}

/// A URI's host as requests are known by it: lower-case, an IPv6 literal
/// without its brackets (what a cache purge by URL must match too).
pub(crate) fn bare_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// After routing: a declared `Content-Length` within the route's limit.
fn body_size(headers: &HeaderMap, limit: u64) -> Result<(), AcceptError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let size: u64 = value.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or(AcceptError::BadContentLength)?;
    if size > limit {
        return Err(AcceptError::BodyTooLarge { size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any value the one-pass shape takes, `Authority` reads alike.
    #[test]
    fn the_plain_host_agrees_with_the_authority_parse() {
        use proptest::prelude::*;
        let chars = prop::sample::select(b"aZz09.-:[]@%_ \t/?#\x7f\x80".to_vec());
        proptest!(ProptestConfig::with_cases(4000), |(bytes in prop::collection::vec(chars, 0..10))| {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
            if let Some(host) = plain_host(value.as_bytes()) {
                prop_assert_eq!(checked_host(&value), host);
            }
        });
        for (value, host) in [("api.example.com", "api.example.com"), ("127.0.0.1:8080", "127.0.0.1"), ("a:", "a")] {
            assert_eq!(plain_host(value.as_bytes()), Some(host), "{value}");
            assert_eq!(host_of(&HeaderValue::from_static(value)), host, "{value}");
        }
        for (value, host) in [("API.Example.com:80", "api.example.com"), ("[::1]:80", "::1"), ("a b", ""), ("", "")] {
            assert_eq!(plain_host(value.as_bytes()), None, "{value}");
            assert_eq!(host_of(&HeaderValue::from_static(value)), host, "{value}");
        }
    }
}
