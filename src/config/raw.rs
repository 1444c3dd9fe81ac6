//! The serde mirror of `routes/*.toml`: exactly what a user may write, nothing
//! more (`deny_unknown_fields` everywhere). Values that need checking after
//! parsing keep their source span so errors can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) gateway: RawGateway,
    #[serde(default)]
    pub(crate) services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    pub(crate) routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(crate) auth: RawAuth,
    #[serde(default)]
    pub(crate) limits: BTreeMap<String, Spanned<RawLimit>>,
    pub(crate) sweep: Option<Spanned<RawSweep>>,
    pub(crate) admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub(crate) listeners: Vec<Spanned<RawListener>>,
    pub(crate) acme: Option<Spanned<RawAcme>>,
    #[serde(default)]
    pub(crate) cors: BTreeMap<String, Spanned<RawCors>>,
    /// Names the file defines whose entries did not parse: their own errors
    /// are reported, references to them are not.
    #[serde(skip)]
    pub(crate) unparsed: Unparsed,
    /// The file's index of each of `routes`, when some did not parse.
    #[serde(skip)]
    pub(crate) route_indexes: Vec<usize>,
}

/// See [`RawConfig::unparsed`].
#[derive(Debug, Default)]
pub(crate) struct Unparsed {
    pub(crate) services: Vec<String>,
    pub(crate) limits: Vec<String>,
    pub(crate) providers: Vec<String>,
    pub(crate) cors: Vec<String>,
}

/// `[cors.NAME]`: which pages (by origin) may call the routes and services
/// that name the policy, and what their browsers may send and read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    pub(crate) origins: Spanned<Vec<Spanned<String>>>,
    pub(crate) methods: Option<Vec<Spanned<String>>>,
    pub(crate) headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) expose_headers: Vec<Spanned<String>>,
    pub(crate) credentials: Option<Spanned<bool>>,
    pub(crate) max_age: Option<Spanned<String>>,
    pub(crate) refuse_other_origins: Option<bool>,
}

/// `[sweep]`: removing expired records from a store without expiry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSweep {
    pub(crate) path: Spanned<String>,
    pub(crate) token_sha256: Spanned<String>,
    pub(crate) batch: Option<Spanned<u64>>,
}

/// `[[listeners]]`: a socket the node serves (the edge's are Spin's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub(crate) address: Spanned<String>,
    pub(crate) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) hosts: Vec<Spanned<String>>,
    pub(crate) proxy_protocol: Option<bool>,
    pub(crate) redirect_to_https: Option<Spanned<bool>>,
    pub(crate) https_port: Option<Spanned<u16>>,
    pub(crate) tls: Option<Spanned<RawTls>>,
}

/// `listeners[].tls`: TLS termination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    #[serde(default)]
    pub(crate) certificates: Vec<Spanned<RawCertificate>>,
    pub(crate) unknown_sni: Option<Spanned<String>>,
    pub(crate) min_version: Option<Spanned<String>>,
    pub(crate) alpn: Option<Vec<Spanned<String>>>,
    pub(crate) hsts: Option<Spanned<String>>,
    pub(crate) session_tickets: Option<bool>,
    pub(crate) session_cache: Option<Spanned<u32>>,
    pub(crate) expiry_margin: Option<Spanned<String>>,
    pub(crate) client_auth: Option<Spanned<RawClientAuth>>,
    /// Names whose certificates the node orders from `[acme]`.
    #[serde(default)]
    pub(crate) acme: Vec<Spanned<String>>,
}

/// `[acme]`: the ACME (RFC 8555) directory the node orders certificates from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcme {
    pub(crate) directory: Spanned<String>,
    #[serde(default)]
    pub(crate) contact: Vec<Spanned<String>>,
    pub(crate) state: Option<Spanned<String>>,
    pub(crate) challenge: Option<Spanned<String>>,
    pub(crate) directory_ca: Option<Spanned<String>>,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    pub(crate) cert: Spanned<String>,
    pub(crate) key: Spanned<String>,
}

/// `listeners[].tls.client_auth`: client certificates (mTLS).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientAuth {
    pub(crate) ca: Spanned<String>,
    pub(crate) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) crls: Vec<Spanned<String>>,
}

/// `[admin]`: who may use the node's admin API from beyond loopback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    #[serde(default)]
    pub(crate) token_sha256: Vec<Spanned<String>>,
}

/// `[limits.NAME]`: a rate-limit policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub(crate) rate: Option<Spanned<String>>,
    pub(crate) quota: Option<Spanned<String>>,
    pub(crate) time_zone: Option<Spanned<String>>,
    pub(crate) warn_at: Option<Vec<Spanned<String>>>,
    pub(crate) burst: Option<Spanned<u64>>,
    pub(crate) key: Option<Spanned<String>>,
    pub(crate) cost: Option<Spanned<u64>>,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    pub(crate) on_store_error: Option<Spanned<String>>,
    pub(crate) consistency: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) legacy_headers: bool,
    pub(crate) max_delay: Option<Spanned<String>>,
    pub(crate) max_waiting: Option<Spanned<u32>>,
}

/// `[gateway]`: settings for the whole gateway.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) default_host: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
    pub(crate) max_body_size: Option<Spanned<Size>>,
    pub(crate) max_header_size: Option<Spanned<Size>>,
    pub(crate) max_header_count: Option<Spanned<u32>>,
    pub(crate) access_log: Option<bool>,
    pub(crate) access_log_sample: Option<Spanned<f64>>,
    pub(crate) trace_sample_ratio: Option<Spanned<f64>>,
    pub(crate) underscores_in_headers: Option<Spanned<String>>,
    pub(crate) max_response_header_size: Option<Spanned<Size>>,
    pub(crate) path_parameters: Option<Spanned<String>>,
    pub(crate) cache_memory: Option<Spanned<Size>>,
}

/// `[services.NAME]`: an origin the gateway forwards to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) url: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) targets: Vec<Spanned<RawTarget>>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) request_timeout: Option<Spanned<String>>,
    pub(crate) balance: Option<Spanned<String>>,
    pub(crate) hash_on: Option<Spanned<String>>,
    pub(crate) max_in_flight: Option<Spanned<u32>>,
    pub(crate) retry: Option<Spanned<RawRetry>>,
    pub(crate) health: Option<Spanned<RawHealth>>,
    pub(crate) breaker: Option<Spanned<RawBreaker>>,
    pub(crate) http2: Option<Spanned<bool>>,
    pub(crate) tls: Option<Spanned<RawOriginTls>>,
    pub(crate) cors: Option<Spanned<String>>,
    pub(crate) ip_allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) ip_deny: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `services.NAME.tls`: how the node verifies (and proves itself to) an
/// HTTPS origin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOriginTls {
    pub(crate) ca: Option<Spanned<String>>,
    pub(crate) server_name: Option<Spanned<String>>,
    pub(crate) cert: Option<Spanned<String>>,
    pub(crate) key: Option<Spanned<String>>,
}

/// `services.NAME.breaker`: the service's circuit breaker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) failure_rate: Option<Spanned<String>>,
    pub(crate) min_requests: Option<Spanned<u32>>,
    pub(crate) window: Option<Spanned<String>>,
    pub(crate) consecutive_failures: Option<Spanned<u32>>,
    pub(crate) open_for: Option<Spanned<String>>,
    pub(crate) probes: Option<Spanned<u32>>,
    pub(crate) sync: Option<Spanned<String>>,
}

/// `services.NAME.retry`: when a failed try is tried again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub(crate) attempts: Option<Spanned<u32>>,
    pub(crate) on_status: Option<Vec<Spanned<u16>>>,
    pub(crate) on_grpc_status: Option<Vec<Spanned<String>>>,
    pub(crate) per_try_timeout: Option<Spanned<String>>,
    pub(crate) backoff: Option<Spanned<String>>,
    pub(crate) max_backoff: Option<Spanned<String>>,
    pub(crate) budget: Option<Spanned<String>>,
    pub(crate) min_per_second: Option<Spanned<u32>>,
    pub(crate) max_body: Option<Spanned<Size>>,
}

/// `services.NAME.health`: passive health (ejection of failing targets).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) failures: Option<Spanned<u32>>,
    pub(crate) eject_for: Option<Spanned<String>>,
    pub(crate) max_eject_for: Option<Spanned<String>>,
    pub(crate) max_ejected: Option<Spanned<String>>,
    pub(crate) when_all_down: Option<Spanned<String>>,
    pub(crate) probe: Option<Spanned<RawProbe>>,
}

/// `services.NAME.health.probe`: active health checks (node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub(crate) path: Spanned<String>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) statuses: Option<Vec<Spanned<u16>>>,
    pub(crate) healthy: Option<Spanned<u32>>,
    pub(crate) unhealthy: Option<Spanned<u32>>,
}

/// `routes[].fallback`: a static answer while the service cannot be reached.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFallback {
    pub(crate) status: Spanned<u16>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(crate) body: Option<Spanned<String>>,
}

/// One entry of `services.NAME.targets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub(crate) url: Spanned<String>,
    pub(crate) weight: Option<Spanned<u32>>,
}

/// `[[routes]]`: which requests go to which service, and how they change on the way.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) path: Spanned<String>,
    pub(crate) methods: Option<Vec<Spanned<String>>>,
    pub(crate) service: Spanned<String>,
    pub(crate) strip_prefix: Option<Spanned<String>>,
    pub(crate) rewrite: Option<Spanned<String>>,
    pub(crate) max_body_size: Option<Spanned<Size>>,
    #[serde(default)]
    pub(crate) request_headers: RawHeaderOps,
    #[serde(default)]
    pub(crate) response_headers: RawHeaderOps,
    pub(crate) auth: Option<Spanned<RawRouteAuth>>,
    #[serde(default)]
    pub(crate) limits: Vec<Spanned<String>>,
    pub(crate) retry_non_idempotent: Option<Spanned<bool>>,
    pub(crate) fallback: Option<Spanned<RawFallback>>,
    pub(crate) canary: Option<Spanned<RawCanary>>,
    pub(crate) websocket: Option<Spanned<bool>>,
    pub(crate) websocket_idle_timeout: Option<Spanned<String>>,
    pub(crate) grpc_web: Option<Spanned<bool>>,
    pub(crate) grpc_web_origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) cors: Option<Spanned<String>>,
    pub(crate) ip_allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) ip_deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) cache: Option<Spanned<RawRouteCache>>,
}

/// `routes[].cache`: the route's answers kept and served by the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteCache {
    pub(crate) ttl: Option<Spanned<String>>,
    pub(crate) max_ttl: Option<Spanned<String>>,
    pub(crate) stale_while_revalidate: Option<Spanned<String>>,
    pub(crate) stale_if_error: Option<Spanned<String>>,
    pub(crate) by_consumer: Option<bool>,
    pub(crate) max_entry_size: Option<Spanned<Size>>,
    pub(crate) tags_header: Option<Spanned<String>>,
    pub(crate) shared: Option<bool>,
}

/// `routes[].canary`: part of the route's callers to another service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCanary {
    pub(crate) service: Spanned<String>,
    pub(crate) share: Option<Spanned<String>>,
    pub(crate) sticky_on: Option<Spanned<String>>,
    pub(crate) header: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) groups: Vec<Spanned<String>>,
    pub(crate) variant_header: Option<Spanned<String>>,
    pub(crate) rollback: Option<Spanned<RawRollback>>,
    pub(crate) promote: Option<Spanned<RawPromote>>,
}

/// `routes[].canary.rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollback {
    pub(crate) max_error_rate_increase: Option<Spanned<String>>,
    pub(crate) max_p95_increase: Option<Spanned<String>>,
    pub(crate) min_requests: Option<Spanned<u32>>,
    pub(crate) window: Option<Spanned<String>>,
    pub(crate) sync: Option<Spanned<String>>,
}

/// `routes[].canary.promote`: shares in steps, each after a soak period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPromote {
    pub(crate) steps: Vec<Spanned<String>>,
    pub(crate) soak: Spanned<String>,
}

/// Header edits: `remove` first, then `set` (replace), then `add` (append).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderOps {
    #[serde(default)]
    pub(crate) remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) set: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(crate) add: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[auth]`: identity providers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) realm: Option<Spanned<String>>,
    pub(crate) token_cache_entries: Option<Spanned<u32>>,
    #[serde(default)]
    pub(crate) jwt: BTreeMap<String, Spanned<RawJwt>>,
    #[serde(default)]
    pub(crate) api_key: BTreeMap<String, Spanned<RawApiKey>>,
    #[serde(default)]
    pub(crate) mtls: BTreeMap<String, Spanned<RawMtls>>,
    #[serde(default)]
    pub(crate) introspection: BTreeMap<String, Spanned<RawIntrospection>>,
}

/// `[auth.introspection.NAME]`: opaque tokens checked at an OAuth 2.0
/// introspection endpoint (RFC 7662).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntrospection {
    pub(crate) endpoint: Spanned<String>,
    pub(crate) client_id: Option<Spanned<String>>,
    pub(crate) client_secret: Option<Spanned<String>>,
    pub(crate) bearer_token: Option<Spanned<String>>,
    pub(crate) private_key: Option<Spanned<String>>,
    pub(crate) private_key_id: Option<Spanned<String>>,
    pub(crate) assertion_algorithm: Option<Spanned<String>>,
    pub(crate) assertion_audience: Option<Spanned<String>>,
    pub(crate) issuer: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) audiences: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) token_from: Vec<Spanned<RawTokenSource>>,
    #[serde(default)]
    pub(crate) forward_claims: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) groups_claim: Option<Spanned<String>>,
    pub(crate) strip_credential: Option<bool>,
    pub(crate) max_token_size: Option<Spanned<Size>>,
    pub(crate) cache_ttl: Option<Spanned<String>>,
    pub(crate) negative_cache_ttl: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) failure_limit: Option<Spanned<String>>,
}

/// `[auth.jwt.NAME]`: tokens from one issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub(crate) issuer: Spanned<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) algorithms: Vec<Spanned<String>>,
    pub(crate) jwks_uri: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) keys: Vec<Spanned<RawKey>>,
    pub(crate) hmac_secret: Option<Spanned<String>>,
    pub(crate) leeway: Option<Spanned<String>>,
    pub(crate) max_lifetime: Option<Spanned<String>>,
    pub(crate) required_claims: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) token_from: Vec<Spanned<RawTokenSource>>,
    #[serde(default)]
    pub(crate) forward_claims: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) groups_claim: Option<Spanned<String>>,
    pub(crate) strip_credential: Option<bool>,
    pub(crate) max_token_size: Option<Spanned<Size>>,
    #[serde(default)]
    pub(crate) jwks_cache: RawJwksCache,
    pub(crate) failure_limit: Option<Spanned<String>>,
}

/// An inline public key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKey {
    pub(crate) kid: Option<String>,
    pub(crate) pem: Spanned<String>,
}

/// One place a credential may come from; exactly one field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokenSource {
    pub(crate) header: Option<Spanned<String>>,
    pub(crate) cookie: Option<Spanned<String>>,
    pub(crate) query: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwksCache {
    pub(crate) min_ttl: Option<Spanned<String>>,
    pub(crate) max_ttl: Option<Spanned<String>>,
    pub(crate) default_ttl: Option<Spanned<String>>,
    pub(crate) refetch_interval: Option<Spanned<String>>,
    pub(crate) stale_for: Option<Spanned<String>>,
    pub(crate) fetch_timeout: Option<Spanned<String>>,
}

/// `[auth.api_key.NAME]`: consumers identified by a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub(crate) header: Option<Spanned<String>>,
    pub(crate) query: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) consumers: Vec<Spanned<RawConsumer>>,
    #[serde(default)]
    pub(crate) forward: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) strip_credential: Option<bool>,
    pub(crate) failure_limit: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsumer {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) key_sha256: Spanned<String>,
    #[serde(default)]
    pub(crate) disabled: bool,
    pub(crate) ip_allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) ip_deny: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[auth.mtls.NAME]`: consumers by the client certificate a TLS listener
/// verified (the node; the edge never sees one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMtls {
    #[serde(default)]
    pub(crate) consumers: Vec<Spanned<RawCertConsumer>>,
    #[serde(default)]
    pub(crate) forward: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) failure_limit: Option<Spanned<String>>,
}

/// A consumer named by one of its certificate's names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertConsumer {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) spiffe_id: Option<Spanned<String>>,
    pub(crate) uri: Option<Spanned<String>>,
    pub(crate) dns: Option<Spanned<String>>,
    pub(crate) email: Option<Spanned<String>>,
    pub(crate) common_name: Option<Spanned<String>>,
    pub(crate) sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) disabled: bool,
    pub(crate) ip_allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) ip_deny: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A route's `auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteAuth {
    #[serde(default)]
    pub(crate) any_of: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) scopes: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) claims: BTreeMap<String, Spanned<ClaimValues>>,
    #[serde(default)]
    pub(crate) groups: Vec<Spanned<String>>,
}

/// A claim matcher: one accepted value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ClaimValues {
    One(String),
    Many(Vec<String>),
}

/// A byte size: an integer, or a string such as `"64KiB"`, `"10MiB"`, `"1GiB"`, `"512B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub u64);

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
