//! Running a `wasi:cli/run` component (a `cargo test` binary for
//! wasm32-wasip2) as cargo's runner: stdio, environment and the current
//! directory are the host's; the exit code is the component's.

use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::host::{self, Host, Platform};
use crate::kv::Kv;

pub async fn run(component: &Path, args: &[String]) -> anyhow::Result<i32> {
    let engine = host::engine(false)?;
    let component = Component::from_file(&engine, component)?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio().inherit_env().args(args);
    wasi.preopened_dir(".", ".", FsPerms::ReadWrite)?;
    let platform = Arc::new(Platform {
        variables: Default::default(),
        kv: Kv::new(Vec::new(), true, crate::kv::Backend::Sqlite),
        pools: Default::default(),
    });
    let mut store = Store::new(&engine, Host::new(wasi.build(), platform));
    let command = wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, &linker).await?;
    Ok(match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => exit.0,
            None => {
                eprintln!("edge-host: {e:?}");
                // A trap (a Rust panic under panic=abort): fail like an abort would.
                134
            }
        },
    })
}
