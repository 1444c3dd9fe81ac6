//! The store data every instance gets, the engine, and the linker with
//! everything a Spin component may import.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::Kv;
use crate::outbound::{Hooks, Pools};
use crate::spin;

/// Per-instance state.
pub struct Host {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    hooks: Hooks,
    /// Shared by all instances: Spin variables and key-value data.
    pub platform: Arc<Platform>,
}

/// What Spin gives every instance of one component.
pub struct Platform {
    pub variables: BTreeMap<String, String>,
    pub kv: Kv,
    /// Outbound connections, pooled across instances as Spin pools them.
    pub pools: Pools,
}

impl Host {
    pub fn new(wasi: WasiCtx, platform: Arc<Platform>) -> Self {
        let hooks = Hooks { pools: platform.pools.clone() };
        Self { table: ResourceTable::new(), wasi, http: WasiHttpCtx::new(), hooks, platform }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// An engine like Spin's: component model with async, pooling allocator
/// with Spin's counts (1 000 instances at once: a test that holds many
/// requests open meets the limit Spin has), memories capped at 512 MiB
/// rather than Spin's 4 GiB.
/// `perf_map`: write `/tmp/perf-<pid>.map` so `perf` names wasm functions.
pub fn engine(perf_map: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1_000)
        .total_core_instances(4_000)
        .total_memories(1_000)
        .total_tables(2_000)
        .total_stacks(1_000)
        .max_memory_size(512 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if perf_map {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Ok(Engine::new(&config)?)
}

/// WASI 0.2 and 0.3 (cli, clocks, random, io, filesystem, sockets), wasi:http
/// in both versions, and the Spin platform interfaces.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    spin::add_to_linker(&mut linker)?;
    Ok(linker)
}
