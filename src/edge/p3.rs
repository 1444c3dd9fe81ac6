//! WASI 0.3 flavour (spin-sdk 7). Spin reuses an instance for many
//! requests (some at once), so the compiled config and the key-value handle
//! are made once per instance.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
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

use super::registry::{self, FOLLOW_VARIABLE, TOKEN_VARIABLE};
use super::{
    EdgePorts, Emitter, buffer_unsized, config, downstream, emit, kv_error, misconfigured, upstream_error,
    variable_names,
};
use crate::body::{BodyProbe, GatewayBody, Logged};
use crate::config::{Config, Variables};
use crate::pipeline::{self, Gateway, rate_limit};
use crate::ports::enveloped::{Enveloped, RawStore, Swap};
use crate::ports::{HttpClient, KvError, UpstreamError, UpstreamOptions, checked_length};
use crate::system_clock::{Sleep, SystemClock, monotonic};

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

/// What an instance runs: its config, and which published version it is
/// (`None`: the embedded one), as of the last look at the registry.
struct Running {
    gateway: Result<Arc<Gateway>, String>,
    pointer: Option<String>,
    /// When the registry was last looked at (monotonic).
    looked: Duration,
    follow: bool,
}

/// One per instance (its requests take turns on one thread).
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// How often an instance that follows the registry looks at it.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a consumer read from the store is believed (a revoked key
/// passes in an instance for at most this long).
const CONSUMER_KEPT: Duration = Duration::from_secs(1);
const CONSUMERS_HELD: usize = 10_000;

fn running() -> std::sync::MutexGuard<'static, Option<Running>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The values of the Spin variables `names`, those Spin has.
async fn variables(names: &[String]) -> Variables {
    let mut vars = Variables::new();
    for name in names {
        if let Ok(value) = spin_sdk::variables::get(name).await {
            vars.insert(name, value);
        }
    }
    vars
}

/// The embedded config, compiled with the deployment's variables.
async fn embedded() -> Result<(Config, Option<u64>), String> {
    config(&variables(&variable_names().map(str::to_string).collect::<Vec<_>>()).await)
}

/// A gateway for `config`, reading the registry's consumers from the store
/// when following it.
fn made(config: Config, follow: bool, from: Option<&Gateway>) -> Arc<Gateway> {
    let mut gateway = match from {
        Some(old) => old.reloaded(config),
        None => Gateway::new(config),
    };
    if follow {
        gateway.caches.read_consumers_from_store(CONSUMER_KEPT, CONSUMERS_HELD);
    }
    Arc::new(gateway)
}

/// The registry's current version, when it is not `pointer`: its pointer
/// (`None`: nothing published, the embedded config) and its config
/// compiled here (or why not), with the microseconds that took.
type Changed = (Option<String>, Result<Config, String>, Option<u64>);

/// Looks at the registry (`None`: it is where it was, or unreadable, which
/// is reported).
async fn look(ports: &SpinPorts, pointer: Option<&str>) -> Option<Changed> {
    let current = match registry::pointer(ports).await {
        Ok(p) if p.as_deref() == pointer => return None,
        Ok(p) => p,
        Err(e) => {
            eprintln!("portcullis: the registry could not be read ({e}); the running config stays");
            return None;
        }
    };
    let start = monotonic();
    let compiled = match current {
        None => return Some((None, embedded().await.map(|(c, _)| c), None)),
        Some(_) => match registry::published(ports).await {
            Ok(Some(record)) => record.compile(&variables(&record.variable_names()).await).map_err(|e| e.to_string()),
            Ok(None) => Err("the registry's current version has no record".to_string()),
            Err(e) => Err(e),
        },
    };
    let us = u64::try_from((monotonic() - start).as_micros()).unwrap_or(u64::MAX);
    if let Err(e) = &compiled {
        // Reported once: the pointer is remembered, and the next look finds it again.
        let version = current.as_deref().unwrap_or("-");
        eprintln!("portcullis: registry version {version} does not compile here; it is not served:\n{e}");
    }
    Some((current, compiled, Some(us)))
}

/// The config and its caches: made on the instance's first request (from
/// the registry's current version when following it, else or failing that
/// the embedded config), and, while following, remade when a look (at most
/// once a second) finds another version; with the microseconds compiling
/// took, for the request that did it.
async fn gateway(ports: &SpinPorts) -> (Result<Arc<Gateway>, String>, Option<u64>) {
    let now = monotonic();
    let due = {
        let mut held = running();
        match held.as_mut() {
            None => None,
            Some(r) if r.follow && now.saturating_sub(r.looked) >= LOOK_EVERY => {
                // One request looks; the others go on meanwhile.
                r.looked = now;
                Some(r.pointer.clone())
            }
            Some(r) => return (r.gateway.clone(), None),
        }
    };
    let Some(pointer) = due else { return first(ports, now).await };
    let Some((pointer, compiled, took)) = look(ports, pointer.as_deref()).await else {
        return (running().as_ref().map_or_else(|| Err("no config".into()), |r| r.gateway.clone()), None);
    };
    let mut held = running();
    let Some(r) = held.as_mut() else { return (Err("no config".into()), None) };
    r.pointer = pointer;
    let Ok(config) = compiled else { return (r.gateway.clone(), None) };
    let old = r.gateway.as_ref().ok().cloned();
    r.gateway = Ok(made(config, r.follow, old.as_deref()));
    let gateway = r.gateway.clone();
    drop(held);
    // The old config's leased ranges go back (a node does the same on reload).
    if let Some(old) = old.filter(|g| g.leases.to_watch()) {
        spin_sdk::wasip3::spawn(async move {
            rate_limit::give_back(&old, &self::ports(), true).await;
        });
    }
    (gateway, took)
}

/// The instance's first config.
async fn first(ports: &SpinPorts, now: Duration) -> (Result<Arc<Gateway>, String>, Option<u64>) {
    let follow = registry::follows(spin_sdk::variables::get(FOLLOW_VARIABLE).await.ok().as_deref(), true);
    let (mut pointer, mut compiled) = (None, None);
    if follow && let Some((p, config, took)) = look(ports, None).await {
        pointer = p;
        compiled = config.ok().map(|c| (c, took));
    }
    let result = match compiled {
        Some((config, took)) => Ok((config, took)),
        None => embedded().await,
    };
    let mut held = running();
    if let Some(r) = held.as_ref() {
        // Another request of this instance got there first.
        return (r.gateway.clone(), None);
    }
    let took = result.as_ref().ok().and_then(|(_, took)| *took);
    let gateway = result.map(|(config, _)| made(config, follow, None));
    *held = Some(Running { gateway: gateway.clone(), pointer, looked: now, follow });
    (gateway, took)
}

/// The component's entry point: one request, start to finish.
#[spin_sdk::http_service]
async fn handle(req: SpinRequest) -> Response<Logged<EdgeBody, Emitter>> {
    let (mut parts, body) = req.into_parts();
    let downstream = downstream(&mut parts.headers, parts.uri.scheme_str());
    let ports = ports();
    let (gateway, config_us) = gateway(&ports).await;
    if registry::is_admin(parts.uri.path())
        && let Ok(token) = spin_sdk::variables::get(TOKEN_VARIABLE).await
    {
        let running = gateway.as_ref().ok().map(|g| &g.config);
        let req = Request::from_parts(parts, Stream::Request(body));
        let resp = registry::admin(&ports, &token, running, async |names: &[String]| variables(names).await, req).await;
        return resp.map(|b| Logged::unlogged(EdgeBody::from(b)));
    }
    let gateway = match gateway {
        Ok(gateway) => gateway,
        Err(reason) => {
            return misconfigured::<EdgeBody>(&reason, &parts.headers).map(Logged::unlogged);
        }
    };
    let probe = Arc::new(BodyProbe::default());
    let req = Request::from_parts(parts, EdgeBody::stream(Stream::Request(body), Some(probe.clone())));
    let mut exchange = pipeline::handle(&gateway, &ports, req, downstream).await;
    // After the answer, while the instance holds leased ranges: those of
    // keys gone idle here go back before Spin drops the instance.
    if gateway.leases.to_watch() {
        let gateway = gateway.clone();
        spin_sdk::wasip3::spawn(async move { rate_limit::watch_leases(&gateway, &ports).await });
    }
    exchange.log.config_us = config_us;
    let emit = gateway.config.gateway.access_log.then_some(emit as Emitter);
    exchange.response.map(|body| Logged::new(body, exchange.log, probe, emit))
}

type SpinPorts = EdgePorts<SpinStore, SpinHttp, SpinSleep>;

fn ports() -> SpinPorts {
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

    async fn prepare(&self, req: &mut Request<EdgeBody>, limit: u64) -> Result<(), UpstreamError> {
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
