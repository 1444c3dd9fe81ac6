//! `portcullis serve`: accept, hand each request to the core, stream the
//! answer back, log it. HTTP/1.1 and h2c on one port; SIGHUP reloads the
//! config (a bad file is reported and the running config stays); SIGTERM or
//! SIGINT stops accepting and drains in-flight requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::access_log::AccessLogSink;
use super::client::{Connections, PoolLimits};
use super::conn::{Activity, ConnectionLimits, Gate, InFlight, Slot, Tracked, supervise};
use super::metrics::{Metrics, State as MetricsState};
use super::otlp::Exporter;
use super::redis_kv::RedisKv;
use super::{NodeBody, NodeClock, NodeKv, NodePorts, admin, load_config_hashed, probe, protocol};
use crate::body::{BodyProbe, Logged};
use crate::config::Config;
use crate::config::ConfigErrors;
use crate::pipeline::log::AccessLog;
use crate::pipeline::{self, Downstream, Gateway};
use crate::ports::KvStore;
use crate::ports::{Clock, Ports};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Settings of `portcullis serve` that are about this process, not the config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request head once it started
    /// one (a slow drip of header bytes).
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
}

/// `--store`: `memory` or a Redis URL, with Redis' pool size and deadline.
#[derive(Debug, Clone)]
pub enum Store {
    Memory,
    Redis { url: String, connections: usize, timeout: Duration },
}

pub(super) struct Node {
    pub(super) gateway: Arc<ArcSwap<Gateway>>,
    pub(super) ports: Arc<NodePorts>,
    log: AccessLogSink,
    pub(super) metrics: Arc<Metrics>,
    tracer: Option<Exporter>,
    pub(super) config_path: PathBuf,
    /// The running config's SHA-256 and when it was loaded.
    pub(super) loaded: Mutex<Loaded>,
    /// Readiness: key sets at hand, active health checks run.
    pub(super) keys_ready: AtomicBool,
    pub(super) probes_ready: AtomicBool,
    /// Bumped by each reload: a key warm-up of an older config stops.
    generation: AtomicU64,
}

/// What the admin API says of the running config.
#[derive(Clone)]
pub(super) struct Loaded {
    pub(super) sha256: String,
    pub(super) at: String,
}

/// Serves until SIGTERM/SIGINT, then drains. Fails only on start-up problems.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let (node, gate, listener) = start(&opts).await?;
    let limits = gate.limits();
    tracing::info!(
        addr = %listener.local_addr()?,
        config = %opts.config.display(),
        max_connections = limits.max_connections,
        max_per_ip = limits.max_per_ip,
        "listening"
    );
    let (drain, draining) = watch::channel(false);
    accept_until_stopped(&node, &gate, &listener, draining, opts.header_read_timeout).await?;
    drop(listener);
    tracing::info!(connections = gate.open(), "draining");
    let _ = drain.send(true);
    finish(&node, &gate, opts.drain_timeout).await;
    tracing::info!("stopped");
    Ok(())
}

/// Everything before the node listens: the config (an admin API beyond
/// loopback needs a token in it), metrics, traces, the store; the
/// operator's listeners (`/healthz` at once, `/readyz` once ready); key
/// sets warming; the first round of active health checks.
async fn start(opts: &ServeOptions) -> anyhow::Result<(Arc<Node>, Arc<Gate>, TcpListener)> {
    let (config, sha256) = load_config_hashed(&opts.config).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    if let Some(addr) = opts.admin_listen
        && !addr.ip().is_loopback()
        && config.admin_tokens.is_empty()
    {
        anyhow::bail!(
            "--admin-listen {addr} is not a loopback address: the config must list a token in [admin] token_sha256"
        );
    }
    let listener = TcpListener::bind(opts.listen).await?;
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
    metrics.config_loaded(&opts.config.display().to_string(), &sha256);
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
        ports: Arc::new(NodePorts::new(kv, &opts.upstream_pool, upstream_connections, tracer.is_some())?),
        log: AccessLogSink::stdout(),
        metrics,
        tracer,
        config_path: opts.config.clone(),
        loaded: Mutex::new(Loaded { sha256, at: now_rfc3339() }),
        keys_ready: AtomicBool::new(false),
        probes_ready: AtomicBool::new(false),
        generation: AtomicU64::new(0),
    });
    if let Some(addr) = opts.metrics_listen {
        let bound = admin::listen(addr, "metrics").await?;
        tokio::spawn(admin::serve_metrics(bound, node.metrics.clone()));
    }
    if let Some(addr) = opts.admin_listen {
        let bound = admin::listen(addr, "admin").await?;
        tokio::spawn(admin::serve_admin(bound, node.clone()));
    }
    tokio::spawn(warm_keys(node.clone(), 0));
    if matches!(node.ports.kv, NodeKv::Memory(_)) {
        tokio::spawn(purge_memory(node.clone()));
    }
    // Active health: the first round decides before the node listens.
    start_probes(&node).await;
    Ok((node, gate, listener))
}

/// Accepts connections until SIGTERM or SIGINT, each served on its own
/// task within its bounds; SIGHUP reloads the config.
async fn accept_until_stopped(
    node: &Arc<Node>,
    gate: &Arc<Gate>,
    listener: &TcpListener,
    draining: watch::Receiver<bool>,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut failures = AcceptFailures::default();
    let mut pressure = Pressure::default();
    loop {
        tokio::select! {
            accepted = accept(listener, gate, &mut pressure) => match accepted {
                Ok((stream, peer)) => {
                    failures.succeeded();
                    let Some(slot) = gate.admit(peer.ip()) else {
                        tracing::debug!(%peer, "connection refused: this client holds its share of connections");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let connection = Accepted { stream, peer, slot, draining: draining.clone(), header_read_timeout };
                    tokio::spawn(connection.serve(node.clone(), gate.clone()));
                }
                Err(e) => failures.failed(&e).await,
            },
            _ = hangup.recv() => {
                let _ = reload(node);
            }
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// A connection taken in, with its slot.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    draining: watch::Receiver<bool>,
    header_read_timeout: Duration,
}

impl Accepted {
    /// Serves the connection's requests (HTTP/1.1 or h2c) within its
    /// deadlines, until it ends, is closed for a new client, or the node drains.
    async fn serve(self, node: Arc<Node>, gate: Arc<Gate>) {
        let Accepted { stream, peer, slot, draining, header_read_timeout } = self;
        let builders = connection_builders(&node.gateway.load().config, header_read_timeout, gate.limits());
        let activity = Activity::new();
        slot.watch(&activity);
        let tracked = activity.clone();
        let service = service_fn(move |req| handle(node.clone(), peer, tracked.begin(), req));
        let conn = std::pin::pin!(protocol::Connection::new(stream, service, builders));
        match supervise(conn, &activity, &gate, draining, CLOSE_GRACE).await {
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            None => tracing::debug!(%peer, "connection dropped: past its deadline or draining"),
            Some(Ok(())) => {}
        }
        drop(slot);
    }
}

/// After the listener closed: waits for open connections (up to
/// `timeout`), then flushes the access log and the spans.
async fn finish(node: &Arc<Node>, gate: &Gate, timeout: Duration) {
    if tokio::time::timeout(timeout, gate.empty()).await.is_err() {
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

/// How long a connection asked to close (idle past its time, or draining)
/// gets before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Accepts once there is room for another connection. A full node that
/// holds a connection which has begun no request accepts anyway and
/// closes the oldest such connection for it (so the count goes at most one
/// over until that one is gone); a full node without one waits for a
/// connection to close.
async fn accept(
    listener: &TcpListener,
    gate: &Gate,
    pressure: &mut Pressure,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    let max = gate.limits().max_connections;
    loop {
        let open = gate.open();
        if open < max {
            return listener.accept().await;
        }
        if open == max && gate.has_silent() {
            let accepted = listener.accept().await?;
            if gate.open() >= max && gate.close_oldest_silent() {
                pressure.closed_one(gate);
            }
            return Ok(accepted);
        }
        // Full of connections that began requests (wait for one to close),
        // or one over while a closed one goes.
        gate.below(open.max(max)).await;
    }
}

/// Connections closed to take new clients: the log says so at most once a
/// second, with how many and the deadlines in force.
#[derive(Default)]
struct Pressure {
    closed: u64,
    reported_at: Option<tokio::time::Instant>,
}

impl Pressure {
    fn closed_one(&mut self, gate: &Gate) {
        self.closed += 1;
        let now = tokio::time::Instant::now();
        if self.reported_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            let (first_request, idle) = gate.deadlines();
            tracing::warn!(
                open = gate.open(),
                max_connections = gate.limits().max_connections,
                closed = self.closed,
                ?first_request,
                ?idle,
                "connection pressure: closed connections that sent no request, to take new clients"
            );
            self.closed = 0;
            self.reported_at = Some(now);
        }
    }
}

/// Accept errors (out of file descriptors, above all) back off, doubling
/// from 10 ms to 1 s, instead of spinning; the log says so at most once a
/// second, with how many there were.
#[derive(Default)]
struct AcceptFailures {
    backoff: Option<Duration>,
    unreported: u64,
    reported_at: Option<tokio::time::Instant>,
}

impl AcceptFailures {
    fn succeeded(&mut self) {
        self.backoff = None;
    }

    async fn failed(&mut self, error: &std::io::Error) {
        self.unreported += 1;
        let now = tokio::time::Instant::now();
        if self.reported_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            tracing::warn!(error = %error, failures = self.unreported, open = ?error.raw_os_error(), "accept failed");
            self.unreported = 0;
            self.reported_at = Some(now);
        }
        let backoff = self.backoff.map_or(Duration::from_millis(10), |b| (b * 2).min(Duration::from_secs(1)));
        self.backoff = Some(backoff);
        tokio::time::sleep(backoff).await;
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
    match load_config_hashed(&node.config_path) {
        Ok((config, sha256)) => {
            let next = node.gateway.load().reloaded(config);
            let canaries = next.canary_keys();
            node.gateway.store(Arc::new(next));
            node.metrics.reload(true);
            node.metrics.config_loaded(&path, &sha256);
            *node.loaded.lock().unwrap_or_else(|p| p.into_inner()) =
                Loaded { sha256: sha256.clone(), at: now_rfc3339() };
            tracing::info!(config = %path, sha256, "config reloaded");
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
            Ok(sha256)
        }
        Err(errors) => {
            node.metrics.reload(false);
            for e in &errors.0 {
                tracing::error!(file = %e.file, line = e.line, key = %e.key, "{}", e.message);
            }
            tracing::error!(config = %path, "config rejected; the running config stays");
            Err(errors)
        }
    }
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

fn now_rfc3339() -> String {
    crate::pipeline::log::rfc3339(NodeClock::default().now())
}

/// hyper's own head limits sit above the config's, as a backstop: within
/// them the core answers with a problem body, beyond them hyper answers 431.
fn connection_builders(
    config: &Config,
    header_read_timeout: Duration,
    limits: &ConnectionLimits,
) -> protocol::Builders {
    let g = &config.gateway;
    let head_bytes = usize::try_from(g.max_header_size).unwrap_or(usize::MAX);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(head_bytes.saturating_add(16 << 10).max(8192))
        .max_headers(g.max_header_count as usize + 32);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.h2_keepalive))
        .keep_alive_timeout(limits.h2_keepalive)
        .max_header_list_size(u32::try_from(head_bytes.saturating_add(16 << 10)).unwrap_or(u32::MAX));
    protocol::Builders { http1, http2 }
}

/// The response body type: counted, logged when done, its request in
/// flight until then.
type LoggedBody = Tracked<Logged<NodeBody, Box<dyn FnOnce(AccessLog) + Send + Sync>>>;

async fn handle(
    node: Arc<Node>,
    peer: SocketAddr,
    in_flight: InFlight,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let counted = node.metrics.begin();
    let gateway = node.gateway.load_full();
    let probe = Arc::new(BodyProbe::default());
    let req = req.map(|body| NodeBody::stream(body, Some(probe.clone())));
    let downstream = Downstream { peer: peer.ip(), scheme: "http" };
    let exchange = pipeline::handle(&gateway, &*node.ports, req, downstream).await;
    let access_log = gateway.config.gateway.access_log;
    let series = node.metrics.series(&gateway);
    // When the body is done: metrics, spans, and the log line.
    let emit: Box<dyn FnOnce(AccessLog) + Send + Sync> = Box::new(move |log: AccessLog| {
        drop(counted);
        if let Some(series) = &series {
            node.metrics.request(&log, series);
        }
        if let Some(tracer) = &node.tracer {
            tracer.export(&log);
        }
        if access_log && log.observed.logged {
            node.log.write(&log.to_line());
        }
    });
    Ok(exchange.response.map(|body| Tracked::new(Logged::new(body, exchange.log, probe, Some(emit)), in_flight)))
}
