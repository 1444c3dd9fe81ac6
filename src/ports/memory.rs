//! The in-memory key-value store: the node's embedded default (no external
//! services) and the store unit tests use. Sharded so concurrent requests
//! rarely wait on the same lock; bounded, so a flood of distinct keys (one per
//! client IP, say) cannot grow memory without limit; entries past their TTL
//! read as absent and are swept when their shard fills up.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{Clock, KvError, KvStore};

const SHARDS: usize = 32;

/// A bounded, sharded map from key to bytes with optional expiry.
pub struct MemoryKv<C> {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    clock: C,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Duration>,
}

impl Entry {
    fn live(&self, now: Duration) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl<C: Clock> MemoryKv<C> {
    /// A store holding at most about `max_entries` keys.
    pub fn new(clock: C, max_entries: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Self { shards, hasher: RandomState::new(), per_shard: max_entries.div_ceil(SHARDS).max(1), clock }
    }

    /// Number of live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = self.clock.now();
        self.shards.iter().map(|s| lock(s).map.values().filter(|e| e.live(now)).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        lock(&self.shards[index])
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.clock.now().saturating_add(t))
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map
/// whose entries are each written whole; the data is still usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn read(&self, key: &str, now: Duration) -> Option<&Vec<u8>> {
        self.map.get(key).filter(|e| e.live(now)).map(|e| &e.value)
    }

    /// Inserts, first making room: expired entries go, then arbitrary ones.
    fn write(&mut self, key: &str, entry: Entry, cap: usize, now: Duration) {
        if !self.map.contains_key(key) && self.map.len() >= cap {
            self.map.retain(|_, e| e.live(now));
            while self.map.len() >= cap {
                let Some(victim) = self.map.keys().next().cloned() else {
                    break;
                };
                self.map.remove(&victim);
            }
        }
        match self.map.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                self.map.insert(key.to_string(), entry);
            }
        }
    }
}

impl<C: Clock> KvStore for MemoryKv<C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.shard(key).read(key, self.clock.now()).cloned())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let entry = Entry { value: value.to_vec(), expires_at: self.expiry(ttl) };
        self.shard(key).write(key, entry, self.per_shard, self.clock.now());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.shard(key).map.remove(key);
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let now = self.clock.now();
        let mut shard = self.shard(key);
        if shard.read(key, now).map(Vec::as_slice) != current {
            return Ok(false);
        }
        let entry = Entry { value: new.to_vec(), expires_at: self.expiry(ttl) };
        shard.write(key, entry, self.per_shard, now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::testing::{FakeClock, block_on};

    #[test]
    fn get_set_delete_and_ttl() {
        let clock = FakeClock::default();
        let kv = MemoryKv::new(clock.clone(), 100);
        block_on(async {
            assert_eq!(kv.get("a").await.unwrap(), None);
            kv.set("a", b"1", None).await.unwrap();
            kv.set("b", b"2", Some(Duration::from_secs(10))).await.unwrap();
            assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
            clock.advance(Duration::from_secs(10));
            assert_eq!(kv.get("b").await.unwrap(), None, "expired at exactly its TTL");
            assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
            kv.delete("a").await.unwrap();
            assert_eq!(kv.get("a").await.unwrap(), None);
        });
    }

    #[test]
    fn compare_and_swap_only_swaps_the_expected_value() {
        let clock = FakeClock::default();
        let kv = MemoryKv::new(clock.clone(), 100);
        block_on(async {
            assert!(kv.compare_and_swap("k", None, b"1", None).await.unwrap());
            assert!(!kv.compare_and_swap("k", None, b"2", None).await.unwrap());
            assert!(!kv.compare_and_swap("k", Some(b"0"), b"2", None).await.unwrap());
            assert!(kv.compare_and_swap("k", Some(b"1"), b"2", Some(Duration::from_secs(1))).await.unwrap());
            assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"2"[..]));
            clock.advance(Duration::from_secs(2));
            // An expired value counts as absent.
            assert!(kv.compare_and_swap("k", None, b"3", None).await.unwrap());
        });
    }

    #[test]
    fn memory_stays_bounded() {
        let clock = FakeClock::default();
        let kv = MemoryKv::new(clock.clone(), 64);
        block_on(async {
            for i in 0..10_000 {
                kv.set(&format!("k{i}"), b"v", None).await.unwrap();
            }
        });
        assert!(kv.len() <= 64 + SHARDS, "{} entries", kv.len());
        assert!(kv.len() >= 32, "evicts only what it must: {}", kv.len());
    }
}
