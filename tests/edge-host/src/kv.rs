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

    /// Waits out one round trip to the store.
    pub async fn distance(&self) {
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

    pub fn get(&self, label: &str, key: &str) -> Option<Vec<u8>> {
        self.with(|d| d.stores.get(label)?.get(key).map(|e| e.value.clone()))
    }

    pub fn set(&self, label: &str, key: &str, value: Vec<u8>) {
        self.with(|d| d.write(label, key, value));
    }

    pub fn delete(&self, label: &str, key: &str) {
        self.with(|d| {
            if let Some(store) = d.stores.get_mut(label) {
                store.remove(key);
            }
        });
    }

    pub fn exists(&self, label: &str, key: &str) -> bool {
        self.with(|d| d.stores.get(label).is_some_and(|s| s.contains_key(key)))
    }

    pub fn keys(&self, label: &str) -> Vec<String> {
        self.with(|d| d.stores.get(label).map(|s| s.keys().cloned().collect()).unwrap_or_default())
    }

    pub fn snapshot(&self, label: &str, key: &str) -> Snapshot {
        self.with(|d| match d.stores.get(label).and_then(|s| s.get(key)) {
            Some(e) => Snapshot { value: Some(e.value.clone()), version: Some(e.version) },
            None => Snapshot { value: None, version: None },
        })
    }

    /// Writes `value` if the key is still at the snapshot's version (or,
    /// on `Sqlite`, if it was absent); else returns the key's current snapshot.
    pub fn swap(&self, label: &str, key: &str, seen: Option<u64>, value: Vec<u8>) -> Result<(), Snapshot> {
        let upsert = seen.is_none() && self.backend == Backend::Sqlite;
        self.with(|d| {
            let current = d.stores.get(label).and_then(|s| s.get(key));
            if current.map(|e| e.version) != seen && !upsert {
                return Err(match current {
                    Some(e) => Snapshot { value: Some(e.value.clone()), version: Some(e.version) },
                    None => Snapshot { value: None, version: None },
                });
            }
            d.write(label, key, value);
            Ok(())
        })
    }

    /// Adds `delta` to a counter stored as an 8-byte little-endian i64
    /// (the encoding of Spin's default store); `None` if the value is not one.
    pub fn increment(&self, label: &str, key: &str, delta: i64) -> Option<i64> {
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
    fn write(&mut self, label: &str, key: &str, value: Vec<u8>) {
        self.next_version += 1;
        let version = self.next_version;
        self.stores.entry(label.to_string()).or_default().insert(key.to_string(), Entry { value, version });
    }
}
