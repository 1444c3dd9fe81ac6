//! Phases 4 and 5, authentication and authorization: who is calling, and
//! may they call this route. Runs right after routing, before anything that
//! spends origin or cache resources, and only for routes with `auth`.
//!
//! A route accepts any of its providers: the first one whose credential is
//! present decides. A hot token costs a SHA-256 and a map lookup (verified
//! tokens are cached until their `exp`, at most [`TOKEN_CACHE_TTL`]); a cold
//! one costs a signature check with keys from the JWKS cache.

pub(crate) mod apikey;
pub use apikey::Registered;
pub(crate) mod credential;
pub(crate) mod failures;
mod introspection;
mod jwks;
pub(crate) mod jwt;
mod mtls;
#[cfg(target_arch = "wasm32")]
mod rsa_edge;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::trace::{SpanKind, SpanRecord};
use super::{Ctx, Flow, Gateway};
pub(crate) use crate::config::auth::Challenge;
use crate::config::auth::{AuthConfig, CertField, ConsumerField, ProviderKind, RouteAuth};
use crate::ports::{Body, Clock, Ports};
use crate::shared::cache::ExpiringMap;
pub(crate) use crate::shared::identity::Identity;
use crate::shared::problem::{Answer, Problem, Source};
use crate::shared::tls::ClientCert;

pub use super::log::AuthNote;
use failures::FailureLimit;
pub use jwks::Fetched;
pub(crate) use jwks::JwksCache;

/// The longest a verified token stays cached, whatever its `exp`: a key
/// removed from the JWKS stops accepting tokens within this time.
pub(crate) const TOKEN_CACHE_TTL: Duration = Duration::from_secs(300);

/// Why a request is not allowed, in RFC 6750 terms.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("credentials are required")]
    Missing { challenge: Challenge },
    #[error("{description}")]
    InvalidToken { reason: &'static str, description: String, challenge: Challenge },
    #[error("{description}")]
    InvalidRequest { description: String, challenge: Challenge },
    #[error("the signing keys cannot be fetched right now")]
    KeysUnavailable,
    #[error("the identity provider cannot check tokens right now")]
    IdpUnavailable,
    #[error("the consumer registry cannot be read right now")]
    RegistryUnavailable,
    #[error("too many failed attempts to authenticate; retry after {retry_after} seconds")]
    TooManyFailures { retry_after: u64 },
    #[error("the credential lacks the scope this route requires")]
    InsufficientScope { scope: String, challenge: Challenge },
    #[error("{reason}")]
    Forbidden { reason: String },
}

impl Answer for AuthError {
    fn problem(&self) -> Problem {
        let (status, slug, source) = match self {
            Self::Missing { .. } | Self::InvalidToken { .. } => {
                (StatusCode::UNAUTHORIZED, "unauthorized", Source::Client)
            }
            Self::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid-credential", Source::Client),
            Self::KeysUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "keys-unavailable", Source::Upstream),
            Self::IdpUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "idp-unavailable", Source::Upstream),
            Self::RegistryUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable", Source::Store),
            Self::TooManyFailures { retry_after } => {
                let p =
                    Problem::new(StatusCode::TOO_MANY_REQUESTS, "auth-rate-limited", self.to_string(), Source::Client);
                return p.header(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::InsufficientScope { .. } | Self::Forbidden { .. } => {
                (StatusCode::FORBIDDEN, "forbidden", Source::Client)
            }
        };
        let mut p = Problem::new(status, slug, self.to_string(), source);
        for challenge in www_authenticate(self) {
            p = p.header(WWW_AUTHENTICATE, challenge);
        }
        p
    }
}

/// The caches that only save work; per process on the node, per instance
/// at the edge (where verified tokens may also go through the key-value
/// store, see [`crate::ports::Lifetime::Request`]).
pub struct AuthCaches {
    /// Key sets depend only on their URL, so they outlive a config reload.
    pub(crate) jwks: Arc<JwksCache>,
    /// Verified tokens depend on the providers' rules: a reload starts afresh.
    tokens: ExpiringMap<[u8; 32], Arc<Identity>>,
    /// Opaque tokens an introspection endpoint called inactive, and why.
    inactive: ExpiringMap<[u8; 32], (&'static str, &'static str)>,
    /// Opaque tokens being introspected now (others wait for the answer).
    asking: ExpiringMap<[u8; 32], ()>,
    /// The registry's API-key consumers: they outlive a reload too.
    pub(crate) consumers: Arc<apikey::Registered>,
    /// Or, at the edge, the registry's consumers read from the store a
    /// key at a time.
    pub(crate) stored: Option<apikey::Stored>,
}

impl AuthCaches {
    pub fn new(auth: &AuthConfig) -> Self {
        Self::with_keys(Arc::default(), Arc::default(), auth)
    }

    /// The registry's API-key consumers these caches hold.
    pub fn registered(&self) -> &Registered {
        &self.consumers
    }

    /// Caches for a reloaded config: the key sets and the registry's
    /// consumers carry over, verified tokens do not.
    pub fn renewed(&self, auth: &AuthConfig) -> Self {
        Self::with_keys(self.jwks.clone(), self.consumers.clone(), auth)
    }

    fn with_keys(jwks: Arc<JwksCache>, consumers: Arc<apikey::Registered>, auth: &AuthConfig) -> Self {
        let entries = auth.token_cache_entries;
        Self {
            jwks,
            consumers,
            tokens: ExpiringMap::new(entries),
            inactive: ExpiringMap::new(entries),
            asking: ExpiringMap::new(entries),
            stored: None,
        }
    }

    /// Reads the registry's consumers from the store, each answer kept
    /// for `keep` (the edge, which cannot hold them all).
    #[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
    pub(crate) fn read_consumers_from_store(&mut self, keep: Duration, entries: usize) {
        self.stored = Some(apikey::Stored::new(keep, entries));
    }
}

impl AuthError {
    /// Why, in a word: the `outcome` of the access log and of
    /// `portcullis_auth_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing",
            Self::InvalidToken { reason, .. } => reason,
            Self::InvalidRequest { .. } => "invalid_request",
            Self::KeysUnavailable => "keys_unavailable",
            Self::IdpUnavailable => "idp_unavailable",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::TooManyFailures { .. } => "too_many_failures",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::Forbidden { .. } => "forbidden",
        }
    }
}

/// The authentication phase, with authorization: identity headers from the
/// client are dropped on every route; on a route with `auth`, the first
/// provider whose credential is present decides who is calling, then the
/// route's scopes, claims and groups decide whether they may. What was
/// decided goes to the access log (and a span).
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, AuthError> {
    let auth = &gateway.config.auth;
    drop_identity_headers(auth, req.headers_mut());
    let Some(route_auth) = gateway.route(ctx).and_then(|r| r.auth.as_ref()) else {
        return Ok(Flow::Continue);
    };
    // Timed only for a sampled trace's span: no clock read otherwise.
    let started = ctx.spans.is_some().then(|| ports.clock().monotonic());
    let mut note = AuthNote::default();
    let client_cert = ctx.tls.as_ref().and_then(|t| t.client_cert.as_ref());
    let caller = Caller { ip: ctx.client_ip, cert: client_cert };
    let verdict = authenticate(auth, route_auth, &gateway.caches, ports, caller, req, &mut note)
        .await
        .and_then(|identity| authorize(route_auth, &identity).map(|()| identity));
    note.outcome = verdict.as_ref().map_or_else(AuthError::reason, |_| "ok");
    ctx.auth = Some(note);
    if let Some(started) = started {
        span(ctx, auth, started, ports.clock().monotonic(), &verdict);
    }
    ctx.identity = Some(verdict?);
    Ok(Flow::Continue)
}

/// The authentication span, with the key-set fetch under it.
fn span(ctx: &mut Ctx, auth: &AuthConfig, start: Duration, end: Duration, verdict: &Result<Arc<Identity>, AuthError>) {
    let (Some(spans), Some(note)) = (&mut ctx.spans, &ctx.auth) else { return };
    let provider = note.provider.map_or("", |i| &*auth.providers[i].name);
    let span = SpanRecord::new("portcullis.authn", SpanKind::Internal, &ctx.trace.span_id, start, end)
        .attr("portcullis.auth.provider", provider)
        .attr("portcullis.auth.outcome", note.outcome)
        .failed(verdict.as_ref().err().map(ToString::to_string));
    if let Some(fetch) = note.fetch {
        let outcome = if fetch.ok { "ok" } else { "failed" };
        spans.push(
            SpanRecord::new("portcullis.jwks_fetch", SpanKind::Client, &span.span_id, fetch.started, fetch.ended)
                .attr("portcullis.auth.provider", provider)
                .attr("portcullis.jwks.outcome", outcome)
                .failed((!fetch.ok).then(|| "the key set could not be fetched".to_string())),
        );
    }
    spans.push(span);
}

/// Removes every header a provider forwards identity in: only the gateway
/// sets them, on every route, public ones included.
fn drop_identity_headers(auth: &AuthConfig, headers: &mut HeaderMap) {
    for name in &auth.identity_headers {
        headers.remove(name);
    }
}

/// Who is asking, before any credential: the client's address, and the
/// client certificate its TLS connection proved (the node's listeners).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub ip: IpAddr,
    pub cert: Option<&'a ClientCert>,
}

/// Authenticates with the route's providers; on success the credential is
/// stripped (if configured) and the provider's identity headers are set.
/// A bad credential counts against the provider's `failure_limit` for the
/// caller's address. `note` says which provider decided and whether a
/// token came from the cache.
pub async fn authenticate<P: Ports, B>(
    auth: &AuthConfig,
    route: &RouteAuth,
    caches: &AuthCaches,
    ports: &P,
    caller: Caller<'_>,
    req: &mut Request<B>,
    note: &mut AuthNote,
) -> Result<Arc<Identity>, AuthError> {
    let challenge = &route.challenge;
    let mut failure: Option<AuthError> = None;
    for &index in &route.providers {
        let provider = &auth.providers[index];
        let limit = FailureLimit::new(provider, caller.ip);
        let (sources, strip) = match &provider.kind {
            ProviderKind::Jwt(jwt) => (&jwt.sources[..], jwt.strip_credential),
            ProviderKind::ApiKey(keys) => (std::slice::from_ref(&keys.source), keys.strip_credential),
            ProviderKind::Introspection(opaque) => (&opaque.sources[..], opaque.strip_credential),
            // A certificate is the connection's: nothing to find or strip.
            ProviderKind::Mtls(_) => (&[][..], false),
        };
        let found = match (&provider.kind, caller.cert) {
            (ProviderKind::Mtls(_), None) => continue,
            (ProviderKind::Mtls(certs), Some(cert)) => Some(mtls::verify(certs, cert, challenge)),
            _ => None,
        };
        let verified = match found {
            Some(verified) => {
                if let Ok(identity) = &verified {
                    forward(&provider.kind, identity, caller.cert, req.headers_mut());
                }
                verified
            }
            None => match credential::find(sources, req) {
                credential::Found::None => continue,
                credential::Found::Malformed(description) => {
                    Err(AuthError::InvalidRequest { description, challenge: challenge.clone() })
                }
                credential::Found::Credential(credential, source) => {
                    let verified = match &provider.kind {
                        ProviderKind::Jwt(jwt) => {
                            let p = jwt::Verifier { name: &provider.name, provider: jwt, limit: limit.as_ref() };
                            p.verify(&credential, caches, ports, challenge, note).await
                        }
                        ProviderKind::ApiKey(keys) => {
                            apikey::verify(keys, &provider.name, caches, ports, &credential, challenge).await
                        }
                        ProviderKind::Introspection(opaque) => {
                            let p = introspection::Introspector {
                                name: &provider.name,
                                provider: opaque,
                                limit: limit.as_ref(),
                            };
                            Box::pin(p.verify(&credential, caches, ports, challenge, note)).await
                        }
                        ProviderKind::Mtls(_) => continue,
                    };
                    if let Ok(identity) = &verified {
                        if strip {
                            credential::strip(source, req);
                        }
                        forward(&provider.kind, identity, caller.cert, req.headers_mut());
                    }
                    verified
                }
            },
        };
        if failure.is_none() {
            note.provider = Some(index);
        }
        match verified {
            Ok(identity) => {
                note.provider = Some(index);
                return Ok(identity);
            }
            Err(e @ (AuthError::InvalidToken { .. } | AuthError::InvalidRequest { .. })) => {
                let over = match &limit {
                    Some(limit) => limit.charge(ports).await,
                    None => None,
                };
                let e = over.map_or(e, |retry_after| AuthError::TooManyFailures { retry_after });
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    Err(failure.unwrap_or_else(|| AuthError::Missing { challenge: challenge.clone() }))
}

/// Sets the identity headers a provider sends to the origin.
fn forward(kind: &ProviderKind, id: &Identity, cert: Option<&ClientCert>, headers: &mut HeaderMap) {
    match kind {
        ProviderKind::Jwt(_) | ProviderKind::Introspection(_) => {
            let claims = match kind {
                ProviderKind::Jwt(jwt) => &jwt.forward_claims,
                ProviderKind::Introspection(opaque) => &opaque.forward_claims,
                _ => return,
            };
            for (name, claim) in claims {
                if let Some(value) = id.claims.get(claim).and_then(claim_header) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        ProviderKind::ApiKey(keys) => {
            for (name, field) in &keys.forward {
                let value = match field {
                    ConsumerField::Id => HeaderValue::from_str(&id.subject),
                    ConsumerField::Groups => HeaderValue::from_str(&id.groups.join(",")),
                };
                if let Ok(value) = value {
                    headers.insert(name.clone(), value);
                }
            }
        }
        ProviderKind::Mtls(certs) => {
            for (name, field) in &certs.forward {
                let value = match field {
                    CertField::Id => Some(id.subject.clone()),
                    CertField::Groups => Some(id.groups.join(",")),
                    CertField::SpiffeId => cert.and_then(ClientCert::spiffe_id).map(str::to_string),
                    CertField::CommonName => cert.and_then(|c| c.common_name.clone()),
                    CertField::Sha256 => cert.map(|c| c.sha256.clone()),
                };
                if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.insert(name.clone(), value);
                }
            }
        }
    }
}

/// A claim as a header value: strings as they are, numbers and booleans
/// printed, arrays of those joined with `,`; objects are not forwarded.
fn claim_header(value: &serde_json::Value) -> Option<HeaderValue> {
    use serde_json::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Some(s.clone()),
        V::Number(n) => Some(n.to_string()),
        V::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        V::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(","),
        other => scalar(other)?,
    };
    HeaderValue::from_str(&text).ok()
}

/// Whether a claim value equals an accepted value from config.
fn claim_equals(value: &serde_json::Value, accepted: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == accepted,
        serde_json::Value::Number(n) => n.to_string() == accepted,
        serde_json::Value::Bool(b) => b.to_string() == accepted,
        _ => false,
    }
}

/// Phase 5: the identity against the route's scopes, claims and groups.
pub(crate) fn authorize(route: &RouteAuth, identity: &Identity) -> Result<(), AuthError> {
    let missing: Vec<&str> = route.scopes.iter().filter(|s| !identity.scopes.contains(s)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(AuthError::InsufficientScope { scope: route.scopes.join(" "), challenge: route.challenge.clone() });
    }
    for (claim, accepted) in &route.claims {
        let ok = match identity.claims.get(claim) {
            Some(serde_json::Value::Array(items)) => items.iter().any(|v| accepted.iter().any(|a| claim_equals(v, a))),
            Some(v) => accepted.iter().any(|a| claim_equals(v, a)),
            None => false,
        };
        if !ok {
            return Err(AuthError::Forbidden { reason: format!("the credential's `{claim}` is not accepted here") });
        }
    }
    if !route.groups.is_empty() && !identity.groups.iter().any(|g| route.groups.contains(g)) {
        return Err(AuthError::Forbidden { reason: "the caller's groups are not allowed here".into() });
    }
    Ok(())
}

/// The `WWW-Authenticate` values for an error (one per scheme offered).
pub(crate) fn www_authenticate(err: &AuthError) -> Vec<HeaderValue> {
    let (challenge, params) = match err {
        AuthError::Missing { challenge } => (challenge, String::new()),
        AuthError::InvalidToken { description, challenge, .. } => {
            (challenge, format!(", error=\"invalid_token\", error_description=\"{}\"", quoted(description)))
        }
        AuthError::InvalidRequest { description, challenge } => {
            (challenge, format!(", error=\"invalid_request\", error_description=\"{}\"", quoted(description)))
        }
        AuthError::InsufficientScope { scope, challenge } => {
            (challenge, format!(", error=\"insufficient_scope\", scope=\"{}\"", quoted(scope)))
        }
        AuthError::KeysUnavailable
        | AuthError::IdpUnavailable
        | AuthError::RegistryUnavailable
        | AuthError::Forbidden { .. }
        | AuthError::TooManyFailures { .. } => {
            return Vec::new();
        }
    };
    let mut values = Vec::new();
    if challenge.bearer {
        values.push(format!("Bearer realm=\"{}\"{params}", quoted(&challenge.realm)));
    }
    if challenge.api_key {
        values.push(format!("ApiKey realm=\"{}\"", quoted(&challenge.realm)));
    }
    values.into_iter().filter_map(|v| HeaderValue::from_str(&v).ok()).collect()
}

fn quoted(text: &str) -> String {
    text.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

/// SHA-256 of a credential, bound to its provider (the same bytes under
/// two providers are two different cache entries).
fn digest(provider: &str, credential: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(credential.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests;
