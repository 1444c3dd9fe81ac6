//! `[auth]`: JWT providers (keys from a JWKS URL, inline PEM, or an HMAC
//! secret held in a variable) and API-key providers (consumers by the
//! SHA-256 of their key), compiled into what the authn phase needs:
//! parsed algorithms, decoded keys, hashed consumer keys.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri};
use jsonwebtoken::{Algorithm, DecodingKey};
use toml::Spanned;

use super::raw::{
    ClaimValues, RawApiKey, RawAuth, RawCertConsumer, RawJwksCache, RawJwt, RawMtls, RawRouteAuth, RawTokenSource,
};
use super::{Compiler, Known, parse_header_name, vars};
use crate::shared::gcra::Rate;
use crate::shared::identity::Identity;
use crate::shared::networks::IpRules;

pub(crate) const DEFAULT_REALM: &str = "portcullis";
pub(crate) const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_TOKEN_SIZE: u64 = 8 << 10;
/// The shortest HMAC secret accepted: 256 bits, as RFC 7518 asks for HS256.
pub(crate) const MIN_HMAC_SECRET: usize = 32;

/// Every provider, and what all of them forward.
#[derive(Clone)]
pub struct AuthConfig {
    /// `realm` in `WWW-Authenticate`. Default: "portcullis".
    pub(crate) realm: String,
    pub(crate) providers: Vec<Provider>,
    /// Verified tokens kept in memory. Default: 10 000.
    pub(crate) token_cache_entries: usize,
    /// Every header any provider forwards identity in: dropped from every
    /// inbound request, so a client can never forge them.
    pub(crate) identity_headers: Vec<HeaderName>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            realm: DEFAULT_REALM.into(),
            providers: Vec::new(),
            token_cache_entries: DEFAULT_TOKEN_CACHE_ENTRIES,
            identity_headers: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Each JWT provider's key-set URL and cache policy.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn key_sets(&self) -> impl Iterator<Item = (&Arc<str>, &Uri, &JwksPolicy)> {
        self.providers.iter().filter_map(|p| match &p.kind {
            ProviderKind::Jwt(jwt) => match &jwt.keys {
                KeySource::Jwks(uri) => Some((&p.name, uri, &jwt.jwks_cache)),
                _ => None,
            },
            _ => None,
        })
    }
}

#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ProviderKind,
    /// Failed attempts allowed per client IP (`failure_limit`, default
    /// 60/minute with a burst of 60); `None`: `"off"`.
    pub(crate) failure_limit: Option<Rate>,
}

/// The default `failure_limit`: 60 per minute, all at once if need be.
pub(crate) const DEFAULT_FAILURE_LIMIT: (u64, u64) = (60, 60_000_000);

#[derive(Clone)]
pub(crate) enum ProviderKind {
    Jwt(Box<JwtProvider>),
    ApiKey(ApiKeyProvider),
    Mtls(MtlsProvider),
    Introspection(Box<super::introspection::IntrospectionProvider>),
}

impl ProviderKind {
    /// Whether its identities are configured consumers (API keys, client
    /// certificates), not a token's subject: what `consumer` keys count.
    pub(crate) fn names_consumers(&self) -> bool {
        matches!(self, Self::ApiKey(_) | Self::Mtls(_))
    }
}

/// `[auth.mtls.NAME]`: consumers by a verified client certificate.
#[derive(Clone)]
pub(crate) struct MtlsProvider {
    /// In config order: the first whose name the certificate has decides;
    /// revoked (`disabled`) consumers are left out.
    pub(crate) consumers: Vec<(CertName, Arc<Identity>)>,
    pub(crate) forward: Vec<(HeaderName, CertField)>,
}

/// The certificate name a consumer is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertName {
    /// A URI SAN `spiffe://…` (checked to be one).
    SpiffeId(String),
    Uri(String),
    Dns(String),
    Email(String),
    CommonName(String),
    /// The certificate itself (SHA-256 of its DER, lower-case hex): pinned.
    Sha256(String),
}

/// What an `mtls` provider can forward to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertField {
    Id,
    Groups,
    SpiffeId,
    CommonName,
    Sha256,
}

#[derive(Clone)]
pub(crate) struct JwtProvider {
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) keys: KeySource,
    /// Clock skew allowed on `exp` and `nbf`. Default: 60s.
    pub(crate) leeway: Duration,
    /// Tokens whose `exp` is further than this from `iat` (from now,
    /// without `iat`) are refused. Default: none.
    pub(crate) max_lifetime: Option<Duration>,
    /// Claims a token must carry. Default: `["exp"]`.
    pub(crate) required_claims: Vec<String>,
    /// Where the token is looked for, in order. Default: `Authorization: Bearer`.
    pub(crate) sources: Vec<TokenSource>,
    /// `header ← claim` copies made for the origin.
    pub(crate) forward_claims: Vec<(HeaderName, String)>,
    /// Claim holding the caller's groups (string or array). Default: none.
    pub(crate) groups_claim: Option<String>,
    /// Remove the token before the origin sees the request. Default: true.
    pub(crate) strip_credential: bool,
    /// Longer tokens are refused unread. Default: 8 KiB.
    pub(crate) max_token_size: usize,
    pub(crate) jwks_cache: JwksPolicy,
}

#[derive(Clone)]
pub(crate) enum KeySource {
    Jwks(Uri),
    Static(Vec<StaticKey>),
    Hmac(Arc<DecodingKey>),
}

#[derive(Clone)]
pub(crate) struct StaticKey {
    pub(crate) kid: Option<String>,
    pub(crate) key: Arc<DecodingKey>,
}

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// How a JWKS is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwksPolicy {
    /// Bounds on the response's `Cache-Control: max-age`. Defaults: 1m, 24h.
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    /// Freshness when the response says nothing. Default: 10m.
    pub(crate) default_ttl: Duration,
    /// Fetches at most this often (an unknown `kid`, an expired set). Default: 1s.
    pub(crate) refetch_interval: Duration,
    /// How long past its freshness a set may serve while the IdP is down. Default: 6h.
    pub(crate) stale_for: Duration,
    /// Default: 5s.
    pub(crate) fetch_timeout: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
            refetch_interval: Duration::from_secs(1),
            stale_for: Duration::from_secs(6 * 3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ApiKeyProvider {
    /// `Header(..)` or `Query(..)`. Default: header `x-api-key`.
    pub(crate) source: TokenSource,
    /// By SHA-256 of the key, the identity it proves (built once, here);
    /// revoked (`disabled`) consumers are left out.
    pub(crate) consumers: BTreeMap<[u8; 32], Arc<Identity>>,
    pub(crate) forward: Vec<(HeaderName, ConsumerField)>,
    /// Default: true.
    pub(crate) strip_credential: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerField {
    Id,
    Groups,
}

/// A route's `auth`: who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// Indexes into `AuthConfig::providers`; any one may authenticate.
    pub(crate) providers: Vec<usize>,
    /// All of these scopes (`scope` or `scp`).
    pub(crate) scopes: Vec<String>,
    /// Each claim must equal one of its values.
    pub(crate) claims: Vec<(String, Vec<String>)>,
    /// Any one of these groups.
    pub(crate) groups: Vec<String>,
    /// What a refusal offers in `WWW-Authenticate`.
    pub(crate) challenge: Challenge,
}

/// What `WWW-Authenticate` offers: the realm and the schemes the route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub(crate) realm: String,
    pub(crate) bearer: bool,
    pub(crate) api_key: bool,
}

/// The identity a provider's consumer becomes.
fn consumer(
    provider: &str,
    id: &Spanned<String>,
    groups: &[String],
    scopes: &[String],
    networks: Option<Arc<IpRules>>,
) -> Arc<Identity> {
    Arc::new(Identity {
        provider: provider.to_string(),
        subject: id.get_ref().clone(),
        groups: groups.to_vec(),
        scopes: scopes.to_vec(),
        claims: serde_json::Map::new(),
        networks,
    })
}

impl Compiler<'_> {
    pub(super) fn auth(&mut self, raw: &RawAuth) -> AuthConfig {
        let mut auth = AuthConfig::default();
        if let Some(realm) = &raw.realm {
            let ok = realm.get_ref().bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            if ok && !realm.get_ref().is_empty() {
                auth.realm = realm.get_ref().clone();
            } else {
                self.error(realm.span(), "auth.realm", "use visible ASCII without quotes or backslashes");
            }
        }
        if let Some(n) = &raw.token_cache_entries {
            auth.token_cache_entries = *n.get_ref() as usize;
        }
        for (name, jwt) in &raw.jwt {
            if raw.api_key.contains_key(name) || raw.mtls.contains_key(name) {
                self.error(
                    jwt.span(),
                    format!("auth.jwt.{name}"),
                    format!("`{name}` is also an api_key or mtls provider: provider names must be unique"),
                );
            }
            let failure_limit = self.failure_limit(jwt.get_ref().failure_limit.as_ref(), &format!("auth.jwt.{name}"));
            if let Some(p) = self.jwt_provider(name, jwt) {
                let kind = ProviderKind::Jwt(Box::new(p));
                auth.providers.push(Provider { name: name.as_str().into(), kind, failure_limit });
            }
        }
        for (name, keys) in &raw.api_key {
            let key = format!("auth.api_key.{name}");
            let failure_limit = self.failure_limit(keys.get_ref().failure_limit.as_ref(), &key);
            if let Some(p) = self.api_key_provider(name, keys) {
                auth.providers.push(Provider {
                    name: name.as_str().into(),
                    kind: ProviderKind::ApiKey(p),
                    failure_limit,
                });
            }
        }
        for (name, certs) in &raw.mtls {
            let key = format!("auth.mtls.{name}");
            if raw.api_key.contains_key(name) {
                let message = format!("`{name}` is also an api_key provider: provider names must be unique");
                self.error(certs.span(), key.clone(), message);
            }
            let failure_limit = self.failure_limit(certs.get_ref().failure_limit.as_ref(), &key);
            if let Some(p) = self.mtls_provider(name, certs) {
                auth.providers.push(Provider {
                    name: name.as_str().into(),
                    kind: ProviderKind::Mtls(p),
                    failure_limit,
                });
            }
        }
        for (name, opaque) in &raw.introspection {
            let key = format!("auth.introspection.{name}");
            if raw.jwt.contains_key(name) || raw.api_key.contains_key(name) || raw.mtls.contains_key(name) {
                let message =
                    format!("`{name}` is also a jwt, api_key or mtls provider: provider names must be unique");
                self.error(opaque.span(), key.clone(), message);
            }
            let failure_limit = self.failure_limit(opaque.get_ref().failure_limit.as_ref(), &key);
            if let Some(p) = self.introspection_provider(name, opaque) {
                let kind = ProviderKind::Introspection(Box::new(p));
                auth.providers.push(Provider { name: name.as_str().into(), kind, failure_limit });
            }
        }
        for p in &auth.providers {
            let names: Vec<&HeaderName> = match &p.kind {
                ProviderKind::Jwt(j) => j.forward_claims.iter().map(|(h, _)| h).collect(),
                ProviderKind::Introspection(i) => i.forward_claims.iter().map(|(h, _)| h).collect(),
                ProviderKind::ApiKey(a) => a.forward.iter().map(|(h, _)| h).collect(),
                ProviderKind::Mtls(m) => m.forward.iter().map(|(h, _)| h).collect(),
            };
            for h in names {
                if !auth.identity_headers.contains(h) {
                    auth.identity_headers.push(h.clone());
                }
            }
        }
        auth
    }

    fn jwt_provider(&mut self, name: &str, raw: &Spanned<RawJwt>) -> Option<JwtProvider> {
        let key = format!("auth.jwt.{name}");
        let r = raw.get_ref();
        let before = self.errors.len();
        self.jwt_audience(&key, raw);
        let algorithms = self.jwt_algorithms(&key, raw);
        let keys = self.jwt_keys(&key, raw)?;
        self.keys_fit_algorithms(&key, raw.span(), &keys, &algorithms);
        let leeway = self.duration(&r.leeway, &format!("{key}.leeway"), DEFAULT_LEEWAY);
        let max_lifetime = r
            .max_lifetime
            .is_some()
            .then(|| self.duration(&r.max_lifetime, &format!("{key}.max_lifetime"), Duration::MAX));
        let required_claims = match &r.required_claims {
            None => vec!["exp".to_string()],
            Some(list) => list.iter().map(|c| c.get_ref().clone()).collect(),
        };
        let sources = self.token_sources(&key, &r.token_from);
        let forward_claims = self.forward_claims(&key, &r.forward_claims);
        let max_token_size =
            self.size(r.max_token_size.clone(), &format!("{key}.max_token_size"), DEFAULT_MAX_TOKEN_SIZE);
        let jwks_cache = self.jwks_policy(&r.jwks_cache, &format!("{key}.jwks_cache"));
        (self.errors.len() == before).then(|| JwtProvider {
            issuer: r.issuer.get_ref().clone(),
            audiences: r.audiences.iter().map(|a| a.get_ref().clone()).collect(),
            algorithms,
            keys,
            leeway,
            max_lifetime,
            required_claims,
            sources,
            forward_claims,
            groups_claim: r.groups_claim.as_ref().map(|g| g.get_ref().clone()),
            strip_credential: r.strip_credential.unwrap_or(true),
            max_token_size: usize::try_from(max_token_size).unwrap_or(usize::MAX),
            jwks_cache,
        })
    }

    /// Who the tokens come from and whom they are for: both required.
    fn jwt_audience(&mut self, key: &str, raw: &Spanned<RawJwt>) {
        let r = raw.get_ref();
        if r.issuer.get_ref().trim().is_empty() {
            self.error(r.issuer.span(), format!("{key}.issuer"), "must not be empty");
        }
        if r.audiences.is_empty() {
            self.error(
                raw.span(),
                format!("{key}.audiences"),
                "list at least one audience: tokens for other APIs must not pass",
            );
        }
    }

    fn jwt_algorithms(&mut self, key: &str, raw: &Spanned<RawJwt>) -> Vec<Algorithm> {
        let r = raw.get_ref();
        if r.algorithms.is_empty() {
            self.error(raw.span(), format!("{key}.algorithms"), "list the accepted algorithms, e.g. [\"RS256\"]");
        }
        r.algorithms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let parsed = parse_algorithm(a.get_ref());
                self.check(a.span(), &format!("{key}.algorithms[{i}]"), parsed)
            })
            .collect()
    }

    /// Where the keys come from: exactly one of a JWKS URL, inline keys or
    /// an HMAC secret.
    fn jwt_keys(&mut self, key: &str, raw: &Spanned<RawJwt>) -> Option<KeySource> {
        let r = raw.get_ref();
        match (&r.jwks_uri, r.keys.is_empty(), &r.hmac_secret) {
            (Some(uri), true, None) => self.jwks_uri(&format!("{key}.jwks_uri"), uri),
            (None, false, None) => Some(self.static_keys(key, raw)),
            (None, true, Some(secret)) => self.hmac_secret(&format!("{key}.hmac_secret"), secret),
            _ => {
                self.error(raw.span(), key, "give exactly one of `jwks_uri`, `keys` or `hmac_secret`");
                None
            }
        }
    }

    fn jwks_uri(&mut self, key: &str, uri: &Spanned<String>) -> Option<KeySource> {
        self.http_url(key, uri).map(KeySource::Jwks)
    }

    /// An http(s) URL the gateway calls (a key set, an introspection endpoint).
    pub(super) fn http_url(&mut self, key: &str, uri: &Spanned<String>) -> Option<Uri> {
        let text = self.value(uri, key)?;
        let parsed = text
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
            .ok_or_else(|| format!("`{text}` is not an http(s) URL"))
            .and_then(|u| match u.authority().map(super::explicit_port) {
                Some(Err(e)) => Err(format!("`{text}`: {e}")),
                _ => Ok(u),
            });
        self.check(uri.span(), key, parsed)
    }

    fn static_keys(&mut self, key: &str, raw: &Spanned<RawJwt>) -> KeySource {
        let mut keys = Vec::new();
        for (i, k) in raw.get_ref().keys.iter().enumerate() {
            let parsed = decode_pem(k.get_ref().pem.get_ref());
            if let Some(decoded) = self.check(k.get_ref().pem.span(), &format!("{key}.keys[{i}].pem"), parsed) {
                keys.push(StaticKey { kid: k.get_ref().kid.clone(), key: Arc::new(decoded) });
            }
        }
        if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
            self.error(raw.span(), format!("{key}.keys"), "with several keys, each needs a `kid`");
        }
        KeySource::Static(keys)
    }

    /// An HMAC secret, only ever from a placeholder, long enough to be one.
    fn hmac_secret(&mut self, key: &str, secret: &Spanned<String>) -> Option<KeySource> {
        let text = secret.get_ref().trim();
        let only_placeholder =
            text.starts_with("{{") && text.ends_with("}}") && vars::placeholders_in(text).count() == 1;
        if !only_placeholder {
            self.error(
                secret.span(),
                key,
                "secrets never go in the config file: write `hmac_secret = \"{{ name }}\"` and set the variable (node: PORTCULLIS_VAR_NAME, edge: Spin variable)",
            );
            return None;
        }
        let value = self.value(secret, key)?;
        if value.len() < MIN_HMAC_SECRET {
            self.error(
                secret.span(),
                key,
                format!("the secret is {} bytes; HMAC needs at least {MIN_HMAC_SECRET}", value.len()),
            );
        }
        Some(KeySource::Hmac(Arc::new(DecodingKey::from_secret(value.as_bytes()))))
    }

    /// An HMAC secret only with HS*, public keys never with HS*, and every
    /// key usable with one of the algorithms: no algorithm confusion (an
    /// HS256 token "signed" with a public key).
    fn keys_fit_algorithms(&mut self, key: &str, span: Range<usize>, keys: &KeySource, algorithms: &[Algorithm]) {
        let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
        match keys {
            KeySource::Hmac(_) if hmac != algorithms.len() => {
                self.error(span.clone(), format!("{key}.algorithms"), "an hmac_secret verifies only HS256/HS384/HS512");
            }
            KeySource::Jwks(_) | KeySource::Static(_) if hmac > 0 => {
                self.error(
                    span.clone(),
                    format!("{key}.algorithms"),
                    "HS256/HS384/HS512 need `hmac_secret`, never public keys",
                );
            }
            _ => {}
        }
        if let KeySource::Static(list) = keys {
            for k in list {
                if !algorithms.iter().any(|a| a.family() == k.key.family()) {
                    self.error(span.clone(), format!("{key}.keys"), "a key's type matches none of the `algorithms`");
                }
            }
        }
    }

    /// Where tokens are read from; `Authorization: Bearer` by default.
    pub(super) fn token_sources(&mut self, key: &str, raw: &[Spanned<RawTokenSource>]) -> Vec<TokenSource> {
        if raw.is_empty() {
            return vec![TokenSource::Bearer];
        }
        raw.iter().enumerate().filter_map(|(i, s)| self.token_source(s, &format!("{key}.token_from[{i}]"))).collect()
    }

    pub(super) fn forward_claims(
        &mut self,
        key: &str,
        raw: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Vec<(HeaderName, String)> {
        let mut forward = Vec::new();
        for (header, claim) in raw {
            let k = format!("{key}.forward_claims.{}", header.get_ref());
            if let Some(h) = self.check(header.span(), &k, parse_header_name(header.get_ref())) {
                forward.push((h, claim.get_ref().clone()));
            }
        }
        forward
    }

    /// `failure_limit`: a rate (its count is also the burst) or `"off"`.
    fn failure_limit(&mut self, raw: Option<&Spanned<String>>, provider: &str) -> Option<Rate> {
        let (count, period_us) = match raw.map(|v| v.get_ref().as_str()) {
            None => DEFAULT_FAILURE_LIMIT,
            Some("off") => return None,
            Some(text) => match super::rate_limits::parse_rate(text) {
                Ok(rate) => rate,
                Err(e) => {
                    let span = raw.map_or(0..0, |v| v.span());
                    self.error(span, format!("{provider}.failure_limit"), format!("{e}, or \"off\""));
                    return None;
                }
            },
        };
        Rate::new(count, period_us, count)
    }

    fn jwks_policy(&mut self, raw: &RawJwksCache, key: &str) -> JwksPolicy {
        let d = JwksPolicy::default();
        let policy = JwksPolicy {
            min_ttl: self.duration(&raw.min_ttl, &format!("{key}.min_ttl"), d.min_ttl),
            max_ttl: self.duration(&raw.max_ttl, &format!("{key}.max_ttl"), d.max_ttl),
            default_ttl: self.duration(&raw.default_ttl, &format!("{key}.default_ttl"), d.default_ttl),
            refetch_interval: self.duration(
                &raw.refetch_interval,
                &format!("{key}.refetch_interval"),
                d.refetch_interval,
            ),
            stale_for: self.duration(&raw.stale_for, &format!("{key}.stale_for"), d.stale_for),
            fetch_timeout: self.duration(&raw.fetch_timeout, &format!("{key}.fetch_timeout"), d.fetch_timeout),
        };
        if policy.min_ttl > policy.max_ttl
            && let Some(v) = &raw.min_ttl
        {
            self.error(v.span(), format!("{key}.min_ttl"), "is longer than max_ttl");
        }
        policy
    }

    fn token_source(&mut self, raw: &Spanned<RawTokenSource>, key: &str) -> Option<TokenSource> {
        let r = raw.get_ref();
        match (&r.header, &r.cookie, &r.query) {
            (Some(h), None, None) => {
                let name = self.check(h.span(), &format!("{key}.header"), parse_header_name(h.get_ref()))?;
                Some(if name == http::header::AUTHORIZATION { TokenSource::Bearer } else { TokenSource::Header(name) })
            }
            (None, Some(c), None) => {
                let ok = !c.get_ref().is_empty()
                    && c.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    self.error(c.span(), format!("{key}.cookie"), "cookie names are letters, digits, `-`, `_`, `.`");
                }
                ok.then(|| TokenSource::Cookie(c.get_ref().clone()))
            }
            (None, None, Some(q)) => {
                let ok = !q.get_ref().is_empty()
                    && q.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    self.error(
                        q.span(),
                        format!("{key}.query"),
                        "query parameter names are letters, digits, `-`, `_`, `.`",
                    );
                }
                ok.then(|| TokenSource::Query(q.get_ref().clone()))
            }
            _ => {
                self.error(raw.span(), key, "give exactly one of `header`, `cookie` or `query`");
                None
            }
        }
    }

    /// A consumer's id (`{key}.id`): non-empty, and unique among `ids`.
    fn unique_id(&mut self, key: &str, id: &Spanned<String>, ids: &mut BTreeSet<String>) {
        if id.get_ref().trim().is_empty() || !ids.insert(id.get_ref().clone()) {
            self.error(id.span(), format!("{key}.id"), "consumer ids must be non-empty and unique");
        }
    }

    fn mtls_provider(&mut self, name: &str, raw: &Spanned<RawMtls>) -> Option<MtlsProvider> {
        let key = format!("auth.mtls.{name}");
        let r = raw.get_ref();
        let before = self.errors.len();
        let mut consumers = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, c) in r.consumers.iter().enumerate() {
            let k = format!("{key}.consumers[{i}]");
            let spanned = c;
            let c = c.get_ref();
            self.unique_id(&k, &c.id, &mut ids);
            let Some(cert_name) = self.cert_name(&k, spanned.span(), c) else { continue };
            if consumers.iter().any(|(n, _)| *n == cert_name) {
                self.error(spanned.span(), k, "another consumer has this certificate name");
                continue;
            }
            let networks = self.ip_rules(&k, c.ip_allow.as_ref(), c.ip_deny.as_ref());
            if c.disabled {
                continue;
            }
            consumers.push((cert_name, consumer(name, &c.id, &c.groups, &c.scopes, networks)));
        }
        let mut forward = Vec::new();
        for (header, field) in &r.forward {
            let k = format!("{key}.forward.{}", header.get_ref());
            let h = self.check(header.span(), &k, parse_header_name(header.get_ref()));
            let f = match field.get_ref().as_str() {
                "id" => Some(CertField::Id),
                "groups" => Some(CertField::Groups),
                "spiffe_id" => Some(CertField::SpiffeId),
                "common_name" => Some(CertField::CommonName),
                "sha256" => Some(CertField::Sha256),
                other => {
                    let what = "`id`, `groups`, `spiffe_id`, `common_name` or `sha256`";
                    self.error(field.span(), &k, format!("`{other}`: a client certificate forwards {what}"));
                    None
                }
            };
            if let (Some(h), Some(f)) = (h, f) {
                forward.push((h, f));
            }
        }
        (self.errors.len() == before).then_some(MtlsProvider { consumers, forward })
    }

    /// The one certificate name a consumer is known by.
    fn cert_name(&mut self, key: &str, span: Range<usize>, c: &RawCertConsumer) -> Option<CertName> {
        let given: Vec<(&str, &Spanned<String>)> = [
            ("spiffe_id", &c.spiffe_id),
            ("uri", &c.uri),
            ("dns", &c.dns),
            ("email", &c.email),
            ("common_name", &c.common_name),
            ("sha256", &c.sha256),
        ]
        .into_iter()
        .filter_map(|(field, v)| v.as_ref().map(|v| (field, v)))
        .collect();
        let [(field, value)] = given[..] else {
            let what = "give one of `spiffe_id`, `uri`, `dns`, `email`, `common_name` or `sha256`";
            self.error(span, key, format!("{what}: the certificate name this consumer is known by"));
            return None;
        };
        let k = format!("{key}.{field}");
        let text = value.get_ref().trim().to_string();
        if text.is_empty() {
            self.error(value.span(), k, "must not be empty");
            return None;
        }
        Some(match field {
            "spiffe_id" if !text.starts_with("spiffe://") => {
                self.error(value.span(), k, "a SPIFFE ID starts with `spiffe://`");
                return None;
            }
            "spiffe_id" => CertName::SpiffeId(text),
            "uri" => CertName::Uri(text),
            "dns" => CertName::Dns(text.to_ascii_lowercase()),
            "email" => CertName::Email(text),
            "common_name" => CertName::CommonName(text),
            _ => CertName::Sha256(crate::shared::hex::hex(&self.check(value.span(), &k, parse_sha256(&text))?)),
        })
    }

    fn api_key_provider(&mut self, name: &str, raw: &Spanned<RawApiKey>) -> Option<ApiKeyProvider> {
        let key = format!("auth.api_key.{name}");
        let r = raw.get_ref();
        let before = self.errors.len();
        let source = match (&r.header, &r.query) {
            (None, None) => TokenSource::Header(HeaderName::from_static("x-api-key")),
            (Some(_), None) | (None, Some(_)) => {
                let as_source = RawTokenSource { header: r.header.clone(), cookie: None, query: r.query.clone() };
                self.token_source(&Spanned::new(raw.span(), as_source), &key)?
            }
            (Some(h), Some(_)) => {
                self.error(h.span(), format!("{key}.header"), "give `header` or `query`, not both");
                return None;
            }
        };
        let mut consumers = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for (i, c) in r.consumers.iter().enumerate() {
            let c = c.get_ref();
            let k = format!("{key}.consumers[{i}]");
            self.unique_id(&k, &c.id, &mut ids);
            let Some(digest) =
                self.check(c.key_sha256.span(), &format!("{k}.key_sha256"), parse_sha256(c.key_sha256.get_ref()))
            else {
                continue;
            };
            let networks = self.ip_rules(&k, c.ip_allow.as_ref(), c.ip_deny.as_ref());
            if c.disabled {
                continue;
            }
            if consumers.insert(digest, consumer(name, &c.id, &c.groups, &c.scopes, networks)).is_some() {
                self.error(c.key_sha256.span(), format!("{k}.key_sha256"), "two consumers share this key");
            }
        }
        let mut forward = Vec::new();
        for (header, field) in &r.forward {
            let k = format!("{key}.forward.{}", header.get_ref());
            let h = self.check(header.span(), &k, parse_header_name(header.get_ref()));
            let f = match field.get_ref().as_str() {
                "id" => Some(ConsumerField::Id),
                "groups" => Some(ConsumerField::Groups),
                other => {
                    self.error(field.span(), &k, format!("`{other}`: a consumer forwards `id` or `groups`"));
                    None
                }
            };
            if let (Some(h), Some(f)) = (h, f) {
                forward.push((h, f));
            }
        }
        (self.errors.len() == before).then(|| ApiKeyProvider {
            source,
            consumers,
            forward,
            strip_credential: r.strip_credential.unwrap_or(true),
        })
    }

    pub(super) fn route_auth(
        &mut self,
        raw: &Spanned<RawRouteAuth>,
        key: &str,
        known: &Known<'_>,
    ) -> Option<RouteAuth> {
        let auth = known.auth;
        let r = raw.get_ref();
        let before = self.errors.len();
        if r.any_of.is_empty() {
            self.error(
                raw.span(),
                format!("{key}.any_of"),
                "name at least one provider (leave `auth` out for a public route)",
            );
        }
        let mut providers = Vec::new();
        for (i, name) in r.any_of.iter().enumerate() {
            let names = known.auth.providers.iter().map(|p| &*p.name);
            if let Some(p) =
                self.resolve(name, format!("{key}.any_of[{i}]"), "provider", names, &known.broken.providers)
            {
                providers.push(p);
            }
        }
        let claims = r
            .claims
            .iter()
            .map(|(claim, values)| {
                let list = match values.get_ref() {
                    ClaimValues::One(v) => vec![v.clone()],
                    ClaimValues::Many(v) => v.clone(),
                };
                if list.is_empty() {
                    self.error(values.span(), format!("{key}.claims.{claim}"), "list at least one accepted value");
                }
                (claim.clone(), list)
            })
            .collect();
        let kinds = || providers.iter().map(|&i| &auth.providers[i].kind);
        let challenge = Challenge {
            realm: auth.realm.clone(),
            bearer: kinds().any(|k| matches!(k, ProviderKind::Jwt(_) | ProviderKind::Introspection(_))),
            api_key: kinds().any(|k| matches!(k, ProviderKind::ApiKey(_))),
        };
        (self.errors.len() == before).then(|| RouteAuth {
            challenge,
            providers,
            scopes: r.scopes.iter().map(|s| s.get_ref().clone()).collect(),
            claims,
            groups: r.groups.iter().map(|g| g.get_ref().clone()).collect(),
        })
    }
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    if text.eq_ignore_ascii_case("none") {
        return Err("`none` means unsigned tokens; it is never accepted".into());
    }
    text.parse::<Algorithm>().map_err(|_| {
        format!("`{text}` is not a JWT algorithm (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512)")
    })
}

/// A public key in PEM: RSA, EC or Ed25519, whichever it is. Each decoder
/// parses the whole PEM before it can tell the key is not its kind (a WASI
/// 0.2 instance compiles the config per request), so the likely kind is
/// tried first, by the body's size: Ed25519 about 60 base64 characters,
/// EC P-256/P-384 124–160, RSA of 1 024 bits and more 216 and up.
fn decode_pem(pem: &str) -> Result<DecodingKey, String> {
    type Decoder = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    const RSA: Decoder = DecodingKey::from_rsa_pem;
    const EC: Decoder = DecodingKey::from_ec_pem;
    const ED: Decoder = DecodingKey::from_ed_pem;
    let body: usize = pem.lines().filter(|l| !l.starts_with("-----")).map(|l| l.trim().len()).sum();
    let order = match body {
        0..=100 => [ED, EC, RSA],
        101..=200 => [EC, ED, RSA],
        _ => [RSA, EC, ED],
    };
    order
        .iter()
        .find_map(|decode| decode(pem.as_bytes()).ok())
        .ok_or_else(|| "not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".to_string())
}

pub(crate) fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let mut out = [0u8; 32];
    if t.len() != 64 {
        return Err(format!(
            "a SHA-256 is 64 hex digits (`portcullis hash-key` prints one); this is {} characters",
            t.len()
        ));
    }
    for (i, chunk) in t.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("`{t}` is not hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::AlgorithmFamily;

    use super::decode_pem;

    #[test]
    fn each_kind_of_public_key_is_decoded_as_its_kind() {
        let keys = [
            (include_str!("../../tests/fixtures/keys/rsa1.pub.pem"), AlgorithmFamily::Rsa),
            (include_str!("../../tests/fixtures/keys/ec256.pub.pem"), AlgorithmFamily::Ec),
            (include_str!("../../tests/fixtures/keys/ec384.pub.pem"), AlgorithmFamily::Ec),
            (include_str!("../../tests/fixtures/keys/ed25519.pub.pem"), AlgorithmFamily::Ed),
        ];
        for (pem, family) in keys {
            assert_eq!(decode_pem(pem).map(|k| k.family()).ok(), Some(family), "{pem}");
        }
        assert!(decode_pem("garbage").is_err());
        assert!(decode_pem(include_str!("../../tests/fixtures/keys/ec256.pem")).is_err(), "a private key is refused");
    }
}
