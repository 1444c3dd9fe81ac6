//! API keys: the SHA-256 of the presented key names a consumer (the config
//! holds only hashes, and so does the registry). A hash lookup is as fast
//! as a cached token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{AuthCaches, AuthError, Challenge, Identity};
use crate::config::auth::ApiKeyProvider;
use crate::config::published::{Consumer, consumer_key};
use crate::ports::{Clock, KvStore, Ports};
use crate::shared::cache::ExpiringMap;
use crate::shared::hex::hex;

/// A key of the config's provider `name`, or else of the registry's
/// consumers of that provider (held in memory, or read from the store).
pub(crate) async fn verify<P: Ports>(
    keys: &ApiKeyProvider,
    name: &str,
    caches: &AuthCaches,
    ports: &P,
    key: &str,
    challenge: &Challenge,
) -> Result<Arc<Identity>, AuthError> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut found = keys.consumers.get(&digest).cloned().or_else(|| caches.consumers.get(name, &digest));
    if found.is_none()
        && let Some(stored) = &caches.stored
    {
        found = stored.find(ports, name, &digest).await?;
    }
    found.ok_or_else(|| AuthError::InvalidToken {
        reason: "unknown_key",
        description: "the API key is not valid".into(),
        challenge: challenge.clone(),
    })
}

/// The registry's consumers at the edge: one store key each
/// (`kv-schema/registry.md`), read when its key is presented; the answer,
/// either way, is kept for `keep` (how long a revoked key may still pass
/// in an instance that outlives its request).
pub(crate) struct Stored {
    /// By key hash: the provider asked for, and what the store said.
    seen: ExpiringMap<[u8; 32], Seen>,
    keep: Duration,
}

type Seen = (Box<str>, Option<Arc<Identity>>);

impl Stored {
    #[cfg_attr(not(any(test, feature = "edge-p2", feature = "edge-p3")), allow(dead_code))]
    pub(crate) fn new(keep: Duration, entries: usize) -> Self {
        Self { seen: ExpiringMap::new(entries), keep }
    }

    async fn find<P: Ports>(
        &self,
        ports: &P,
        provider: &str,
        digest: &[u8; 32],
    ) -> Result<Option<Arc<Identity>>, AuthError> {
        let now = ports.clock().monotonic();
        if let Some((asked, seen)) = self.seen.get(digest, now)
            && *asked == *provider
        {
            return Ok(seen);
        }
        let key = consumer_key(provider, &hex(digest));
        let record = ports.kv().get(&key).await.map_err(|_| AuthError::RegistryUnavailable)?;
        // A record that does not build (or names another key) is no consumer.
        let found = record
            .and_then(|r| Consumer::built(&r).ok())
            .filter(|(p, d, _)| p == provider && d == digest)
            .map(|(_, _, identity)| identity);
        if !self.keep.is_zero() {
            self.seen.insert(*digest, (provider.into(), found.clone()), Some(now + self.keep), now);
        }
        Ok(found)
    }
}

/// By API-key provider, then by key hash: the consumers a node holds from
/// the registry (`kv-schema/registry.md`), for whichever config it runs.
pub(crate) type Consumers = HashMap<String, HashMap<[u8; 32], Arc<Identity>>>;

/// The registry's API-key consumers, held whole in memory and changed in
/// place as the registry changes (empty where nothing follows it).
#[derive(Default)]
pub struct Registered(RwLock<Consumers>);

#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // only a node follows the registry
impl Registered {
    pub(crate) fn get(&self, provider: &str, digest: &[u8; 32]) -> Option<Arc<Identity>> {
        self.0.read().ok()?.get(provider)?.get(digest).cloned()
    }

    /// Replaces them all (a first load, or a log the node fell behind).
    pub(crate) fn replace(&self, all: Consumers) {
        if let Ok(mut held) = self.0.write() {
            *held = all;
        }
    }

    /// One consumer added (`Some`) or revoked (`None`).
    pub(crate) fn change(&self, provider: &str, digest: [u8; 32], consumer: Option<Arc<Identity>>) {
        let Ok(mut held) = self.0.write() else { return };
        match consumer {
            Some(c) => drop(held.entry(provider.to_string()).or_default().insert(digest, c)),
            None => drop(held.get_mut(provider).and_then(|p| p.remove(&digest))),
        }
    }

    /// A copy of them all (to keep on disk).
    pub(crate) fn snapshot(&self) -> Consumers {
        self.0.read().map(|held| held.clone()).unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.read().map(|held| held.values().map(HashMap::len).sum()).unwrap_or(0)
    }
}
