//! Spin's platform interfaces, as the host provides them: key-value
//! (`fermyon:spin@2.0.0` for WASI 0.2 components, `spin:key-value@3.0.0` for
//! WASI 0.3 ones, `wasi:keyvalue` draft 2 with atomics for both), variables
//! (`fermyon:spin@2.0.0`, `spin:variables@3.0.0`, `wasi:config`).

use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use std::sync::Arc;

use crate::host::{Host, Platform};
use crate::kv::Snapshot;

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
        Ok(Ok(self.platform.kv.get(&self.label(&s)?, &key).await))
    }

    async fn set(
        &mut self,
        s: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::Error>> {
        self.platform.kv.set(&self.label(&s)?, &key, value).await;
        Ok(Ok(()))
    }

    async fn delete(&mut self, s: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<(), kv2::Error>> {
        self.platform.kv.delete(&self.label(&s)?, &key).await;
        Ok(Ok(()))
    }

    async fn exists(&mut self, s: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<bool, kv2::Error>> {
        Ok(Ok(self.platform.kv.exists(&self.label(&s)?, &key).await))
    }

    async fn get_keys(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<Result<Vec<String>, kv2::Error>> {
        Ok(Ok(self.platform.kv.keys(&self.label(&s)?).await))
    }

    async fn drop(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

// spin:key-value@3.0.0 (async functions: they get the store through an Accessor)

/// The platform and the label of an opened store, taken out of the store
/// so the call can wait on the key-value backend.
fn opened<T>(a: &Accessor<T, SpinApi>, s: &Resource<OpenStore>) -> wasmtime::Result<(Arc<Platform>, String)> {
    a.with(|mut access| {
        let host = access.get();
        Ok((host.platform.clone(), host.label(s)?))
    })
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
        let (platform, label) = opened(a, &s)?;
        Ok(Ok(platform.kv.get(&label, &key).await))
    }

    async fn set(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        let (platform, label) = opened(a, &s)?;
        platform.kv.set(&label, &key, value).await;
        Ok(Ok(()))
    }

    async fn delete(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        let (platform, label) = opened(a, &s)?;
        platform.kv.delete(&label, &key).await;
        Ok(Ok(()))
    }

    async fn exists(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv3::Error>> {
        let (platform, label) = opened(a, &s)?;
        Ok(Ok(platform.kv.exists(&label, &key).await))
    }

    async fn get_keys(
        a: &Accessor<T, Self>,
        s: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), kv3::Error>>)> {
        let (platform, label) = opened(a, &s)?;
        let keys = platform.kv.keys(&label).await;
        a.with(|mut access| {
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
        Ok(Ok(self.platform.kv.get(&self.label(&b)?, &key).await))
    }

    async fn set(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.set(&self.label(&b)?, &key, value).await;
        Ok(Ok(()))
    }

    async fn delete(&mut self, b: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.delete(&self.label(&b)?, &key).await;
        Ok(Ok(()))
    }

    async fn exists(&mut self, b: Resource<OpenStore>, key: String) -> wasmtime::Result<Result<bool, wkv::Error>> {
        Ok(Ok(self.platform.kv.exists(&self.label(&b)?, &key).await))
    }

    async fn list_keys(
        &mut self,
        b: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wkv::KeyResponse, wkv::Error>> {
        Ok(Ok(wkv::KeyResponse { keys: self.platform.kv.keys(&self.label(&b)?).await, cursor: None }))
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
        let label = self.label(&b)?;
        Ok(self
            .platform
            .kv
            .increment(&label, &key, delta)
            .await
            .ok_or_else(|| wkv::Error::Other(format!("`{key}` does not hold a counter"))))
    }

    /// A failed swap hands back a fresh handle on the key, as Spin does. Like
    /// Spin's Redis backend, the `Redis` one reports a swap that committed
    /// as failed too.
    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        let Err(now) = self.platform.kv.swap(&cas.label, &cas.key, cas.seen.version, value).await else {
            return Ok(Ok(()));
        };
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
        let label = self.label(&b)?;
        if !self.platform.kv.atomics {
            return Ok(Err(wkv::Error::Other("this store does not support compare-and-swap".into())));
        }
        let seen = self.platform.kv.snapshot(&label, &key).await;
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
        Ok(Ok(self.platform.kv.get_many(&self.label(&b)?, keys).await))
    }

    async fn set_many(
        &mut self,
        b: Resource<OpenStore>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.set_many(&self.label(&b)?, pairs).await;
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        b: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        self.platform.kv.delete_many(&self.label(&b)?, keys).await;
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
