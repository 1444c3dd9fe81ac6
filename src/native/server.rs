//! `portcullis serve`: the node's life. It starts (config, store, metrics,
//! traces, listeners), serves until SIGTERM or SIGINT, then stops accepting
//! and drains in-flight requests. SIGHUP and `POST /reload` load the config
//! again (a bad file, or a certificate it names, is reported and the running
//! config stays); certificate files that change are loaded again too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::access_log::AccessLogSink;
use super::client::{Connections, PoolLimits};
use super::conn::{ConnectionLimits, Gate};
use super::listeners::Listeners;
use super::metrics::{Metrics, State as MetricsState};
use super::otlp::Exporter;
use super::redis_kv::RedisKv;
use super::workers::Workers;
use super::{NodeKv, NodePorts, acme, admin, load_config_hashed, now_rfc3339, origins, probe, registry};
use crate::config::{Config, ConfigErrors};
use crate::pipeline::{Gateway, leases, rate_limit};
use crate::ports::KvStore;
use crate::ports::{Clock, Ports};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Settings of `portcullis serve` that are about this process, not the config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    /// A plaintext listener for every host besides the config's (and the
    /// one listener when the config has none: 127.0.0.1:8080 by default).
    pub listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// How long a client may take to send an HTTP/1.1 request head, from
    /// when one is awaited (a slow drip of header bytes; a kept connection
    /// idle this long closes too, as hyper's server does it).
    pub header_read_timeout: Duration,
    /// Bounds on client connections.
    pub connections: ConnectionLimits,
    /// Idle connections to origins.
    pub upstream_pool: PoolLimits,
    /// Where shared state lives.
    pub store: Store,
    /// The `/metrics` listener (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's listener (`None`: off).
    pub admin_listen: Option<SocketAddr>,
    /// Where spans go (OTLP/HTTP), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// Follow the registry (`--config-from`) instead of the `config` file.
    pub follow: Option<registry::Follow>,
    /// Threads serving client connections, each with its own runtime and
    /// its own socket on every listener (1: the runtime `serve` runs on).
    pub workers: usize,
}

/// `--store`: `memory` or a Redis URL, with Redis' pool size and deadline.
#[derive(Debug, Clone)]
pub enum Store {
    Memory,
    Redis { url: String, connections: usize, timeout: Duration },
}

pub(crate) struct Node {
    pub(super) gateway: Arc<ArcSwap<Gateway>>,
    pub(super) ports: Arc<NodePorts>,
    pub(super) log: AccessLogSink,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tracer: Option<Exporter>,
    pub(super) config_path: PathBuf,
    /// The running config's SHA-256 and when it was loaded.
    pub(super) loaded: Mutex<Loaded>,
    /// Readiness: key sets at hand, active health checks run.
    pub(super) keys_ready: AtomicBool,
    pub(super) probes_ready: AtomicBool,
    /// Bumped by each reload: a key warm-up of an older config stops.
    generation: AtomicU64,
    /// Client connections in all and per IP.
    pub(super) gate: Arc<Gate>,
    /// Set when the node drains: every connection finishes and closes.
    drain: watch::Sender<bool>,
    /// How long requests (and upgraded connections) get to finish then.
    pub(super) drain_timeout: Duration,
    pub(super) header_read_timeout: Duration,
    pub(super) listeners: Listeners,
    /// The runtimes client connections are served on (see [`Workers`]).
    pub(super) workers: Workers,
    /// `--listen`, kept across reloads.
    listen: Option<SocketAddr>,
    /// Wakes the registry follower (SIGHUP, `POST /reload`) on a node
    /// that follows the registry.
    pub(super) follower: Option<Arc<tokio::sync::Notify>>,
}

impl Node {
    /// Tells a connection when the node drains.
    pub(super) fn draining(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// The folder a config's relative paths (certificates) start from.
    fn base(&self) -> PathBuf {
        self.config_path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// What the admin API says of the running config.
#[derive(Clone)]
pub(super) struct Loaded {
    pub(super) sha256: String,
    pub(super) at: String,
    /// The registry's version number, on a node that follows it.
    pub(super) version: Option<u64>,
}

/// Serves until SIGTERM/SIGINT, then drains. Fails only on start-up problems.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let node = start(&opts).await?;
    let limits = node.gate.limits();
    tracing::info!(
        config = %opts.config.display(),
        max_connections = limits.max_connections,
        max_per_ip = limits.max_per_ip,
        "serving"
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match &node.follower {
                Some(wake) => wake.notify_one(),
                None => drop(reload(&node)),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    node.listeners.stop_all(Duration::from_secs(1)).await;
    node.listeners.acme.stop();
    tracing::info!(connections = node.gate.open(), "draining");
    let _ = node.drain.send(true);
    finish(&node, opts.drain_timeout).await;
    let gateway = node.gateway.load_full();
    let _ = tokio::time::timeout(Duration::from_secs(2), rate_limit::give_back(&gateway, &*node.ports, true)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Everything before the node serves: the config (an admin API beyond
/// loopback needs a token in it), metrics, traces, the store; the
/// operator's listeners (`/healthz` at once, `/readyz` once ready); key
/// sets warming; the first round of active health checks; then the
/// listeners (their files read and their sockets bound first, so a
/// mistake stops the start).
async fn start(opts: &ServeOptions) -> anyhow::Result<Arc<Node>> {
    let (config, sha256, version, config_path) = match &opts.follow {
        None => {
            let (config, sha256) =
                load_config_hashed(&opts.config).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
            (config, sha256, None, opts.config.clone())
        }
        Some(follow) => {
            let (published, config, _) = registry::first(follow).await?;
            (config, published.sha256, Some(published.version), follow.cache.clone())
        }
    };
    if let Some(addr) = opts.admin_listen
        && !addr.ip().is_loopback()
        && config.admin_tokens.is_empty()
    {
        anyhow::bail!(
            "--admin-listen {addr} is not a loopback address: the config must list a token in [admin] token_sha256"
        );
    }
    let workers = Workers::start(opts.workers)?;
    let listeners = Listeners::new(workers.count() > 1);
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let prepared =
        listeners.prepare(&config, &base, opts.listen).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::new(config)));
    let gate = Gate::new(opts.connections.clone());
    let (current, open) = (gateway.clone(), gate.clone());
    let upstream_connections = Arc::new(Connections::default());
    let state = MetricsState {
        gateway: Box::new(move || current.load_full()),
        connections: Box::new(move || open.open()),
        upstream_connections: upstream_connections.clone(),
    };
    let metrics = Arc::new(Metrics::new(state, opts.metrics_listen.is_some()));
    metrics.config_loaded(&config_path.display().to_string(), &sha256, version);
    let tracer = match &opts.otlp_endpoint {
        Some(endpoint) => Some(Exporter::new(endpoint, "portcullis")?),
        None => None,
    };
    let kv = match &opts.store {
        Store::Memory => NodeKv::memory(),
        Store::Redis { url, connections, timeout } => {
            NodeKv::Redis(Box::new(RedisKv::new(url, *connections, *timeout)?), metrics.clone())
        }
    };
    let node = Arc::new(Node {
        gateway,
        ports: Arc::new(NodePorts::new(
            kv,
            &opts.upstream_pool,
            upstream_connections,
            tracer.is_some(),
            workers.runtimes(),
        )?),
        log: AccessLogSink::stdout(),
        metrics,
        tracer,
        config_path,
        loaded: Mutex::new(Loaded { sha256, at: now_rfc3339(), version }),
        keys_ready: AtomicBool::new(false),
        probes_ready: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        gate,
        drain: watch::Sender::new(false),
        drain_timeout: opts.drain_timeout,
        header_read_timeout: opts.header_read_timeout,
        listeners,
        workers,
        listen: opts.listen,
        follower: opts.follow.as_ref().map(|_| Arc::new(tokio::sync::Notify::new())),
    });
    let profiles = origins::prepare(&node.gateway.load().config, &base, node.ports.http.roots())
        .map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    node.ports.http.set_profiles(profiles);
    if let Some(addr) = opts.metrics_listen {
        let bound = admin::listen(addr, "metrics").await?;
        tokio::spawn(admin::serve_metrics(bound, node.metrics.clone()));
    }
    if let Some(addr) = opts.admin_listen {
        let bound = admin::listen(addr, "admin").await?;
        tokio::spawn(admin::serve_admin(bound, node.clone()));
    }
    tokio::spawn(warm_keys(node.clone(), 0));
    tokio::spawn(give_back_leases(node.clone()));
    if matches!(node.ports.kv, NodeKv::Memory(_)) {
        tokio::spawn(purge_memory(node.clone()));
    }
    // Active health: the first round decides before the node listens.
    start_probes(&node).await;
    // The registry's consumers before the first request.
    let consumers = match &opts.follow {
        Some(follow) => Some(registry::first_consumers(follow, &node.gateway.load().caches.consumers).await),
        None => None,
    };
    node.listeners.apply(prepared, &node)?;
    node.metrics.certificates(&node.listeners.certificates());
    follow_acme(&node);
    tokio::spawn(watch_files(node.clone()));
    if let (Some(follow), Some(wake), Some(consumers)) = (&opts.follow, &node.follower, consumers) {
        tokio::spawn(registry::follow(node.clone(), follow.clone(), wake.clone(), consumers));
    }
    Ok(node)
}

/// Orders and renews the certificates the running config's listeners name
/// (`[acme]`): each one served updates the expiry metrics, each order is counted.
fn follow_acme(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    let event = Arc::new(move |name: &str, event: acme::Event| {
        let Some(node) = weak.upgrade() else { return };
        match event {
            acme::Event::Published => node.metrics.certificates(&node.listeners.certificates()),
            acme::Event::Ordered { issued } => node.metrics.acme_order(name, issued),
        }
    });
    node.listeners.acme.follow(&node.gateway.load().config, &node.base(), node.ports.clone(), event);
}

/// After the listeners closed: waits for open connections and upgraded
/// ones (up to `timeout`), then flushes the access log and the spans.
async fn finish(node: &Arc<Node>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    // Upgraded connections close themselves at the drain timeout; a moment
    // more lets their log lines out.
    let clients = tokio::time::timeout_at(deadline, node.gate.empty()).await.is_ok();
    let upgrades = node.ports.http.upgrades().closed();
    let upgraded = tokio::time::timeout_at(deadline + Duration::from_secs(1), upgrades).await.is_ok();
    if !(clients && upgraded) {
        tracing::warn!(?timeout, "drain timed out; closing remaining connections");
    }
    node.log.flush(Duration::from_secs(2));
    if node.tracer.is_some() {
        // The exporter's calls run on this runtime: wait for them off it
        // (with one worker, blocking it would leave them nowhere to run).
        let flushing = node.clone();
        let flushed = tokio::task::spawn_blocking(move || flushing.tracer.as_ref().map(Exporter::flush));
        let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    }
}

/// A first (or, after a reload, new) round of active health checks for the
/// node's config, then rounds every interval while that config stays.
async fn start_probes(node: &Arc<Node>) {
    let gateway = node.gateway.load_full();
    node.probes_ready.store(false, Ordering::Release);
    probe::round(&gateway, &node.ports, true).await;
    node.probes_ready.store(true, Ordering::Release);
    let current = node.clone();
    probe::spawn(gateway, move || current.gateway.load_full(), node.ports.clone());
}

/// Loads the config file again (SIGHUP, or `POST /reload`): the new config
/// replaces the running one whole, or is rejected and the running one
/// stays. Returns the new config's SHA-256, or every error in the file.
pub(super) fn reload(node: &Arc<Node>) -> Result<String, ConfigErrors> {
    let path = node.config_path.display().to_string();
    let applied = load_config_hashed(&node.config_path)
        .and_then(|(config, sha256)| apply_config(node, config, &sha256, &path, None).map(|()| sha256));
    if let Err(errors) = &applied {
        rejected(node, &path, errors);
    }
    applied
}

/// Applies a version from the registry as a reload applies a file.
pub(crate) fn apply(node: &Arc<Node>, config: Config, published: &registry::Published) -> Result<(), ConfigErrors> {
    let label = published.label();
    let applied = apply_config(node, config, &published.sha256, &label, Some(published.version));
    if let Err(errors) = &applied {
        rejected(node, &label, errors);
    }
    applied
}

/// The registry version the node runs, its SHA-256 and when it was applied.
pub(crate) fn running_version(node: &Node) -> Option<(u64, String, String)> {
    let loaded = node.loaded.lock().unwrap_or_else(|p| p.into_inner());
    loaded.version.map(|v| (v, loaded.sha256.clone(), loaded.at.clone()))
}

/// Reports a config that was not applied: the running one stays.
pub(crate) fn rejected(node: &Node, label: &str, errors: &ConfigErrors) {
    node.metrics.reload(false);
    for e in &errors.0 {
        tracing::error!(file = %e.file, line = e.line, key = %e.key, "{}", e.message);
    }
    tracing::error!(config = %label, "config rejected; the running config stays");
}

/// Replaces the running config with `config` whole (its listeners and
/// origins' files read first: any failure and nothing changes).
fn apply_config(
    node: &Arc<Node>,
    config: Config,
    sha256: &str,
    label: &str,
    version: Option<u64>,
) -> Result<(), ConfigErrors> {
    let prepared = node.listeners.prepare(&config, &node.base(), node.listen);
    let profiles = origins::prepare(&config, &node.base(), node.ports.http.roots());
    let (prepared, profiles) = match (prepared, profiles) {
        (Ok(prepared), Ok(profiles)) => (prepared, profiles),
        (prepared, profiles) => {
            let (a, b) = (prepared.err().map(|e| e.0), profiles.err().map(|e| e.0));
            return Err(ConfigErrors(a.into_iter().chain(b).flatten().collect()));
        }
    };
    node.ports.http.set_profiles(profiles);
    let kept: Vec<Arc<str>> = prepared.iter().map(|p| p.name().clone()).collect();
    if let Err(e) = node.listeners.apply(prepared, node) {
        tracing::error!(error = %e, "a new listener could not start");
    }
    node.listeners.retain(&kept);
    node.metrics.certificates(&node.listeners.certificates());
    let next = node.gateway.load().reloaded(config);
    let canaries = next.canary_keys();
    let previous = node.gateway.swap(Arc::new(next));
    // The new config holds no leases: the old one's go back.
    let ports = node.ports.clone();
    tokio::spawn(async move { rate_limit::give_back(&previous, &*ports, true).await });
    follow_acme(node);
    node.metrics.reload(true);
    node.metrics.config_loaded(&node.config_path.display().to_string(), sha256, version);
    *node.loaded.lock().unwrap_or_else(|p| p.into_inner()) =
        Loaded { sha256: sha256.to_string(), at: now_rfc3339(), version };
    tracing::info!(config = %label, sha256, version, "config reloaded");
    let generation = node.generation.fetch_add(1, Ordering::AcqRel) + 1;
    node.keys_ready.store(false, Ordering::Release);
    tokio::spawn(warm_keys(node.clone(), generation));
    // A reload gives every canary a fresh start, fleet-wide, and
    // probes the new config's targets.
    let node = node.clone();
    tokio::spawn(async move {
        start_probes(&node).await;
        for key in canaries {
            if let Err(e) = node.ports.kv.delete(&key).await {
                tracing::warn!(key, error = %e, "could not clear a canary's rollback");
            }
        }
    });
    Ok(())
}

/// Fetches (or takes from the store) every key set the config's providers
/// use, until all are at hand; the node is not ready before (a request
/// that fetches one counts too, see [`keys_at_hand`]). A key set that
/// cannot be fetched is tried again after 1 s, doubling to 30 s.
async fn warm_keys(node: Arc<Node>, generation: u64) {
    let mut wait = Duration::from_secs(1);
    loop {
        if node.generation.load(Ordering::Acquire) != generation || keys_at_hand(&node) {
            return;
        }
        let gateway = node.gateway.load_full();
        for (name, uri, policy) in gateway.config.auth.key_sets() {
            if let Some(fetched) = gateway.caches.jwks.warm(&*node.ports, uri, policy).await {
                node.metrics.jwks_fetch(name, fetched.ok);
                if !fetched.ok {
                    tracing::warn!(provider = %name, jwks = %uri, retry_in = ?wait, "key set not available yet; not ready");
                }
            }
        }
        if keys_at_hand(&node) {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Whether every configured key set has been at hand since the config was
/// loaded (once true, it stays so for this config: a later IdP outage is
/// served stale and answered 503, not by leaving the load balancer).
pub(super) fn keys_at_hand(node: &Node) -> bool {
    if node.keys_ready.load(Ordering::Acquire) {
        return true;
    }
    let gateway = node.gateway.load();
    let now = node.ports.clock().now();
    let ready = gateway.config.auth.key_sets().all(|(_, uri, policy)| gateway.caches.jwks.has_usable(uri, now, policy));
    if ready {
        node.keys_ready.store(true, Ordering::Release);
    }
    ready
}

/// Gives back what the node's leased ranges still hold on keys that went
/// idle here (`rate_limit::give_back`), looking twice per idle time.
async fn give_back_leases(node: Arc<Node>) {
    let mut every = tokio::time::interval(Duration::from_micros(leases::IDLE_US / 2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        rate_limit::give_back(&node.gateway.load_full(), &*node.ports, false).await;
    }
}

/// How often the in-memory store drops its expired records.
const MEMORY_PURGE: Duration = Duration::from_secs(5);

/// Drops the in-memory store's expired records every [`MEMORY_PURGE`]:
/// a key nobody uses again (a caller seen once) would otherwise stay until
/// its shard fills. The store's size goes to `portcullis_store_keys`.
async fn purge_memory(node: Arc<Node>) {
    let mut every = tokio::time::interval(MEMORY_PURGE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Ok(report) = node.ports.kv.sweep(None, usize::MAX).await {
            node.metrics.store_keys(report.keys.unwrap_or(0).saturating_sub(report.deleted));
        }
    }
}

/// How often certificate files are looked at for changes.
const FILES_CHECKED_EVERY: Duration = Duration::from_secs(2);

/// Loads certificates again when their files change (a renewal written in
/// place, say): a listener's, and those a service shows or trusts to its
/// origins. New handshakes get them; open connections keep theirs. A
/// change that does not load (a half-written file, a key that is not the
/// certificate's) is reported once and the running certificates stay until
/// the files are right.
async fn watch_files(node: Arc<Node>) {
    let mut seen = files_signature(&node);
    let mut every = tokio::time::interval(FILES_CHECKED_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = files_signature(&node);
        if now == seen {
            continue;
        }
        seen = now;
        let gateway = node.gateway.load_full();
        let mut rejected = Vec::new();
        match node.listeners.prepare(&gateway.config, &node.base(), node.listen) {
            Ok(prepared) => {
                if let Err(e) = node.listeners.apply(prepared, &node) {
                    tracing::error!(error = %e, "a listener could not start");
                }
                node.metrics.certificates(&node.listeners.certificates());
            }
            Err(errors) => rejected.extend(errors.0),
        }
        match origins::prepare(&gateway.config, &node.base(), node.ports.http.roots()) {
            Ok(profiles) => node.ports.http.set_profiles(profiles),
            Err(errors) => rejected.extend(errors.0),
        }
        for e in &rejected {
            tracing::error!(file = %e.file, line = e.line, key = %e.key, "{}", e.message);
        }
        if rejected.is_empty() {
            tracing::info!("certificates loaded again: their files changed");
        } else {
            tracing::error!("changed certificate files rejected; the running certificates stay");
        }
    }
}

/// The size and modification time of every file the listeners and the
/// services' TLS settings read.
fn files_signature(node: &Node) -> Vec<Option<(u64, std::time::SystemTime)>> {
    let gateway = node.gateway.load();
    let base = node.base();
    let tls = gateway.config.listeners.iter().filter_map(|l| l.tls.as_ref());
    let listeners = tls.flat_map(|t| {
        let certs = t.certificates.iter().flat_map(|c| [&c.cert, &c.key]);
        let client = t.client_auth.iter().flat_map(|a| std::iter::once(&a.ca).chain(&a.crls));
        certs.chain(client).collect::<Vec<_>>()
    });
    let services = gateway
        .config
        .services
        .iter()
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|t| t.ca.iter().chain(t.client.iter().flat_map(|(cert, key)| [cert, key])).collect::<Vec<_>>());
    listeners
        .chain(services)
        .map(|f| std::fs::metadata(base.join(&f.path)).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect()
}
