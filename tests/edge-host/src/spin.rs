//! Spin's platform interfaces, as the host provides them: key-value
//! (`fermyon:spin@2.0.0` for WASI 0.2 components, `spin:key-value@3.0.0` for
//! WASI 0.3 ones, `wasi:keyvalue` draft 2 with atomics for both), variables
//! (`fermyon:spin@2.0.0`, `spin:variables@3.0.0`, `wasi:config`).

use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use crate::host::Host;
use crate::kv::{Backend, Snapshot};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "portcullis:edge-host/spin",
        // Key-value calls wait out the store's distance (`--kv-latency-us`)
        // without holding a thread, as Spin's host calls do.
        imports: {
            "fermyon:spin/key-value": async | trappable,
            "wasi:keyvalue/store": async | trappable,
            "wasi:keyvalue/atomics": async | trappable,
            "wasi:keyvalue/batch": async | trappable,
            default: trappable,
        },
        with: {
            "fermyon:spin/key-value.store": crate::spin::OpenStore,
            "spin:key-value/key-value.store": crate::spin::OpenStore,
            "wasi:keyvalue/store.bucket": crate::spin::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::spin::Cas,
        },
    });
}

use bindings::fermyon::spin::{key_value as kv2, variables as vars2};
use bindings::spin::key_value::key_value as kv3;
use bindings::spin::variables::variables as vars3;
use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, batch, store as wkv};

/// An opened store (or bucket): just its label.
pub struct OpenStore {
    label: String,
}

/// A compare-and-swap in progress: what the key looked like when it began.
pub struct Cas {
    label: String,
    key: String,
    seen: Snapshot,
}

/// The projection async (`Accessor`) host functions use.
struct SpinApi;

impl HasData for SpinApi {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> anyhow::Result<()> {
    bindings::Spin::add_to_linker::<Host, SpinApi>(linker, |h| h)?;
    Ok(())
}

impl Host {
    fn label(&self, store: &Resource<OpenStore>) -> wasmtime::Result<String> {
        Ok(self.table.get(store)?.label.clone())
    }

    fn open_store(&mut self, label: String) -> wasmtime::Result<Option<Resource<OpenStore>>> {
        if !self.platform.kv.allows(&label) {
            return Ok(None);
        }
        Ok(Some(self.table.push(OpenStore { label })?))
    }
}

// fermyon:spin/key-value@2.0.0

impl kv2::Host for Host {}

impl kv2::HostStore for Host {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<OpenStore>, kv2::Error>> {
        Ok(self.open_store(label)?.ok_or(kv2::Error::AccessDenied))
    }

    async fn get(
        &mut self,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(self.platform.kv.get(&self.label(&s)?, &key)))
    }

    async fn set(
        &mut self,
        s: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::Error>> {
        self.platform.kv.distance().await;
        self.platform.kv.set(&self.label(&s)?, &key, value);
        Ok(Ok(()))
    }

    async fn delete(&mut self, s: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<(), kv2::Error>> {
        self.platform.kv.distance().await;
        self.platform.kv.delete(&self.label(&s)?, &key);
        Ok(Ok(()))
    }

    async fn exists(&mut self, s: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<bool, kv2::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(self.platform.kv.exists(&self.label(&s)?, &key)))
    }

    async fn get_keys(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<Result<Vec<String>, kv2::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(self.platform.kv.keys(&self.label(&s)?)))
    }

    async fn drop(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

// spin:key-value@3.0.0 (async functions: they get the store through an Accessor)

/// Waits out one round trip to the store, from an async function.
async fn distance<T>(a: &Accessor<T, SpinApi>) {
    let platform = a.with(|mut access| access.get().platform.clone());
    platform.kv.distance().await;
}

impl kv3::Host for Host {}

impl kv3::HostStore for Host {
    fn drop(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl<T> kv3::HostStoreWithStore<T> for SpinApi {
    async fn open(a: &Accessor<T, Self>, label: String) -> wasmtime::Result<Result<Resource<OpenStore>, kv3::Error>> {
        a.with(|mut access| Ok(access.get().open_store(label)?.ok_or(kv3::Error::AccessDenied)))
    }

    async fn get(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv3::Error>> {
        a.with(|mut access| {
            let host = access.get();
            Ok(Ok(host.platform.kv.get(&host.label(&s)?, &key)))
        })
    }

    async fn set(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        distance(a).await;
        distance(a).await;
        a.with(|mut access| {
            let host = access.get();
            host.platform.kv.set(&host.label(&s)?, &key, value);
            Ok(Ok(()))
        })
    }

    async fn delete(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        distance(a).await;
        a.with(|mut access| {
            let host = access.get();
            host.platform.kv.delete(&host.label(&s)?, &key);
            Ok(Ok(()))
        })
    }

    async fn exists(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv3::Error>> {
        a.with(|mut access| {
            let host = access.get();
            Ok(Ok(host.platform.kv.exists(&host.label(&s)?, &key)))
        })
    }

    async fn get_keys(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), kv3::Error>>)> {
        distance(a).await;
        distance(a).await;
        a.with(|mut access| {
            let keys = {
                let host = access.get();
                host.platform.kv.keys(&host.label(&s)?)
            };
            let stream = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(&mut access, async { wasmtime::error::Ok(Ok(())) })?;
            Ok((stream, done))
        })
    }
}

// wasi:keyvalue@0.2.0-draft2

impl wkv::Host for Host {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<OpenStore>, wkv::Error>> {
        Ok(self.open_store(identifier)?.ok_or(wkv::Error::AccessDenied))
    }
}

impl wkv::HostBucket for Host {
    async fn get(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(self.platform.kv.get(&self.label(&b)?, &key)))
    }

    async fn set(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.distance().await;
        self.platform.kv.set(&self.label(&b)?, &key, value);
        Ok(Ok(()))
    }

    async fn delete(&mut self, b: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.distance().await;
        self.platform.kv.delete(&self.label(&b)?, &key);
        Ok(Ok(()))
    }

    async fn exists(&mut self, b: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<bool, wkv::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(self.platform.kv.exists(&self.label(&b)?, &key)))
    }

    async fn list_keys(
        &mut self,
        b: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wkv::KeyResponse, wkv::Error>> {
        self.platform.kv.distance().await;
        Ok(Ok(wkv::KeyResponse { keys: self.platform.kv.keys(&self.label(&b)?), cursor: None }))
    }

    async fn drop(&mut self, b: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for Host {
    async fn increment(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wkv::Error>> {
        self.platform.kv.distance().await;
        let label = self.label(&b)?;
        Ok(self
            .platform
            .kv
            .increment(&label, &key, delta)
            .ok_or_else(|| wkv::Error::Other(format!("`{key}` does not hold a counter"))))
    }

    /// A failed swap hands back a fresh handle on the key, as Spin does. Like
    /// Spin's Redis backend, the `Redis` one reports a swap that committed
    /// as failed too.
    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        self.platform.kv.distance().await;
        let cas = self.table.delete(cas)?;
        let kv = &self.platform.kv;
        let now = match kv.swap(&cas.label, &cas.key, cas.seen.version, value) {
            Ok(()) if kv.backend == Backend::Sqlite => return Ok(Ok(())),
            Ok(()) => kv.snapshot(&cas.label, &cas.key),
            Err(now) => now,
        };
        // Spin reads the key again on a new handle before it reports.
        self.platform.kv.distance().await;
        let fresh = self.table.push(Cas { label: cas.label, key: cas.key, seen: now })?;
        Ok(Err(atomics::CasError::CasFailed(fresh)))
    }
}

impl atomics::HostCas for Host {
    async fn new(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wkv::Error>> {
        self.platform.kv.distance().await;
        let label = self.label(&b)?;
        if !self.platform.kv.atomics {
            return Ok(Err(wkv::Error::Other("this store does not support compare-and-swap".into())));
        }
        let seen = self.platform.kv.snapshot(&label, &key);
        Ok(Ok(self.table.push(Cas { label, key, seen })?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.value.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for Host {
    async fn get_many(
        &mut self,
        b: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wkv::Error>> {
        self.platform.kv.distance().await;
        let label = self.label(&b)?;
        Ok(Ok(keys
            .into_iter()
            .map(|k| {
                let v = self.platform.kv.get(&label, &k);
                (k, v)
            })
            .collect()))
    }

    async fn set_many(
        &mut self,
        b: Resource<OpenStore>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.distance().await;
        let label = self.label(&b)?;
        for (k, v) in pairs {
            self.platform.kv.set(&label, &k, v);
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        b: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.distance().await;
        let label = self.label(&b)?;
        for k in keys {
            self.platform.kv.delete(&label, &k);
        }
        Ok(Ok(()))
    }
}

// Variables: fermyon:spin@2.0.0, spin:variables@3.0.0, wasi:config.

impl vars2::Host for Host {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, vars2::Error>> {
        Ok(self.platform.variables.get(&name).cloned().ok_or(vars2::Error::Undefined(name)))
    }
}

impl vars3::Host for Host {}

impl<T> vars3::HostWithStore<T> for SpinApi {
    async fn get(a: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<String, vars3::Error>> {
        a.with(|mut access| {
            Ok(access.get().platform.variables.get(&name).cloned().ok_or(vars3::Error::Undefined(name)))
        })
    }
}

impl config::Host for Host {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.platform.variables.get(&key).cloned()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self.platform.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}
