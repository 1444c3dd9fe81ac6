//! The response cache's first level: records in memory, bounded in bytes
//! (`gateway.cache_memory`), sharded so concurrent hits rarely share a
//! lock; the oldest go first when a shard is full. Plus the purge marks
//! this copy has seen, and who is fetching what (collapsed forwarding).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::entry::Record;
use crate::shared::cache::ExpiringMap;

const SHARDS: usize = 16;

/// A record with the time (µs since the epoch) until which it is used
/// without asking the store (the fleet's purges reach it then), and
/// until which it is kept at all.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) record: Record,
    pub(crate) checked_until: u64,
    pub(crate) keep_until: u64,
}

#[derive(Default)]
struct Shard {
    records: HashMap<[u8; 32], (Held, usize)>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

pub(crate) struct Memory {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Purge marks seen or made here: mark key → time (µs).
    marks: ExpiringMap<String, u64>,
    /// The latest of them: an entry stored after it is purged by none.
    latest_mark: AtomicU64,
    /// Digests being fetched by a request of this copy.
    pub(crate) fetching: ExpiringMap<[u8; 32], ()>,
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn size(record: &Record) -> usize {
    match record {
        Record::Entry(e) => e.size(),
        Record::Vary(m) => 64 + m.names.iter().map(|n| n.as_str().len()).sum::<usize>(),
    }
}

impl Memory {
    pub(crate) fn new(bytes: u64) -> Self {
        let total = usize::try_from(bytes).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: total / SHARDS,
            marks: ExpiringMap::new(100_000),
            latest_mark: AtomicU64::new(0),
            fetching: ExpiringMap::new(100_000),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> MutexGuard<'_, Shard> {
        lock(&self.shards[usize::from(digest[0]) % SHARDS])
    }

    pub(crate) fn get(&self, digest: &[u8; 32], now_us: u64) -> Option<Held> {
        let mut shard = self.shard(digest);
        match shard.records.get(digest) {
            Some((held, _)) if held.keep_until > now_us => Some(held.clone()),
            Some(_) => {
                remove(&mut shard, digest);
                None
            }
            None => None,
        }
    }

    /// Keeps a record, making room by dropping the oldest; one larger than
    /// a shard's share is not kept.
    pub(crate) fn insert(&self, digest: [u8; 32], held: Held) {
        let bytes = size(&held.record);
        if bytes > self.per_shard {
            return;
        }
        let mut shard = self.shard(&digest);
        remove(&mut shard, &digest);
        while shard.bytes + bytes > self.per_shard {
            let Some(oldest) = shard.order.pop_front() else { break };
            if let Some((_, b)) = shard.records.remove(&oldest) {
                shard.bytes -= b;
            }
        }
        shard.bytes += bytes;
        shard.order.push_back(digest);
        shard.records.insert(digest, (held, bytes));
    }

    pub(crate) fn remove(&self, digest: &[u8; 32]) {
        remove(&mut self.shard(digest), digest);
    }

    /// Bytes held now.
    #[cfg(any(test, not(target_arch = "wasm32")))]
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// Remembers a purge mark (its key and time, µs) until `until`.
    pub(crate) fn mark(&self, key: String, at: u64, until: Duration, now: Duration) {
        self.marks.insert(key, at, Some(until), now);
        self.latest_mark.fetch_max(at, Ordering::Relaxed);
    }

    /// Whether a mark seen here purges what was stored at `stored_at`
    /// under the marks `keys` names (made only when some mark is that recent).
    pub(crate) fn purged<I: Iterator<Item = String>>(
        &self,
        stored_at: u64,
        keys: impl FnOnce() -> I,
        now: Duration,
    ) -> bool {
        stored_at <= self.latest_mark.load(Ordering::Relaxed)
            && keys().filter_map(|k| self.marks.get(&k, now)).any(|at| at >= stored_at)
    }
}

fn remove(shard: &mut Shard, digest: &[u8; 32]) {
    if let Some((_, bytes)) = shard.records.remove(digest) {
        shard.bytes -= bytes;
        if let Some(i) = shard.order.iter().position(|d| d == digest) {
            shard.order.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::entry::VaryMarker;
    use super::*;

    fn marker(n: usize) -> Held {
        let names = vec![http::HeaderName::from_bytes("x".repeat(n).as_bytes()).unwrap()];
        Held { record: Record::Vary(Arc::new(VaryMarker { stamp: 0, names })), checked_until: 10, keep_until: 10 }
    }

    fn digest(first: u8, n: u8) -> [u8; 32] {
        let mut d = [n; 32];
        d[0] = first;
        d
    }

    #[test]
    fn a_full_shard_drops_its_oldest_and_expired_records_are_gone() {
        let memory = Memory::new((SHARDS * 400) as u64);
        for n in 0..4 {
            memory.insert(digest(0, n), marker(100));
        }
        assert!(memory.get(&digest(0, 0), 5).is_none(), "the oldest made room");
        assert!(memory.get(&digest(0, 1), 5).is_none());
        assert!(memory.get(&digest(0, 3), 5).is_some());
        assert!(memory.get(&digest(0, 3), 10).is_none(), "kept until 10");
        assert!(memory.get(&digest(1, 0), 5).is_none(), "another shard");
        memory.insert(digest(0, 9), marker(1000));
        assert!(memory.get(&digest(0, 9), 5).is_none(), "larger than a shard: not kept");
        assert!(memory.bytes() <= SHARDS * 400);
    }
}
