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

/// The value of the first cookie called `name` (trimmed, unquoted; perhaps
/// empty), from any `Cookie` header.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(COOKIE).iter().filter_map(|h| h.to_str().ok()).flat_map(|text| text.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim().trim_matches('"'))
    })
}
