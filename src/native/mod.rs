//! The node: the core served by tokio + hyper on our own hardware.
//!
//! `server` accepts connections, `protocol` tells HTTP/1.1 from h2c, `client` talks to
//! origins, `body` streams and counts bodies, `access_log` writes the JSON
//! lines off the request path. State shared by a fleet goes through the
//! key-value port (memory here; Redis for a fleet).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the node adapter: sockets, clocks and the environment are its job

pub mod access_log;
mod acme;
mod admin;
mod breaker;
pub mod client;
pub mod conn;
pub mod consumers;
mod downstream_h1;
mod grpc_web;
#[cfg(test)]
mod h1_fields;
mod listeners;
pub(crate) mod metrics;
mod origin_h1;
mod origins;
mod otlp;
mod probe;
mod protocol;
pub mod redis_kv;
mod refusals;
pub mod registry;
pub mod server;
pub use listeners::check_files;
mod proxy_protocol;
mod tls;
mod tunnel;
mod workers;

use std::path::Path;
use std::pin::Pin;

use crate::config::{Config, ConfigError, ConfigErrors, Variables, vars};
use std::time::Duration;

use crate::ports::memory::MemoryKv;
use crate::ports::{Clock, KvError, KvStore, LimitStep, Ports, SweepReport};
use crate::shared::gcra::Decision;
use crate::system_clock::{Sleep, SystemClock};
use client::HyperClient;
use metrics::Metrics;
use std::sync::Arc;

/// The node's body: streamed (see [`NodeStream`]), or bytes the gateway made.
pub(crate) type NodeBody = crate::body::GatewayBody<NodeStream>;

/// A body the node streams: hyper's (`Left`: a client's request, an
/// origin's response over hyper's client), or an origin's response read by
/// our own HTTP/1.1 client (`Right`).
pub(crate) type NodeStream = http_body_util::Either<hyper::body::Incoming, origin_h1::Body>;

/// Keys the in-memory store holds at most (rate-limit and cache entries).
const MEMORY_KV_ENTRIES: usize = 1_000_000;

/// Waiting on the node: tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioSleep;

impl Sleep for TokioSleep {
    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

pub(crate) type NodeClock = SystemClock<TokioSleep>;

/// The node's key-value store: in process (the default; no external
/// service), or Redis for a fleet that shares rate limits and key sets.
pub(crate) enum NodeKv {
    Memory(MemoryKv<NodeClock>),
    /// Boxed, and so are its calls' futures (`timed`): Redis' client and its
    /// futures are large; the memory variant is the hot one. Each call's
    /// round trip is measured.
    Redis(Box<redis_kv::RedisKv>, Arc<Metrics>),
}

/// A Redis call, timed and counted; boxed, so that the calls' large
/// futures never size a request's state.
fn timed<'a, T: 'a>(
    metrics: &'a Metrics,
    operation: &'static str,
    call: impl Future<Output = Result<T, KvError>> + Send + 'a,
) -> Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>> {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let result = call.await;
        metrics.store_call(operation, started.elapsed(), result.is_ok());
        result
    })
}

impl NodeKv {
    pub(crate) fn memory() -> Self {
        Self::Memory(MemoryKv::new(SystemClock(TokioSleep), MEMORY_KV_ENTRIES))
    }
}

impl KvStore for NodeKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            Self::Memory(kv) => kv.get(key).await,
            Self::Redis(kv, m) => timed(m, "get", kv.get(key)).await,
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        match self {
            Self::Memory(kv) => kv.set(key, value, ttl).await,
            Self::Redis(kv, m) => timed(m, "set", kv.set(key, value, ttl)).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        match self {
            Self::Memory(kv) => kv.delete(key).await,
            Self::Redis(kv, m) => timed(m, "delete", kv.delete(key)).await,
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        match self {
            Self::Memory(kv) => kv.compare_and_swap(key, current, new, ttl).await,
            Self::Redis(kv, m) => timed(m, "compare_and_swap", kv.compare_and_swap(key, current, new, ttl)).await,
        }
    }

    async fn limit(&self, steps: &[LimitStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        match self {
            Self::Memory(kv) => kv.limit(steps, now_us).await,
            Self::Redis(kv, m) => timed(m, "gcra", kv.limit(steps, now_us)).await,
        }
    }

    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, now_us: u64) -> Result<bool, KvError> {
        match self {
            Self::Memory(kv) => kv.give_back(key, from_us, end_us, now_us).await,
            Self::Redis(kv, m) => timed(m, "give_back", kv.give_back(key, from_us, end_us, now_us)).await,
        }
    }

    async fn sweep(&self, after: Option<&str>, limit: usize) -> Result<SweepReport, KvError> {
        match self {
            Self::Memory(kv) => kv.sweep(after, limit).await,
            Self::Redis(kv, m) => timed(m, "sweep", kv.sweep(after, limit)).await,
        }
    }
}

/// The node's ports.
pub(crate) struct NodePorts {
    pub(crate) kv: NodeKv,
    http: HyperClient,
    clock: NodeClock,
    /// Spans of sampled requests are exported (an OTLP endpoint is set).
    spans: bool,
}

impl NodePorts {
    pub(crate) fn new(
        kv: NodeKv,
        pool: &client::PoolLimits,
        connections: Arc<client::Connections>,
        spans: bool,
        runtimes: usize,
    ) -> std::io::Result<Self> {
        let http = HyperClient::new(pool.clone(), connections, runtimes)?;
        Ok(Self { kv, http, clock: SystemClock(TokioSleep), spans })
    }
}

impl Ports for NodePorts {
    type Kv = NodeKv;
    type Http = HyperClient;
    type Clock = NodeClock;
    fn kv(&self) -> &Self::Kv {
        &self.kv
    }
    fn http(&self) -> &Self::Http {
        &self.http
    }
    fn clock(&self) -> &Self::Clock {
        &self.clock
    }
    fn event(&self, line: &str) {
        tracing::warn!("{line}");
    }
    fn spans(&self) -> bool {
        self.spans
    }
}

/// Reads and compiles a config file, filling placeholders from
/// `PORTCULLIS_VAR_<NAME>` environment variables.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    load_config_hashed(path).map(|(config, _)| config)
}

/// [`load_config`], with the SHA-256 (hex) of the file's text.
pub(crate) fn load_config_hashed(path: &Path) -> Result<(Config, String), ConfigErrors> {
    use sha2::Digest;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: "(file)".into(),
            message: e.to_string(),
        }])
    })?;
    let hash = crate::shared::hex::hex(&sha2::Sha256::digest(text.as_bytes()));
    Config::parse(&text, &file, &env_variables(&text)).map(|config| (config, hash))
}

/// Seconds since the epoch, now.
pub(crate) fn unix_now() -> u64 {
    NodeClock::default().now().as_secs()
}

/// Now, as RFC 3339 (what the admin API and the registry's records say).
pub(crate) fn now_rfc3339() -> String {
    crate::pipeline::log::rfc3339(NodeClock::default().now())
}

/// Writes a file whole, readable by the node alone: into a file beside it
/// (its folder made, 0700, if need be), synced, then renamed over it, so
/// no reader and no start after a crash sees half of one.
pub(crate) fn write_private(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(folder) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(folder)?;
    }
    let partial = path.with_extension("partial");
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Placeholder values from the environment, for the names `text` uses.
pub(crate) fn env_variables(text: &str) -> Variables {
    let mut vars = Variables::new();
    for name in vars::referenced(text) {
        if let Ok(value) = std::env::var(vars::env_name(&name)) {
            vars.insert(name, value);
        }
    }
    vars
}

/// `portcullis canary reset`: clears the record of ROUTE's canary in the
/// Redis store a fleet shares (a rollback or a promotion), so that every
/// node and edge instance starts the canary afresh within its `sync`.
/// What `counted` has used of each quota, read from the fleet's store (the
/// `portcullis quota usage` command): the admin API's JSON.
pub async fn quota_usage(config: &Config, counted: &str, store_url: &str) -> Result<serde_json::Value, String> {
    if !redis_kv::is_redis_url(store_url) {
        return Err("--store: give the redis:// URL the fleet shares (a node on the memory store answers GET /quotas on its admin API)".into());
    }
    let kv = redis_kv::RedisKv::new(store_url, 1, Duration::from_secs(2)).map_err(|e| format!("{store_url}: {e}"))?;
    let now_us = u64::try_from(crate::ports::Clock::now(&SystemClock(TokioSleep)).as_micros()).unwrap_or(u64::MAX);
    let usage = crate::pipeline::rate_limit::quota_usage(config, &kv, counted, now_us).await;
    Ok(serde_json::json!({ "caller": counted, "quotas": usage.map_err(|e| format!("{store_url}: {e}"))? }))
}

/// Purges the response cache in the fleet's store: a route, a tag or a URL
/// (`portcullis cache purge`). Returns what was purged.
pub async fn purge_cache(
    config: &Config,
    route: Option<&str>,
    tag: Option<&str>,
    url: Option<&str>,
    store_url: &str,
) -> Result<String, String> {
    let purge = crate::pipeline::cache::purge_target(config, route, tag, url)?;
    if !redis_kv::is_redis_url(store_url) {
        return Err("--store: give the redis:// URL the fleet shares (a node on the memory store purges through its admin API, POST /cache/purge)".into());
    }
    let kv = redis_kv::RedisKv::new(store_url, 1, Duration::from_secs(2)).map_err(|e| format!("{store_url}: {e}"))?;
    let memory = crate::pipeline::cache::Memory::new(0);
    let clock = SystemClock(TokioSleep);
    crate::pipeline::cache::purge(&memory, &kv, &clock, &purge).await.map_err(|e| format!("{store_url}: {e}"))?;
    Ok(purge.describe())
}

pub async fn reset_canary(config: &Config, route: &str, store_url: &str) -> Result<String, String> {
    let found = config.routes.iter().find(|r| &*r.name == route).ok_or_else(|| {
        let names: Vec<&str> = config.routes.iter().filter(|r| r.canary.is_some()).map(|r| &*r.name).collect();
        format!(
            "no route named `{route}` (routes with a canary: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )
    })?;
    if found.canary.is_none() {
        return Err(format!("route `{route}` has no canary"));
    }
    if !redis_kv::is_redis_url(store_url) {
        return Err("--store: give the redis:// URL the fleet shares (a node on the memory store clears its canaries when it reloads, SIGHUP)".into());
    }
    let key = crate::pipeline::canary::CanaryState::key_for(found);
    let kv = redis_kv::RedisKv::new(store_url, 1, Duration::from_secs(2)).map_err(|e| format!("{store_url}: {e}"))?;
    kv.delete(&key).await.map_err(|e| format!("{store_url}: {e}"))?;
    Ok(key)
}
