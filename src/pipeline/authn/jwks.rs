//! Signing keys from a JWKS URL, cached three ways: parsed keys in memory
//! (per process, or per reused WASI 0.3 instance), the raw set in the
//! key-value store (so a fresh WASI 0.2 instance, or another node, does not
//! refetch; layout in `kv-schema/jwks.md`), and the identity provider last.
//!
//! - Freshness comes from `Cache-Control: max-age`, clamped to the
//!   provider's `min_ttl`..`max_ttl` (`default_ttl` when absent).
//! - An unknown `kid` or an expired set triggers a fetch, at most once per
//!   `refetch_interval` per key set (recorded in the store too, so a flood
//!   of made-up `kid`s cannot hammer the IdP from many instances), and one
//!   at a time per process (single-flight).
//! - While the IdP is unreachable an expired set keeps serving for
//!   `stale_for`; with nothing usable at all the answer is 503, retried at
//!   most once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, HOST};
use http::{HeaderValue, Request, Uri};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hex;
use crate::config::auth::JwksPolicy;
use crate::ports::{Clock, HttpClient, KvStore, Ports, UpstreamOptions};

/// Retry gap when no usable keys exist at all.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
/// Larger key sets are refused.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// What a lookup found.
pub enum KeyLookup {
    Found(Arc<DecodingKey>),
    /// Keys are available, but none for this `kid`/algorithm.
    Unknown,
    /// No usable keys: the IdP is down and nothing (fresh enough) is cached.
    Unavailable,
}

#[derive(Default)]
pub struct JwksCache {
    sets: Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// Held while fetching: concurrent misses wait for one fetch.
    fetching: async_lock::Mutex<()>,
}

#[derive(Default, Clone)]
struct State {
    set: Option<Arc<KeySet>>,
    last_attempt: Option<Duration>,
}

struct KeySet {
    keys: Vec<Key>,
    raw: String,
    fetched_at: Duration,
    fresh_until: Duration,
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

/// The key-value record (`pc1:jwks:<sha256 of the URL>`), times in ms since the epoch.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    pub attempted_at_ms: u64,
    pub fetched_at_ms: Option<u64>,
    pub fresh_until_ms: Option<u64>,
    pub jwks: Option<String>,
}

/// The key-value key for a JWKS URL.
pub fn kv_key(uri: &str) -> String {
    format!("pc1:jwks:{}", hex(&Sha256::digest(uri.as_bytes())))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let fits = |k: &&Key| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
        let mut candidates = self.keys.iter().filter(fits);
        match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            // Without a `kid`, only an unambiguous key will do.
            None => {
                let first = candidates.next()?;
                candidates.next().is_none().then(|| first.key.clone())
            }
        }
    }

    fn usable(&self, now: Duration, policy: &JwksPolicy) -> bool {
        now < self.fresh_until.saturating_add(policy.stale_for)
    }
}

/// Parses a JWKS document, keeping the signature keys it can use. A valid
/// document with no usable keys is a set of none (keys were revoked), not
/// a failure: stale keys must not outlive their removal.
fn parse(raw: &str, fetched_at: Duration, fresh_until: Duration) -> Option<KeySet> {
    let set: JwkSet = serde_json::from_str(raw).ok()?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = match jwk.common.key_algorithm {
                Some(a) => Some(signing_algorithm(a)?),
                None => None,
            };
            Some(Key { kid: jwk.common.key_id.clone(), alg, key: Arc::new(key) })
        })
        .collect();
    Some(KeySet { keys, raw: raw.to_string(), fetched_at, fresh_until })
}

/// A JWK's `alg`, if it names a signature algorithm.
fn signing_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// `Cache-Control: max-age` within the policy's bounds.
fn freshness(cache_control: Option<&HeaderValue>, policy: &JwksPolicy) -> Duration {
    let directives = cache_control.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut ttl = policy.default_ttl;
    for d in directives.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            ttl = Duration::ZERO;
        } else if let Some(secs) = d.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok()) {
            ttl = Duration::from_secs(secs);
        }
    }
    ttl.clamp(policy.min_ttl, policy.max_ttl)
}

impl Entry {
    fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl JwksCache {
    fn entry(&self, uri: &str) -> Arc<Entry> {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        sets.entry(uri.to_string()).or_default().clone()
    }

    /// The key for a token's `kid` and algorithm.
    pub async fn key<P: Ports>(
        &self,
        ports: &P,
        uri: &Uri,
        policy: &JwksPolicy,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> KeyLookup {
        let uri_text = uri.to_string();
        let entry = self.entry(&uri_text);
        let now = ports.clock().now();
        let fresh_key =
            |state: &State| state.set.as_ref().filter(|s| s.fresh_until > now).and_then(|s| s.find(kid, alg));

        // 1. Memory.
        let state = entry.snapshot();
        if let Some(key) = fresh_key(&state) {
            return KeyLookup::Found(key);
        }
        // 2. The shared store: what another instance fetched or tried.
        let stored = load(ports, &uri_text).await;
        if let Some(stored) = &stored {
            adopt(&entry, stored);
        }
        let state = entry.snapshot();
        if let Some(key) = fresh_key(&state) {
            return KeyLookup::Found(key);
        }
        // 3. The IdP, once at a time, and not too often.
        let _fetching = entry.fetching.lock().await;
        let state = entry.snapshot();
        if let Some(key) = fresh_key(&state) {
            return KeyLookup::Found(key);
        }
        let usable = state.set.clone().filter(|s| s.usable(now, policy));
        let gap = if usable.is_some() { policy.refetch_interval } else { UNAVAILABLE_RETRY };
        let may_fetch = state.last_attempt.is_none_or(|t| now >= t.saturating_add(gap));
        let mut set = usable;
        if may_fetch {
            entry.update(|s| s.last_attempt = Some(now));
            match fetch(ports, uri, policy, now).await {
                Some(fetched) => {
                    let fetched = Arc::new(fetched);
                    entry.update(|s| s.set = Some(fetched.clone()));
                    save(ports, &uri_text, now, Some(&fetched), policy).await;
                    set = Some(fetched);
                }
                None => save(ports, &uri_text, now, set.as_deref(), policy).await,
            }
        }
        match set {
            Some(set) => set.find(kid, alg).map_or(KeyLookup::Unknown, KeyLookup::Found),
            None => KeyLookup::Unavailable,
        }
    }
}

/// Takes whatever is newer from the store: a key set, or a fetch attempt.
fn adopt(entry: &Entry, stored: &Stored) {
    let attempted = Duration::from_millis(stored.attempted_at_ms);
    let set = match (&stored.jwks, stored.fetched_at_ms, stored.fresh_until_ms) {
        (Some(raw), Some(f), Some(u)) => parse(raw, Duration::from_millis(f), Duration::from_millis(u)),
        _ => None,
    };
    entry.update(|state| {
        if state.last_attempt.is_none_or(|t| t < attempted) {
            state.last_attempt = Some(attempted);
        }
        if let Some(set) = set {
            if state.set.as_ref().is_none_or(|s| s.fetched_at < set.fetched_at) {
                state.set = Some(Arc::new(set));
            }
        }
    });
}

async fn load<P: Ports>(ports: &P, uri: &str) -> Option<Stored> {
    let bytes = ports.kv().get(&kv_key(uri)).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Records an attempt (and the set it produced or that remains in use).
async fn save<P: Ports>(ports: &P, uri: &str, now: Duration, set: Option<&KeySet>, policy: &JwksPolicy) {
    let stored = Stored {
        attempted_at_ms: ms(now),
        fetched_at_ms: set.map(|s| ms(s.fetched_at)),
        fresh_until_ms: set.map(|s| ms(s.fresh_until)),
        jwks: set.map(|s| s.raw.clone()),
    };
    let keep =
        set.map_or(policy.refetch_interval, |s| s.fresh_until.saturating_add(policy.stale_for).saturating_sub(now));
    if let Ok(bytes) = serde_json::to_vec(&stored) {
        // A store that fails only costs a refetch later.
        let _ = ports.kv().set(&kv_key(uri), &bytes, Some(keep.max(policy.refetch_interval))).await;
    }
}

async fn fetch<P: Ports>(ports: &P, uri: &Uri, policy: &JwksPolicy, now: Duration) -> Option<KeySet> {
    let host = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())?;
    let req = Request::get(uri.clone())
        .header(HOST, host)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .body(Bytes::new())
        .ok()?;
    let opts = UpstreamOptions {
        connect_timeout: policy.fetch_timeout,
        request_timeout: policy.fetch_timeout,
        max_request_body: 0,
    };
    let resp = ports.http().fetch(req, &opts, MAX_JWKS_BYTES).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let ttl = freshness(resp.headers().get(CACHE_CONTROL), policy);
    let raw = std::str::from_utf8(resp.body()).ok()?;
    parse(raw, now, now.saturating_add(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_clamped_to_the_policy() {
        let p = JwksPolicy::default();
        let hv = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(freshness(Some(&hv("public, max-age=300")), &p), Duration::from_secs(300));
        assert_eq!(freshness(Some(&hv("max-age=5")), &p), p.min_ttl);
        assert_eq!(freshness(Some(&hv("max-age=999999999")), &p), p.max_ttl);
        assert_eq!(freshness(Some(&hv("no-store")), &p), p.min_ttl);
        assert_eq!(freshness(None, &p), p.default_ttl);
    }
}
