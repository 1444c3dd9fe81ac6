//! What identifies a caller for a rate limit (`key`) or for a sticky
//! choice of target (`hash_on`): `client_ip`, `consumer`, `subject`,
//! `header:NAME` or `cookie:NAME`.

use http::HeaderName;

use super::auth::{AuthConfig, RouteAuth};
use super::parse_header_name;

/// When the request has no such value (no identity, no header, no cookie),
/// the caller is known by client IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallerKey {
    ClientIp,
    /// The API-key consumer's id.
    Consumer,
    /// The JWT `sub`.
    Subject,
    Header(HeaderName),
    Cookie(String),
}

impl CallerKey {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "client_ip" => Ok(Self::ClientIp),
            "consumer" => Ok(Self::Consumer),
            "subject" => Ok(Self::Subject),
            _ => {
                if let Some(h) = text.strip_prefix("header:") {
                    parse_header_name(h).map(Self::Header)
                } else if let Some(c) = text.strip_prefix("cookie:") {
                    let ok = !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    ok.then(|| Self::Cookie(c.to_string()))
                        .ok_or_else(|| format!("`{c}`: cookie names are letters, digits, `-`, `_`, `.`"))
                } else {
                    Err(format!("`{text}`: use client_ip, consumer, subject, header:<name> or cookie:<name>"))
                }
            }
        }
    }

    /// The kind of provider a route needs to ever have this value: API key
    /// (`true`) or JWT (`false`), with its name for an error message.
    pub(crate) fn needs_provider(&self) -> Option<(bool, &'static str)> {
        match self {
            Self::Consumer => Some((true, "an API-key provider")),
            Self::Subject => Some((false, "a JWT provider")),
            _ => None,
        }
    }
}

/// Whether a route with this `auth` can have an identity from an API-key
/// provider (`api_key`) or a JWT provider.
pub(crate) fn route_has_provider(auth: Option<&RouteAuth>, providers: &AuthConfig, api_key: bool) -> bool {
    auth.is_some_and(|a| a.providers.iter().any(|&p| providers.providers[p].kind.names_consumers() == api_key))
}
