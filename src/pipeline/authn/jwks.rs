//! Signing keys from a JWKS URL, cached three ways: parsed keys in memory
//! (per process, or per reused WASI 0.3 instance), the raw set in the
//! key-value store (so a fresh WASI 0.2 instance, or another node, does not
//! refetch; layout in `kv-schema/jwks.md`), and the identity provider last.
//!
//! - Freshness comes from `Cache-Control: max-age`, clamped to the
//!   provider's `min_ttl`..`max_ttl` (`default_ttl` when absent).
//! - An expired set, or an unknown `kid`, triggers a fetch: at most one per
//!   `refetch_interval` (1 s) per key set across the fleet (the attempt is
//!   recorded in the store, so a flood of made-up `kid`s cannot hammer the
//!   IdP from many instances), one at a time (single-flight in a process, a
//!   claim with a deadline in the store).
//! - A token with an unknown `kid` waits for the next fetch that starts
//!   after it arrived — its own or another request's, for up to 2 s — so a
//!   key published by a rotation is served within about a second. Only that
//!   fetch can say the key does not exist (401); if it cannot be made, the
//!   answer is 503, never a 401 for a key that may well exist.
//! - While the IdP is unreachable an expired set keeps serving for
//!   `stale_for`; with nothing usable at all the answer is 503, retried at
//!   most once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, HOST};
use http::{HeaderValue, Request, Uri};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::auth::JwksPolicy;
use crate::ports::{Clock, HttpClient, KvStore, Ports, UpstreamOptions, store_key};

/// Retry gap when no usable keys exist at all.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
/// How often a request waiting for another's fetch looks for the result.
const PEER_POLL: Duration = Duration::from_millis(20);
/// The longest a request with an unknown `kid` waits for the next fetch
/// window (after `refetch_interval`); a later window is a 503 at once.
const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
/// Larger key sets are refused.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;

/// What a lookup found.
pub(crate) enum KeyLookup {
    Found(Arc<DecodingKey>),
    /// Keys are available, but none for this `kid`/algorithm.
    Unknown,
    /// No usable keys: the IdP is down and nothing (fresh enough) is cached.
    Unavailable,
}

/// A lookup's answer, and the fetch this request made on the way, if any.
pub(crate) struct Lookup {
    pub(crate) key: KeyLookup,
    pub(crate) fetched: Option<Fetched>,
}

impl From<KeyLookup> for Lookup {
    fn from(key: KeyLookup) -> Self {
        Self { key, fetched: None }
    }
}

/// A key-set fetch a request made itself, for its trace and metrics:
/// monotonic start and end, and whether a usable set came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub(crate) started: Duration,
    pub(crate) ended: Duration,
    pub(crate) ok: bool,
}

/// What a request's turn at bringing a key set up to date came to.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// It did not fetch: another instance did (its result, if any, is in
    /// the store), or no fetch was due.
    Left,
    /// It fetched.
    Fetched(Fetched),
}

impl Turn {
    fn fetched(self) -> Option<Fetched> {
        match self {
            Turn::Fetched(f) => Some(f),
            Turn::Left => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct JwksCache {
    sets: Mutex<HashMap<String, Arc<Entry>>>,
}

impl JwksCache {
    fn entry(&self, uri: &str) -> Arc<Entry> {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        sets.entry(uri.to_string()).or_default().clone()
    }

    /// The key for a token's `kid` and algorithm.
    pub(crate) async fn key<P: Ports>(
        &self,
        ports: &P,
        uri: &Uri,
        policy: &JwksPolicy,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Lookup {
        let uri_text = uri.to_string();
        let entry = self.entry(&uri_text);
        let arrival = ports.clock().now();
        // 1. Memory, then the shared store: what another instance fetched or tried.
        if let Some(key) = entry.fresh_key(arrival, kid, alg) {
            return KeyLookup::Found(key).into();
        }
        let stored = load(ports, &uri_text).await;
        if let Some((record, _)) = &stored {
            adopt(&entry, record);
        }
        if let Some(key) = entry.fresh_key(arrival, kid, alg) {
            return KeyLookup::Found(key).into();
        }
        Refresh { ports, uri, uri_text: &uri_text, entry: &entry, policy }.answer(arrival, stored, kid, alg).await
    }

    /// Makes sure a usable set for `uri` is at hand — in memory, from the
    /// store, or fetched now (whatever `refetch_interval` says: the node
    /// does this at start, before it is ready). Returns the fetch, if one
    /// was made.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) async fn warm<P: Ports>(&self, ports: &P, uri: &Uri, policy: &JwksPolicy) -> Option<Fetched> {
        let uri_text = uri.to_string();
        let entry = self.entry(&uri_text);
        let now = ports.clock().now();
        if let Some((record, _)) = load(ports, &uri_text).await {
            adopt(&entry, &record);
        }
        if entry.usable(now, policy).is_some() {
            return None;
        }
        let _turn = entry.take_turn();
        match (Refresh { ports, uri, uri_text: &uri_text, entry: &entry, policy }).attempt(None, now).await {
            Turn::Fetched(fetched) => Some(fetched),
            Turn::Left => None,
        }
    }

    /// Whether a usable set for `uri` is in memory.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn has_usable(&self, uri: &Uri, now: Duration, policy: &JwksPolicy) -> bool {
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        sets.get(&uri.to_string()).is_some_and(|e| e.usable(now, policy).is_some())
    }
}

/// One key set's state in this process.
#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// Set while one request of this process fetches; the others poll
    /// for its result with the Clock port's timer. (A task-to-task wake-up,
    /// as an async mutex needs, is refused by spin-sdk 7's runtime.)
    fetching: AtomicBool,
}

impl Entry {
    /// A key from a set that is still fresh.
    fn fresh_key(&self, now: Duration, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let state = self.snapshot();
        state.set.as_ref().filter(|s| s.fresh_until > now).and_then(|s| s.find(kid, alg))
    }

    /// The set, if it may still be served (fresh, or stale within `stale_for`).
    fn usable(&self, now: Duration, policy: &JwksPolicy) -> Option<Arc<KeySet>> {
        self.snapshot().set.filter(|s| s.usable(now, policy))
    }

    fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// This request's turn to fetch in this process, or `None` while
    /// another has it.
    fn take_turn(&self) -> Option<Fetching<'_>> {
        (!self.fetching.swap(true, Ordering::AcqRel)).then_some(Fetching(&self.fetching))
    }
}

/// Clears `fetching` however the fetch ends.
struct Fetching<'a>(&'a AtomicBool);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[derive(Default, Clone)]
struct State {
    set: Option<Arc<KeySet>>,
    last_attempt: Option<Duration>,
    /// This process's attempt at `last_attempt` has not ended yet (it
    /// changes with `last_attempt` and `set`, so one snapshot is consistent).
    attempting: bool,
    /// Another instance's attempt at `last_attempt` (from the store) holds
    /// its claim until then.
    peer_claim_until: Option<Duration>,
}

impl State {
    /// An attempt has begun and not ended: here, or (its claim live) elsewhere.
    fn under_way(&self, now: Duration) -> bool {
        self.attempting || self.peer_claim_until.is_some_and(|until| until > now)
    }
}

struct KeySet {
    keys: Vec<Key>,
    raw: String,
    fetched_at: Duration,
    fresh_until: Duration,
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

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

/// The key-value record (`pc1:jwks:<sha256 of the URL>`, `kv-schema/jwks.md`),
/// times in ms since the epoch.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stored {
    pub(crate) attempted_at_ms: u64,
    /// Set while an instance fetches: its deadline. Others wait for the
    /// result until then, and take over once it has passed.
    pub(crate) claimed_until_ms: Option<u64>,
    pub(crate) fetched_at_ms: Option<u64>,
    pub(crate) fresh_until_ms: Option<u64>,
    pub(crate) jwks: Option<String>,
}

impl Stored {
    /// Until when to wait for the instance that claimed a fetch, if one
    /// holds a live claim: its own deadline, but never past our `fetch_timeout`.
    fn claim_deadline(&self, now: Duration, policy: &JwksPolicy) -> Option<Duration> {
        let until = Duration::from_millis(self.claimed_until_ms?);
        (until > now).then(|| until.min(now.saturating_add(policy.fetch_timeout)))
    }
}

/// One request's turn to bring a key set up to date, across instances
/// sharing the store.
struct Refresh<'a, P> {
    ports: &'a P,
    uri: &'a Uri,
    uri_text: &'a str,
    entry: &'a Entry,
    policy: &'a JwksPolicy,
}

impl<P: Ports> Refresh<'_, P> {
    /// The key for a request that found no fresh one in memory or the store.
    async fn answer(
        &self,
        arrival: Duration,
        stored: Option<(Stored, Vec<u8>)>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Lookup {
        let (ports, entry, policy) = (self.ports, self.entry, self.policy);
        // 2. A known key in a set past its freshness: refresh the set if
        // due, else (or if the IdP fails) serve the key stale.
        if let Some(set) = entry.usable(arrival, policy)
            && set.find(kid, alg).is_some()
        {
            let turn = match entry.take_turn() {
                Some(_turn) => self.turn(stored, arrival).await,
                None => Turn::Left,
            };
            let key = lookup(entry.usable(ports.clock().now(), policy).as_deref(), kid, alg);
            return Lookup { key, fetched: turn.fetched() };
        }
        // 3. An unknown key: only a set fetched after this request arrived
        // can say it does not exist.
        self.after(arrival, stored, kid, alg).await
    }

    /// When the next fetch may start: `refetch_interval` after the last
    /// attempt anywhere (1 s while no keys are usable).
    fn due_at(&self, now: Duration) -> Duration {
        let gap = if self.entry.usable(now, self.policy).is_some() {
            self.policy.refetch_interval
        } else {
            UNAVAILABLE_RETRY
        };
        self.entry.snapshot().last_attempt.map_or(Duration::ZERO, |t| t.saturating_add(gap))
    }

    /// The key from a set fetched after `arrival` — by this request or any
    /// other, waiting up to [`UNKNOWN_KID_WAIT`] for the next window: found,
    /// or unknown (401). `Unavailable` (503) when no such fetch succeeded.
    async fn after(
        &self,
        arrival: Duration,
        mut seen: Option<(Stored, Vec<u8>)>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Lookup {
        let clock = self.ports.clock();
        let deadline = arrival.saturating_add(UNKNOWN_KID_WAIT).saturating_add(self.policy.fetch_timeout);
        loop {
            let now = clock.now();
            if let Some(key) = self.settled(arrival, now, kid, alg) {
                return key.into();
            }
            if now >= deadline {
                return KeyLookup::Unavailable.into();
            }
            let Some(turn) = self.entry.take_turn() else {
                clock.sleep(PEER_POLL).await; // another request of this process fetches
                continue;
            };
            let claimed = self.entry.snapshot().under_way(now)
                || seen.as_ref().is_some_and(|(s, _)| s.claim_deadline(now, self.policy).is_some());
            let due_at = self.due_at(now);
            if !claimed && now < due_at {
                drop(turn);
                if due_at > arrival.saturating_add(UNKNOWN_KID_WAIT) {
                    return KeyLookup::Unavailable.into();
                }
                clock.sleep(due_at.min(deadline).saturating_sub(now)).await;
            } else {
                // This request's own fetch answers it, whatever the clock says.
                let mine = self.turn(seen.take(), now).await;
                drop(turn);
                if let Turn::Fetched(f) = mine {
                    let key = match f.ok {
                        true => lookup(self.entry.snapshot().set.as_deref(), kid, alg),
                        false => KeyLookup::Unavailable,
                    };
                    return Lookup { key, fetched: Some(f) };
                }
            }
            seen = load(self.ports, self.uri_text).await;
            if let Some((record, _)) = &seen {
                adopt(self.entry, record);
            }
        }
    }

    /// The answer once a fetch after `arrival` is over, or while the IdP is
    /// known to be down with nothing usable; `None` while one is to come.
    fn settled(&self, arrival: Duration, now: Duration, kid: Option<&str>, alg: Algorithm) -> Option<KeyLookup> {
        let state = self.entry.snapshot();
        if let Some(set) = state.set.as_deref().filter(|s| s.fetched_at > arrival) {
            return Some(lookup(Some(set), kid, alg));
        }
        if state.under_way(now) {
            return None;
        }
        let failed_since = state.last_attempt.is_some_and(|t| t > arrival);
        let down = self.entry.usable(now, self.policy).is_none()
            && state.last_attempt.is_some_and(|t| now < t.saturating_add(UNAVAILABLE_RETRY));
        (failed_since || down).then_some(KeyLookup::Unavailable)
    }

    /// Waits for another instance's fetch if one is under way (taking over
    /// once it misses its deadline), else fetches if due.
    async fn turn(&self, mut seen: Option<(Stored, Vec<u8>)>, mut now: Duration) -> Turn {
        if let Some(until) = seen.as_ref().and_then(|(s, _)| s.claim_deadline(now, self.policy)) {
            seen = await_peer(self.ports, self.entry, self.uri_text, until).await;
            if seen.as_ref().is_none_or(|(s, _)| s.claimed_until_ms.is_none()) {
                return Turn::Left;
            }
            now = self.ports.clock().now(); // the claimant missed its deadline: take over
        } else if now < self.due_at(now) {
            return Turn::Left;
        }
        self.attempt(seen.as_ref().map(|(_, bytes)| bytes.as_slice()), now).await
    }

    /// Claims the fetch in the shared store first (of many instances, or
    /// nodes, that decide to fetch at once, one does), then fetches and
    /// stores the outcome; or, claimed by another, waits for its result.
    async fn attempt(&self, seen: Option<&[u8]>, now: Duration) -> Turn {
        let (ports, uri, policy) = (self.ports, self.uri_text, self.policy);
        let set = self.entry.usable(now, policy);
        if !claim(ports, uri, seen, now, set.as_deref(), policy).await {
            // Another got there first (its attempt is in the record).
            await_peer(ports, self.entry, uri, now.saturating_add(policy.fetch_timeout)).await;
            return Turn::Left;
        }
        self.entry.update(|s| {
            s.last_attempt = Some(now);
            s.attempting = true;
        });
        let started = ports.clock().monotonic();
        let fetched = fetch(ports, self.uri, policy, now).await.map(Arc::new);
        let made = Fetched { started, ended: ports.clock().monotonic(), ok: fetched.is_some() };
        self.entry.update(|s| {
            s.attempting = false;
            if let Some(fetched) = &fetched {
                s.set = Some(fetched.clone());
            }
        });
        // Stored either way: a failed attempt releases whoever waits on the claim.
        save(ports, uri, now, fetched.as_deref().or(set.as_deref()), policy).await;
        Turn::Fetched(made)
    }
}

/// The key-value key for a JWKS URL.
pub(crate) fn kv_key(uri: &str) -> String {
    store_key(&["pc1:jwks:"], &Sha256::digest(uri.as_bytes()))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// The key in a usable set, or why there is none.
fn lookup(set: Option<&KeySet>, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
    match set {
        Some(set) => set.find(kid, alg).map_or(KeyLookup::Unknown, KeyLookup::Found),
        None => KeyLookup::Unavailable,
    }
}

/// Takes whatever is newer from the store: a key set, or a fetch attempt
/// (and whether it is still under way).
fn adopt(entry: &Entry, stored: &Stored) {
    let attempted = Duration::from_millis(stored.attempted_at_ms);
    let set = match (&stored.jwks, stored.fetched_at_ms, stored.fresh_until_ms) {
        (Some(raw), Some(f), Some(u)) => parse(raw, Duration::from_millis(f), Duration::from_millis(u)),
        _ => None,
    };
    entry.update(|state| {
        if state.last_attempt.is_none_or(|t| t <= attempted) {
            state.last_attempt = Some(attempted);
            state.peer_claim_until = stored.claimed_until_ms.map(Duration::from_millis);
        }
        if let Some(set) = set
            && state.set.as_ref().is_none_or(|s| s.fetched_at < set.fetched_at)
        {
            state.set = Some(Arc::new(set));
        }
    });
}

/// The stored record, parsed, with its bytes (for compare-and-swap).
async fn load<P: Ports>(ports: &P, uri: &str) -> Option<(Stored, Vec<u8>)> {
    let bytes = ports.kv().get(&kv_key(uri)).await.ok()??;
    Some((serde_json::from_slice(&bytes).ok()?, bytes))
}

/// The record of an attempt at `now`; `claimed`: the fetch is under way.
fn record(now: Duration, set: Option<&KeySet>, claimed: bool, policy: &JwksPolicy) -> (Vec<u8>, Duration) {
    let stored = Stored {
        attempted_at_ms: ms(now),
        claimed_until_ms: claimed.then(|| ms(now.saturating_add(policy.fetch_timeout))),
        fetched_at_ms: set.map(|s| ms(s.fetched_at)),
        fresh_until_ms: set.map(|s| ms(s.fresh_until)),
        jwks: set.map(|s| s.raw.clone()),
    };
    let keep =
        set.map_or(policy.refetch_interval, |s| s.fresh_until.saturating_add(policy.stale_for).saturating_sub(now));
    (serde_json::to_vec(&stored).unwrap_or_default(), keep.max(policy.refetch_interval))
}

/// Records an attempt now, if the record is still what we last read.
/// A store that fails is no reason to stop: the attempt goes ahead.
async fn claim<P: Ports>(
    ports: &P,
    uri: &str,
    seen: Option<&[u8]>,
    now: Duration,
    set: Option<&KeySet>,
    policy: &JwksPolicy,
) -> bool {
    let (bytes, keep) = record(now, set, true, policy);
    ports.kv().compare_and_swap(&kv_key(uri), seen, &bytes, Some(keep)).await.unwrap_or(true)
}

/// Stores the outcome of an attempt (a failed store only costs a refetch later).
async fn save<P: Ports>(ports: &P, uri: &str, now: Duration, set: Option<&KeySet>, policy: &JwksPolicy) {
    let (bytes, keep) = record(now, set, false, policy);
    let _ = ports.kv().set(&kv_key(uri), &bytes, Some(keep)).await;
}

/// Another instance claimed the fetch: wait (until `deadline`) for its
/// result. Returns the record as last read (still claimed if the claimant
/// missed the deadline).
async fn await_peer<P: Ports>(ports: &P, entry: &Entry, uri: &str, deadline: Duration) -> Option<(Stored, Vec<u8>)> {
    loop {
        let stored = load(ports, uri).await;
        match &stored {
            Some((record, _)) => {
                adopt(entry, record);
                if record.claimed_until_ms.is_none() {
                    return stored;
                }
            }
            None => return None,
        }
        if ports.clock().now() >= deadline {
            return stored;
        }
        ports.clock().sleep(PEER_POLL).await;
    }
}

async fn fetch<P: Ports>(ports: &P, uri: &Uri, policy: &JwksPolicy, now: Duration) -> Option<KeySet> {
    let host = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())?;
    let req = Request::get(uri.clone())
        .header(HOST, host)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .body(Bytes::new())
        .ok()?;
    let opts = UpstreamOptions::own(policy.fetch_timeout);
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
