//! A bounded, sharded map whose entries may expire: the in-memory key-value
//! store and the verified-token cache are both one of these. Sharded so
//! concurrent requests rarely wait on the same lock; bounded, so a flood of
//! distinct keys cannot grow memory without limit (expired entries go
//! first, then arbitrary ones); expiry is checked against a time the caller
//! passes in, so the map itself reads no clock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const SHARDS: usize = 32;

/// Seeded foldhash, not SipHash: every key is a SHA-256 digest or a store
/// key made of one (`kv-schema/`), so no client can aim keys at a bucket.
/// Each shard's map and the shard choice have seeds of their own.
type RandomState = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, Entry<V>, RandomState>;
type Shard<K, V> = Mutex<Map<K, V>>;
type Guard<'a, K, V> = MutexGuard<'a, Map<K, V>>;

pub(crate) struct ExpiringMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: RandomState,
    per_shard: usize,
}

struct Entry<V> {
    value: V,
    /// Time since the Unix epoch after which the entry is gone.
    expires_at: Option<Duration>,
}

impl<V> Entry<V> {
    fn live(&self, now: Duration) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map
/// whose entries are each written whole; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Hash + Eq, V: Clone> ExpiringMap<K, V> {
    /// A map holding at most about `max_entries` entries.
    pub(crate) fn new(max_entries: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Map::default())).collect();
        Self { shards, hasher: RandomState::default(), per_shard: max_entries.div_ceil(SHARDS).max(1) }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> Guard<'_, K, V> {
        lock(&self.shards[self.hasher.hash_one(key) as usize % SHARDS])
    }

    pub(crate) fn get<Q>(&self, key: &Q, now: Duration) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
    }

    pub(crate) fn insert(&self, key: K, value: V, expires_at: Option<Duration>, now: Duration) {
        let mut shard = self.shard(&key);
        make_room(&mut shard, &key, self.per_shard, now);
        shard.insert(key, Entry { value, expires_at });
    }

    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).remove(key);
    }

    /// Replaces the entry with `new` only if its live value equals
    /// `current` (`None`: only if absent or expired), atomically.
    pub(crate) fn compare_and_swap(
        &self,
        key: K,
        current: Option<&V>,
        new: V,
        expires_at: Option<Duration>,
        now: Duration,
    ) -> bool
    where
        V: PartialEq,
    {
        let mut shard = self.shard(&key);
        let live = shard.get(&key).filter(|e| e.live(now)).map(|e| &e.value);
        if live != current {
            return false;
        }
        make_room(&mut shard, &key, self.per_shard, now);
        shard.insert(key, Entry { value: new, expires_at });
        true
    }

    /// Reads the live values of `keys` and replaces them with what `f`
    /// returns, as one step: the shards involved stay locked throughout
    /// (taken in index order, so concurrent callers cannot deadlock).
    pub(crate) fn update_many<R>(
        &self,
        keys: &[K],
        now: Duration,
        f: impl FnOnce(&[Option<V>]) -> (R, Option<Vec<(V, Option<Duration>)>>),
    ) -> R
    where
        K: Clone,
    {
        let index = |k: &K| self.hasher.hash_one(k) as usize % SHARDS;
        let mut shards: Vec<usize> = keys.iter().map(index).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: Vec<(usize, Guard<'_, K, V>)> = shards.iter().map(|&i| (i, lock(&self.shards[i]))).collect();
        let mut shard_of = |k: &K| {
            let i = index(k);
            guards.iter().position(|(s, _)| *s == i).unwrap_or(0)
        };
        let slots: Vec<usize> = keys.iter().map(&mut shard_of).collect();
        let current: Vec<Option<V>> = keys
            .iter()
            .zip(&slots)
            .map(|(k, &g)| guards[g].1.get(k).filter(|e| e.live(now)).map(|e| e.value.clone()))
            .collect();
        let (out, writes) = f(&current);
        for ((key, &g), (value, expires_at)) in keys.iter().zip(&slots).zip(writes.into_iter().flatten()) {
            let shard = &mut guards[g].1;
            make_room(shard, key, self.per_shard, now);
            shard.insert(key.clone(), Entry { value, expires_at });
        }
        out
    }

    /// Drops every expired entry; returns how many stay and how many went.
    pub(crate) fn purge(&self, now: Duration) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(kept, gone), s| {
            let mut shard = lock(s);
            let before = shard.len();
            shard.retain(|_, e| e.live(now));
            (kept + shard.len(), gone + before - shard.len())
        })
    }

    /// Live entries.
    #[cfg(test)]
    pub(crate) fn len(&self, now: Duration) -> usize {
        self.shards.iter().map(|s| lock(s).values().filter(|e| e.live(now)).count()).sum()
    }
}

/// Before inserting a new key into a full shard: drop expired entries, then
/// arbitrary ones (the first the map yields) until there is room.
fn make_room<K: Hash + Eq, V>(shard: &mut Map<K, V>, key: &K, cap: usize, now: Duration) {
    if shard.contains_key(key) || shard.len() < cap {
        return;
    }
    shard.retain(|_, e| e.live(now));
    let mut excess = (shard.len() + 1).saturating_sub(cap);
    shard.retain(|_, _| {
        let keep = excess == 0;
        excess = excess.saturating_sub(1);
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_000);

    #[test]
    fn entries_expire_at_their_time() {
        let m: ExpiringMap<String, u32> = ExpiringMap::new(100);
        m.insert("a".into(), 1, Some(T0 + Duration::from_secs(10)), T0);
        m.insert("b".into(), 2, None, T0);
        assert_eq!(m.get("a", T0 + Duration::from_secs(9)), Some(1));
        assert_eq!(m.get("a", T0 + Duration::from_secs(10)), None);
        assert_eq!(m.get("b", T0 + Duration::from_secs(1 << 30)), Some(2));
        m.remove("b");
        assert_eq!(m.get("b", T0), None);
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let m: ExpiringMap<u32, u32> = ExpiringMap::new(100);
        for i in 0..10 {
            m.insert(i, i, Some(T0 + Duration::from_secs(u64::from(i))), T0);
        }
        m.insert(99, 0, None, T0);
        assert_eq!(m.purge(T0 + Duration::from_secs(4)), (6, 5));
        assert_eq!(m.get(&5, T0), Some(5));
        assert_eq!(m.get(&4, T0), None, "removed, not just hidden");
    }

    #[test]
    fn compare_and_swap_sees_expired_as_absent() {
        let m: ExpiringMap<&str, u32> = ExpiringMap::new(100);
        assert!(m.compare_and_swap("k", None, 1, Some(T0 + Duration::from_secs(1)), T0));
        assert!(!m.compare_and_swap("k", None, 2, None, T0));
        assert!(!m.compare_and_swap("k", Some(&7), 2, None, T0));
        assert!(m.compare_and_swap("k", Some(&1), 2, Some(T0 + Duration::from_secs(1)), T0));
        assert!(m.compare_and_swap("k", None, 3, None, T0 + Duration::from_secs(2)));
    }

    #[test]
    fn size_stays_bounded() {
        let m: ExpiringMap<u32, u32> = ExpiringMap::new(64);
        for i in 0..10_000 {
            m.insert(i, i, None, T0);
        }
        let n = m.len(T0);
        assert!((32..=64).contains(&n), "{n} entries");
    }
}
