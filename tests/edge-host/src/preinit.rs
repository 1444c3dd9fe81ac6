//! `preinit`: pre-initialises a Portcullis WASI 0.2 component, Wizer's way
//! (wasmtime's `wasmtime-wizer`): instrument the component, call its
//! `preinit` export with the given Spin variables (it compiles the embedded
//! config), then write the instance's memories and globals back into the
//! component as its initial state.
//!
//! Every import traps while `preinit` runs, so nothing an instance must draw
//! for itself (random numbers, clocks) can end up in the snapshot: a config
//! that needed one would fail the build here, not share its draw.

use std::path::Path;

use anyhow::{Context, bail};
use wasmtime::component::{Component, Instance, Lift, Linker, WasmList};
use wasmtime::{Config, Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

const EXPORT: &str = "preinit";

/// What became of the component.
pub enum Outcome {
    /// The snapshot holds the compiled config.
    Preinitialised,
    /// The config uses these variables and they were not given: the
    /// component was written unchanged.
    Missing(Vec<String>),
}

pub async fn preinit(input: &Path, output: &Path, vars: Vec<(String, String)>) -> anyhow::Result<Outcome> {
    let wasm = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let mut wizer = Wizer::new();
    // Kept: wizer 48 would drop the core module's export of the same name
    // but not the component's lift of it, which then fails validation.
    wizer.init_func(EXPORT).keep_init_func(true);
    let (cx, instrumented) = wizer.instrument_component(&wasm)?;

    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config)?;
    let component = Component::new(&engine, &instrumented)?;
    let mut linker = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let mut store = Store::new(&engine, ());
    let instance = linker.instantiate_async(&mut store, &component).await?;
    let Ok(func) =
        instance.get_typed_func::<(Vec<(String, String)>,), (Result<Vec<String>, String>,)>(&mut store, EXPORT)
    else {
        bail!(
            "{} has no `{EXPORT}` export (only WASI 0.2 components built by edge-deploy/build.sh have one)",
            input.display()
        );
    };
    let (result,) = func
        .call_async(&mut store, (vars,))
        .await
        .map_err(anyhow::Error::from)
        .context("the component trapped in `preinit`")?;
    let missing = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !missing.is_empty() {
        std::fs::write(output, &wasm).with_context(|| format!("writing {}", output.display()))?;
        return Ok(Outcome::Missing(missing));
    }
    let snapshot = wizer.snapshot_component(&cx, &mut State { store, instance }).await?;
    std::fs::write(output, snapshot).with_context(|| format!("writing {}", output.display()))?;
    Ok(Outcome::Preinitialised)
}

/// The instrumented instance, read through the accessors Wizer added.
struct State {
    store: Store<()>,
    instance: Instance,
}

impl State {
    async fn get<R: Lift + Send + Sync + 'static>(&mut self, interface: &str, func: &str) -> R {
        self.try_get(interface, func).await.unwrap_or_else(|e| panic!("reading {interface}#{func}: {e:#}"))
    }

    async fn try_get<R: Lift + Send + Sync + 'static>(&mut self, interface: &str, func: &str) -> anyhow::Result<R> {
        let (_, outer) = self.instance.get_export(&mut self.store, None, interface).context("no such instance")?;
        let (_, index) = self.instance.get_export(&mut self.store, Some(&outer), func).context("no such function")?;
        let func = self.instance.get_typed_func::<(), (R,)>(&mut self.store, index)?;
        Ok(func.call_async(&mut self.store, ()).await?.0)
    }
}

impl ComponentInstanceState for State {
    async fn call_func_ret_list_u8(&mut self, interface: &str, func: &str, contents: impl FnOnce(&[u8]) + Send) {
        let list: WasmList<u8> = self.get(interface, func).await;
        contents(list.as_le_slice(&self.store));
    }

    async fn call_func_ret_s32(&mut self, interface: &str, func: &str) -> i32 {
        self.get(interface, func).await
    }

    async fn call_func_ret_s64(&mut self, interface: &str, func: &str) -> i64 {
        self.get(interface, func).await
    }

    async fn call_func_ret_f32(&mut self, interface: &str, func: &str) -> u32 {
        self.get::<f32>(interface, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, interface: &str, func: &str) -> u64 {
        self.get::<f64>(interface, func).await.to_bits()
    }
}
