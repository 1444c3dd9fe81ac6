//! Header facts both config (which edits are allowed) and the pipeline
//! (what crosses the gateway) rely on.

use http::header::COOKIE;
use http::{HeaderMap, HeaderName};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `host`, which the gateway sets from the origin's address.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "host"
    )
}

/// Whether a comma-separated header value lists `token` (ASCII case aside):
/// `Connection`'s options, `Upgrade`'s protocols.
pub(crate) fn has_token(value: &http::HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The value of the first cookie called `name` (trimmed, unquoted; perhaps
/// empty), from any `Cookie` header.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(COOKIE).iter().filter_map(|h| h.to_str().ok()).flat_map(|text| text.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The SHA-256 of an `Authorization: Bearer` token (the scheme in either
/// case): the gateway's own tokens are configured as hashes (the store
/// sweep, the edge's registry route), so only digests are
/// compared, and a comparison's timing tells nothing of a token.
pub(crate) fn bearer_sha256(authorization: Option<&http::HeaderValue>) -> Option<[u8; 32]> {
    use sha2::Digest;
    let value = authorization?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    Some(sha2::Sha256::digest(token.trim().as_bytes()).into())
}
