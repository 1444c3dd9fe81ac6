//! The edge: the core as a Spin component. Two flavours from one folder,
//! chosen by cargo feature, each a thin handler over the same pipeline:
//! - `p3` (feature `edge-p3`): WASI 0.3, spin-sdk 7, `wasi:http/handler@0.3.0`;
//!   instances are reused, so the compiled config lives as long as one;
//! - `p2` (feature `edge-p2`): WASI 0.2, spin-sdk 5.2,
//!   `wasi:http/incoming-handler@0.2.0`; runs on every Spin since 2.x, one
//!   instance per request.
//!
//! This module holds what both share: the embedded config, what Spin tells
//! us about the client, error-code mapping and body buffering.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the edge adapter

// The SDKs' export macros write the component's ABI glue, which is unsafe code.
#[cfg(feature = "edge-p2")]
#[allow(unsafe_code)]
mod p2;
#[cfg(feature = "edge-p3")]
#[allow(unsafe_code)]
mod p3;
#[cfg(feature = "edge-p2")]
#[allow(unsafe_code)]
mod preinit;
mod registry;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::Body;

use crate::config::{Config, Variables};
#[cfg(feature = "edge-p2")]
use crate::pipeline::accept::AcceptError;
use crate::pipeline::error::GatewayError;
use crate::pipeline::ids::request_id;
use crate::pipeline::log::{AccessLog, Stamp};
use crate::pipeline::{Downstream, Scheme};
use crate::ports::enveloped::{Enveloped, RawStore};
use crate::ports::{HttpClient, KvError, Lifetime, Ports, ReadBodyError, UpstreamError, read_body};
use crate::shared::entropy::Entropy;
use crate::shared::problem::Answer;
use crate::system_clock::{Sleep, SystemClock, monotonic};

/// How much more of an over-long request body is read (and dropped) so that
/// the connection can end cleanly.
const DRAIN_LIMIT: u64 = 1 << 20;

/// The config embedded at build time (see `build.rs`), and its digest.
const CONFIG_TEXT: &str = include_str!(concat!(env!("OUT_DIR"), "/gateway.toml"));
const CONFIG_DIGEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gateway.digest"));
const CONFIG_NAME: &str = env!("PORTCULLIS_CONFIG_NAME");

/// The names of the Spin variables the embedded config uses, one a line
/// (found by `build.rs`: finding them here would mean parsing the TOML).
const VARIABLE_NAMES: &str = include_str!(concat!(env!("OUT_DIR"), "/gateway.vars"));

fn variable_names() -> impl Iterator<Item = &'static str> {
    VARIABLE_NAMES.lines()
}

/// The config for an instance: the one compiled at pre-initialisation if it
/// was compiled with these variables (WASI 0.2), else compiled now, with the
/// microseconds that took (the access log's `config_us`).
fn config(vars: &Variables) -> Result<(Config, Option<u64>), String> {
    #[cfg(feature = "edge-p2")]
    if let Some(config) = preinit::take(vars) {
        return Ok((config, None));
    }
    let start = monotonic();
    // A failure is reported on stderr (Spin's log) once per instance.
    let config = compile(vars).inspect_err(|e| eprintln!("portcullis: the embedded config is invalid:\n{e}"))?;
    Ok((config, Some(u64::try_from((monotonic() - start).as_micros()).unwrap_or(u64::MAX))))
}

/// Compiles the embedded config with these variables.
fn compile(vars: &Variables) -> Result<Config, String> {
    Config::from_digest(CONFIG_DIGEST, CONFIG_TEXT, CONFIG_NAME, vars).map_err(|e| e.to_string())
}

/// The answer to every request while the config is invalid.
fn misconfigured<B: From<Bytes>>(reason: &str, headers: &HeaderMap) -> Response<B> {
    answer(&GatewayError::Misconfigured(reason.to_string()), headers)
}

/// The answer to a request the component cannot even read as HTTP.
#[cfg(feature = "edge-p2")]
fn refused<B: From<Bytes>>(reason: &'static str, headers: &HeaderMap) -> Response<B> {
    answer(&GatewayError::Accept(AcceptError::RequestLine(reason)), headers)
}

/// A problem answer from outside the pipeline, with the request's id.
fn answer<B: From<Bytes>>(err: &GatewayError, headers: &HeaderMap) -> Response<B> {
    let id = request_id(headers.get("x-request-id"), &Entropy::draw(0));
    let mut resp = err.problem().to_response(&id);
    resp.headers_mut().insert("x-request-id", id);
    resp.map(B::from)
}

/// What Spin tells us about the connection, from its `spin-*` headers,
/// which are then removed so they never reach an origin. Spin appends its
/// `spin-client-addr` after any a client sent, so only the last one is Spin's.
fn downstream(headers: &mut HeaderMap, scheme: Option<&str>) -> Downstream {
    let peer = headers
        .get_all("spin-client-addr")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<SocketAddr>().ok())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let spin: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with("spin-")).cloned().collect();
    for name in spin {
        headers.remove(name);
    }
    Downstream::plain(peer, if scheme == Some("https") { Scheme::Https } else { Scheme::Http })
}

fn kv_error(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

/// The edge's ports: Spin key-value (sealed in envelopes: it expires
/// nothing), outbound `wasi:http`, and the WASI clocks with the flavour's
/// way of waiting.
struct EdgePorts<S, H, W> {
    kv: Enveloped<S, SystemClock<W>>,
    http: H,
}

impl<S: RawStore, H: HttpClient, W: Sleep> Ports for EdgePorts<S, H, W> {
    /// A WASI 0.2 instance serves one request: verified tokens are shared
    /// through the key-value store (measured in `benches/README.md`). Spin
    /// keeps a pool of WASI 0.3 instances.
    const LIFETIME: Lifetime = if cfg!(feature = "edge-p2") { Lifetime::Request } else { Lifetime::Pool };
    type Kv = Enveloped<S, SystemClock<W>>;
    type Http = H;
    type Clock = SystemClock<W>;
    fn kv(&self) -> &Self::Kv {
        &self.kv
    }
    fn http(&self) -> &H {
        &self.http
    }
    fn clock(&self) -> &SystemClock<W> {
        &self.kv.clock
    }
    /// Spin collects the component's stderr as its log.
    fn event(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// What a response body hands its finished record to: [`emit`].
type Emitter = fn(&AccessLog);

/// Writes a finished access-log line to stdout (Spin's component log).
/// Successful requests are sampled (`gateway.access_log_sample`).
fn emit(log: &AccessLog) {
    if !log.observed.logged {
        return;
    }
    let mut line = Vec::with_capacity(512);
    log.write_to(&mut line, &mut Stamp::default());
    let _ = std::io::stdout().lock().write_all(&line);
}

/// Bodies without `Content-Length` are read first, up to the route's limit,
/// so an over-long one is refused (413) before the origin sees any of it.
/// (`wasi:http` would otherwise hand the origin a truncated body as if it
/// were whole.) Bodies with `Content-Length` stream, already checked.
///
/// An over-long body is then read to its end (up to [`DRAIN_LIMIT`] more):
/// Spin closes a connection whose request body was left unread, and data
/// still arriving then makes the kernel reset it, which can cut off the
/// 413 on its way to the client.
async fn buffer_unsized<B>(req: &mut Request<B>, limit: u64) -> Result<(), UpstreamError>
where
    B: Body<Data = Bytes, Error: std::fmt::Display> + From<Bytes> + Unpin,
{
    if req.headers().contains_key(header::CONTENT_LENGTH) || req.body().is_end_stream() {
        return Ok(());
    }
    let limit_bytes = usize::try_from(limit).unwrap_or(usize::MAX);
    let buf = match read_body(req.body_mut(), limit_bytes).await {
        Ok(buf) => buf,
        Err(ReadBodyError::TooLarge(_)) => {
            drain(req.body_mut(), DRAIN_LIMIT).await;
            return Err(UpstreamError::BodyTooLarge { limit });
        }
        Err(read) => return Err(UpstreamError::ClientBody(read.to_string())),
    };
    if !buf.is_empty() {
        req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(buf.len()));
    }
    *req.body_mut() = B::from(buf);
    Ok(())
}

/// Reads and discards what is left of a body, at most `limit` bytes more;
/// returns whether its end was reached.
async fn drain<B>(mut body: B, limit: u64) -> bool
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut seen = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { return false };
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > limit {
            return false;
        }
    }
    true
}

/// Maps a `wasi:http` error code to the port's error. The 0.2 and 0.3
/// bindings have distinct types with the same variants, hence a macro.
macro_rules! upstream_error {
    ($code:expr, $ty:ty, $timeout:expr) => {{
        use crate::ports::UpstreamError as U;
        type E = $ty;
        let code = $code;
        match code {
            E::ConnectionTimeout => U::ConnectTimeout,
            E::ConnectionReadTimeout | E::HttpResponseTimeout => U::Timeout($timeout),
            E::ConnectionRefused
            | E::ConnectionTerminated
            | E::DnsTimeout
            | E::DnsError(_)
            | E::DestinationNotFound
            | E::DestinationUnavailable
            | E::DestinationIpProhibited
            | E::DestinationIpUnroutable
            | E::ConnectionLimitReached
            | E::HttpRequestDenied
            | E::TlsProtocolError
            | E::TlsCertificateError
            | E::TlsAlertReceived(_) => U::Connect(format!("{code:?}")),
            other => U::Protocol(format!("{other:?}")),
        }
    }};
}
use upstream_error;
