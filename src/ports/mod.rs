//! Ports: what the core needs from the platform, as traits the core owns.
//! `native/` (tokio + hyper) and `edge/` (Spin) implement them.
//!
//! The traits use `async fn` without `Send` bounds: a Spin component is
//! single-threaded, and the node's concrete types are `Send`, which the
//! compiler sees through when it checks the node's futures.
#![allow(async_fn_in_trait)]

mod copy;
#[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
pub(crate) mod enveloped;
pub mod memory;
#[cfg(test)]
pub(crate) mod testing;

use std::time::Duration;

/// A record that never expires, as the core's key-value port at the edge
/// seals one (`enveloped.rs`): how the registry writes the edge's keys, so
/// that the sweep leaves them and [`KvStore::get`] reads their payload.
#[cfg(any(test, not(target_arch = "wasm32")))]
pub(crate) fn sealed(payload: &[u8]) -> Vec<u8> {
    let mut out = b"pc1e - 0000000000000000\n".to_vec();
    out.extend_from_slice(payload);
    out
}

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use thiserror::Error;

use crate::shared::problem::{Answer, Problem, Source};
pub use copy::BodyCopy;

use crate::shared::gcra::{Decision, Rate};

/// Wall-clock and monotonic time. The core never reads a clock itself.
pub trait Clock {
    /// Time since the Unix epoch (for token expiry, rate-limit arrival times and logs).
    fn now(&self) -> Duration;
    /// A monotonic reading with an arbitrary origin (for latencies).
    fn monotonic(&self) -> Duration;
    /// Waits without blocking other requests (polling a shared store, backoff).
    async fn sleep(&self, duration: Duration);
}

/// A key-value store shared by every instance of the gateway (Spin KV, Redis)
/// or by one process (memory). Keys and encodings are fixed in `kv-schema/`.
pub trait KvStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value`; with a `ttl`, the store may forget it after that long.
    /// Values carry their own expiry where it matters, so a store without
    /// TTLs (Spin's) only keeps garbage longer.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Replaces the value at `key` with `new` only if it is still `current`
    /// (`None`: only if absent). Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError>;

    /// One limit step on each key (a GCRA rate or a quota's count; values:
    /// `kv-schema/rate-limits.md`, `kv-schema/quotas.md`): every step
    /// admits and every key is updated, or nothing is written. Returns the
    /// decisions and the time they were made at (a store may use its own
    /// clock, as Redis does, so a fleet shares one).
    async fn limit(&self, steps: &[LimitStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError>;

    /// Gives back the unused rest of a leased range (`shared/lease.rs`):
    /// moves the rate record at `key` from `end_us` back to `from_us` if it
    /// still ends there (nothing was granted after the range); a range
    /// others leased past stays as it is. Returns whether it went back.
    /// `now_us` (this holder's clock) only sets the record's expiry.
    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, now_us: u64) -> Result<bool, KvError>;

    /// Deletes expired records among the gateway's keys after `after` (in
    /// key order), examining at most `limit` of them. Stores that expire
    /// records themselves (memory, Redis) have nothing to do.
    async fn sweep(&self, after: Option<&str>, limit: usize) -> Result<SweepReport, KvError> {
        let _ = (after, limit);
        Ok(SweepReport::default())
    }
}

/// What one sweep did (the answer of the sweep path, `kv-schema/README.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// The gateway's keys in the store when this sweep began; `None`
    /// where the store expires records itself.
    pub(crate) keys: Option<usize>,
    pub(crate) examined: usize,
    pub(crate) deleted: usize,
    /// The key the next call continues after; `None` once the end is reached.
    pub(crate) next: Option<String>,
}

/// A key-value key as `kv-schema/` writes them: `prefix` (its parts
/// joined) then the lower-case hex of a SHA-256 `digest`.
pub(crate) fn store_key(prefix: &[&str], digest: &[u8]) -> String {
    let mut key = String::with_capacity(prefix.iter().map(|p| p.len()).sum::<usize>() + digest.len() * 2);
    prefix.iter().for_each(|p| key.push_str(p));
    crate::shared::hex::push_hex(&mut key, digest);
    key
}

/// One limit check: a key, what meters it and this request's cost.
#[derive(Debug, Clone, Copy)]
pub struct LimitStep<'a> {
    pub key: &'a str,
    pub meter: Meter,
    pub cost: u64,
    /// Commit atomically (compare-and-swap) or, for a policy with
    /// `consistency = "best_effort"`, with a plain set.
    pub exact: bool,
}

/// What a limit's record holds and how it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A rate (GCRA, the record a TAT); a request over it may wait up to
    /// `max_delay_us` for its turn (a policy's `max_delay`, when it has a
    /// place among the waiting).
    Rate { rate: Rate, max_delay_us: u64 },
    /// A calendar window's cap (the record its count, the key its window).
    Quota { limit: u64, ends_us: u64 },
    /// A GCRA rate whose step, when it admits the request, also leases its
    /// holder up to `want` units in all (`shared/lease.rs`).
    Lease { rate: Rate, want: u64 },
}

impl LimitStep<'_> {
    /// A rate step with no delay allowance.
    pub fn rate(key: &str, rate: Rate, cost: u64) -> LimitStep<'_> {
        LimitStep { key, meter: Meter::Rate { rate, max_delay_us: 0 }, cost, exact: true }
    }

    /// The step's decision on the key's stored value.
    pub fn decide(&self, stored: Option<u64>, now_us: u64) -> Decision {
        match self.meter {
            Meter::Rate { rate, max_delay_us } => {
                crate::shared::gcra::decide_within(stored, now_us, rate, self.cost, max_delay_us)
            }
            Meter::Quota { limit, ends_us } => crate::shared::quota::decide(stored, now_us, limit, ends_us, self.cost),
            Meter::Lease { rate, want } => crate::shared::lease::grant(stored, now_us, rate, self.cost, want),
        }
    }
}

/// A key-value store failed (unreachable, refused, no atomics).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("key-value store: {0}")]
pub struct KvError(pub String);

/// How to send one request upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOptions {
    pub(crate) connect_timeout: Duration,
    /// Until the response head arrives.
    pub(crate) request_timeout: Duration,
    /// Bodies without `Content-Length` are cut off (and answered 413) past this.
    pub(crate) max_request_body: u64,
    /// HTTP/2 to the origin (a service's `http2`).
    pub(crate) http2: bool,
    /// The service whose own TLS settings apply (its `tls`), if it has them.
    pub(crate) tls_of: Option<std::sync::Arc<str>>,
}

impl UpstreamOptions {
    /// A small exchange of the gateway's own (a key set): HTTP/1.1, the
    /// system's roots, no body.
    pub(crate) fn own(timeout: Duration) -> Self {
        Self { connect_timeout: timeout, request_timeout: timeout, max_request_body: 0, http2: false, tls_of: None }
    }
}

/// Outbound HTTP to origins (and identity providers).
pub trait HttpClient {
    /// The body type of this home, for requests and responses alike; the core
    /// builds its own small bodies (problem documents) from bytes.
    type Body: From<Bytes> + http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin;

    /// Whether this home carries gRPC: HTTP/2 to origins and trailers both ways.
    const CARRIES_GRPC: bool = false;

    /// Whether this home holds an upgraded (WebSocket) connection open.
    const UPGRADES: bool = false;

    /// A place for one more upgraded connection, or how many are open
    /// (the most there may be).
    fn upgrade_slot(&self) -> Result<UpgradeSlot, usize> {
        Err(0)
    }

    async fn send(
        &self,
        request: Request<Self::Body>,
        options: &UpstreamOptions,
    ) -> Result<Response<Self::Body>, UpstreamError>;

    /// Makes a request ready to send, perhaps more than once, in place: a
    /// home that reads a body without `Content-Length` before sending it
    /// (the edge) reads it here, up to `limit` bytes; elsewhere nothing
    /// changes.
    async fn prepare(&self, request: &mut Request<Self::Body>, limit: u64) -> Result<(), UpstreamError> {
        let _ = (request, limit);
        Ok(())
    }

    /// Starts keeping a copy of a streamed body of unknown size, up to
    /// `limit` bytes, so another try can send it again once the client has
    /// sent it all. `None` where the home has no such bodies (the edge
    /// reads them in [`HttpClient::prepare`]).
    fn keep_copy(body: &mut Self::Body, limit: u64) -> Option<std::sync::Arc<BodyCopy>> {
        let _ = (body, limit);
        None
    }

    /// A body whose first bytes were read (`prefix`) with those bytes put
    /// back in front of the rest.
    fn prefixed(prefix: Bytes, rest: Self::Body) -> Self::Body;

    /// A gRPC-Web `-text` request body decoded from base64, for a gRPC
    /// origin. Only a home that carries gRPC is asked.
    fn grpc_web_request(body: Self::Body) -> Self::Body {
        body
    }

    /// A gRPC answer's body as gRPC-Web: its trailers a last frame (flag
    /// 0x80), all of it base64 when `text`. Only a home that carries gRPC
    /// is asked.
    fn grpc_web_response(body: Self::Body, text: bool) -> Self::Body {
        let _ = text;
        body
    }

    /// A small exchange read whole (a key set): at most `max_body` bytes.
    async fn fetch(
        &self,
        request: Request<Bytes>,
        options: &UpstreamOptions,
        max_body: usize,
    ) -> Result<Response<Bytes>, UpstreamError> {
        let (parts, body) = self.send(request.map(Self::Body::from), options).await?.into_parts();
        let body = read_body(body, max_body).await.map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        Ok(Response::from_parts(parts, body))
    }
}

/// Holds one upgraded connection's place until the last copy is dropped
/// (what the place is, is the home's).
#[derive(Clone)]
pub struct UpgradeSlot(#[allow(dead_code)] pub(crate) std::sync::Arc<dyn std::any::Any + Send + Sync>);

/// Origin responses up to this `Content-Length` are checked against it.
const CHECKED_LENGTH: u64 = 64 << 10;

/// An origin that sends `Transfer-Encoding` and `Content-Length` both
/// (RFC 9112 §6.3: the length is then to be ignored) gives a length that
/// may not be the body's. The node sees both and checks such responses;
/// Spin decodes the framing and hides `Transfer-Encoding`, so the edge
/// checks every response. One whose length is at most [`CHECKED_LENGTH`] is
/// read whole and refused (502) unless its body is exactly that long; a
/// larger one streams (the node drops the length, Spin ends the body at it).
pub(crate) async fn checked_length<B>(method: &http::Method, resp: Response<B>) -> Result<Response<B>, UpstreamError>
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + From<Bytes> + Unpin,
{
    let bodiless = *method == http::Method::HEAD
        || resp.status().is_informational()
        || matches!(resp.status().as_u16(), 204 | 304);
    let declared = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let Some(len) = declared.filter(|len| !bodiless && *len <= CHECKED_LENGTH) else {
        return Ok(resp);
    };
    let (parts, body) = resp.into_parts();
    let mismatch = |got: &dyn std::fmt::Display| {
        UpstreamError::Protocol(format!("the response body is {got} bytes, its Content-Length says {len}"))
    };
    let bytes = match read_body(body, usize::try_from(len).unwrap_or(usize::MAX)).await {
        Ok(bytes) => bytes,
        Err(ReadBodyError::TooLarge(_)) => return Err(mismatch(&"more than that")),
        Err(ReadBodyError::Read(e)) => return Err(UpstreamError::Protocol(e)),
    };
    if bytes.len() as u64 != len {
        return Err(mismatch(&bytes.len()));
    }
    Ok(Response::from_parts(parts, B::from(bytes)))
}

/// Why a body could not be read whole.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReadBodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// Reads a body whole, refusing it past `limit` bytes.
pub(crate) async fn read_body<B>(mut body: B, limit: usize) -> Result<Bytes, ReadBodyError>
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| ReadBodyError::Read(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(ReadBodyError::TooLarge(limit));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// Why an upstream exchange failed, by cause: the cause decides the status.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("could not connect to the origin: {0}")]
    Connect(String),
    #[error("timed out connecting to the origin")]
    ConnectTimeout,
    #[error("the origin sent no response within {0:?}")]
    Timeout(Duration),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
    #[error("the origin's response was invalid: {0}")]
    Protocol(String),
}

impl Answer for UpstreamError {
    fn problem(&self) -> Problem {
        use StatusCode as S;
        let upstream = |status, slug, detail: &'static str| Problem::new(status, slug, detail, Source::Upstream);
        match self {
            Self::BodyTooLarge { .. } => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "body-too-large", self.to_string(), Source::Client)
            }
            Self::ClientBody(_) => {
                Problem::new(S::BAD_REQUEST, "bad-request", "the request body could not be read", Source::Client)
            }
            // Nothing reached the origin: another target may answer.
            Self::Connect(_) => {
                upstream(S::BAD_GATEWAY, "upstream-unavailable", "the upstream service could not be reached")
                    .retryable()
            }
            Self::ConnectTimeout => {
                upstream(S::GATEWAY_TIMEOUT, "upstream-timeout", "the upstream service did not answer in time")
                    .retryable()
            }
            Self::Timeout(_) => {
                upstream(S::GATEWAY_TIMEOUT, "upstream-timeout", "the upstream service did not answer in time")
            }
            Self::Protocol(_) => {
                upstream(S::BAD_GATEWAY, "upstream-invalid", "the upstream service sent an invalid response")
            }
        }
    }
}

/// How long the gateway value, and all in-memory state with it, lives in a
/// home, and so what one copy of that state sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// One process serves every request (the node).
    Process,
    /// A pool of instances, each serving many requests and none all of
    /// them (Spin's WASI 0.3 instances; ARCHITECTURE.md on the breaker).
    Pool,
    /// An instance per request (WASI 0.2): results worth keeping, such as
    /// verified tokens, go through the key-value store instead.
    Request,
}

/// Everything the pipeline uses from its home.
pub trait Ports {
    /// What one copy of in-memory state sees. Default: a process.
    const LIFETIME: Lifetime = Lifetime::Process;

    type Kv: KvStore;
    type Http: HttpClient;
    type Clock: Clock;
    fn kv(&self) -> &Self::Kv;
    fn http(&self) -> &Self::Http;
    fn clock(&self) -> &Self::Clock;
    /// Writes a line to the operational log (a target ejected, …).
    fn event(&self, line: &str);
    /// True where the home exports the spans of sampled requests (the
    /// node, with an OTLP endpoint): the core then records them.
    fn spans(&self) -> bool {
        false
    }
}

/// The body type of a home.
pub type Body<P> = <<P as Ports>::Http as HttpClient>::Body;
