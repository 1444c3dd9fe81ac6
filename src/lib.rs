//! Portcullis: an API gateway with one portable core and two homes.
//!
//! The core ([`config`], [`pipeline`], [`ports`], [`shared`]) knows no runtime:
//! it speaks [`http`] types, reads no clock and opens no socket, and awaits
//! the [`ports`] for everything outside itself. Two thin adapters give it a
//! home:
//!
//! - `native` (not wasm32): the `portcullis` node binary, tokio + hyper, with
//!   an in-memory or Redis key-value store;
//! - `edge` (wasm32 with feature `edge-p3` or `edge-p2`): a Spin component.
//!
//! The request lifecycle, the import order between these modules and the
//! decisions behind them are in `ARCHITECTURE.md` (one chart, kept true).

#![deny(unsafe_code)]

pub mod config;
pub mod pipeline;
pub mod ports;
pub mod shared;

#[cfg(test)]
mod fuzz;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

#[cfg(any(not(target_arch = "wasm32"), feature = "edge-p3", feature = "edge-p2"))]
pub mod body;
#[cfg(any(not(target_arch = "wasm32"), feature = "edge-p3", feature = "edge-p2"))]
pub mod system_clock;

#[cfg(all(target_arch = "wasm32", any(feature = "edge-p3", feature = "edge-p2")))]
mod edge;

// spin-sdk's macros name `::spin_sdk`; the WASI 0.2 flavour's copy is renamed in Cargo.toml.
#[cfg(all(target_arch = "wasm32", feature = "edge-p2", not(feature = "edge-p3")))]
extern crate spin_sdk_v5 as spin_sdk;

#[cfg(all(feature = "edge-p3", feature = "edge-p2"))]
compile_error!("choose one edge flavour: feature `edge-p3` (WASI 0.3) or `edge-p2` (WASI 0.2)");

/// Debian's wasi-libc (2022) predates the pthread stubs that Rust's wasip2
/// std links against in test binaries. Only that build (`make test-wasm`
/// without the rustup target) sets this cfg; std calls these only after a
/// thread was created, which WASI 0.2 never allows, so they are unreachable.
#[cfg(all(test, target_arch = "wasm32", portcullis_wasi_libc_shim))]
#[allow(unsafe_code)] // exported C symbols, which is all this module is
mod wasi_libc_shim {
    const ENOSYS: i32 = 52;

    #[unsafe(no_mangle)]
    extern "C" fn pthread_join(_thread: usize, _retval: *mut *mut u8) -> i32 {
        ENOSYS
    }

    #[unsafe(no_mangle)]
    extern "C" fn pthread_detach(_thread: usize) -> i32 {
        ENOSYS
    }
}
