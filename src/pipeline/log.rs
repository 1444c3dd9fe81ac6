//! Phase 9, the access log: one JSON object per request. The core fills in
//! what it knows when the response head is ready; the adapter adds the byte
//! counts and total latency when the body has been sent, then writes it.
//! Query strings and credentials are never logged.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderValue, Method};

use serde::Serialize;

use crate::shared::identity::Identity;
use crate::shared::problem::Source;
use crate::shared::tls::TlsInfo;

/// Fields are kept as the request had them (no string copies on the hot
/// path) and become text only when the line is written ([`AccessLog::write_to`]:
/// fields in this order; `None` is `null` unless the field says it is absent).
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    pub(crate) request_id: HeaderValue,
    pub(crate) trace_id: super::ids::HexId<32>,
    pub(crate) client_ip: IpAddr,
    /// The node's listener the request came on (absent at the edge).
    pub(crate) listener: Option<Arc<str>>,
    /// The TLS session the node terminated: version, SNI, the client
    /// certificate's names (absent for plaintext and at the edge).
    pub(crate) tls: Option<Arc<TlsInfo>>,
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<str>>,
    /// The service the route sent to (its canary's, when that served).
    pub(crate) service: Option<Arc<str>>,
    /// Written as `provider:subject` (or consumer id); never the credential.
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) status: u16,
    /// How authentication went (routes with `auth` only).
    pub(crate) auth: Option<AuthLog>,
    /// Each rate-limit policy checked, and what it decided.
    pub(crate) limits: PerPolicy<LimitLog>,
    /// The target that answered (the last one tried).
    pub(crate) upstream: Option<Arc<str>>,
    /// Tries sent to targets (absent when none was).
    pub(crate) attempts: Option<u32>,
    /// The route's fallback answered (absent otherwise).
    pub(crate) fallback: bool,
    /// The side of the route's canary that served: stable or canary.
    pub(crate) variant: Option<&'static str>,
    /// What the route's CORS policy decided for a call from a page.
    pub(crate) cors: Option<super::cors::CorsOutcome>,
    /// Which rules refused the client's address: service, route or consumer.
    pub(crate) ip_refused: Option<&'static str>,
    /// What the route's response cache did: hit, collapsed, stale, miss,
    /// expired, revalidated, bypass or invalidated.
    pub(crate) cache: Option<super::cache::CacheResult>,
    /// How long a rate-limit policy's `max_delay` held the request before
    /// it went on (absent when it did not wait).
    pub(crate) limit_delay_us: Option<u64>,
    pub(crate) upstream_latency_us: Option<u64>,
    /// Time the gateway itself took to the response head: the head's time
    /// less the time spent waiting on targets and for a rate limit's turn.
    pub(crate) overhead_us: u64,
    /// Time this request spent compiling the config before the pipeline
    /// ran (the edge: WASI 0.2 unless pre-initialised with the same
    /// variables, WASI 0.3 on an instance's first request); absent when it
    /// found the config compiled.
    pub(crate) config_us: Option<u64>,
    pub(crate) total_latency_us: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// How long the connection was open after a WebSocket upgrade (its
    /// bytes each way are in `bytes_in` and `bytes_out`); absent otherwise.
    pub(crate) upgraded_us: Option<u64>,
    /// The problem type the gateway answered with, if it answered one.
    pub(crate) problem: Option<&'static str>,
    /// Who caused what went wrong (also for failures the request survived).
    pub(crate) source: Option<Source>,
    /// What went wrong, in full (never shown to the client).
    pub(crate) error: Option<String>,
    /// Monotonic reading when the request arrived (not logged).
    pub(crate) started: Duration,
    /// What metrics and traces take from the request (not logged).
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
    /// How many outcomes there are, numbered by [`Self::index`].
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) const COUNT: usize = 8;

    /// The outcome's number, below [`Self::COUNT`] (a new outcome needs one
    /// here before it compiles).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Admitted => 0,
            Self::LeaseTaken => 1,
            Self::Leased => 2,
            Self::Pooled => 3,
            Self::Delayed => 4,
            Self::Limited => 5,
            Self::StoreErrorAllowed => 6,
            Self::StoreErrorDenied => 7,
        }
    }

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

/// `auth` in the log line (`cached` absent when no token was checked).
#[derive(Debug, Clone)]
pub(crate) struct AuthLog {
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) outcome: &'static str,
    pub(crate) cached: Option<bool>,
}

/// One entry per rate-limit policy a request met: inline up to four (a
/// route rarely has more), so a limited request allocates nothing for
/// its lists of them.
pub(crate) type PerPolicy<T> = smallvec::SmallVec<[T; 4]>;

/// One entry of `limits` in the log line.
#[derive(Debug, Clone)]
pub(crate) struct LimitLog {
    pub(crate) policy: Arc<str>,
    /// The policy by index in the request's config (for the node's metrics).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) index: usize,
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

/// A key as the line writes it: `"name":` (our names need no escaping).
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

impl AccessLog {
    /// Completes the record once the response body is done.
    pub(crate) fn finish(&mut self, monotonic_now: Duration, bytes_in: u64, bytes_out: u64) {
        self.total_latency_us = micros(monotonic_now.saturating_sub(self.started));
        self.bytes_in = bytes_in;
        self.bytes_out = bytes_out;
    }

    /// The record as one line of JSON, newline included.
    #[cfg(test)]
    pub(crate) fn to_line(&self) -> String {
        let mut line = Vec::with_capacity(512);
        self.write_to(&mut line, &mut Stamp::default());
        // Only whole UTF-8 strings and ASCII were written.
        String::from_utf8(line).unwrap_or_default()
    }

    /// Appends the record as one line of JSON, newline included. Written
    /// field by field, not derived: serde's escaping of every key and
    /// value was the largest cost of a plain request (~7k instructions).
    /// `stamp`: the last line's second, as text, for a writer that keeps it.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>, stamp: &mut Stamp) {
        let mut w = Json(out);
        w.0.push(b'{');
        w.key(k!("time"));
        stamp.write(w.0, self.observed.received_at);
        w.key_str(k!("request_id"), self.request_id.to_str().unwrap_or_default());
        w.key(k!("trace_id"));
        w.plain(self.trace_id.as_bytes());
        w.key(k!("client_ip"));
        w.plain(crate::shared::ip_text::IpText::new(self.client_ip).as_bytes());
        if let Some(listener) = &self.listener {
            w.key_str(k!("listener"), listener);
        }
        if let Some(tls) = &self.tls {
            w.key(k!("tls"));
            w.serde(tls);
        }
        w.key_str(k!("method"), self.method.as_str());
        w.key_str(k!("host"), &self.host);
        w.key_str(k!("path"), &self.path);
        w.key_opt_str(k!("route"), self.route.as_deref());
        w.key_opt_str(k!("service"), self.service.as_deref());
        w.key(k!("identity"));
        match &self.identity {
            Some(id) => w.str_of(&[id.provider.as_str(), ":", &id.subject]),
            None => w.null(),
        }
        w.key_num(k!("status"), self.status.into());
        if let Some(auth) = &self.auth {
            w.key(k!("auth"));
            w.0.push(b'{');
            w.key_opt_str(k!("provider"), auth.provider.as_deref());
            w.key_str(k!("outcome"), auth.outcome);
            if let Some(cached) = auth.cached {
                w.key(k!("cached"));
                w.0.extend_from_slice(if cached { b"true" } else { b"false" });
            }
            w.0.push(b'}');
        }
        if !self.limits.is_empty() {
            w.key(k!("limits"));
            w.0.push(b'[');
            for (i, limit) in self.limits.iter().enumerate() {
                w.0.extend_from_slice(if i == 0 { b"{" } else { b",{" });
                w.key_str(k!("policy"), &limit.policy);
                w.key_str(k!("outcome"), limit.outcome.name());
                w.0.push(b'}');
            }
            w.0.push(b']');
        }
        w.key_opt_str(k!("upstream"), self.upstream.as_deref());
        if let Some(attempts) = self.attempts {
            w.key_num(k!("attempts"), attempts.into());
        }
        if self.fallback {
            w.key(k!("fallback"));
            w.0.extend_from_slice(b"true");
        }
        let absent = [
            (k!("variant"), self.variant),
            (k!("cors"), self.cors.map(super::cors::CorsOutcome::name)),
            (k!("ip_refused"), self.ip_refused),
            (k!("cache"), self.cache.map(super::cache::CacheResult::name)),
        ];
        for (key, value) in absent {
            if let Some(value) = value {
                w.key_str(key, value);
            }
        }
        if let Some(us) = self.limit_delay_us {
            w.key_num(k!("limit_delay_us"), us);
        }
        w.key(k!("upstream_latency_us"));
        match self.upstream_latency_us {
            Some(us) => w.num(us),
            None => w.null(),
        }
        w.key_num(k!("overhead_us"), self.overhead_us);
        if let Some(us) = self.config_us {
            w.key_num(k!("config_us"), us);
        }
        w.key_num(k!("total_latency_us"), self.total_latency_us);
        w.key_num(k!("bytes_in"), self.bytes_in);
        w.key_num(k!("bytes_out"), self.bytes_out);
        if let Some(us) = self.upgraded_us {
            w.key_num(k!("upgraded_us"), us);
        }
        w.key_opt_str(k!("problem"), self.problem);
        w.key_opt_str(k!("source"), self.source.map(Source::name));
        w.key_opt_str(k!("error"), self.error.as_deref());
        w.0.extend_from_slice(b"}\n");
    }
}

/// RFC 3339 time in UTC with microseconds, its whole second formatted once
/// for all the lines of that second (formatting each cost ~400
/// instructions a line).
#[derive(Default)]
pub(crate) struct Stamp {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS`.
    text: [u8; 19],
}

impl Stamp {
    /// Appends `"YYYY-MM-DDTHH:MM:SS.uuuuuuZ"` (quoted) for `since_epoch`.
    fn write(&mut self, out: &mut Vec<u8>, since_epoch: Duration) {
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            let mut whole = String::with_capacity(20);
            let at = UNIX_EPOCH + Duration::from_secs(second);
            // humantime refuses times past the year 9999 (through io::Write, a panic).
            let written =
                std::fmt::Write::write_fmt(&mut whole, format_args!("{}", humantime::format_rfc3339_seconds(at)));
            match whole.as_bytes().get(..19) {
                Some(text) if written.is_ok() => self.text.copy_from_slice(text),
                _ => return out.extend_from_slice(b"null"),
            }
            self.second = Some(second);
        }
        out.push(b'"');
        out.extend_from_slice(&self.text);
        let mut micros = *b".000000Z\"";
        let mut n = since_epoch.subsec_micros();
        for digit in micros[1..7].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&micros);
    }
}

/// A JSON object being written: keys are ours, values are escaped as JSON
/// requires.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    /// A key from [`k!`], after a comma unless it is the object's first.
    fn key(&mut self, key: &'static str) {
        if !matches!(self.0.last(), Some(b'{')) {
            self.0.push(b',');
        }
        self.0.extend_from_slice(key.as_bytes());
    }

    /// A string value: copied as it is when nothing in it needs escaping
    /// (the common case), else escaped by serde_json.
    fn str(&mut self, s: &str) {
        if !needs_escape(s.as_bytes()) {
            self.plain(s.as_bytes());
        } else {
            self.serde(s);
        }
    }

    /// The string of `parts` joined, joined only if one needs escaping.
    fn str_of(&mut self, parts: &[&str]) {
        if parts.iter().any(|p| needs_escape(p.as_bytes())) {
            self.serde(&parts.concat());
        } else {
            self.0.push(b'"');
            parts.iter().for_each(|p| self.0.extend_from_slice(p.as_bytes()));
            self.0.push(b'"');
        }
    }

    /// A string value known to need no escaping (hex digits, an address).
    fn plain(&mut self, s: &[u8]) {
        self.0.push(b'"');
        self.0.extend_from_slice(s);
        self.0.push(b'"');
    }

    fn key_str(&mut self, key: &'static str, s: &str) {
        self.key(key);
        self.str(s);
    }

    fn key_opt_str(&mut self, key: &'static str, s: Option<&str>) {
        self.key(key);
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }

    fn num(&mut self, n: u64) {
        self.0.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn key_num(&mut self, key: &'static str, n: u64) {
        self.key(key);
        self.num(n);
    }

    fn null(&mut self) {
        self.0.extend_from_slice(b"null");
    }

    /// A nested value as serde writes it (rare fields: a TLS session).
    fn serde(&mut self, value: &(impl Serialize + ?Sized)) {
        if serde_json::to_writer(&mut *self.0, value).is_err() {
            self.null();
        }
    }
}

/// Whether JSON must escape something in `s`: a control character, `"` or
/// `\\`. Eight bytes at a time (a byte at a time cost ~5 instructions a
/// byte, most of the line's cost): a zero byte in `x ^ c` is a byte equal
/// to `c`, and `x - 0x20` borrows into the top bit of a byte below 0x20.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const TOPS: u64 = ONES << 7;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & TOPS != 0;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let x = u64::from_le_bytes(b);
        if below(x, 0x20) || below(x ^ (ONES * u64::from(b'"')), 1) || below(x ^ (ONES * u64::from(b'\\')), 1) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
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
    use crate::shared::tls::ClientCert;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(Duration::from_micros(1_767_225_600_000_001)), "2026-01-01T00:00:00.000001Z");
    }

    #[test]
    fn a_kept_second_writes_what_humantime_writes() {
        let mut stamp = Stamp::default();
        // Within a second, into the next, back to an earlier one, the epoch, the last microsecond humantime writes.
        let times = [1_767_225_600_000_001, 1_767_225_600_999_999, 1_767_225_601_000_000, 1_767_225_600_500_000, 0];
        for micros in times.into_iter().chain([253_402_300_799_999_999]) {
            let at = Duration::from_micros(micros);
            let mut out = Vec::new();
            stamp.write(&mut out, at);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{}\"", rfc3339(at)));
        }
        let mut out = Vec::new();
        stamp.write(&mut out, Duration::from_secs(253_402_300_800));
        assert_eq!(out, b"null", "past the year 9999");
        // A whole line at such a time is still JSON (it panicked in `write!`).
        let mut log = plain();
        log.observed.received_at = Duration::from_secs(253_402_300_800);
        let line: serde_json::Value = serde_json::from_str(&log.to_line()).unwrap();
        assert_eq!(line["time"], serde_json::Value::Null);
    }

    fn plain() -> AccessLog {
        AccessLog {
            request_id: HeaderValue::from_static("r-1"),
            trace_id: super::super::ids::HexId::checked(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            client_ip: IpAddr::from([192, 0, 2, 10]),
            listener: None,
            tls: None,
            method: Method::GET,
            host: "api.example".into(),
            path: "/hello".into(),
            route: None,
            service: None,
            identity: None,
            status: 404,
            auth: None,
            limits: PerPolicy::new(),
            upstream: None,
            attempts: None,
            fallback: false,
            variant: None,
            cors: None,
            ip_refused: None,
            cache: None,
            limit_delay_us: None,
            upstream_latency_us: None,
            overhead_us: 12,
            config_us: None,
            total_latency_us: 34,
            bytes_in: 0,
            bytes_out: 56,
            upgraded_us: None,
            problem: Some("no-route"),
            source: Some(Source::Client),
            error: None,
            started: Duration::ZERO,
            observed: Observed {
                route: None,
                service: None,
                auth: None,
                try_failures: Vec::new(),
                upstream_time: Duration::ZERO,
                logged: true,
                received_at: Duration::from_micros(1_767_225_600_000_001),
                spans: None,
            },
        }
    }

    #[test]
    fn a_plain_line_has_every_field_it_always_has_and_nulls() {
        assert_eq!(
            plain().to_line(),
            concat!(
                r#"{"time":"2026-01-01T00:00:00.000001Z","request_id":"r-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","#,
                r#""client_ip":"192.0.2.10","method":"GET","host":"api.example","path":"/hello","route":null,"service":null,"#,
                r#""identity":null,"status":404,"upstream":null,"upstream_latency_us":null,"overhead_us":12,"#,
                r#""total_latency_us":34,"bytes_in":0,"bytes_out":56,"problem":"no-route","source":"client","error":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_full_line_has_the_optional_fields_in_order() {
        let mut log = plain();
        log.client_ip = "2001:db8::1".parse().unwrap();
        log.listener = Some("public".into());
        let cert = ClientCert { common_name: Some("svc".into()), sha256: "ab".into(), ..Default::default() };
        log.tls = Some(Arc::new(TlsInfo { version: "1.3", sni: Some("api.example".into()), client_cert: Some(cert) }));
        log.route = Some("users".into());
        log.service = Some("api".into());
        log.identity = Some(Arc::new(Identity {
            provider: "corp".into(),
            subject: "u\"1".into(),
            groups: Vec::new(),
            scopes: Vec::new(),
            claims: Default::default(),
            networks: None,
        }));
        log.status = 200;
        log.auth = Some(AuthLog { provider: Some("corp".into()), outcome: "ok", cached: Some(true) });
        log.limits = smallvec::smallvec![
            LimitLog { policy: "a".into(), index: 0, outcome: LimitOutcome::Leased },
            LimitLog { policy: "b".into(), index: 1, outcome: LimitOutcome::Delayed },
        ];
        log.upstream = Some("http://127.0.0.1:8080".into());
        log.attempts = Some(2);
        log.fallback = true;
        log.variant = Some("canary");
        log.cors = Some(super::super::cors::CorsOutcome::Allowed);
        log.ip_refused = Some("route");
        log.cache = Some(super::super::cache::CacheResult::Revalidated);
        log.limit_delay_us = Some(7);
        log.upstream_latency_us = Some(u64::MAX);
        log.config_us = Some(9);
        log.upgraded_us = Some(11);
        log.problem = None;
        log.source = Some(Source::Upstream);
        log.error = Some("a \"quoted\" \\ line\nand a tab\t and \u{1}".into());
        assert_eq!(
            log.to_line(),
            concat!(
                r#"{"time":"2026-01-01T00:00:00.000001Z","request_id":"r-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","#,
                r#""client_ip":"2001:db8::1","listener":"public","#,
                r#""tls":{"version":"1.3","sni":"api.example","client":{"common_name":"svc","sha256":"ab"}},"#,
                r#""method":"GET","host":"api.example","path":"/hello","route":"users","service":"api","#,
                r#""identity":"corp:u\"1","status":200,"auth":{"provider":"corp","outcome":"ok","cached":true},"#,
                r#""limits":[{"policy":"a","outcome":"leased"},{"policy":"b","outcome":"delayed"}],"#,
                r#""upstream":"http://127.0.0.1:8080","attempts":2,"fallback":true,"variant":"canary","cors":"allowed","#,
                r#""ip_refused":"route","cache":"revalidated","limit_delay_us":7,"upstream_latency_us":18446744073709551615,"#,
                r#""overhead_us":12,"config_us":9,"total_latency_us":34,"bytes_in":0,"bytes_out":56,"upgraded_us":11,"#,
                r#""problem":null,"source":"upstream","error":"a \"quoted\" \\ line\nand a tab\t and \u0001"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn escapes_are_found_in_any_byte_of_a_word() {
        for len in 0..20 {
            assert!(!needs_escape(&b"ab/~ \x7f\xc3\xa9".repeat(3)[..len]));
            for at in 0..len {
                for c in [0u8, 0x1f, b'\n', b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    s[at] = c;
                    assert!(needs_escape(&s), "{c:#x} at {at} of {len}");
                }
            }
        }
        for c in (0x20..=0xffu8).filter(|&c| c != b'"' && c != b'\\') {
            assert!(!needs_escape(&[c; 17]), "{c:#x}");
        }
    }

    #[test]
    fn any_text_makes_a_line_of_valid_json() {
        let mut log = plain();
        for text in ["", "plain", "\"", "\\", "\u{0}\u{1f}\u{7f}", "é漢字🙂", "a\r\nb", "\u{2028}"] {
            log.path = text.into();
            log.host = format!("{text}{text}");
            log.identity = Some(Arc::new(Identity {
                provider: "corp".into(),
                subject: text.into(),
                groups: Vec::new(),
                scopes: Vec::new(),
                claims: Default::default(),
                networks: None,
            }));
            let value: serde_json::Value = serde_json::from_str(&log.to_line()).unwrap();
            assert_eq!(value["path"], text);
            assert_eq!(value["host"], log.host.as_str());
            assert_eq!(value["identity"], format!("corp:{text}"));
        }
    }
}
