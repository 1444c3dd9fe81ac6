//! Who a caller is, once authenticated: what authorization, the rate
//! limiter, forwarded headers and the access log see.

use serde::{Deserialize, Serialize};

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
}
