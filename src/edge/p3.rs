//! WASI 0.3 flavour (spin-sdk 7). Spin reuses an instance for many
//! requests (some at once), so the compiled config and the key-value handle
//! are made once per instance.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wstore};
use spin_sdk::http::Request as SpinRequest;
use spin_sdk::key_value::Store;
use spin_sdk::wasip3::http::types::{ErrorCode, RequestOptions};
use spin_sdk::wasip3::http_compat::{IncomingRequestBody, IncomingResponseBody, RequestOptionsExtension};

use super::{
    EdgePorts, buffer_unsized, config, downstream, emit, kv_error, misconfigured, upstream_error, variable_names,
};
use crate::body::{BodyProbe, GatewayBody, Logged};
use crate::config::Variables;
use crate::pipeline::log::AccessLog;
use crate::pipeline::{self, Gateway, rate_limit};
use crate::ports::enveloped::{Enveloped, RawStore, Swap};
use crate::ports::{HttpClient, KvError, UpstreamError, UpstreamOptions, checked_length};
use crate::system_clock::{Sleep, SystemClock};

/// A body streamed from the host: a request's or a response's.
pub(crate) enum Stream {
    Request(IncomingRequestBody),
    Response(IncomingResponseBody),
}

impl Body for Stream {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        match self.get_mut() {
            Stream::Request(b) => Pin::new(b).poll_frame(cx),
            Stream::Response(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Stream::Request(b) => b.is_end_stream(),
            Stream::Response(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Stream::Request(b) => b.size_hint(),
            Stream::Response(b) => b.size_hint(),
        }
    }
}

pub(crate) type EdgeBody = GatewayBody<Stream>;

static GATEWAY: OnceLock<Result<Gateway, String>> = OnceLock::new();

/// The config and its caches, made on the instance's first request and
/// kept for the instance's life; with the microseconds compiling took, for
/// the request that did it.
async fn gateway() -> (&'static Result<Gateway, String>, Option<u64>) {
    if let Some(gateway) = GATEWAY.get() {
        return (gateway, None);
    }
    let mut vars = Variables::new();
    for name in variable_names() {
        if let Ok(value) = spin_sdk::variables::get(name).await {
            vars.insert(name, value);
        }
    }
    let mut took = None;
    let gateway = GATEWAY.get_or_init(|| {
        config(&vars).map(|(config, us)| {
            took = us;
            Gateway::new(config)
        })
    });
    (gateway, took)
}

/// The component's entry point: one request, start to finish.
#[spin_sdk::http_service]
async fn handle(req: SpinRequest) -> Response<Logged<EdgeBody, fn(AccessLog)>> {
    let (mut parts, body) = req.into_parts();
    let downstream = downstream(&mut parts.headers, parts.uri.scheme_str());
    let (gateway, config_us) = gateway().await;
    let gateway = match gateway {
        Ok(gateway) => gateway,
        Err(reason) => {
            return misconfigured::<EdgeBody>(reason, &parts.headers).map(Logged::unlogged);
        }
    };
    let probe = Arc::new(BodyProbe::default());
    let req = Request::from_parts(parts, EdgeBody::stream(Stream::Request(body), Some(probe.clone())));
    let ports = ports();
    let mut exchange = pipeline::handle(gateway, &ports, req, downstream).await;
    // After the answer, while the instance holds leased ranges: those of
    // keys gone idle here go back before Spin drops the instance.
    if gateway.leases.to_watch() {
        spin_sdk::wasip3::spawn(async move { rate_limit::watch_leases(gateway, &ports).await });
    }
    exchange.log.config_us = config_us;
    let emit = gateway.config.gateway.access_log.then_some(emit as fn(AccessLog));
    exchange.response.map(|body| Logged::new(body, exchange.log, probe, emit))
}

fn ports() -> EdgePorts<SpinStore, SpinHttp, SpinSleep> {
    EdgePorts { http: SpinHttp, kv: Enveloped { store: SpinStore, clock: SystemClock(SpinSleep), pools: false } }
}

/// Waiting in a WASI 0.3 instance: `wasi:clocks` `wait-for`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpinSleep;

impl Sleep for SpinSleep {
    async fn sleep(&self, duration: Duration) {
        spin_sdk::time::sleep(duration).await;
    }
}

/// Outbound HTTP through `wasi:http/client@0.3.0`.
pub(crate) struct SpinHttp;

impl HttpClient for SpinHttp {
    type Body = EdgeBody;

    fn prefixed(prefix: Bytes, rest: EdgeBody) -> EdgeBody {
        EdgeBody::prefixed(prefix, rest)
    }

    async fn prepare(&self, req: Request<EdgeBody>, limit: u64) -> Result<Request<EdgeBody>, UpstreamError> {
        buffer_unsized(req, limit).await
    }

    async fn send(
        &self,
        mut req: Request<EdgeBody>,
        opts: &UpstreamOptions,
    ) -> Result<Response<EdgeBody>, UpstreamError> {
        // The body was read first where it had to be (`prepare`).
        req.headers_mut().remove(header::HOST);
        let options = RequestOptions::new();
        // Durations are nanoseconds; a host that cannot honour one still sends.
        let _ = options.set_connect_timeout(Some(nanos(opts.connect_timeout)));
        let _ = options.set_first_byte_timeout(Some(nanos(opts.request_timeout)));
        req.extensions_mut().insert(RequestOptionsExtension(options));
        let method = req.method().clone();
        match spin_sdk::http::send(req).await {
            Ok(resp) => checked_length(&method, resp.map(|b| EdgeBody::stream(Stream::Response(b), None))).await,
            Err(code) => Err(upstream_error!(code, ErrorCode, opts.request_timeout)),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Spin key-value (`spin:key-value@3.0.0`), with compare-and-swap through
/// `wasi:keyvalue/atomics`; both opened once per instance. The core seals
/// values in envelopes ([`Enveloped`]): Spin's stores expire nothing.
pub(crate) struct SpinStore;

/// The default store and bucket, opened once per instance.
static STORE: OnceLock<Store> = OnceLock::new();
static BUCKET: OnceLock<wstore::Bucket> = OnceLock::new();

async fn store() -> Result<&'static Store, KvError> {
    if let Some(store) = STORE.get() {
        return Ok(store);
    }
    let opened = Store::open_default().await.map_err(kv_error)?;
    Ok(STORE.get_or_init(|| opened))
}

fn bucket() -> Result<&'static wstore::Bucket, KvError> {
    if let Some(bucket) = BUCKET.get() {
        return Ok(bucket);
    }
    let opened = wstore::open("default").map_err(kv_error)?;
    Ok(BUCKET.get_or_init(|| opened))
}

impl RawStore for SpinStore {
    type Watch = atomics::Cas;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        store().await?.get(key).await.map_err(kv_error)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        store().await?.set(key, value).await.map_err(kv_error)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        store().await?.delete(key).await.map_err(kv_error)
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        store().await?.get_keys().await.collect().await.map_err(kv_error)
    }

    async fn watch(&self, key: &str) -> Result<(atomics::Cas, Option<Vec<u8>>), KvError> {
        let cas = atomics::Cas::new(bucket()?, key).map_err(kv_error)?;
        let current = cas.current().map_err(kv_error)?;
        Ok((cas, current))
    }

    async fn swap(&self, cas: atomics::Cas, value: &[u8]) -> Result<Swap, KvError> {
        match atomics::swap(cas, value) {
            Ok(()) => Ok(Swap::Done),
            Err(atomics::CasError::CasFailed(fresh)) => Ok(Swap::Refused { now: fresh.current().map_err(kv_error)? }),
            Err(atomics::CasError::StoreError(e)) => Err(kv_error(e)),
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(bucket()?, key, delta).map_err(kv_error)
    }
}
