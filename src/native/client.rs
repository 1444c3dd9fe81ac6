//! Outbound HTTP for the node: HTTP/1.1 over hyper's connection API, with
//! our own pool of kept-alive connections per origin (scheme, host and
//! port). A connection goes back to the pool as soon as its response head
//! arrives, and is handed out again once hyper says it is ready for the
//! next request (its previous response read to the end). HTTPS origins go
//! over rustls, verified against the system's roots (which `SSL_CERT_FILE`
//! / `SSL_CERT_DIR` can replace).
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
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::NodeBody;
use crate::body::BodyFailure;
use crate::ports::{HttpClient, UpstreamError, UpstreamOptions, checked_length};

/// Connections to origins: open now, and opened since start (their ratio
/// to tries says how well the pool keeps them).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pub(crate) open: AtomicUsize,
    pub(crate) opened: AtomicU64,
}

/// Idle connections kept to origins (`portcullis serve` flags).
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Per origin (scheme, host and port).
    pub max_idle_per_origin: usize,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
}

/// hyper refuses a response head larger than this (the config's
/// `max_response_header_size`, below it, decides the answer).
const MAX_RESPONSE_HEAD: usize = 1 << 20;

/// Where a connection goes: TLS or not, and the authority.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    authority: Authority,
}

/// A kept connection, and since when the reaper has seen it idle.
struct Kept {
    sender: SendRequest<NodeBody>,
    idle_since: Option<Instant>,
}

type Pool = HashMap<Origin, Vec<Kept>>;

/// The node's [`HttpClient`].
pub(crate) struct HyperClient {
    pool: Arc<Mutex<Pool>>,
    reaper: Once,
    tls: TlsConnector,
    limits: PoolLimits,
    connections: Arc<Connections>,
}

/// Why an exchange failed, before it is told apart from the body's failures.
enum Failure {
    Connect(String),
    ConnectTimeout,
    Http(hyper::Error),
}

impl HyperClient {
    /// Loads the system's root certificates (once, at start-up).
    pub(crate) fn new(limits: PoolLimits, connections: Arc<Connections>) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate the store cannot use is skipped, not fatal.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!(errors = ?found.errors, "no usable root certificates: https origins will fail verification");
        }
        let mut tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            pool: Arc::default(),
            reaper: Once::new(),
            tls: TlsConnector::from(Arc::new(tls)),
            limits,
            connections,
        })
    }

    /// One exchange: on a kept connection if one is ready, else on a new one.
    async fn exchange(
        &self,
        mut req: Request<NodeBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let origin = origin_form(&mut req)?;
        if let Some(mut sender) = self.checkout(&origin) {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.keep(origin, sender);
                    return Ok(resp);
                }
                // Not sent (the connection closed as it was taken): a new one takes it.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Failure::Http(e.into_error())),
                },
            }
        }
        // Boxed: the cold path (connect, TLS, handshake) is most of the state.
        let mut sender = Box::pin(self.connect(&origin, connect_timeout)).await?;
        let resp = sender.send_request(req).await.map_err(Failure::Http)?;
        self.keep(origin, sender);
        Ok(resp)
    }

    /// The most recently kept connection to `origin` that is ready for a request.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<NodeBody>> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = pool.get_mut(origin)?;
        kept.retain(|k| !k.sender.is_closed());
        let at = kept.iter().rposition(|k| k.sender.is_ready())?;
        Some(kept.remove(at).sender)
    }

    /// Keeps a connection whose response head has arrived, if there is room.
    fn keep(&self, origin: Origin, sender: SendRequest<NodeBody>) {
        if self.limits.max_idle_per_origin == 0 {
            return;
        }
        self.reaper.call_once(|| reap(Arc::downgrade(&self.pool), self.limits.idle_timeout));
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = pool.entry(origin).or_default();
        // Past the cap the connection closes once its response is read.
        if kept.len() < self.limits.max_idle_per_origin {
            kept.push(Kept { sender, idle_since: None });
        }
    }

    async fn connect(&self, origin: &Origin, timeout: Duration) -> Result<SendRequest<NodeBody>, Failure> {
        let host = origin.authority.host();
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = origin.authority.port_u16().unwrap_or(if origin.https { 443 } else { 80 });
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((bare, port))).await {
            Err(_) => return Err(Failure::ConnectTimeout),
            Ok(Err(e)) => return Err(Failure::Connect(format!("{host}:{port}: {e}"))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if origin.https {
            let name = ServerName::try_from(bare.to_owned()).map_err(|e| Failure::Connect(format!("{host}: {e}")))?;
            let tls = self.tls.connect(name, tcp).await;
            Box::new(tls.map_err(|e| Failure::Connect(format!("TLS with {host}:{port}: {e}")))?)
        } else {
            Box::new(tcp)
        };
        let io = CountedIo::new(TokioIo::new(stream), self.connections.clone());
        let (sender, conn) =
            http1::Builder::new().max_buf_size(MAX_RESPONSE_HEAD).handshake(io).await.map_err(Failure::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Closes kept connections idle past `timeout` (from when a round first
/// saw them idle, so the request path reads no clock), until the client is
/// gone.
fn reap(pool: Weak<Mutex<Pool>>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let now = Instant::now();
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
    });
}

/// Takes the origin out of an absolute URI, leaving the path and query
/// for the request line, and names the host if the request does not.
fn origin_form(req: &mut Request<NodeBody>) -> Result<Origin, Failure> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    let https = match &parts.scheme {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        other => return Err(Failure::Connect(format!("unsupported scheme {other:?}"))),
    };
    let authority = parts.authority.take().ok_or_else(|| Failure::Connect("no host in the URL".into()))?;
    parts.scheme = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Failure::Connect(e.to_string()))?;
    if !req.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str().rsplit('@').next().unwrap_or_default())
    {
        req.headers_mut().insert(HOST, host);
    }
    Ok(Origin { https, authority })
}

impl HttpClient for HyperClient {
    type Body = NodeBody;

    async fn send(
        &self,
        mut req: Request<NodeBody>,
        opts: &UpstreamOptions,
    ) -> Result<Response<NodeBody>, UpstreamError> {
        req.body_mut().limit(opts.max_request_body);
        let probe = req.body().probe();
        let method = req.method().clone();
        let answer = tokio::time::timeout(opts.request_timeout, self.exchange(req, opts.connect_timeout)).await;
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
        }
    }
}

/// A byte stream to an origin, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// A connection to an origin, counted open until dropped.
struct CountedIo<T> {
    io: T,
    connections: Arc<Connections>,
}

impl<T> CountedIo<T> {
    fn new(io: T, connections: Arc<Connections>) -> Self {
        connections.open.fetch_add(1, Ordering::Relaxed);
        connections.opened.fetch_add(1, Ordering::Relaxed);
        Self { io, connections }
    }
}

impl<T> Drop for CountedIo<T> {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
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
