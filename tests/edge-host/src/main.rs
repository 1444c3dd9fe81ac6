//! `portcullis-edge-host`: a Spin-compatible host for tests and benchmarks, built on
//! wasmtime. It serves the Portcullis component as Spin 4 would (all of
//! the Spin platform interfaces the component may import, instance reuse
//! for WASI 0.3), so tests and benchmarks exercise the real component
//! without Spin; it runs `cargo test` binaries for wasm32-wasip2; and it
//! pre-initialises the WASI 0.2 component for `edge-deploy/build.sh`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the test host: files, sockets and clocks are its job

mod cache;
mod host;
mod kv;
mod outbound;
mod preinit;
mod run;
mod serve;
mod spin;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "portcullis-edge-host",
    about = "Serve a Spin HTTP component like Spin 4, or run a wasi:cli component"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an HTTP component (WASI 0.3 or 0.2, detected from its exports).
    Serve {
        component: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A Spin variable, `name=value` (repeatable).
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// A key-value store label the component may open (repeatable; default: `default`).
        #[arg(long = "kv-store")]
        stores: Vec<String>,
        /// Serve stores whose backend cannot compare-and-swap (`wasi:keyvalue/atomics` fails).
        #[arg(long)]
        kv_no_atomics: bool,
        /// Which Spin key-value backend the stores behave like: `sqlite`
        /// (Spin's default; a swap on an absent key is a blind upsert) or
        /// `redis` (exact swaps, each reported as failed).
        #[arg(long, value_enum, default_value = "sqlite")]
        kv_backend: kv::Backend,
        /// Added to every key-value call, in microseconds: the store as an
        /// edge platform's is, across a network.
        #[arg(long, default_value = "0")]
        kv_latency_us: u64,
        /// Requests per WASI 0.3 instance (Spin: 128).
        #[arg(long)]
        reuse: Option<usize>,
        /// Concurrent requests per WASI 0.3 instance (Spin: 16).
        #[arg(long)]
        concurrency: Option<usize>,
        /// How long an idle reusable instance is kept (Spin: 1s).
        #[arg(long, default_value = "1000")]
        idle_timeout_ms: u64,
        /// Write /tmp/perf-<pid>.map so `perf report` names the component's functions.
        #[arg(long)]
        perf_map: bool,
        /// Where compiled components are kept between starts, as Spin keeps
        /// them (default: `$XDG_CACHE_HOME` or `~/.cache`, `portcullis-edge-host`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Compile the component at every start (Spin's `--disable-cache`).
        #[arg(long)]
        disable_cache: bool,
    },
    /// Pre-initialise a Portcullis WASI 0.2 component: compile its embedded
    /// config with these Spin variables and snapshot it into the component.
    Preinit {
        component: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A Spin variable, `name=value` (repeatable), as the component will be given it.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Run a wasi:cli command component (cargo's runner for wasm32-wasip2).
    Run {
        component: PathBuf,
        /// Arguments after the component, passed through.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not name=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            component,
            listen,
            vars,
            stores,
            kv_no_atomics,
            kv_backend,
            kv_latency_us,
            reuse,
            concurrency,
            idle_timeout_ms,
            perf_map,
            cache_dir,
            disable_cache,
        } => {
            let stores = if stores.is_empty() { vec!["default".to_string()] } else { stores };
            let platform = host::Platform {
                variables: vars.into_iter().collect::<BTreeMap<_, _>>(),
                kv: kv::Kv::new(stores, !kv_no_atomics, kv_backend).with_latency(Duration::from_micros(kv_latency_us)),
                pools: Default::default(),
            };
            let opts = serve::ServeOptions {
                component,
                listen,
                platform,
                reuse,
                concurrency,
                idle_timeout: Duration::from_millis(idle_timeout_ms),
                perf_map,
                cache_dir: if disable_cache { None } else { cache_dir.or_else(cache::default_dir) },
            };
            runtime.block_on(serve::serve(opts)).map(|()| 0)
        }
        Command::Preinit { component, out, vars } => runtime.block_on(preinit::preinit(&component, &out, vars)).map(|outcome| {
            match outcome {
                preinit::Outcome::Preinitialised => eprintln!("pre-initialised {}: the config is compiled in", out.display()),
                preinit::Outcome::Missing(names) => eprintln!(
                    "not pre-initialised {}: the config uses Spin variables without a value here ({}); each request compiles it",
                    out.display(),
                    names.join(", ")
                ),
            }
            0
        }),
        Command::Run { component, args } => {
            let argv: Vec<String> = std::iter::once(component.display().to_string()).chain(args).collect();
            runtime.block_on(run::run(&component, &argv))
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("edge-host: {e:?}");
            ExitCode::FAILURE
        }
    }
}
