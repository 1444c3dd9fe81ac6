//! `[auth.introspection.NAME]` compiled: opaque tokens checked at an
//! OAuth 2.0 introspection endpoint (RFC 7662), with the gateway's own
//! client authentication to it (`client_secret_basic`, or a bearer token).

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use toml::Spanned;

use super::Compiler;
use super::auth::TokenSource;
use super::raw::RawIntrospection;

/// Positive results are trusted at most this long: the revocation delay. Default.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Refusals (`active: false`) are remembered this long. Default.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long the endpoint gets to answer. Default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer tokens are refused unread. Default.
const DEFAULT_MAX_TOKEN_SIZE: u64 = 4 << 10;

#[derive(Clone)]
pub(crate) struct IntrospectionProvider {
    pub(crate) endpoint: Uri,
    /// The `Authorization` the gateway sends the endpoint.
    pub(crate) authorization: HeaderValue,
    /// `iss` an answer must carry, if set. Default: any.
    pub(crate) issuer: Option<String>,
    /// One of these must be in `aud`, if any are set. Default: any.
    pub(crate) audiences: Vec<String>,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) forward_claims: Vec<(HeaderName, String)>,
    pub(crate) groups_claim: Option<String>,
    pub(crate) strip_credential: bool,
    pub(crate) max_token_size: usize,
    /// Active tokens are trusted until their `exp`, at most this long.
    pub(crate) cache_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) timeout: Duration,
}

impl Compiler<'_> {
    pub(super) fn introspection_provider(
        &mut self,
        name: &str,
        raw: &Spanned<RawIntrospection>,
    ) -> Option<IntrospectionProvider> {
        let key = format!("auth.introspection.{name}");
        let r = raw.get_ref();
        let before = self.errors.len();
        let endpoint = self.http_url(&format!("{key}.endpoint"), &r.endpoint);
        let authorization = self.introspection_client(&key, raw);
        let sources = self.token_sources(&key, &r.token_from);
        let forward_claims = self.forward_claims(&key, &r.forward_claims);
        let max_token_size =
            self.size(r.max_token_size.clone(), &format!("{key}.max_token_size"), DEFAULT_MAX_TOKEN_SIZE);
        let cache_ttl = self.duration(&r.cache_ttl, &format!("{key}.cache_ttl"), DEFAULT_CACHE_TTL);
        let negative_ttl =
            self.duration(&r.negative_cache_ttl, &format!("{key}.negative_cache_ttl"), DEFAULT_NEGATIVE_TTL);
        let timeout = self.duration(&r.timeout, &format!("{key}.timeout"), DEFAULT_TIMEOUT);
        let (endpoint, authorization) = (endpoint?, authorization?);
        (self.errors.len() == before).then(|| IntrospectionProvider {
            endpoint,
            authorization,
            issuer: r.issuer.as_ref().map(|i| i.get_ref().clone()),
            audiences: r.audiences.iter().map(|a| a.get_ref().clone()).collect(),
            sources,
            forward_claims,
            groups_claim: r.groups_claim.as_ref().map(|g| g.get_ref().clone()),
            strip_credential: r.strip_credential.unwrap_or(true),
            max_token_size: usize::try_from(max_token_size).unwrap_or(usize::MAX),
            cache_ttl,
            negative_ttl,
            timeout,
        })
    }

    /// The gateway's credential at the endpoint: `client_id` with
    /// `client_secret` (HTTP Basic, RFC 6749 §2.3.1), or `bearer_token`.
    fn introspection_client(&mut self, key: &str, raw: &Spanned<RawIntrospection>) -> Option<HeaderValue> {
        let r = raw.get_ref();
        let value = match (&r.client_id, &r.client_secret, &r.bearer_token) {
            (Some(id), Some(secret), None) => {
                let id = self.value(id, &format!("{key}.client_id"))?;
                let secret = self.value(secret, &format!("{key}.client_secret"))?;
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(&id), encode(&secret));
                format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair))
            }
            (None, None, Some(token)) => format!("Bearer {}", self.value(token, &format!("{key}.bearer_token"))?),
            _ => {
                let message = "the gateway authenticates to the endpoint with `client_id` and `client_secret`, or a `bearer_token`";
                self.error(raw.span(), key, message);
                return None;
            }
        };
        let parsed = HeaderValue::from_str(&value).map_err(|_| "is not a valid header value".to_string());
        self.check(raw.span(), key, parsed)
    }
}
