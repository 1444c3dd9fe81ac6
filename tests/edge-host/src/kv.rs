//! The key-value backend behind every store label the host serves: shared
//! by all instances of the component (as Spin's stores are), with no expiry
//! (Spin's stores have none), and compare-and-swap as one of Spin's two
//! backends does it. A CAS handle snapshots the key when it is created; then
//! - `Sqlite` (Spin's default store): the swap succeeds only if the key is
//!   unchanged, except that a key that was absent is written blindly (Spin
//!   inserts with `ON CONFLICT DO UPDATE`);
//! - `Redis` (a runtime config with `type = "redis"`): the swap is exact
//!   (WATCH/MULTI), but every swap is reported as failed, committed or not
//!   (Spin's `UNWATCH <key>` is an error).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

struct Entry {
    value: Vec<u8>,
    version: u64,
}

/// Which of Spin's key-value backends the store behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Redis,
}

/// One backend for all labels the component may open.
pub struct Kv {
    labels: Vec<String>,
    /// Whether `wasi:keyvalue/atomics` works: off models a Spin store whose
    /// backend cannot compare-and-swap.
    pub atomics: bool,
    pub backend: Backend,
    /// Added to every call that reaches the store (`--kv-latency-us`): a
    /// store across a network, as on an edge platform.
    latency: Duration,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    stores: HashMap<String, HashMap<String, Entry>>,
    next_version: u64,
}

/// What a CAS handle remembers of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub value: Option<Vec<u8>>,
    pub version: Option<u64>,
}

impl Kv {
    /// A backend that lets the component open exactly `labels`.
    pub fn new(labels: Vec<String>, atomics: bool, backend: Backend) -> Self {
        Self { labels, atomics, backend, latency: Duration::ZERO, data: Mutex::new(Data::default()) }
    }

    pub fn with_latency(self, latency: Duration) -> Self {
        Self { latency, ..self }
    }

    /// Waits out one round trip to the store: every call below makes one.
    async fn distance(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    pub fn allows(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut data)
    }

    pub async fn get(&self, label: &str, key: &str) -> Option<Vec<u8>> {
        self.get_many(label, vec![key.to_string()]).await.pop().and_then(|(_, v)| v)
    }

    pub async fn get_many(&self, label: &str, keys: Vec<String>) -> Vec<(String, Option<Vec<u8>>)> {
        self.distance().await;
        self.with(|d| {
            let store = d.stores.get(label);
            keys.into_iter()
                .map(|k| {
                    let v = store.and_then(|s| s.get(&k)).map(|e| e.value.clone());
                    (k, v)
                })
                .collect()
        })
    }

    pub async fn set(&self, label: &str, key: &str, value: Vec<u8>) {
        self.set_many(label, vec![(key.to_string(), value)]).await;
    }

    pub async fn set_many(&self, label: &str, pairs: Vec<(String, Vec<u8>)>) {
        self.distance().await;
        self.with(|d| pairs.into_iter().for_each(|(k, v)| d.write(label, &k, v)));
    }

    pub async fn delete(&self, label: &str, key: &str) {
        self.delete_many(label, vec![key.to_string()]).await;
    }

    pub async fn delete_many(&self, label: &str, keys: Vec<String>) {
        self.distance().await;
        self.with(|d| {
            if let Some(store) = d.stores.get_mut(label) {
                keys.iter().for_each(|k| drop(store.remove(k)));
            }
        });
    }

    pub async fn exists(&self, label: &str, key: &str) -> bool {
        self.distance().await;
        self.with(|d| d.stores.get(label).is_some_and(|s| s.contains_key(key)))
    }

    pub async fn keys(&self, label: &str) -> Vec<String> {
        self.distance().await;
        self.with(|d| d.stores.get(label).map(|s| s.keys().cloned().collect()).unwrap_or_default())
    }

    /// The key as a compare-and-swap handle begins with it.
    pub async fn snapshot(&self, label: &str, key: &str) -> Snapshot {
        self.distance().await;
        self.with(|d| d.snapshot(label, key))
    }

    /// Writes `value` if the key is still at the snapshot's version (or,
    /// on `Sqlite`, if it was absent). A swap reported as failed comes with
    /// the key read again, as Spin reads it on a fresh handle: one that did
    /// not write, and on `Redis` every swap (Spin's `UNWATCH <key>` fails).
    pub async fn swap(&self, label: &str, key: &str, seen: Option<u64>, value: Vec<u8>) -> Result<(), Snapshot> {
        self.distance().await;
        let upsert = seen.is_none() && self.backend == Backend::Sqlite;
        let wrote = self.with(|d| {
            let current = d.stores.get(label).and_then(|s| s.get(key)).map(|e| e.version);
            let write = current == seen || upsert;
            if write {
                d.write(label, key, value);
            }
            write
        });
        if wrote && self.backend == Backend::Sqlite {
            return Ok(());
        }
        Err(self.snapshot(label, key).await)
    }

    /// Adds `delta` to a counter stored as an 8-byte little-endian i64
    /// (the encoding of Spin's default store); `None` if the value is not one.
    pub async fn increment(&self, label: &str, key: &str, delta: i64) -> Option<i64> {
        self.distance().await;
        self.with(|d| {
            let current = match d.stores.get(label).and_then(|s| s.get(key)) {
                None => 0,
                Some(e) => i64::from_le_bytes(e.value.as_slice().try_into().ok()?),
            };
            let next = current.wrapping_add(delta);
            d.write(label, key, next.to_le_bytes().to_vec());
            Some(next)
        })
    }
}

impl Data {
    fn snapshot(&self, label: &str, key: &str) -> Snapshot {
        match self.stores.get(label).and_then(|s| s.get(key)) {
            Some(e) => Snapshot { value: Some(e.value.clone()), version: Some(e.version) },
            None => Snapshot { value: None, version: None },
        }
    }

    fn write(&mut self, label: &str, key: &str, value: Vec<u8>) {
        self.next_version += 1;
        let version = self.next_version;
        self.stores.entry(label.to_string()).or_default().insert(key.to_string(), Entry { value, version });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Backend, Kv};

    /// Every call is one round trip to a distant store; a swap reported as
    /// failed is two (Spin reads the key again), and on `Redis` every swap is.
    #[tokio::test]
    async fn every_call_waits_out_the_distance_once() {
        let latency = Duration::from_millis(50);
        for (backend, swap_trips) in [(Backend::Sqlite, 1), (Backend::Redis, 2)] {
            let kv = Kv::new(vec!["default".into()], true, backend).with_latency(latency);
            let trips = |started: Instant| started.elapsed().as_millis() / latency.as_millis();
            let started = Instant::now();
            kv.set("default", "k", b"1".to_vec()).await;
            let seen = kv.snapshot("default", "k").await;
            assert_eq!(kv.get("default", "k").await.as_deref(), Some(&b"1"[..]));
            assert!(kv.exists("default", "k").await);
            assert_eq!(kv.get_many("default", vec!["k".into(), "j".into()]).await.len(), 2);
            assert_eq!(trips(started), 5, "{backend:?}: five calls");
            let started = Instant::now();
            assert_eq!(kv.swap("default", "k", seen.version, b"2".to_vec()).await.is_ok(), swap_trips == 1);
            assert_eq!(trips(started), swap_trips, "{backend:?}");
            let started = Instant::now();
            assert!(kv.swap("default", "k", seen.version, b"3".to_vec()).await.is_err(), "stale");
            assert_eq!(trips(started), 2, "{backend:?}: refused, then read again");
        }
    }
}
