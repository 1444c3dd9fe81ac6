//! API keys: the SHA-256 of the presented key names a consumer (the config
//! holds only hashes, and so does the registry). A hash lookup is as fast
//! as a cached token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::{AuthError, Challenge, Identity};
use crate::config::auth::ApiKeyProvider;

/// A key of the config's provider `name`, or else of the registry's
/// consumers of that provider.
pub(crate) fn verify(
    keys: &ApiKeyProvider,
    name: &str,
    registered: &Registered,
    key: &str,
    challenge: &Challenge,
) -> Result<Arc<Identity>, AuthError> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    match keys.consumers.get(&digest).cloned().or_else(|| registered.get(name, &digest)) {
        Some(consumer) => Ok(consumer),
        None => Err(AuthError::InvalidToken {
            reason: "unknown_key",
            description: "the API key is not valid".into(),
            challenge: challenge.clone(),
        }),
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
