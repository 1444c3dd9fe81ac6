//! Outbound HTTP for the node: hyper's pooled client, keep-alive on, one
//! pool per distinct connect timeout (hyper fixes the timeout per connector;
//! configs have a handful of distinct values, so this stays tiny). HTTPS
//! origins go over rustls, verified against the system's roots (which
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` can replace).

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::NodeBody;
use crate::body::BodyFailure;
use crate::ports::{HttpClient, UpstreamError, UpstreamOptions, checked_length};

type Pool = Client<Counted<HttpsConnector<HttpConnector>>, NodeBody>;

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

/// The node's [`HttpClient`].
pub(crate) struct HyperClient {
    pools: RwLock<Vec<(Duration, Pool)>>,
    tls: rustls::ClientConfig,
    limits: PoolLimits,
    connections: Arc<Connections>,
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
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { pools: RwLock::default(), tls, limits, connections })
    }
}

impl HyperClient {
    fn pool(&self, connect_timeout: Duration) -> Pool {
        let read = self.pools.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = read.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        drop(read);
        let mut write = self.pools.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = write.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let connector = Counted { inner: connector, connections: self.connections.clone() };
        let pool = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.limits.idle_timeout)
            .pool_max_idle_per_host(self.limits.max_idle_per_origin)
            .http1_max_buf_size(MAX_RESPONSE_HEAD)
            .build(connector);
        write.push((connect_timeout, pool.clone()));
        pool
    }
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
        let pool = self.pool(opts.connect_timeout);
        let answer = tokio::time::timeout(opts.request_timeout, pool.request(req)).await;
        match answer {
            Err(_) => Err(UpstreamError::Timeout(opts.request_timeout)),
            Ok(Ok(resp)) => {
                let resp = resp.map(|body| NodeBody::stream(body, None));
                let both =
                    resp.headers().contains_key(TRANSFER_ENCODING) && resp.headers().contains_key(CONTENT_LENGTH);
                if both { checked_length(&method, resp).await } else { Ok(resp) }
            }
            Ok(Err(err)) => Err(match probe.and_then(|p| p.failure()) {
                Some(BodyFailure::TooLarge) => UpstreamError::BodyTooLarge { limit: opts.max_request_body },
                Some(BodyFailure::ClientFailed) => UpstreamError::ClientBody(chain(&err)),
                None if err.is_connect() && timed_out(&err) => UpstreamError::ConnectTimeout,
                None if err.is_connect() => UpstreamError::Connect(chain(&err)),
                None => UpstreamError::Protocol(chain(&err)),
            }),
        }
    }
}

/// A connector whose connections are counted while they live.
#[derive(Clone)]
struct Counted<C> {
    inner: C,
    connections: Arc<Connections>,
}

impl<C> tower_service::Service<http::Uri> for Counted<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = CountedIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let connections = self.connections.clone();
        Box::pin(async move {
            let io = connecting.await?;
            connections.open.fetch_add(1, Ordering::Relaxed);
            connections.opened.fetch_add(1, Ordering::Relaxed);
            Ok(CountedIo { io, connections })
        })
    }
}

/// A connection to an origin, counted open until dropped.
struct CountedIo<T> {
    io: T,
    connections: Arc<Connections>,
}

impl<T> Drop for CountedIo<T> {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Connection> Connection for CountedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
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

/// hyper reports a connect timeout as an `io::Error` of kind `TimedOut` in the chain.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes on one line, for the log.
fn chain(err: &hyper_util::client::legacy::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
