//! The in-memory key-value store: the node's embedded default (no external
//! services) and the store unit tests use. A bounded, sharded
//! [`ExpiringMap`] read through the [`Clock`] port.

use std::time::Duration;

use super::{Clock, KvError, KvStore, LimitStep, SweepReport};
use crate::shared::cache::ExpiringMap;
use crate::shared::gcra::{self, Decision};

pub struct MemoryKv<C> {
    map: ExpiringMap<String, Vec<u8>>,
    clock: C,
}

impl<C: Clock> MemoryKv<C> {
    /// A store holding at most about `max_entries` keys.
    pub fn new(clock: C, max_entries: usize) -> Self {
        Self { map: ExpiringMap::new(max_entries), clock }
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.clock.now().saturating_add(t))
    }
}

impl<C: Clock> KvStore for MemoryKv<C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.get(key, self.clock.now()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.map.insert(key.to_string(), value.to_vec(), self.expiry(ttl), self.clock.now());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.map.remove(key);
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let current = current.map(<[u8]>::to_vec);
        let now = self.clock.now();
        Ok(self.map.compare_and_swap(key.to_string(), current.as_ref(), new.to_vec(), self.expiry(ttl), now))
    }

    /// Exact across keys: their shards stay locked for the whole step.
    async fn limit(&self, steps: &[LimitStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        let keys: Vec<String> = steps.iter().map(|s| s.key.to_string()).collect();
        let now = self.clock.now();
        let decisions = self.map.update_many(&keys, now, |current| {
            let decisions: Vec<Decision> =
                steps.iter().zip(current).map(|(s, v)| s.decide(gcra::decode(v.as_deref()), now_us)).collect();
            let writes = decisions.iter().all(|d| d.allowed).then(|| {
                decisions
                    .iter()
                    .map(|d| (gcra::encode(d.tat_us).into_bytes(), Some(now + gcra::ttl(*d, now_us))))
                    .collect()
            });
            (decisions, writes)
        });
        Ok((decisions, now_us))
    }

    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, now_us: u64) -> Result<bool, KvError> {
        let now = self.clock.now();
        let keys = [key.to_string()];
        Ok(self.map.update_many(&keys, now, |current| {
            let back = gcra::decode(current.first().and_then(|v| v.as_deref())) == Some(end_us) && from_us < end_us;
            let ttl = Duration::from_micros(from_us.saturating_sub(now_us)) + Duration::from_secs(1);
            (back, back.then(|| vec![(gcra::encode(from_us).into_bytes(), Some(now + ttl))]))
        }))
    }

    /// Expired entries go when touched or when room is needed; a sweep
    /// drops them all at once (the whole map: it is in-process).
    async fn sweep(&self, _after: Option<&str>, _limit: usize) -> Result<SweepReport, KvError> {
        let (kept, gone) = self.map.purge(self.clock.now());
        Ok(SweepReport { keys: Some(kept + gone), examined: kept + gone, deleted: gone, next: None })
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
            assert!(kv.compare_and_swap("k", None, b"3", None).await.unwrap(), "expired counts as absent");
        });
    }
}
