//! The serde mirror of `routes/*.toml`: exactly what a user may write, nothing
//! more (`deny_unknown_fields` everywhere). Values that need checking after
//! parsing keep their source span so errors can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub limits: BTreeMap<String, Spanned<RawLimit>>,
    pub sweep: Option<Spanned<RawSweep>>,
}

/// `[sweep]`: removing expired records from a store without expiry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    pub path: Spanned<String>,
    pub token_sha256: Spanned<String>,
    pub batch: Option<Spanned<u64>>,
}

/// `[limits.NAME]`: a rate-limit policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u64>>,
    pub key: Option<Spanned<String>>,
    pub cost: Option<Spanned<u64>>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub on_store_error: Option<Spanned<String>>,
    pub consistency: Option<Spanned<String>>,
    #[serde(default)]
    pub legacy_headers: bool,
}

/// `[gateway]`: settings for the whole gateway.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub default_host: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub max_body_size: Option<Spanned<Size>>,
    pub max_header_size: Option<Spanned<Size>>,
    pub max_header_count: Option<Spanned<u32>>,
    pub access_log: Option<bool>,
}

/// `[services.NAME]`: an origin the gateway forwards to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub targets: Vec<Spanned<RawTarget>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
}

/// One entry of `services.NAME.targets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: Spanned<String>,
    pub weight: Option<Spanned<u32>>,
}

/// `[[routes]]`: which requests go to which service, and how they change on the way.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub service: Spanned<String>,
    pub strip_prefix: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub max_body_size: Option<Spanned<Size>>,
    #[serde(default)]
    pub request_headers: RawHeaderOps,
    #[serde(default)]
    pub response_headers: RawHeaderOps,
    pub auth: Option<Spanned<RawRouteAuth>>,
    #[serde(default)]
    pub limits: Vec<Spanned<String>>,
}

/// Header edits: `remove` first, then `set` (replace), then `add` (append).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub add: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[auth]`: identity providers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub realm: Option<Spanned<String>>,
    pub token_cache_entries: Option<Spanned<u32>>,
    #[serde(default)]
    pub jwt: BTreeMap<String, Spanned<RawJwt>>,
    #[serde(default)]
    pub api_key: BTreeMap<String, Spanned<RawApiKey>>,
}

/// `[auth.jwt.NAME]`: tokens from one issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Spanned<String>,
    #[serde(default)]
    pub audiences: Vec<Spanned<String>>,
    #[serde(default)]
    pub algorithms: Vec<Spanned<String>>,
    pub jwks_uri: Option<Spanned<String>>,
    #[serde(default)]
    pub keys: Vec<Spanned<RawKey>>,
    pub hmac_secret: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    pub required_claims: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub token_from: Vec<Spanned<RawTokenSource>>,
    #[serde(default)]
    pub forward_claims: BTreeMap<Spanned<String>, Spanned<String>>,
    pub groups_claim: Option<Spanned<String>>,
    pub strip_credential: Option<bool>,
    pub max_token_size: Option<Spanned<Size>>,
    #[serde(default)]
    pub jwks_cache: RawJwksCache,
}

/// An inline public key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub kid: Option<String>,
    pub pem: Spanned<String>,
}

/// One place a credential may come from; exactly one field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenSource {
    pub header: Option<Spanned<String>>,
    pub cookie: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwksCache {
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    pub default_ttl: Option<Spanned<String>>,
    pub refetch_interval: Option<Spanned<String>>,
    pub stale_for: Option<Spanned<String>>,
    pub fetch_timeout: Option<Spanned<String>>,
}

/// `[auth.api_key.NAME]`: consumers identified by a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub header: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
    #[serde(default)]
    pub consumers: Vec<Spanned<RawConsumer>>,
    #[serde(default)]
    pub forward: BTreeMap<Spanned<String>, Spanned<String>>,
    pub strip_credential: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub id: Spanned<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub key_sha256: Spanned<String>,
    #[serde(default)]
    pub disabled: bool,
}

/// A route's `auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAuth {
    #[serde(default)]
    pub any_of: Vec<Spanned<String>>,
    #[serde(default)]
    pub scopes: Vec<Spanned<String>>,
    #[serde(default)]
    pub claims: BTreeMap<String, Spanned<ClaimValues>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}

/// A claim matcher: one accepted value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimValues {
    One(String),
    Many(Vec<String>),
}

/// A byte size: an integer, or a string such as `"64KiB"`, `"10MiB"`, `"1GiB"`, `"512B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
        }
        match Either::deserialize(de)? {
            Either::Int(n) => Ok(Size(n)),
            Either::Text(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a size (use bytes, or e.g. \"64KiB\", \"10MiB\")"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!("unknown size unit `{other}` in `{text}` (use B, KiB, MiB or GiB)"));
        }
    };
    n.checked_mul(factor).ok_or_else(|| format!("size `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("10 MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("10MB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999GiB").unwrap_err().contains("too large"));
    }
}
