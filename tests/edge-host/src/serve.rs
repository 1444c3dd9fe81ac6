//! Serving a component over HTTP the way Spin 4 does: WASI 0.3 instances are
//! reused (up to 128 requests, 16 at once), WASI 0.2 instances serve one
//! request each; Spin's `spin-*` headers are appended to every request and
//! the URI carries the scheme and the `Host` authority.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use crate::cache;
use crate::host::{self, Host, Platform};

pub struct ServeOptions {
    pub component: PathBuf,
    pub listen: SocketAddr,
    pub platform: Platform,
    /// Requests one instance may serve (default: 128 for WASI 0.3, 1 for 0.2).
    pub reuse: Option<usize>,
    /// Requests one instance may serve at once (default: 16 for WASI 0.3).
    pub concurrency: Option<usize>,
    /// How long an idle reusable instance is kept.
    pub idle_timeout: Duration,
    /// Name the component's functions for `perf` (see [`host::engine`]).
    pub perf_map: bool,
    /// Where compiled components are kept between starts (none: compile each time).
    pub cache_dir: Option<PathBuf>,
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let engine = host::engine(opts.perf_map)?;
    let started = Instant::now();
    let (component, loaded) = cache::load(&engine, &opts.component, opts.cache_dir.as_deref())?;
    let linker = host::linker(&engine)?;
    let instance_pre = linker.instantiate_pre(&component)?;
    let (pre, flavour) = match wasmtime_wasi_http::p3::bindings::ServicePre::new(instance_pre.clone()) {
        Ok(p3) => (ProxyPre::P3(p3), "wasi-0.3"),
        Err(_) => (ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre)?), "wasi-0.2"),
    };
    let (reuse, concurrency) = match pre {
        ProxyPre::P3(_) => (opts.reuse.unwrap_or(128), opts.concurrency.unwrap_or(16)),
        ProxyPre::P2(_) => (1, 1),
    };
    let handler = ProxyHandler::new(Handler {
        engine,
        pre,
        platform: Arc::new(opts.platform),
        reuse,
        concurrency,
        idle_timeout: opts.idle_timeout,
        instances: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    // The first line on stdout tells a test where to connect.
    println!(
        "{{\"listening\":\"{}\",\"flavour\":\"{flavour}\",\"reuse\":{reuse},\"concurrency\":{concurrency},\"component\":\"{}\",\"load_ms\":{}}}",
        listener.local_addr()?,
        loaded.as_str(),
        started.elapsed().as_millis()
    );
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(handler.clone(), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                eprintln!("edge-host: connection from {peer}: {e}");
            }
        });
    }
}

async fn answer(
    handler: ProxyHandler<Handler>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<WasiBody>, String> {
    let req = as_spin_sees_it(req, peer)?;
    Ok(match handler.handle((), req).await {
        Ok(resp) => resp,
        Err(e) => {
            // Spin answers a trapped or failed component with a bare 500.
            eprintln!("edge-host: component failed: {e:?}");
            let body = http_body_util::Full::new(Bytes::from_static(b"Internal Server Error"))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut resp = hyper::Response::new(body);
            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    })
}

/// Spin's request preparation: absolute URI from the (first) `Host` header
/// or the target's authority — with neither, or two that differ, Spin fails
/// the request and the connection closes without an answer — the `spin-*`
/// headers appended after any a client sent (Spin does not overwrite them),
/// no `Connection`.
fn as_spin_sees_it(req: hyper::Request<Incoming>, peer: SocketAddr) -> Result<http::Request<WasiBody>, String> {
    let (mut parts, body) = req.into_parts();
    let header_host = parts.headers.get(header::HOST).map(|h| h.to_str().unwrap_or_default().to_string());
    let host = match (header_host, parts.uri.authority().map(|a| a.to_string())) {
        (None, None) => return Err("no 'Host' header present in request".into()),
        (Some(h), Some(a)) if h != a => return Err("authority in 'Host' header does not match authority in URI".into()),
        (Some(h), _) | (None, Some(h)) => h,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if let Ok(uri) = format!("http://{host}{path}").parse() {
        parts.uri = uri;
    }
    let h = &mut parts.headers;
    h.remove(header::CONNECTION);
    let spin = [
        ("spin-full-url", format!("http://{host}{path}")),
        ("spin-path-info", parts.uri.path().to_string()),
        ("spin-matched-route", "/...".to_string()),
        ("spin-raw-component-route", "/...".to_string()),
        ("spin-component-route", String::new()),
        ("spin-base-path", "/".to_string()),
        ("spin-client-addr", peer.to_string()),
    ];
    for (name, value) in spin {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    Ok(http::Request::from_parts(parts, body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
}

struct Handler {
    engine: Engine,
    pre: ProxyPre<Host>,
    platform: Arc<Platform>,
    reuse: usize,
    concurrency: usize,
    idle_timeout: Duration,
    instances: AtomicU64,
}

impl HandlerState for Handler {
    type StoreData = Host;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, Expiration, Worker>> {
        self.instances.fetch_add(1, Ordering::Relaxed);
        let wasi = WasiCtxBuilder::new().inherit_stdout().inherit_stderr().build();
        let mut store = Store::new(&self.engine, Host::new(wasi, self.platform.clone()));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: <Host as WasiHttpView>::http,
            expiration: Expiration {
                idle_timeout: self.idle_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            },
            state: Worker { reuse: self.reuse, concurrency: self.concurrency },
        })
    }
}

/// Idle instances go after `idle_timeout`; busy ones never time out (Spin's default).
struct Expiration {
    idle_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, start: Instant) -> Poll<()> {
        let this = self.get_mut();
        if !matches!(status, WorkerStatus::Idle) {
            return Poll::Pending;
        }
        let deadline = tokio::time::Instant::from_std(start + this.idle_timeout);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

struct Worker {
    reuse: usize,
    concurrency: usize,
}

impl WorkerState for Worker {
    type StoreData = Host;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent >= self.concurrency {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Host>,
        _data: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Host>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            eprintln!("edge-host: instance ended with an error: {e:?}");
        }
        drop(store);
    }
}
