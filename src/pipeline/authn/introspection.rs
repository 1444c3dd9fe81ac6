//! Opaque tokens, checked at the identity provider's introspection
//! endpoint (RFC 7662). An active answer becomes an identity exactly as a
//! JWT's claims do (`sub`, `scope`, the groups claim, every member for
//! claim matchers), cached by the token's SHA-256 until its `exp` and at
//! most `cache_ttl` (the revocation delay); an inactive one is remembered
//! for `negative_cache_ttl`. One request per token asks the endpoint at a
//! time: within a process or instance by a marker the others wait on, and
//! across WASI 0.2 instances (one request each) by a claim in the store
//! (`kv-schema/introspection.md`). An endpoint that cannot answer is 503,
//! never 401: a caller is not told its token is bad when nobody knows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request};
use serde_json::{Map, Value};

use super::failures::FailureLimit;
use super::jwt::{cache_verified, cached, invalid};
use super::{AuthCaches, AuthError, AuthNote, Challenge, Identity, digest};
use crate::config::introspection::{Assertion, ClientAuth, IntrospectionProvider};
use crate::ports::{Clock, HttpClient, KvStore, Lifetime, Ports, UpstreamOptions, store_key};
use crate::shared::entropy::Entropy;
use crate::shared::hex::hex;

/// The largest answer read from the endpoint.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// How often a request waiting on another's introspection looks again.
const POLL: Duration = Duration::from_millis(5);

/// A provider's opaque tokens, checked for one client.
pub(crate) struct Introspector<'a> {
    pub(crate) name: &'a str,
    pub(crate) provider: &'a IntrospectionProvider,
    /// The client's failure count: over it, the endpoint is not asked.
    pub(crate) limit: Option<&'a FailureLimit<'a>>,
}

/// What the endpoint said of a token.
enum Verdict {
    Active(Arc<Identity>),
    Inactive(&'static str, &'static str),
}

impl Introspector<'_> {
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
        let digest = digest(self.name, token);
        let remembered = self.remembered(&digest, caches, ports).await;
        note.cached = Some(remembered.is_some());
        match remembered {
            Some(Verdict::Active(identity)) => return Ok(identity),
            Some(Verdict::Inactive(reason, description)) => return Err(invalid((reason, description), challenge)),
            None => {}
        }
        if let Some(limit) = self.limit
            && let Some(retry_after) = limit.over(ports).await
        {
            return Err(AuthError::TooManyFailures { retry_after });
        }
        let verdict = match self.claim(&digest, caches, ports).await {
            // The answer may have come between the look and the claim.
            Some(claim) => match self.remembered(&digest, caches, ports).await {
                Some(verdict) => {
                    claim.release(caches, ports).await;
                    note.cached = Some(true);
                    verdict
                }
                None => {
                    let verdict = self.introspect(token, ports).await;
                    self.remember(&digest, &verdict, caches, ports).await;
                    claim.release(caches, ports).await;
                    verdict?
                }
            },
            // Another request asks: its answer, once there (from the cache).
            None => match self.wait(&digest, caches, ports).await {
                Some(verdict) => {
                    note.cached = Some(true);
                    verdict
                }
                None => {
                    let verdict = self.introspect(token, ports).await;
                    self.remember(&digest, &verdict, caches, ports).await;
                    verdict?
                }
            },
        };
        match verdict {
            Verdict::Active(identity) => Ok(identity),
            Verdict::Inactive(reason, description) => Err(invalid((reason, description), challenge)),
        }
    }

    /// An answer remembered: in memory, or (where an instance lives one
    /// request) in the store.
    async fn remembered<P: Ports>(&self, digest: &[u8; 32], caches: &AuthCaches, ports: &P) -> Option<Verdict> {
        let now = ports.clock().now();
        if let Some(identity) = cached(digest, caches, ports, now).await {
            return Some(Verdict::Active(identity));
        }
        if let Some((reason, description)) = caches.inactive.get(digest, now) {
            return Some(Verdict::Inactive(reason, description));
        }
        if P::LIFETIME == Lifetime::Request
            && let Ok(Some(mark)) = ports.kv().get(&claim_key(digest)).await
            && mark == INACTIVE
        {
            return Some(Verdict::Inactive(INACTIVE_REASON.0, INACTIVE_REASON.1));
        }
        None
    }

    /// The right to ask the endpoint about this token now, if no one else
    /// is asking: a marker in memory, and where instances live one request
    /// a claim in the store too.
    async fn claim<P: Ports>(&self, digest: &[u8; 32], caches: &AuthCaches, ports: &P) -> Option<Claim> {
        let now = ports.clock().now();
        let until = Some(now.saturating_add(self.provider.timeout));
        if !caches.asking.compare_and_swap(*digest, None, (), until, now) {
            return None;
        }
        let key = claim_key(digest);
        if P::LIFETIME == Lifetime::Request {
            let won = ports.kv().compare_and_swap(&key, None, ASKING, Some(self.provider.timeout)).await;
            // A store that cannot be asked must not stop the request.
            if won == Ok(false) {
                caches.asking.remove(digest);
                return None;
            }
        }
        Some(Claim { digest: *digest, key })
    }

    /// Waits for another request's answer, until its time runs out.
    async fn wait<P: Ports>(&self, digest: &[u8; 32], caches: &AuthCaches, ports: &P) -> Option<Verdict> {
        let deadline = ports.clock().monotonic().saturating_add(self.provider.timeout);
        while ports.clock().monotonic() < deadline {
            ports.clock().sleep(POLL).await;
            if let Some(verdict) = self.remembered(digest, caches, ports).await {
                return Some(verdict);
            }
            let now = ports.clock().now();
            let local = caches.asking.get(digest, now).is_some();
            let shared = P::LIFETIME == Lifetime::Request
                && matches!(ports.kv().get(&claim_key(digest)).await, Ok(Some(mark)) if mark == ASKING);
            if !local && !shared {
                return self.remembered(digest, caches, ports).await;
            }
        }
        None
    }

    /// Remembers an answer: an active token until its `exp` (at most
    /// `cache_ttl`), an inactive one for `negative_cache_ttl`.
    async fn remember<P: Ports>(
        &self,
        digest: &[u8; 32],
        verdict: &Result<Verdict, AuthError>,
        caches: &AuthCaches,
        ports: &P,
    ) {
        let now = ports.clock().now();
        match verdict {
            Ok(Verdict::Active(identity)) => {
                let exp = identity.claims.get("exp").and_then(Value::as_f64);
                cache_verified(ports, caches, digest, identity, exp, self.provider.cache_ttl).await;
            }
            Ok(Verdict::Inactive(reason, description)) => {
                let until = now.saturating_add(self.provider.negative_ttl);
                caches.inactive.insert(*digest, (reason, description), Some(until), now);
                if P::LIFETIME == Lifetime::Request {
                    let _ = ports.kv().set(&claim_key(digest), INACTIVE, Some(self.provider.negative_ttl)).await;
                }
            }
            Err(_) => {}
        }
    }

    /// Asks the endpoint.
    async fn introspect<P: Ports>(&self, token: &str, ports: &P) -> Result<Verdict, AuthError> {
        let p = self.provider;
        let mut request = Request::post(p.endpoint.clone());
        let assertion = match &p.client {
            ClientAuth::Header(value) => {
                request = request.header(AUTHORIZATION, value.clone());
                None
            }
            ClientAuth::Assertion(a) => match client_assertion(a, ports.clock().now()) {
                Ok(signed) => Some((a.client_id.as_str(), signed)),
                Err(e) => {
                    ports
                        .event(&format!("introspection provider {}: cannot sign the client assertion: {e}", self.name));
                    return Err(AuthError::IdpUnavailable);
                }
            },
        };
        let host = p.endpoint.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let request = request
            .header(HOST, host.ok_or(AuthError::IdpUnavailable)?)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Bytes::from(form(token, assertion.as_ref().map(|(id, signed)| (*id, signed.as_str())))))
            .map_err(|_| AuthError::IdpUnavailable)?;
        let options = UpstreamOptions::own(p.timeout);
        let answer = ports.http().fetch(request, &options, MAX_ANSWER_BYTES).await;
        let answer = answer.ok().filter(|a| a.status().is_success()).ok_or(AuthError::IdpUnavailable)?;
        let members: Map<String, Value> =
            serde_json::from_slice(answer.body()).map_err(|_| AuthError::IdpUnavailable)?;
        Ok(self.judged(members, ports.clock().now()))
    }

    /// An answer's members against the provider's rules.
    fn judged(&self, members: Map<String, Value>, now: Duration) -> Verdict {
        let p = self.provider;
        if members.get("active") != Some(&Value::Bool(true)) {
            return Verdict::Inactive(INACTIVE_REASON.0, INACTIVE_REASON.1);
        }
        let secs = |name: &str| members.get(name).and_then(Value::as_f64);
        if secs("exp").is_some_and(|exp| exp <= now.as_secs_f64()) {
            return Verdict::Inactive("expired", "the token has expired");
        }
        if secs("nbf").is_some_and(|nbf| nbf > now.as_secs_f64()) {
            return Verdict::Inactive("not_yet_valid", "the token is not valid yet");
        }
        if let Some(issuer) = &p.issuer
            && members.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Verdict::Inactive("bad_issuer", "the token's issuer is not accepted");
        }
        if !p.audiences.is_empty() {
            let accepted = |v: &Value| v.as_str().is_some_and(|a| p.audiences.iter().any(|x| x == a));
            let ok = match members.get("aud") {
                Some(Value::Array(list)) => list.iter().any(accepted),
                Some(one) => accepted(one),
                None => false,
            };
            if !ok {
                return Verdict::Inactive("bad_audience", "the token's audience is not accepted");
            }
        }
        let text = |name: &str| members.get(name).and_then(Value::as_str).map(str::to_string);
        let subject = text("sub").or_else(|| text("client_id")).unwrap_or_default();
        let scopes = text("scope").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
        let groups = match p.groups_claim.as_ref().and_then(|g| members.get(g)) {
            Some(Value::Array(list)) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Verdict::Active(Arc::new(Identity {
            provider: self.name.to_string(),
            subject,
            groups,
            scopes,
            claims: members,
            networks: None,
        }))
    }
}

/// The request's form: the token, and the client's assertion if it signs one.
fn form(token: &str, assertion: Option<(&str, &str)>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token).append_pair("token_type_hint", "access_token");
    if let Some((client_id, signed)) = assertion {
        form.append_pair("client_id", client_id)
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", signed);
    }
    form.finish()
}

/// RFC 7523 §2.2's `client_assertion_type`.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion is good for this long after it is signed.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// A client assertion for one call (RFC 7523 §3): the client as `iss` and
/// `sub`, the endpoint as `aud`, a fresh `jti` so the IdP can refuse a
/// replay, `iat` and a short `exp`.
pub(super) fn client_assertion(a: &Assertion, now: Duration) -> Result<String, jsonwebtoken::errors::Error> {
    #[cfg(target_arch = "wasm32")]
    super::rsa_edge::install();
    let jti = hex(&Entropy::draw(now.as_nanos()).bytes()[..16]);
    let claims = serde_json::json!({
        "iss": a.client_id,
        "sub": a.client_id,
        "aud": a.audience,
        "jti": jti,
        "iat": now.as_secs(),
        "exp": (now + ASSERTION_LIFETIME).as_secs(),
    });
    jsonwebtoken::encode(&a.header, &claims, &a.key)
}

/// The right to ask about a token, given back once the answer is remembered.
struct Claim {
    digest: [u8; 32],
    key: String,
}

impl Claim {
    async fn release<P: Ports>(self, caches: &AuthCaches, ports: &P) {
        caches.asking.remove(&self.digest);
        if P::LIFETIME == Lifetime::Request {
            // An inactive answer replaced the claim with its mark; an active
            // one is in the token cache, so the claim can go.
            if let Ok(Some(mark)) = ports.kv().get(&self.key).await
                && mark == ASKING
            {
                let _ = ports.kv().delete(&self.key).await;
            }
        }
    }
}

/// A token's record in the store (`kv-schema/introspection.md`): someone
/// is asking, or the endpoint said it is not active.
pub(super) fn claim_key(digest: &[u8; 32]) -> String {
    store_key(&["pc1:intro:"], digest)
}
pub(super) const ASKING: &[u8] = b"asking";
pub(super) const INACTIVE: &[u8] = b"inactive";
const INACTIVE_REASON: (&str, &str) = ("inactive", "the token is not active");
