//! Who a caller is, once authenticated: what authorization, the rate
//! limiter, forwarded headers and the access log see.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::networks::IpRules;

/// Who the caller is, as the origin and the rate limiter will see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub(crate) provider: String,
    /// `sub` for tokens, the consumer id for API keys.
    pub(crate) subject: String,
    pub(crate) groups: Vec<String>,
    pub(crate) scopes: Vec<String>,
    /// A token's claims (empty for API keys).
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    /// Where a consumer may call from (`ip_allow`, `ip_deny`); tokens: anywhere.
    #[serde(skip)]
    pub(crate) networks: Option<Arc<IpRules>>,
}
