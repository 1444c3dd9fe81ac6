//! Phase 9, the access log: one JSON object per request. The core fills in
//! what it knows when the response head is ready; the adapter adds the byte
//! counts and total latency when the body has been sent, then writes it.
//! Query strings and credentials are never logged.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderValue, Method};
use serde::{Serialize, Serializer};

use crate::shared::identity::Identity;
use crate::shared::problem::Source;
use crate::shared::tls::TlsInfo;

/// Fields are kept as the request had them (no string copies on the hot
/// path) and become text only when the line is written.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AccessLog {
    pub(crate) time: String,
    #[serde(serialize_with = "header_text")]
    pub(crate) request_id: HeaderValue,
    pub(crate) trace_id: String,
    pub(crate) client_ip: IpAddr,
    /// The node's listener the request came on (absent at the edge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listener: Option<Arc<str>>,
    /// The TLS session the node terminated: version, SNI, the client
    /// certificate's names (absent for plaintext and at the edge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<Arc<TlsInfo>>,
    #[serde(serialize_with = "method_text")]
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<str>>,
    /// The service the route sent to (its canary's, when that served).
    pub(crate) service: Option<Arc<str>>,
    /// Written as `provider:subject` (or consumer id); never the credential.
    #[serde(serialize_with = "identity_text")]
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) status: u16,
    /// How authentication went (routes with `auth` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth: Option<AuthLog>,
    /// Each rate-limit policy checked, and what it decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) limits: Vec<LimitLog>,
    /// The target that answered (the last one tried).
    pub(crate) upstream: Option<Arc<str>>,
    /// Tries sent to targets (absent when none was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<u32>,
    /// The route's fallback answered (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) fallback: bool,
    /// The side of the route's canary that served: stable or canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<&'static str>,
    /// What the route's CORS policy decided for a call from a page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cors: Option<super::cors::CorsOutcome>,
    /// Which rules refused the client's address: service, route or consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip_refused: Option<&'static str>,
    /// What the route's response cache did: hit, collapsed, stale, miss,
    /// expired, revalidated, bypass or invalidated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache: Option<super::cache::CacheResult>,
    /// How long a rate-limit policy's `max_delay` held the request before
    /// it went on (absent when it did not wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit_delay_us: Option<u64>,
    pub(crate) upstream_latency_us: Option<u64>,
    /// Time the gateway itself took to the response head: the head's time
    /// less the time spent waiting on targets and for a rate limit's turn.
    pub(crate) overhead_us: u64,
    /// Time this request spent compiling the config before the pipeline
    /// ran (the edge: WASI 0.2 unless pre-initialised with the same
    /// variables, WASI 0.3 on an instance's first request); absent when it
    /// found the config compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) config_us: Option<u64>,
    pub(crate) total_latency_us: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// How long the connection was open after a WebSocket upgrade (its
    /// bytes each way are in `bytes_in` and `bytes_out`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) upgraded_us: Option<u64>,
    /// The problem type the gateway answered with, if it answered one.
    pub(crate) problem: Option<&'static str>,
    /// Who caused what went wrong (also for failures the request survived).
    pub(crate) source: Option<Source>,
    /// What went wrong, in full (never shown to the client).
    pub(crate) error: Option<String>,
    /// Monotonic reading when the request arrived (not logged).
    #[serde(skip)]
    pub(crate) started: Duration,
    /// What metrics and traces take from the request (not logged).
    #[serde(skip)]
    pub(crate) observed: Observed,
}

/// How authentication went: the provider that decided (none when no
/// credential was presented) and the outcome, `ok` or why not.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthNote {
    pub(crate) provider: Option<usize>,
    pub(crate) outcome: &'static str,
    /// A JWT came from the token cache (`true`) or was verified (`false`).
    pub(crate) cached: Option<bool>,
    /// The key-set fetch this request made, if it made one.
    pub(crate) fetch: Option<crate::pipeline::authn::Fetched>,
}

/// What a rate-limit policy decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitOutcome {
    /// Admitted by the store.
    Admitted,
    /// Admitted by the store, which also leased this node or instance a
    /// range of the key's capacity (`shared/lease.rs`).
    LeaseTaken,
    /// Admitted under this node's or instance's lease, without the store.
    Leased,
    /// Admitted from the range every instance shares, handed out by a
    /// counter in the store (`lease::Pool`): no step on the key's record.
    Pooled,
    /// Admitted over the rate after waiting for its turn (`max_delay`).
    Delayed,
    Limited,
    /// The store failed and the policy lets requests through (`on_store_error = "allow"`).
    StoreErrorAllowed,
    /// The store failed and the request was refused.
    StoreErrorDenied,
}

impl LimitOutcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::LeaseTaken => "lease_taken",
            Self::Leased => "leased",
            Self::Pooled => "pooled",
            Self::Delayed => "delayed",
            Self::Limited => "limited",
            Self::StoreErrorAllowed => "store_error_allowed",
            Self::StoreErrorDenied => "store_error_denied",
        }
    }
}

/// `auth` in the log line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuthLog {
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cached: Option<bool>,
}

/// One entry of `limits` in the log line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimitLog {
    pub(crate) policy: Arc<str>,
    #[serde(serialize_with = "outcome_text")]
    pub(crate) outcome: LimitOutcome,
}

/// What metrics and traces take from a request beyond its log line (the
/// node reads it; the edge has Spin's).
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Observed {
    /// The route and service by index in the request's config.
    pub(crate) route: Option<usize>,
    pub(crate) service: Option<usize>,
    pub(crate) auth: Option<AuthNote>,
    /// Failed tries, by kind (`connect_error`, `connect_timeout`, `timeout`, `invalid_response`).
    pub(crate) try_failures: Vec<&'static str>,
    /// Time spent waiting on targets, all tries together.
    pub(crate) upstream_time: Duration,
    /// Whether the line is written (failed requests always are; successful
    /// ones as `access_log_sample` says).
    pub(crate) logged: bool,
    /// Wall-clock time the request arrived (since the epoch).
    pub(crate) received_at: Duration,
    /// The request's spans, when its trace is sampled and the home exports them.
    pub(crate) spans: Option<Vec<super::trace::SpanRecord>>,
}

/// What went wrong with a request: the problem it was answered with, if
/// any, who caused it, and the detail for the log.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) problem: Option<&'static str>,
    pub(crate) source: Source,
    pub(crate) detail: String,
}

impl AccessLog {
    /// Completes the record once the response body is done.
    pub(crate) fn finish(&mut self, monotonic_now: Duration, bytes_in: u64, bytes_out: u64) {
        self.total_latency_us = micros(monotonic_now.saturating_sub(self.started));
        self.bytes_in = bytes_in;
        self.bytes_out = bytes_out;
    }

    /// The record as one line of JSON, newline included.
    pub(crate) fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

fn header_text<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or_default())
}

fn identity_text<S: Serializer>(id: &Option<Arc<Identity>>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(&format_args!("{}:{}", id.provider, id.subject)),
        None => s.serialize_none(),
    }
}

fn outcome_text<S: Serializer>(o: &LimitOutcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.name())
}

fn method_text<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// RFC 3339 in UTC with microseconds, from time since the epoch.
pub(crate) fn rfc3339(since_epoch: Duration) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(Duration::from_micros(1_767_225_600_000_001)), "2026-01-01T00:00:00.000001Z");
    }
}
