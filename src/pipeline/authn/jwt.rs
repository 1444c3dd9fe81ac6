//! JWT verification. Order matters: the cheapest checks refuse the most
//! (size, shape, header, accepted algorithm) before any key is looked up or
//! any signature computed; the verified result is cached by the token's
//! SHA-256 until its `exp` (at most [`TOKEN_CACHE_TTL`]).
//!
//! `jsonwebtoken` checks the signature, issuer and audience; `exp` and
//! `nbf` are checked here against the [`Clock`] port (the crate would read
//! the system clock), with the provider's leeway.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::failures::FailureLimit;
use super::jwks::{Fetched, KeyLookup};
use super::{AuthCaches, AuthError, AuthNote, Challenge, Identity, TOKEN_CACHE_TTL, digest};
use crate::config::auth::{JwtProvider, KeySource, StaticKey};
use crate::ports::{Clock, KvStore, Lifetime, Ports, store_key};

const MALFORMED: (&str, &str) = ("malformed", "the token is malformed");
const BAD_ISSUER: (&str, &str) = ("bad_issuer", "the token's issuer is not accepted");
const BAD_AUDIENCE: (&str, &str) = ("bad_audience", "the token's audience is not accepted");

/// A provider's tokens, checked for one client.
pub(crate) struct Verifier<'a> {
    pub(crate) name: &'a str,
    pub(crate) provider: &'a JwtProvider,
    /// The client's failure count: over it, no signature is checked.
    pub(crate) limit: Option<&'a FailureLimit<'a>>,
}

impl Verifier<'_> {
    pub(crate) async fn verify<P: Ports>(
        &self,
        token: &str,
        caches: &AuthCaches,
        ports: &P,
        challenge: &Challenge,
        note: &mut AuthNote,
    ) -> Result<Arc<Identity>, AuthError> {
        if token.len() > self.provider.max_token_size {
            return Err(invalid(("too_large", "the token is too large"), challenge));
        }
        let now = ports.clock().now();
        let digest = digest(self.name, token);
        let hit = cached(&digest, caches, ports, now).await;
        note.cached = Some(hit.is_some());
        if let Some(identity) = hit {
            return Ok(identity);
        }
        if let Some(limit) = self.limit
            && let Some(retry_after) = limit.over(ports).await
        {
            return Err(AuthError::TooManyFailures { retry_after });
        }
        // Boxed: a new token's state (key lookup, JWKS fetch) is large, and
        // would otherwise make every request's future carry it.
        let (verdict, fetched) = Box::pin(self.verify_new(token, digest, caches, ports, challenge)).await;
        note.fetch = fetched;
        verdict
    }

    /// A token not seen before: header, key, signature, claims; then cached.
    /// Also returns the key-set fetch it made, if any.
    async fn verify_new<P: Ports>(
        &self,
        token: &str,
        digest: [u8; 32],
        caches: &AuthCaches,
        ports: &P,
        challenge: &Challenge,
    ) -> (Result<Arc<Identity>, AuthError>, Option<Fetched>) {
        let invalid = |flaw: (&'static str, &str)| invalid(flaw, challenge);
        let header = match accepted_header(self.provider, token) {
            Ok(header) => header,
            Err(flaw) => return (Err(invalid(flaw)), None),
        };
        let (key, fetched) = signing_key(self.provider, &header, caches, ports).await;
        let verified = match key {
            Ok(key) => self.checked(token, (&key, header.alg), digest, caches, ports, challenge).await,
            Err(no_key) => Err(no_key.into_error(challenge)),
        };
        (verified, fetched)
    }

    /// Signature, issuer, audience and times, with the key found; then cached.
    async fn checked<P: Ports>(
        &self,
        token: &str,
        (key, alg): (&DecodingKey, Algorithm),
        digest: [u8; 32],
        caches: &AuthCaches,
        ports: &P,
        challenge: &Challenge,
    ) -> Result<Arc<Identity>, AuthError> {
        let (name, p) = (self.name, self.provider);
        let invalid = |flaw: (&'static str, &str)| invalid(flaw, challenge);
        let now = ports.clock().now();
        let claims = signed_claims(p, token, key, alg).map_err(invalid)?;
        let exp = check_times(p, &claims, now).map_err(|(reason, d)| invalid((reason, &d)))?;
        let identity = Arc::new(identity_of(name, p, claims));
        cache_verified(ports, caches, &digest, &identity, exp, TOKEN_CACHE_TTL).await;
        Ok(identity)
    }
}

/// Caches a verified identity until its `exp`, at most `ttl` from now: in
/// memory, and where an instance lives one request in the store too.
pub(super) async fn cache_verified<P: Ports>(
    ports: &P,
    caches: &AuthCaches,
    digest: &[u8; 32],
    identity: &Arc<Identity>,
    exp: Option<f64>,
    ttl: Duration,
) {
    let now = ports.clock().now();
    let ceiling = now.saturating_add(ttl);
    // Any `exp` a token may carry (1e300 included) caps the cache, never panics.
    let until = exp.and_then(|e| Duration::try_from_secs_f64(e.max(0.0)).ok()).map_or(ceiling, |d| d.min(ceiling));
    caches.tokens.insert(*digest, identity.clone(), Some(until), now);
    if P::LIFETIME == Lifetime::Request {
        shared_put(ports, digest, identity, until, now).await;
    }
}

/// A token refused: why (a metric label), and the description the client gets.
pub(super) fn invalid((reason, description): (&'static str, &str), challenge: &Challenge) -> AuthError {
    AuthError::InvalidToken { reason, description: description.into(), challenge: challenge.clone() }
}

/// A token verified before: in memory, or (where an instance lives one
/// request) in the key-value store.
pub(super) async fn cached<P: Ports>(
    digest: &[u8; 32],
    caches: &AuthCaches,
    ports: &P,
    now: Duration,
) -> Option<Arc<Identity>> {
    if let Some(identity) = caches.tokens.get(digest, now) {
        return Some(identity);
    }
    if P::LIFETIME == Lifetime::Request
        && let Some((identity, until)) = shared_get(ports, digest, now).await
    {
        caches.tokens.insert(*digest, identity.clone(), Some(until), now);
        return Some(identity);
    }
    None
}

/// The header, if the token is shaped like a JWT (three non-empty base64url
/// segments) and its algorithm is one the provider accepts.
pub(crate) fn accepted_header(p: &JwtProvider, token: &str) -> Result<Header, (&'static str, &'static str)> {
    let well_formed = token.split('.').count() == 3
        && token
            .split('.')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if !well_formed {
        return Err(MALFORMED);
    }
    let header = decode_header(token).map_err(|_| MALFORMED)?;
    if !p.algorithms.contains(&header.alg) {
        return Err(("bad_algorithm", "the token's algorithm is not accepted"));
    }
    Ok(header)
}

/// Why no key could check a token.
enum NoKey {
    Unknown,
    Mismatch,
    Unavailable,
}

impl NoKey {
    fn into_error(self, challenge: &Challenge) -> AuthError {
        match self {
            NoKey::Unknown => invalid(("unknown_kid", "the token's signing key is unknown"), challenge),
            NoKey::Mismatch => invalid(("bad_algorithm", "the token's algorithm does not match its key"), challenge),
            NoKey::Unavailable => AuthError::KeysUnavailable,
        }
    }
}

/// The key for the token's `kid` and algorithm, from the provider's source,
/// and the key-set fetch the lookup made, if any. The key's type decides
/// the algorithm family: an HS256 token can never be checked against an
/// RSA public key used as an HMAC secret.
async fn signing_key<P: Ports>(
    p: &JwtProvider,
    header: &Header,
    caches: &AuthCaches,
    ports: &P,
) -> (Result<Arc<DecodingKey>, NoKey>, Option<Fetched>) {
    let (found, fetched) = match &p.keys {
        KeySource::Hmac(key) => (Ok(key.clone()), None),
        KeySource::Static(keys) => {
            let fits = |k: &&StaticKey| k.key.family() == header.alg.family();
            let found = match header.kid.as_deref() {
                Some(kid) => keys.iter().filter(fits).find(|k| k.kid.as_deref() == Some(kid)),
                None if keys.len() == 1 => keys.iter().find(fits),
                None => None,
            };
            (found.map(|k| k.key.clone()).ok_or(NoKey::Unknown), None)
        }
        KeySource::Jwks(uri) => {
            let lookup = caches.jwks.key(ports, uri, &p.jwks_cache, header.kid.as_deref(), header.alg).await;
            let found = match lookup.key {
                KeyLookup::Found(key) => Ok(key),
                KeyLookup::Unknown => Err(NoKey::Unknown),
                KeyLookup::Unavailable => Err(NoKey::Unavailable),
            };
            (found, lookup.fetched)
        }
    };
    let fitting =
        found.and_then(|key| if key.family() == header.alg.family() { Ok(key) } else { Err(NoKey::Mismatch) });
    (fitting, fetched)
}

/// The claims, once the signature, issuer and audience check out.
fn signed_claims(
    p: &JwtProvider,
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<Map<String, Value>, (&'static str, &'static str)> {
    #[cfg(target_arch = "wasm32")]
    super::rsa_edge::install();
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[&p.issuer]);
    validation.set_audience(&p.audiences);
    let data = decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => ("bad_signature", "the token's signature is invalid"),
        ErrorKind::InvalidIssuer => BAD_ISSUER,
        ErrorKind::InvalidAudience => BAD_AUDIENCE,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => BAD_AUDIENCE,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => BAD_ISSUER,
        _ => MALFORMED,
    })?;
    Ok(data.claims)
}

/// `exp` and `nbf` against the Clock port (with the provider's leeway), the
/// token's lifetime against `max_lifetime`, and the claims the provider
/// requires; returns `exp`.
fn check_times(
    p: &JwtProvider,
    claims: &Map<String, Value>,
    now: Duration,
) -> Result<Option<f64>, (&'static str, String)> {
    let leeway = p.leeway.as_secs_f64();
    let now_secs = now.as_secs_f64();
    let time = |claim: &str| -> Result<Option<f64>, (&'static str, String)> {
        match claims.get(claim) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| (MALFORMED.0, format!("the token's `{claim}` is not a number")))
            }
        }
    };
    let exp = time("exp")?;
    if exp.is_some_and(|exp| now_secs >= exp + leeway) {
        return Err(("expired", "the token has expired".into()));
    }
    if time("nbf")?.is_some_and(|nbf| now_secs + leeway < nbf) {
        return Err(("not_yet_valid", "the token is not valid yet".into()));
    }
    if let (Some(max), Some(exp)) = (p.max_lifetime, exp) {
        let from = time("iat")?.unwrap_or(now_secs);
        if exp - from > max.as_secs_f64() {
            return Err(("too_long_lived", "the token lives longer than this API accepts".into()));
        }
    }
    if let Some(missing) = p.required_claims.iter().find(|c| !claims.contains_key(c.as_str())) {
        return Err(("missing_claim", format!("the token lacks the `{missing}` claim")));
    }
    Ok(exp)
}

/// Who the verified claims say the caller is.
fn identity_of(name: &str, p: &JwtProvider, claims: Map<String, Value>) -> Identity {
    Identity {
        networks: None,
        provider: name.to_string(),
        subject: claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_string(),
        groups: p.groups_claim.as_deref().map(|c| strings(claims.get(c))).unwrap_or_default(),
        scopes: scopes(&claims),
        claims,
    }
}

/// Scopes from `scope` (space-separated, RFC 8693) or `scp` (array or string).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        other => strings(other),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The key-value entry for a verified token (`kv-schema/verified-tokens.md`).
pub(crate) fn token_key(digest: &[u8; 32]) -> String {
    store_key(&["pc1:tok:"], digest)
}

/// The record under [`token_key`] (`kv-schema/verified-tokens.md`): read
/// as an owned [`Identity`], written from a borrowed one.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedToken<I = Identity> {
    until_ms: u64,
    identity: I,
}

/// A verified token from the shared store, if still valid.
async fn shared_get<P: Ports>(ports: &P, digest: &[u8; 32], now: Duration) -> Option<(Arc<Identity>, Duration)> {
    let bytes = ports.kv().get(&token_key(digest)).await.ok()??;
    let stored: SharedToken = serde_json::from_slice(&bytes).ok()?;
    let until = Duration::from_millis(stored.until_ms);
    (until > now).then(|| (Arc::new(stored.identity), until))
}

async fn shared_put<P: Ports>(ports: &P, digest: &[u8; 32], identity: &Identity, until: Duration, now: Duration) {
    let stored = SharedToken { until_ms: u64::try_from(until.as_millis()).unwrap_or(u64::MAX), identity };
    if let Ok(bytes) = serde_json::to_vec(&stored) {
        // Losing this only costs the next fresh instance a signature check.
        let _ = ports.kv().set(&token_key(digest), &bytes, Some(until.saturating_sub(now))).await;
    }
}
