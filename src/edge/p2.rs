//! WASI 0.2 flavour (spin-sdk 5.2). Every request gets a fresh instance:
//! its config was compiled at build time (`preinit.rs`), or is compiled per
//! request when Spin's variables differ from the build's, and anything
//! worth keeping between requests must live in the key-value store.

use std::cell::OnceCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode, FutureIncomingResponse, RequestOptions};
use spin_sdk::wit::wasi::keyvalue::{atomics, store as wstore};

use super::registry::{self, FOLLOW_VARIABLE, TOKEN_VARIABLE};
use super::{
    CONFIG_TEXT, EdgePorts, Emitter, buffer_unsized, config, downstream, emit, kv_error, misconfigured, refused,
    upstream_error, variable_names,
};
use crate::body::{BodyProbe, GatewayBody, Logged};
use crate::config::{Config, Variables};
use crate::pipeline::{self, Gateway};
use crate::ports::enveloped::{Enveloped, RawStore, Swap};
use crate::ports::{HttpClient, KvError, UpstreamError, UpstreamOptions, checked_length};
use crate::system_clock::{Sleep, SystemClock, monotonic};

type Chunks = Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>>>>;

/// A body streamed from the host. A response's stream must not outlive the
/// response resource it came from, so the stream is declared (and dropped) first.
pub(crate) struct Stream {
    chunks: Chunks,
    _response: Option<IncomingResponse>,
}

#[derive(Debug, thiserror::Error)]
#[error("body stream failed: {0}")]
pub(crate) struct StreamFailed(String);

impl Body for Stream {
    type Data = Bytes;
    type Error = StreamFailed;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamFailed>>> {
        self.chunks.as_mut().poll_next(cx).map(|chunk| match chunk {
            Some(Ok(bytes)) => Some(Ok(Frame::data(Bytes::from(bytes)))),
            Some(Err(e)) => Some(Err(StreamFailed(e))),
            None => None,
        })
    }
}

fn chunks(stream: impl futures::Stream<Item = Result<Vec<u8>, impl std::fmt::Debug>> + 'static) -> Chunks {
    Box::pin(stream.map(|r| r.map_err(|e| format!("{e:?}"))))
}

pub(crate) type EdgeBody = GatewayBody<Stream>;

/// The component's entry point: one request, start to finish.
#[spin_sdk::http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let (mut parts, body) = match into_http(incoming) {
        Ok(request) => request,
        Err((reason, headers)) => {
            let resp = refused::<EdgeBody>(reason, &headers);
            return respond(out, resp.map(Logged::unlogged)).await;
        }
    };
    let scheme = parts.uri.scheme_str().map(str::to_string);
    let downstream = downstream(&mut parts.headers, scheme.as_deref());
    let ports = EdgePorts {
        http: SpinHttp,
        kv: Enveloped { store: SpinStore::default(), clock: SystemClock(SpinSleep), pools: true },
    };
    let follow = registry::follows(spin_sdk::variables::get(FOLLOW_VARIABLE).ok().as_deref(), false);
    let (gateway, config_us) = match current_config(&ports, follow).await {
        Ok((config, took)) => {
            let mut gateway = Gateway::new(config);
            if follow {
                // Each request reads the consumer it is for: nothing to keep.
                gateway.caches.read_consumers_from_store(Duration::ZERO, 1);
            }
            (Ok(gateway), took)
        }
        Err(reason) => (Err(reason), None),
    };
    if registry::is_admin(parts.uri.path())
        && let Ok(token) = spin_sdk::variables::get(TOKEN_VARIABLE)
    {
        let running = gateway.as_ref().ok().map(|g| &g.config);
        let req = Request::from_parts(parts, body);
        let resp = registry::admin(
            &ports,
            &token,
            running,
            async |names: &[String]| variables(names.iter().map(String::as_str)),
            req,
        )
        .await;
        return respond(out, resp.map(|b| Logged::unlogged(EdgeBody::from(b)))).await;
    }
    let gateway = match gateway {
        Ok(gateway) => gateway,
        Err(reason) => {
            let resp = misconfigured::<EdgeBody>(&reason, &parts.headers);
            return respond(out, resp.map(Logged::unlogged)).await;
        }
    };
    let probe = Arc::new(BodyProbe::default());
    let req = Request::from_parts(parts, EdgeBody::stream(body, Some(probe.clone())));
    let mut exchange = pipeline::handle(&gateway, &ports, req, downstream).await;
    exchange.log.config_us = config_us;
    let emit = gateway.config.gateway.access_log.then_some(emit as Emitter);
    respond(out, exchange.response.map(|body| Logged::new(body, exchange.log, probe, emit))).await;
    // The instance and its memory are discarded after this one request:
    // freeing the compiled config piece by piece would be work for nothing
    // (its share of the host's CPU: `benches/README.md`).
    std::mem::forget(gateway);
}

/// The values of the Spin variables `names`, those Spin has.
fn variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Variables {
    let mut vars = Variables::new();
    for name in names {
        if let Ok(value) = spin_sdk::variables::get(name) {
            vars.insert(name, value);
        }
    }
    vars
}

/// The config for this request: with the deployment following the
/// registry, the version published there (one store read), unless it is
/// the embedded one; else, or if it does not compile here, the embedded
/// config (pre-initialised, or compiled now).
async fn current_config(ports: &SpinPorts, follow: bool) -> Result<(Config, Option<u64>), String> {
    if follow {
        match registry::published(ports).await {
            Ok(Some(record)) if record.text != CONFIG_TEXT => {
                let start = monotonic();
                let names = record.variable_names();
                match record.compile(&variables(names.iter().map(String::as_str))) {
                    Ok(config) => {
                        return Ok((
                            config,
                            Some(u64::try_from((monotonic() - start).as_micros()).unwrap_or(u64::MAX)),
                        ));
                    }
                    Err(e) => eprintln!(
                        "portcullis: registry version {} does not compile here; serving the embedded config:\n{e}",
                        record.version
                    ),
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("portcullis: the registry could not be read ({e}); serving the embedded config"),
        }
    }
    config(&variables(variable_names()))
}

type SpinPorts = EdgePorts<SpinStore, SpinHttp, SpinSleep>;

/// The `wasi:http` request as `http` types, its body still streaming; or
/// why it cannot be one (a method or a path the `http` crate refuses, which
/// Spin's server would not normally let through), with its headers.
fn into_http(incoming: IncomingRequest) -> Result<(http::request::Parts, Stream), (&'static str, HeaderMap)> {
    let headers = http_headers(incoming.headers().entries());
    let Some(method) = method_from_wasi(&incoming.method()) else {
        return Err(("the request method is not a token", headers));
    };
    let scheme = match incoming.scheme() {
        Some(Scheme::Https) => "https",
        _ => "http",
    };
    let authority = incoming.authority().unwrap_or_default();
    let path = incoming.path_with_query().unwrap_or_else(|| "/".into());
    // An authority the http crate rejects is left out (the `Host` header
    // still names the host); a path it rejects refuses the request.
    let uri = match format!("{scheme}://{authority}{path}").parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(_) => match path.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(_) => return Err(("the request target is not a valid path", headers)),
        },
    };
    let (mut parts, ()) = Request::builder().method(method).uri(uri).body(()).unwrap_or_default().into_parts();
    parts.headers = headers;
    let body = Stream { chunks: chunks(incoming.into_body_stream()), _response: None };
    Ok((parts, body))
}

/// `wasi:http` fields as a header map (fields `http` refuses are dropped).
fn http_headers(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in entries {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
            headers.append(n, v);
        }
    }
    headers
}

/// Copies a body into a `wasi:http` sink until either ends.
async fn pump<B>(mut body: B, mut sink: impl futures::Sink<Vec<u8>> + Unpin)
where
    B: Body<Data = Bytes> + Unpin,
{
    while let Some(frame) = body.frame().await {
        let Ok(Some(data)) = frame.map(|f| f.into_data().ok()) else {
            break;
        };
        if sink.send(data.to_vec()).await.is_err() {
            break;
        }
    }
}

/// Sends the head, then streams the body; the body logs itself when dropped.
/// A small body of known size goes into the body stream before the head is
/// handed over, so Spin writes them together: written after it, Spin sends
/// it on its own, and on a kept-alive connection Nagle holds it until the
/// client's delayed ACK (+40 ms a request, measured on cache hits).
async fn respond(out: ResponseOutparam, resp: Response<Logged<EdgeBody, Emitter>>) {
    let (parts, mut body) = resp.into_parts();
    let outgoing = OutgoingResponse::new(fields(&parts.headers));
    let _ = outgoing.set_status_code(parts.status.as_u16());
    let mut sink = outgoing.take_body();
    if body.size_hint().exact().is_some_and(|n| (1..=SENT_WITH_HEAD).contains(&n))
        && let Some(Ok(frame)) = body.frame().await
        && let Ok(data) = frame.into_data()
    {
        // A failed write fails the pump below too.
        let _ = sink.send(data.to_vec()).await;
    }
    out.set(outgoing);
    pump(body, sink).await;
}

/// The largest body written before its head (what Spin's body pipe takes at once).
const SENT_WITH_HEAD: u64 = 16 << 10;

/// Header fields for `wasi:http`; the pipeline already dropped the fields it forbids.
fn fields(headers: &HeaderMap) -> Fields {
    let list: Vec<(String, Vec<u8>)> =
        headers.iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
    Fields::from_list(&list).unwrap_or_else(|_| Fields::new())
}

/// The method, or `None` for one that is not an HTTP token.
fn method_from_wasi(m: &Method) -> Option<http::Method> {
    Some(match m {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(s) => return http::Method::from_bytes(s.as_bytes()).ok(),
    })
}

fn method_to_wasi(m: &http::Method) -> Method {
    match *m {
        http::Method::GET => Method::Get,
        http::Method::HEAD => Method::Head,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::CONNECT => Method::Connect,
        http::Method::OPTIONS => Method::Options,
        http::Method::TRACE => Method::Trace,
        http::Method::PATCH => Method::Patch,
        ref other => Method::Other(other.to_string()),
    }
}

/// Waiting in a WASI 0.2 instance: a `wasi:clocks` pollable on
/// spin-executor's poll loop.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpinSleep;

impl Sleep for SpinSleep {
    async fn sleep(&self, duration: Duration) {
        use wasi::clocks::monotonic_clock;
        let deadline = monotonic_clock::now().saturating_add(nanos(duration));
        let mut _token: Option<spin_executor::CancelOnDropToken> = None;
        std::future::poll_fn(move |cx| {
            if monotonic_clock::now() >= deadline {
                return Poll::Ready(());
            }
            let pollable = monotonic_clock::subscribe_instant(deadline);
            _token = Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
            Poll::Pending
        })
        .await;
    }
}

/// Outbound HTTP through `wasi:http/outgoing-handler@0.2.0`, called
/// directly because the SDK's `send` cannot pass timeouts.
pub(crate) struct SpinHttp;

impl HttpClient for SpinHttp {
    type Body = EdgeBody;

    fn prefixed(prefix: Bytes, rest: EdgeBody) -> EdgeBody {
        EdgeBody::prefixed(prefix, rest)
    }

    async fn prepare(&self, req: &mut Request<EdgeBody>, limit: u64) -> Result<(), UpstreamError> {
        buffer_unsized(req, limit).await
    }

    async fn send(&self, req: Request<EdgeBody>, opts: &UpstreamOptions) -> Result<Response<EdgeBody>, UpstreamError> {
        // The body was read first where it had to be (`prepare`).
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(header::HOST);
        let outgoing = OutgoingRequest::new(fields(&parts.headers));
        let scheme = if parts.uri.scheme_str() == Some("https") { Scheme::Https } else { Scheme::Http };
        let set = outgoing.set_method(&method_to_wasi(&parts.method)).is_ok()
            && outgoing.set_scheme(Some(&scheme)).is_ok()
            && outgoing.set_authority(parts.uri.authority().map(|a| a.as_str())).is_ok()
            && outgoing.set_path_with_query(parts.uri.path_and_query().map(|p| p.as_str())).is_ok();
        if !set {
            return Err(UpstreamError::Protocol(format!("wasi:http refused the request line for {}", parts.uri)));
        }
        let sink = outgoing.take_body();
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(nanos(opts.connect_timeout)));
        let _ = options.set_first_byte_timeout(Some(nanos(opts.request_timeout)));
        let pending = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|code| upstream_error!(code, ErrorCode, opts.request_timeout))?;
        let (answer, ()) = futures::join!(incoming_response(pending), pump(body, sink));
        let resp = answer.map_err(|code| upstream_error!(code, ErrorCode, opts.request_timeout))?;
        let headers = http_headers(resp.headers().entries());
        let status = http::StatusCode::from_u16(resp.status())
            .map_err(|_| UpstreamError::Protocol(format!("status {}", resp.status())))?;
        let body = Stream { chunks: chunks(resp.take_body_stream()), _response: Some(resp) };
        let mut response = Response::new(EdgeBody::stream(body, None));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        checked_length(&parts.method, response).await
    }
}

/// Waits for the response head on spin-executor's poll loop.
async fn incoming_response(pending: FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    let mut _token: Option<spin_executor::CancelOnDropToken> = None;
    std::future::poll_fn(move |cx| match pending.get() {
        Some(Ok(result)) => Poll::Ready(result),
        Some(Err(())) => Poll::Ready(Err(ErrorCode::InternalError(Some("response already taken".into())))),
        None => {
            _token = Some(spin_executor::push_waker_and_get_token(pending.subscribe(), cx.waker().clone()).into());
            Poll::Pending
        }
    })
    .await
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Spin key-value (`fermyon:spin/key-value@2.0.0`), with compare-and-swap
/// through `wasi:keyvalue/atomics`; each opened at most once per request
/// (an instance's life). The core seals values in envelopes
/// ([`Enveloped`]): Spin's stores expire nothing.
#[derive(Default)]
pub(crate) struct SpinStore {
    store: OnceCell<Store>,
    bucket: OnceCell<wstore::Bucket>,
}

impl SpinStore {
    fn store(&self) -> Result<&Store, KvError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let opened = Store::open_default().map_err(kv_error)?;
        Ok(self.store.get_or_init(|| opened))
    }

    fn bucket(&self) -> Result<&wstore::Bucket, KvError> {
        if let Some(bucket) = self.bucket.get() {
            return Ok(bucket);
        }
        let opened = wstore::open("default").map_err(kv_error)?;
        Ok(self.bucket.get_or_init(|| opened))
    }
}

impl RawStore for SpinStore {
    type Watch = atomics::Cas;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store()?.get(key).map_err(kv_error)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.store()?.set(key, value).map_err(kv_error)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store()?.delete(key).map_err(kv_error)
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.store()?.get_keys().map_err(kv_error)
    }

    async fn watch(&self, key: &str) -> Result<(atomics::Cas, Option<Vec<u8>>), KvError> {
        let cas = atomics::Cas::new(self.bucket()?, key).map_err(kv_error)?;
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
        atomics::increment(self.bucket()?, key, delta).map_err(kv_error)
    }
}
