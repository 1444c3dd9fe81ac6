//! Header facts both config (which edits are allowed) and the pipeline
//! (what crosses the gateway) rely on.

use http::HeaderName;

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
