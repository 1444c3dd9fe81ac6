//! Outbound HTTP for the node, with our own pool of kept-alive connections
//! per origin (scheme, host and port, protocol, TLS profile). A request
//! without a body goes on our own HTTP/1.1 client (`origin_h1`), in the
//! task that serves the client; its connection goes back to the pool once
//! the response body is read. Other requests (a body, an upgrade) and
//! HTTP/2 go over hyper's connection API: an HTTP/1.1 connection of
//! hyper's goes back as soon as its response head arrives, and is handed
//! out again once hyper says it is ready for the next request; an HTTP/2
//! connection stays in the pool and carries many requests at once. HTTPS
//! origins go over rustls, verified against the system's roots (which
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` can replace) or a service's own
//! (`native::origins`). Each worker keeps a pool of its own (`--workers`),
//! so a connection to an origin is used on the thread that runs it.
//!
//! Why not hyper-util's pooled client: per request it boxed a large
//! future, cloned the client's handles and hashed the origin twice; this
//! path costs one short lock (`benches/README.md`, "The node's own client
//! to origins").

use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::origin_h1::{self, MAX_HEAD, Stream};
use super::origins::{self, Profiles};
use super::workers;
use super::{NodeBody, NodeStream};
use crate::body::BodyFailure;
use crate::ports::{HttpClient, UpgradeSlot, UpstreamError, UpstreamOptions, checked_length};

/// Connections to origins: open now, and opened since start (their ratio
/// to tries says how well the pool keeps them).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pub(crate) open: AtomicUsize,
    pub(crate) opened: AtomicU64,
}

/// Connections to origins (`portcullis serve` flags): idle ones kept, and
/// upgraded ones held.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Idle, per origin (scheme, host and port).
    pub max_idle_per_origin: usize,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Upgraded (WebSocket) connections open at once, in all.
    pub max_upgraded: usize,
}

/// Upgraded connections open now, and a wake-up when the last closes.
#[derive(Debug, Default)]
pub(crate) struct Upgrades {
    open: AtomicUsize,
    none_open: tokio::sync::Notify,
}

impl Upgrades {
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until no upgraded connection is open.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.none_open.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One upgraded connection's place, given back when dropped.
struct Held(Arc<Upgrades>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_open.notify_waiters();
        }
    }
}

/// Where a connection goes: TLS or not, the authority, the protocol, and
/// the service whose TLS settings it was made with (if its own).
#[derive(Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    authority: Authority,
    http2: bool,
    profile: Option<Arc<str>>,
}

/// As `Authority` compares (ignoring ASCII case), but the authority is
/// hashed in one piece: its own `Hash` feeds the hasher a byte at a time,
/// which cost ~800 instructions a request (checkout and keep).
impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.https, self.http2, &self.profile).hash(state);
        let authority = self.authority.as_str().as_bytes();
        let mut lower = [0u8; 128];
        match lower.get_mut(..authority.len()) {
            Some(buf) => {
                for (to, from) in buf.iter_mut().zip(authority) {
                    *to = from.to_ascii_lowercase();
                }
                state.write(buf);
            }
            // Equal authorities have equal lengths, so both come here.
            None => self.authority.hash(state),
        }
    }
}

/// A connection's sending half.
enum Sender {
    /// hyper's, for requests with a body and upgrades.
    Http1(SendRequest<NodeBody>),
    /// Shared: an HTTP/2 connection carries many requests at once.
    Http2(http2::SendRequest<NodeBody>),
    /// Ours, for requests without a body (`origin_h1`): kept only between
    /// exchanges, so always ready when kept.
    Own(Box<origin_h1::Conn>),
}

impl Sender {
    fn is_closed(&mut self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
            Sender::Own(c) => c.is_closed(),
        }
    }

    /// Ready for another request (HTTP/1.1: its last response read).
    fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
            Sender::Own(_) => true,
        }
    }
}

/// A kept connection, and since when the reaper has seen it idle.
struct Kept {
    sender: Sender,
    idle_since: Option<Instant>,
}

/// Keyed by origins from the config, so a fast hasher (not one against flooding).
type Pool = HashMap<Origin, Vec<Kept>, foldhash::fast::RandomState>;

/// One pool a runtime (each worker's, and the control plane's for
/// probes), by [`workers::current`].
type Pools = Arc<[Mutex<Pool>]>;

/// This runtime's pool.
fn pool_of(pools: &[Mutex<Pool>]) -> MutexGuard<'_, Pool> {
    pools[workers::current() % pools.len()].lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a connection of ours goes back once its response is read.
pub(super) struct Home {
    pools: Pools,
    origin: Origin,
    max_idle: usize,
}

impl Home {
    /// Keeps a connection of ours whose response was read, if its origin's
    /// list has room (else it closes).
    pub(super) fn keep(mut conn: Box<origin_h1::Conn>) {
        let Some(home) = conn.home().take() else { return };
        let (pools, max_idle) = (home.pools.clone(), home.max_idle);
        let mut pool = pool_of(&pools);
        let kept = pool.entry(home.origin.clone()).or_default();
        *conn.home() = Some(home);
        if kept.len() < max_idle {
            kept.push(Kept { sender: Sender::Own(conn), idle_since: None });
        }
    }
}

/// The node's [`HttpClient`].
pub(crate) struct HyperClient {
    pools: Pools,
    reaper: Once,
    /// The system's roots, and connectors on them for HTTP/1.1 and HTTP/2.
    roots: rustls::RootCertStore,
    tls: TlsConnector,
    tls_h2: TlsConnector,
    /// Services' own TLS settings (swapped whole with each config).
    profiles: ArcSwap<Profiles>,
    limits: PoolLimits,
    connections: Arc<Connections>,
    upgrades: Arc<Upgrades>,
}

/// Why an exchange failed, before it is told apart from the body's failures.
enum Failure {
    Connect(String),
    ConnectTimeout,
    Http(hyper::Error),
    /// Our own HTTP/1.1 client's (`origin_h1`).
    Origin(String),
}

impl HyperClient {
    /// Loads the system's root certificates (once, at start-up).
    pub(crate) fn new(limits: PoolLimits, connections: Arc<Connections>, runtimes: usize) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate the store cannot use is skipped, not fatal.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!(errors = ?found.errors, "no usable root certificates: https origins will fail verification");
        }
        let tls = origins::client_config(roots.clone(), None, false).map_err(std::io::Error::other)?;
        let tls_h2 = origins::client_config(roots.clone(), None, true).map_err(std::io::Error::other)?;
        Ok(Self {
            pools: (0..runtimes.max(1)).map(|_| Mutex::default()).collect(),
            reaper: Once::new(),
            roots,
            tls: TlsConnector::from(Arc::new(tls)),
            tls_h2: TlsConnector::from(Arc::new(tls_h2)),
            profiles: ArcSwap::default(),
            limits,
            connections,
            upgrades: Arc::default(),
        })
    }

    /// The upgraded connections open now.
    pub(crate) fn upgrades(&self) -> &Arc<Upgrades> {
        &self.upgrades
    }

    /// The system's roots (a service without a CA bundle of its own verifies with them).
    pub(crate) fn roots(&self) -> &rustls::RootCertStore {
        &self.roots
    }

    /// The services' own TLS settings, for the config now in effect; kept
    /// connections made with the previous ones close once idle.
    pub(crate) fn set_profiles(&self, profiles: Profiles) {
        self.profiles.store(Arc::new(profiles));
        for pool in self.pools.iter() {
            pool.lock().unwrap_or_else(PoisonError::into_inner).retain(|origin, _| origin.profile.is_none());
        }
    }

    /// One exchange: on a kept connection if one is ready, else on a new one.
    async fn exchange(
        &self,
        mut req: Request<NodeBody>,
        opts: &UpstreamOptions,
    ) -> Result<Response<NodeStream>, Failure> {
        let origin = origin_form(&mut req, opts)?;
        if !opts.http2 && origin_h1::carries(&req) {
            return self.exchange_own(req, origin, opts).await;
        }
        if req.headers().contains_key(UPGRADE) {
            // Its own connection, never pooled: it becomes the tunnel.
            let sender = Box::pin(self.connect(&origin, opts.connect_timeout, true)).await?;
            return match send(sender, req).await {
                Ok((resp, _)) => Ok(resp.map(Either::Left)),
                Err(Unsent::Again(_)) => Err(Failure::Connect("the new connection closed before the request".into())),
                Err(Unsent::Failed(e)) => Err(Failure::Http(e)),
            };
        }
        if let Some(sender) = self.checkout(&origin, false) {
            match send(sender, req).await {
                Ok((resp, sender)) => {
                    self.keep(origin, sender);
                    return Ok(resp.map(Either::Left));
                }
                // Not sent (the connection closed as it was taken): a new one takes it.
                Err(Unsent::Again(unsent)) => req = *unsent,
                Err(Unsent::Failed(e)) => return Err(Failure::Http(e)),
            }
        }
        // Boxed: the cold path (connect, TLS, handshake) is most of the state.
        let sender = Box::pin(self.connect(&origin, opts.connect_timeout, false)).await?;
        match send(sender, req).await {
            Ok((resp, sender)) => {
                self.keep(origin, sender);
                Ok(resp.map(Either::Left))
            }
            Err(Unsent::Again(_)) => Err(Failure::Connect("the new connection closed before the request".into())),
            Err(Unsent::Failed(e)) => Err(Failure::Http(e)),
        }
    }

    /// This runtime's pool.
    fn pool(&self) -> MutexGuard<'_, Pool> {
        pool_of(&self.pools)
    }

    /// A connection to `origin` ready for a request: HTTP/2's shared one,
    /// or the most recently kept HTTP/1.1 one (ours if `own`, else hyper's).
    fn checkout(&self, origin: &Origin, own: bool) -> Option<Sender> {
        let mut pool = self.pool();
        let kept = pool.get_mut(origin)?;
        kept.retain_mut(|k| !k.sender.is_closed());
        let at = kept.iter().rposition(|k| k.sender.is_ready() && matches!(k.sender, Sender::Own(_)) == own)?;
        match &mut kept[at] {
            Kept { sender: Sender::Http2(shared), idle_since } => {
                *idle_since = None; // in use: the reaper starts its idle time again
                Some(Sender::Http2(shared.clone()))
            }
            Kept { sender: Sender::Http1(_) | Sender::Own(_), .. } => Some(kept.remove(at).sender),
        }
    }

    /// One exchange without a request body on a connection of ours: a kept
    /// one if there is one, else a new one.
    async fn exchange_own(
        &self,
        mut req: Request<NodeBody>,
        origin: Origin,
        opts: &UpstreamOptions,
    ) -> Result<Response<NodeStream>, Failure> {
        if let Some(Sender::Own(conn)) = self.checkout(&origin, true) {
            match conn.send(&mut req).await {
                Ok(resp) => return Ok(resp.map(Either::Right)),
                // The kept connection had closed: a new one takes the request.
                Err(failed) if failed.unsent => {}
                Err(failed) => return Err(Failure::Origin(failed.why)),
            }
        }
        // Boxed: the cold path (connect, TLS) is most of the state.
        let stream = Box::pin(self.open_stream(&origin, opts.connect_timeout)).await?;
        self.reaper.call_once(|| reap(Arc::downgrade(&self.pools), self.limits.idle_timeout));
        let home = (self.limits.max_idle_per_origin > 0).then(|| Home {
            pools: self.pools.clone(),
            origin,
            max_idle: self.limits.max_idle_per_origin,
        });
        let conn = origin_h1::Conn::new(stream, Open::new(self.connections.clone()), home);
        match conn.send(&mut req).await {
            Ok(resp) => Ok(resp.map(Either::Right)),
            Err(failed) => Err(Failure::Origin(failed.why)),
        }
    }

    /// Keeps a connection whose response head has arrived, if there is room.
    fn keep(&self, origin: Origin, sender: Sender) {
        if self.limits.max_idle_per_origin == 0 {
            return;
        }
        if let Sender::Http2(_) = &sender
            && let Some(kept) = self.pool().get(&origin)
            && kept.iter().any(|k| matches!(&k.sender, Sender::Http2(s) if !s.is_closed()))
        {
            return; // the shared one is already kept
        }
        self.reaper.call_once(|| reap(Arc::downgrade(&self.pools), self.limits.idle_timeout));
        let mut pool = self.pool();
        let kept = pool.entry(origin).or_default();
        // Past the cap the connection closes once its response is read.
        if kept.len() < self.limits.max_idle_per_origin {
            kept.push(Kept { sender, idle_since: None });
        }
    }

    /// A new connection to `origin`, TLS or not, for hyper's client;
    /// `upgrades`: one that may become a tunnel.
    async fn connect(&self, origin: &Origin, timeout: Duration, upgrades: bool) -> Result<Sender, Failure> {
        let stream = self.open_stream(origin, timeout).await?;
        let io = CountedIo { io: TokioIo::new(stream), _open: Open::new(self.connections.clone()) };
        if origin.http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX))
                .handshake(io)
                .await
                .map_err(Failure::Http)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "origin connection (HTTP/2) ended with an error");
                }
            });
            return Ok(Sender::Http2(sender));
        }
        let (sender, conn) = http1::Builder::new().max_buf_size(MAX_HEAD).handshake(io).await.map_err(Failure::Http)?;
        tokio::spawn(async move {
            let ended = if upgrades { conn.with_upgrades().await } else { conn.await };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "origin connection ended with an error");
            }
        });
        Ok(Sender::Http1(sender))
    }

    /// A new byte stream to `origin`: TCP, then TLS for https.
    async fn open_stream(&self, origin: &Origin, timeout: Duration) -> Result<Box<dyn Stream>, Failure> {
        let host = origin.authority.host();
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = origin.authority.port_u16().unwrap_or(if origin.https { 443 } else { 80 });
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((bare, port))).await {
            Err(_) => return Err(Failure::ConnectTimeout),
            Ok(Err(e)) => return Err(Failure::Connect(format!("{host}:{port}: {e}"))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        Ok(if origin.https {
            let profile = origin.profile.as_ref().and_then(|p| self.profiles.load().get(p).cloned());
            let connector = match (&profile, origin.http2) {
                (Some(p), _) => &p.connector,
                (None, true) => &self.tls_h2,
                (None, false) => &self.tls,
            };
            let name = match profile.as_ref().and_then(|p| p.server_name.clone()) {
                Some(name) => name,
                None => ServerName::try_from(bare.to_owned()).map_err(|e| Failure::Connect(format!("{host}: {e}")))?,
            };
            let tls = connector.connect(name, tcp).await;
            let tls = tls.map_err(|e| Failure::Connect(format!("TLS with {host}:{port}: {e}")))?;
            if origin.http2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(Failure::Connect(format!("{host}:{port} does not speak HTTP/2 (ALPN)")));
            }
            Box::new(tls)
        } else {
            Box::new(tcp)
        })
    }
}

/// Closes kept connections idle past `timeout` (from when a round first
/// saw them idle, so the request path reads no clock), until the client is
/// gone.
fn reap(pools: Weak<[Mutex<Pool>]>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(pools) = pools.upgrade() else { return };
            let now = Instant::now();
            for pool in pools.iter() {
                let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
                for kept in pool.values_mut() {
                    kept.retain_mut(|k| {
                        if k.sender.is_closed() {
                            return false;
                        }
                        if !k.sender.is_ready() {
                            k.idle_since = None; // still reading its response
                            return true;
                        }
                        now.duration_since(*k.idle_since.get_or_insert(now)) < timeout
                    });
                }
                pool.retain(|_, kept| !kept.is_empty());
            }
        }
    });
}

/// Why a request was not answered on a connection: it was never sent
/// (the connection closed as it was taken: another may take it), or the
/// exchange failed.
enum Unsent {
    Again(Box<Request<NodeBody>>),
    Failed(hyper::Error),
}

/// Sends on a connection; gives the connection back with the answer.
async fn send(sender: Sender, req: Request<NodeBody>) -> Result<(Response<Incoming>, Sender), Unsent> {
    let unsent = |mut e: hyper::client::conn::TrySendError<Request<NodeBody>>| match e.take_message() {
        Some(req) => Unsent::Again(Box::new(req)),
        None => Unsent::Failed(e.into_error()),
    };
    match sender {
        Sender::Http1(mut s) => s.try_send_request(req).await.map(|r| (r, Sender::Http1(s))).map_err(unsent),
        Sender::Http2(mut s) => {
            // HTTP/2 takes an absolute URI (its `:scheme` and `:authority`).
            s.try_send_request(req).await.map(|r| (r, Sender::Http2(s))).map_err(unsent)
        }
        // Not hyper's to send on (`checkout` gives ours only to ours): a new one takes it.
        Sender::Own(_) => Err(Unsent::Again(Box::new(req))),
    }
}

/// Takes the origin out of an absolute URI, leaving the path and query
/// for the request line (HTTP/1.1), and names the host if the request does
/// not. HTTP/2 keeps the absolute URI: it becomes `:scheme` and `:authority`.
fn origin_form(req: &mut Request<NodeBody>, opts: &UpstreamOptions) -> Result<Origin, Failure> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    let https = match &parts.scheme {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        other => return Err(Failure::Connect(format!("unsupported scheme {other:?}"))),
    };
    let authority = parts.authority.clone().ok_or_else(|| Failure::Connect("no host in the URL".into()))?;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if opts.http2 {
        // `:authority` says the host; a `Host` header next to it must agree, so it goes.
        req.headers_mut().remove(HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        parts.scheme = None;
        parts.authority = None;
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Failure::Connect(e.to_string()))?;
    if !opts.http2
        && !req.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str().rsplit('@').next().unwrap_or_default())
    {
        req.headers_mut().insert(HOST, host);
    }
    Ok(Origin { https, authority, http2: opts.http2, profile: opts.tls_of.clone() })
}

impl HttpClient for HyperClient {
    type Body = NodeBody;

    fn prefixed(prefix: bytes::Bytes, rest: NodeBody) -> NodeBody {
        NodeBody::prefixed(prefix, rest)
    }
    const CARRIES_GRPC: bool = true;
    const UPGRADES: bool = true;

    fn keep_copy(body: &mut NodeBody, limit: u64) -> Option<Arc<crate::ports::BodyCopy>> {
        body.keep_copy(limit)
    }

    fn grpc_web_request(body: NodeBody) -> NodeBody {
        NodeBody::boxed(super::grpc_web::FromText::new(body))
    }

    fn grpc_web_response(body: NodeBody, text: bool) -> NodeBody {
        NodeBody::boxed(super::grpc_web::ToWeb::new(body, text))
    }

    fn upgrade_slot(&self) -> Result<UpgradeSlot, usize> {
        let max = self.limits.max_upgraded;
        let taken =
            self.upgrades.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(_) => Ok(UpgradeSlot(Arc::new(Held(self.upgrades.clone())))),
            Err(open) => Err(open),
        }
    }

    async fn send(
        &self,
        mut req: Request<NodeBody>,
        opts: &UpstreamOptions,
    ) -> Result<Response<NodeBody>, UpstreamError> {
        req.body_mut().limit(opts.max_request_body);
        let probe = req.body().probe();
        let method = req.method().clone();
        // Pinned where it is made: the timeout holds a pointer, not a copy of
        // the exchange's state.
        let exchange = std::pin::pin!(self.exchange(req, opts));
        let answer = tokio::time::timeout(opts.request_timeout, exchange).await;
        match answer {
            Err(_) => Err(UpstreamError::Timeout(opts.request_timeout)),
            Ok(Ok(resp)) => {
                let resp = resp.map(|body| NodeBody::stream(body, None));
                let both =
                    resp.headers().contains_key(TRANSFER_ENCODING) && resp.headers().contains_key(CONTENT_LENGTH);
                // Boxed: rare, and its state would size every request's future.
                if both { Box::pin(checked_length(&method, resp)).await } else { Ok(resp) }
            }
            Ok(Err(failure)) => Err(match (probe.and_then(|p| p.failure()), failure) {
                (Some(BodyFailure::TooLarge), _) => UpstreamError::BodyTooLarge { limit: opts.max_request_body },
                (Some(BodyFailure::ClientFailed), f) => UpstreamError::ClientBody(f.to_string()),
                (None, Failure::ConnectTimeout) => UpstreamError::ConnectTimeout,
                (None, Failure::Connect(why)) => UpstreamError::Connect(why),
                (None, Failure::Http(e)) => UpstreamError::Protocol(chain(&e)),
                (None, Failure::Origin(why)) => UpstreamError::Protocol(why),
            }),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(why) => f.write_str(why),
            Self::ConnectTimeout => f.write_str("timed out connecting"),
            Self::Http(e) => f.write_str(&chain(e)),
            Self::Origin(why) => f.write_str(why),
        }
    }
}

/// A connection to an origin, counted open until dropped.
pub(super) struct Open(Arc<Connections>);

impl Open {
    pub(super) fn new(connections: Arc<Connections>) -> Self {
        connections.open.fetch_add(1, Ordering::Relaxed);
        connections.opened.fetch_add(1, Ordering::Relaxed);
        Self(connections)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hyper's connection to an origin, counted open.
struct CountedIo<T> {
    io: T,
    _open: Open,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for CountedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The error and its causes on one line, for the log.
fn chain(err: &hyper::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn origin(authority: &str) -> Origin {
        Origin { https: false, authority: authority.parse().unwrap(), http2: false, profile: None }
    }

    /// The pool's key hashes as it compares: an authority's case aside.
    #[test]
    fn an_origin_hashes_as_it_compares() {
        let hasher = foldhash::fast::RandomState::default();
        let long = format!("{}.example:8443", "a".repeat(140));
        for (a, b) in [("Origin.Example:8080", "origin.example:8080"), (long.as_str(), &long.to_uppercase())] {
            assert!(origin(a) == origin(b));
            assert_eq!(hasher.hash_one(origin(a)), hasher.hash_one(origin(b)), "{a}");
        }
        assert!(origin("a.example:80") != origin("b.example:80"));
        assert_ne!(hasher.hash_one(origin("a.example:80")), hasher.hash_one(origin("b.example:80")));
    }
}
