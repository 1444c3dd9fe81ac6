//! The node's listeners: a socket each (`[[listeners]]` in the config, and
//! `--listen`), each with what it serves with — TLS or plaintext, PROXY
//! protocol — and an accept loop. They follow the running config: a reload
//! first reads every listener's files and binds the new addresses (any
//! failure rejects the reload, the running config stays), then updates the
//! rest in place (new handshakes get the new certificates, open
//! connections keep theirs) and closes the sockets of listeners the config
//! dropped (their connections finish).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::acme::{self, Acme};
use super::conn::{Activity, ConnectionLimits, Gate, InFlight, Slot, Tracked, supervise};
use super::downstream_h1;
use super::protocol::{self, Connection, FastHandler, Handlers, Protocol};
use super::server::Node;
use super::tls::{self, Resumption, Served};
use super::tunnel::{self, Ends};
use super::{NodeBody, metrics, proxy_protocol};
use crate::body::{BodyFailure, BodyProbe, Emit, Logged};
use crate::config::acme::Challenge;
use crate::config::{Config, ConfigErrors, Listener};
use crate::pipeline::log::AccessLog;
use crate::pipeline::upgrade::Tunnel;
use crate::pipeline::{self, Downstream, Scheme};
use crate::system_clock;

/// The name of the plaintext listener `--listen` adds.
pub(crate) const LISTEN_FLAG: &str = "--listen";

/// What a listener serves with.
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) proxy_protocol: bool,
    pub(crate) tls: Option<tls::Serving>,
}

/// A listener in effect.
struct Running {
    name: Arc<str>,
    /// As configured (port 0: the one the system gave is `local`).
    address: SocketAddr,
    local: SocketAddr,
    settings: Arc<ArcSwap<Settings>>,
    stop: watch::Sender<bool>,
}

/// A listener ready to take effect: its settings read; its socket bound
/// if new, else the running listener whose socket it keeps.
pub(crate) struct Prepared {
    settings: Settings,
    address: SocketAddr,
    socket: Result<std::net::TcpListener, Arc<str>>,
}

impl Prepared {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.settings.name
    }
}

/// The node's listeners and what outlives their reloads.
#[derive(Default)]
pub(crate) struct Listeners {
    running: Mutex<Vec<Running>>,
    /// Ticket keys and session caches, by listener name.
    resumption: Mutex<HashMap<Arc<str>, Arc<Resumption>>>,
    /// The certificates the node orders, and the tasks that keep them.
    pub(crate) acme: Acme,
    /// Sockets are bound with `SO_REUSEPORT`: each worker binds its own.
    reuse_port: bool,
}

/// The listeners a config asks for, with `--listen`'s plaintext one (which
/// answers every host) when given, or when the config has none.
fn wanted(config: &Config, listen: Option<SocketAddr>) -> Vec<Listener> {
    let mut all = config.listeners.clone();
    let fallback = SocketAddr::from(([127, 0, 0, 1], 8080));
    if let Some(address) = listen.or(all.is_empty().then_some(fallback)) {
        all.insert(0, Listener::plaintext(LISTEN_FLAG, address));
    }
    all
}

/// Reads every TLS file — listeners', services' to their origins — as a
/// start would (`portcullis check`): every mistake at the config key that
/// names the file.
pub fn check_files(config: &Config, base: &Path) -> Result<(), ConfigErrors> {
    let mut errors = super::acme::check(config, base, false);
    if let Err(e) = super::origins::prepare(config, base, &rustls::RootCertStore::empty()) {
        errors.extend(e.0);
    }
    for listener in &config.listeners {
        if let Some(t) = &listener.tls {
            let resumption = Resumption::without_tickets(1);
            if let Err(e) = tls::load(t, base, &resumption, None, false) {
                errors.extend(e);
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
}

impl Listeners {
    /// `reuse_port`: more than one worker, each accepting on its own socket.
    pub(crate) fn new(reuse_port: bool) -> Self {
        Self { reuse_port, ..Self::default() }
    }

    /// Reads every listener's files and binds the addresses not yet
    /// bound; nothing changes until [`Listeners::apply`]. Every mistake is
    /// reported at the config key that caused it.
    pub(crate) fn prepare(
        &self,
        config: &Config,
        base: &Path,
        listen: Option<SocketAddr>,
    ) -> Result<Vec<Prepared>, ConfigErrors> {
        let running: Vec<(Arc<str>, SocketAddr)> =
            self.lock(|r| r.iter().map(|l| (l.name.clone(), l.address)).collect());
        let mut errors = super::acme::check(config, base, true);
        let mut prepared = Vec::new();
        let tls_alpn = config.acme.as_ref().is_some_and(|a| a.challenge == Challenge::TlsAlpn01);
        let ordered = Some(&self.acme.certificates);
        for listener in wanted(config, listen) {
            let tls = match &listener.tls {
                Some(t) => {
                    match tls::load(t, base, &self.resumption(&listener.name, t.session_cache), ordered, tls_alpn) {
                        Ok(serving) => Some(serving),
                        Err(e) => {
                            errors.extend(e);
                            continue;
                        }
                    }
                }
                None => None,
            };
            // The same address keeps its socket (a port 0 only under the same name).
            let kept = running.iter().find(|(name, address)| {
                *address == listener.address && (address.port() != 0 || *name == listener.name)
            });
            let socket = match kept {
                Some((name, _)) => Err(name.clone()),
                None => match bind(listener.address, self.reuse_port) {
                    Ok(socket) => Ok(socket),
                    Err(e) => {
                        errors.push(listener.place.error(format!("cannot listen on {}: {e}", listener.address)));
                        continue;
                    }
                },
            };
            let settings = Settings { name: listener.name.clone(), proxy_protocol: listener.proxy_protocol, tls };
            prepared.push(Prepared { settings, address: listener.address, socket });
        }
        if errors.is_empty() { Ok(prepared) } else { Err(ConfigErrors(errors)) }
    }

    /// Puts prepared listeners in effect: the kept ones take their new
    /// settings, new ones start accepting, dropped ones stop.
    pub(crate) fn apply(&self, prepared: Vec<Prepared>, node: &Arc<Node>) -> std::io::Result<()> {
        let mut started = Vec::new();
        for p in prepared {
            let name = p.settings.name.clone();
            let settings = Arc::new(p.settings);
            match p.socket {
                Err(was) => self.lock(|r| {
                    if let Some(l) = r.iter_mut().find(|l| l.name == was) {
                        l.settings.store(settings);
                        l.name = name;
                    }
                }),
                Ok(socket) => {
                    let local = socket.local_addr()?;
                    let (stop, stopped) = watch::channel(false);
                    let swap = Arc::new(ArcSwap::from(settings));
                    // One worker: this runtime accepts.
                    let this = [tokio::runtime::Handle::current()];
                    let workers = match node.workers.handles() {
                        [] => &this[..],
                        workers => workers,
                    };
                    // Worker 0 takes the socket bound first; the others bind
                    // its address (its port, if 0 was asked) again.
                    let mut first = Some(socket);
                    let reports = Arc::new(Reports::default());
                    for (index, worker) in workers.iter().enumerate() {
                        let socket = match first.take() {
                            Some(socket) => socket,
                            None => bind(local, true)?,
                        };
                        socket.set_nonblocking(true)?;
                        let listener = {
                            let _in_worker = worker.enter();
                            TcpListener::from_std(socket)?
                        };
                        let accepting =
                            accept_loop(node.clone(), listener, swap.clone(), stopped.clone(), reports.clone(), index);
                        worker.spawn(accepting);
                    }
                    tracing::info!(
                        addr = %local,
                        listener = %name,
                        tls = swap.load().tls.is_some(),
                        workers = node.workers.count(),
                        "listening"
                    );
                    started.push(Running { name, address: p.address, local, settings: swap, stop });
                }
            }
        }
        self.lock(|running| {
            let wanted: Vec<Arc<str>> = started.iter().map(|s| s.name.clone()).collect();
            running.retain(|l| {
                let replaced = wanted.contains(&l.name);
                if replaced {
                    let _ = l.stop.send(true);
                }
                !replaced
            });
            running.extend(started);
        });
        Ok(())
    }

    /// Stops every listener not named in `keep` (after a reload).
    pub(crate) fn retain(&self, keep: &[Arc<str>]) {
        self.lock(|running| {
            running.retain(|l| {
                let kept = keep.contains(&l.name);
                if !kept {
                    tracing::info!(addr = %l.local, listener = %l.name, "listener closed: gone from the config");
                    let _ = l.stop.send(true);
                }
                kept
            });
        });
    }

    /// Stops accepting everywhere (the node drains), and waits (at most
    /// `within`) until every accept loop, on whichever worker, has closed
    /// its socket: a client that connects after this is refused.
    pub(crate) async fn stop_all(&self, within: Duration) {
        let stops: Vec<_> = self.lock(|running| {
            running
                .iter()
                .map(|l| {
                    let _ = l.stop.send(true);
                    l.stop.clone()
                })
                .collect()
        });
        let closed = futures_util::future::join_all(stops.iter().map(watch::Sender::closed));
        let _ = tokio::time::timeout(within, closed).await;
    }

    /// Every certificate served, by listener, with its readiness margin.
    pub(crate) fn certificates(&self) -> Vec<(Arc<str>, Served, Duration)> {
        self.lock(|running| {
            running
                .iter()
                .flat_map(|l| {
                    let settings = l.settings.load_full();
                    let Some(tls) = settings.tls.as_ref() else { return Vec::new() };
                    let ordered = tls.ordered.iter().flat_map(tls::Ordered::served);
                    let all = tls.certificates.iter().cloned().chain(ordered);
                    all.map(|c| (l.name.clone(), c, tls.expiry_margin)).collect()
                })
                .collect()
        })
    }

    fn resumption(&self, name: &Arc<str>, cache: usize) -> Arc<Resumption> {
        let mut all = self.resumption.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = all.get(name) {
            return kept.clone();
        }
        match Resumption::new(cache) {
            Ok(r) => all.entry(name.clone()).or_insert_with(|| Arc::new(r)).clone(),
            // Only the ticket keys' random draw can fail: the next load tries again.
            Err(e) => {
                tracing::error!(listener = %name, error = %e, "TLS session tickets unavailable");
                Arc::new(Resumption::without_tickets(cache))
            }
        }
    }

    fn lock<T>(&self, f: impl FnOnce(&mut Vec<Running>) -> T) -> T {
        f(&mut self.running.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A listening socket (SO_REUSEADDR, as tokio binds), not yet in the runtime.
fn bind(address: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    socket.bind(address)?;
    let listener = socket.listen(1024)?;
    listener.into_std()
}

/// Accepts on one listener until it is stopped, each connection served
/// on its own task within the node's bounds.
async fn accept_loop(
    node: Arc<Node>,
    listener: TcpListener,
    settings: Arc<ArcSwap<Settings>>,
    mut stop: watch::Receiver<bool>,
    reports: Arc<Reports>,
    worker: usize,
) {
    let mut backoff = Backoff::default();
    let counted = node.metrics.accepted(worker);
    loop {
        tokio::select! {
            accepted = accept(&listener, &node.gate, &reports) => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    let Some(slot) = node.gate.admit(peer.ip()) else {
                        tracing::debug!(%peer, "connection refused: this client holds its share of connections");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if let Some(counted) = &counted {
                        counted.inc();
                    }
                    // Silent from now, not from when its task first runs: a
                    // loop that filled the node must find it to close for
                    // the next client (on one thread, no task ran between).
                    let activity = Activity::new();
                    slot.watch(&activity);
                    let connection = Accepted { stream, peer, slot, activity, settings: settings.load_full() };
                    tokio::spawn(connection.serve(node.clone()));
                }
                Err(e) => {
                    reports.failed(&e);
                    backoff.failed().await;
                }
            },
            // Only a stop is ever sent (or the sender is gone).
            _ = stop.changed() => break,
        }
    }
    // The socket closes before the stop's receiver goes, which is what
    // `stop_all` waits for.
    drop(listener);
    drop(stop);
}

/// How long a connection asked to close (idle past its time, or draining)
/// gets before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A connection taken in, with its slot and its listener's settings.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    activity: Arc<Activity>,
    settings: Arc<Settings>,
}

impl Accepted {
    /// Serves the connection's requests within its deadlines, until it
    /// ends, is closed for a new client, or the node drains: first the
    /// PROXY header and the TLS handshake where the listener has them
    /// (both within the first-request deadline), then HTTP/1.1 or HTTP/2.
    async fn serve(self, node: Arc<Node>) {
        let Accepted { mut stream, peer, slot, activity, settings } = self;
        let gate = &node.gate;
        let mut client = peer.ip();
        if settings.proxy_protocol {
            match before_request(proxy_protocol::read(&mut stream), &activity, gate).await {
                Some(Ok(source)) => client = source.unwrap_or(client),
                Some(Err(e)) => return tracing::debug!(%peer, error = %e, "PROXY protocol header refused"),
                None => return,
            }
        }
        let (builders, fast_settings) =
            connection_builders(&node.gateway.load().config, node.header_read_timeout, gate.limits());
        let listener = Some(settings.name.clone());
        let draining = node.draining();
        let outcome = match &settings.tls {
            None => {
                let downstream = Downstream { peer: client, scheme: Scheme::Http, listener, tls: None };
                let handlers = handlers(&node, downstream, &activity, fast_settings);
                let conn = std::pin::pin!(Connection::new(stream, handlers, builders));
                supervise(conn, &activity, gate, draining, CLOSE_GRACE).await
            }
            Some(tls) => {
                let stream = match before_request(tls.acceptor.accept(stream), &activity, gate).await {
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    None => return,
                };
                if tls::is_acme_validation(stream.get_ref().1) {
                    return tracing::info!(%peer, "TLS-ALPN-01 validation handshake");
                }
                let (info, h2) = (tls::info(stream.get_ref().1), tls::is_h2(stream.get_ref().1));
                let downstream =
                    Downstream { peer: client, scheme: Scheme::Https, listener, tls: Some(Arc::new(info)) };
                let handlers = handlers(&node, downstream, &activity, fast_settings);
                let conn = std::pin::pin!(Protocol::new(stream, h2, handlers, builders));
                supervise(conn, &activity, gate, draining, CLOSE_GRACE).await
            }
        };
        match outcome {
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            None => tracing::debug!(%peer, "connection dropped: past its deadline or draining"),
            Some(Ok(())) => {}
        }
        drop(slot);
    }
}

/// What a connection must do before its first request (a PROXY header, a
/// TLS handshake): `None` if it took past the first-request deadline or
/// the node closed it to take a new client.
async fn before_request<T>(step: impl Future<Output = T>, activity: &Activity, gate: &Gate) -> Option<T> {
    tokio::select! {
        done = step => Some(done),
        () = tokio::time::sleep(gate.deadlines().0) => None,
        () = activity.evicted() => None,
    }
}

/// How one connection's requests go through the core: hyper's service, and
/// the same for the HTTP/1.1 fast path (whose requests have no body).
fn handlers(
    node: &Arc<Node>,
    downstream: Downstream,
    activity: &Arc<Activity>,
    fast_settings: downstream_h1::Settings,
) -> Handlers<
    impl hyper::service::Service<Request<Incoming>, Response = Response<LoggedBody>, Error = Infallible, Future: Send>
    + Unpin
    + use<>,
    impl FastHandler<LoggedBody> + use<>,
> {
    let (hyper_node, hyper_downstream, tracked) = (node.clone(), downstream.clone(), activity.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let probe = Arc::new(BodyProbe::default());
        let req = req.map(|body| NodeBody::stream(http_body_util::Either::Left(body), Some(probe.clone())));
        let answer = handle(hyper_node.clone(), hyper_downstream.clone(), tracked.begin(), req, probe);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let (node, activity) = (node.clone(), activity.clone());
    // Nothing is ever counted into it: the fast path's requests have no body.
    let no_body = Arc::new(BodyProbe::default());
    let fast = move |req| handle(node.clone(), downstream.clone(), activity.begin(), req, no_body.clone());
    Handlers { service, fast, fast_settings }
}

/// Accepts once there is room for another connection. A full node that
/// holds a connection which has begun no request accepts anyway and
/// closes the oldest such connection for it (so the count goes one over a
/// worker at most until those are gone: workers accepting at once can each
/// take the last slot, and then close as many); a full node without one
/// waits for a connection to close.
async fn accept(listener: &TcpListener, gate: &Gate, reports: &Reports) -> std::io::Result<(TcpStream, SocketAddr)> {
    let max = gate.limits().max_connections;
    loop {
        let open = gate.open();
        if open < max {
            return listener.accept().await;
        }
        if open == max && gate.has_silent() {
            let accepted = listener.accept().await?;
            if gate.open() >= max && gate.close_oldest_silent() {
                reports.closed_one(gate);
            }
            return Ok(accepted);
        }
        // Past the bound (workers took the last slots at once): one that
        // sent nothing goes, as one that closes would.
        if open > max && gate.close_oldest_silent() {
            reports.closed_one(gate);
        }
        // Full of connections that began requests (wait for one to close),
        // or one over while a closed one goes.
        gate.below(open.max(max)).await;
    }
}

/// What a listener's accept loops (one a worker) say in the log, each at
/// most once a second for all of them together, with how many since.
#[derive(Default)]
struct Reports {
    /// Connections closed to take new clients (with the deadlines in force).
    pressure: Throttled,
    /// Failed accepts (out of file descriptors, above all).
    failures: Throttled,
}

#[derive(Default)]
struct Throttled(Mutex<(u64, Option<tokio::time::Instant>)>);

impl Throttled {
    /// Counts one; the count since the last report when it is time for one.
    fn count(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (count, reported_at) = &mut *state;
        *count += 1;
        let now = tokio::time::Instant::now();
        if reported_at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return None;
        }
        *reported_at = Some(now);
        Some(std::mem::take(count))
    }
}

impl Reports {
    fn closed_one(&self, gate: &Gate) {
        if let Some(closed) = self.pressure.count() {
            let (first_request, idle) = gate.deadlines();
            tracing::warn!(
                open = gate.open(),
                max_connections = gate.limits().max_connections,
                closed,
                ?first_request,
                ?idle,
                "connection pressure: closed connections that sent no request, to take new clients"
            );
        }
    }

    fn failed(&self, error: &std::io::Error) {
        if let Some(failures) = self.failures.count() {
            tracing::warn!(error = %error, failures, open = ?error.raw_os_error(), "accept failed");
        }
    }
}

/// Accept errors (out of file descriptors, above all) back off, doubling
/// from 10 ms to 1 s, instead of spinning; [`Reports`] logs them.
#[derive(Default)]
struct Backoff(Option<Duration>);

impl Backoff {
    fn succeeded(&mut self) {
        self.0 = None;
    }

    async fn failed(&mut self) {
        let backoff = self.0.map_or(Duration::from_millis(10), |b| (b * 2).min(Duration::from_secs(1)));
        self.0 = Some(backoff);
        tokio::time::sleep(backoff).await;
    }
}

/// An HTTP/2 connection's and each stream's receive window.
const H2_WINDOW: u32 = 1 << 20;
/// Response bytes queued per stream before its body waits for the client.
const H2_SEND_BUFFER: usize = 400 << 10;
/// Streams a client may reset before the server takes them up, and resets
/// its protocol errors may make us send, before the connection goes away
/// with ENHANCE_YOUR_CALM.
const H2_PENDING_RESETS: usize = 20;
const H2_ERROR_RESETS: usize = 256;

/// hyper's own head limits sit above the config's, as a backstop: within
/// them the core answers with a problem body, beyond them hyper answers
/// 431. The HTTP/1.1 fast path keeps to the same bounds.
fn connection_builders(
    config: &Config,
    header_read_timeout: Duration,
    limits: &ConnectionLimits,
) -> (protocol::Builders, downstream_h1::Settings) {
    let g = &config.gateway;
    let head_bytes = usize::try_from(g.max_header_size).unwrap_or(usize::MAX);
    let fast = downstream_h1::Settings { max_headers: g.max_header_count as usize + 32, header_read_timeout };
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(head_bytes.saturating_add(16 << 10).max(8192))
        .max_headers(fast.max_headers);
    // HTTP/2 bounds, explicit (tests/node/h2_abuse.rs floods each): streams
    // at once, windows and the send buffer per connection, streams a client
    // may reset before they are taken up, resets its protocol errors may
    // cost us; PING and SETTINGS answers are one pending at a time in h2.
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.h2_keepalive))
        .keep_alive_timeout(limits.h2_keepalive)
        .max_concurrent_streams(limits.h2_max_streams)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .max_send_buf_size(H2_SEND_BUFFER)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(H2_ERROR_RESETS)
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(head_bytes.saturating_add(16 << 10)).unwrap_or(u32::MAX));
    (protocol::Builders { http1, http2 }, fast)
}

/// The response body type: counted, logged when done, its request in
/// flight until then.
type LoggedBody = Tracked<Logged<NodeBody, Finished>>;

/// What a finished request's record feeds: its metrics (and the in-flight
/// gauge it leaves), its trace, and the access-log line.
struct Finished {
    node: Arc<Node>,
    counted: Option<metrics::InFlight>,
    series: Option<Arc<metrics::Series>>,
    access_log: bool,
}

impl Emit for Finished {
    fn emit(self, log: &AccessLog) {
        drop(self.counted);
        if let Some(series) = &self.series {
            self.node.metrics.request(log, series);
        }
        if let Some(tracer) = &self.node.tracer {
            tracer.export(log);
        }
        if self.access_log && log.observed.logged {
            self.node.log.write(log);
        }
    }
}

async fn handle(
    node: Arc<Node>,
    downstream: Downstream,
    mut in_flight: InFlight,
    mut req: Request<NodeBody>,
    probe: Arc<BodyProbe>,
) -> Response<LoggedBody> {
    if req.uri().path().starts_with(acme::HTTP01_PREFIX)
        && let Some(key_authorization) = node.listeners.acme.http01(req.uri().path(), &node.ports.kv).await
    {
        // HTTP-01: the ACME directory asks for a token an order put up.
        in_flight.answered();
        let mut answer = Response::new(NodeBody::from(bytes::Bytes::from(key_authorization)));
        answer.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        return answer.map(|body| Tracked::new(Logged::unlogged(body), in_flight));
    }
    let counted = node.metrics.begin();
    let gateway = node.gateway.load_full();
    let extended_connect = tunnel::from_extended_connect(&mut req);
    let client_side = req.headers().contains_key(UPGRADE).then(|| hyper::upgrade::on(&mut req));
    let http1 = req.version() < http::Version::HTTP_2;
    let mut exchange = pipeline::handle(&gateway, &*node.ports, req, downstream).await;
    if http1 && probe.failure() == Some(BodyFailure::ClientFailed) {
        // Its framing broke off: hyper closes the connection after this
        // answer, which says so (RFC 9112 §9.6).
        exchange.response.headers_mut().insert(CONNECTION, http::HeaderValue::from_static("close"));
    }
    in_flight.answered();
    // When the body (or an upgraded connection) is done: metrics, spans, and the log line.
    let series = node.metrics.series(&gateway);
    let emit = Finished { node, counted, series, access_log: gateway.config.gateway.access_log };
    let (mut response, mut log) = (exchange.response, exchange.log);
    let switched = response.extensions_mut().remove::<Tunnel>();
    let (Some(client), Some(tunnel)) = (client_side, switched) else {
        return response.map(|body| Tracked::new(Logged::new(body, log, probe, Some(emit)), in_flight));
    };
    let origin = hyper::upgrade::on(&mut response);
    if extended_connect {
        tunnel::to_extended_connect(&mut response);
    }
    log.finish(system_clock::monotonic(), probe.bytes(), 0);
    let ends = Ends { client, origin, drain: emit.node.draining(), drain_timeout: emit.node.drain_timeout };
    tokio::spawn(tunnel::carry(ends, tunnel, *log, emit));
    response.map(|body| Tracked::new(Logged::unlogged(body), in_flight))
}
