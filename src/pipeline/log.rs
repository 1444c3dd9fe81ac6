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

/// Fields are kept as the request had them (no string copies on the hot
/// path) and become text only when the line is written.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AccessLog {
    pub(crate) time: String,
    #[serde(serialize_with = "header_text")]
    pub(crate) request_id: HeaderValue,
    pub(crate) trace_id: String,
    pub(crate) client_ip: IpAddr,
    #[serde(serialize_with = "method_text")]
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<str>>,
    /// Written as `provider:subject` (or consumer id); never the credential.
    #[serde(serialize_with = "identity_text")]
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) status: u16,
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
    pub(crate) upstream_latency_us: Option<u64>,
    pub(crate) total_latency_us: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// The problem type the gateway answered with, if it answered one.
    pub(crate) problem: Option<&'static str>,
    /// Who caused what went wrong (also for failures the request survived).
    pub(crate) source: Option<Source>,
    /// What went wrong, in full (never shown to the client).
    pub(crate) error: Option<String>,
    /// Monotonic reading when the request arrived (not logged).
    #[serde(skip)]
    pub(crate) started: Duration,
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
