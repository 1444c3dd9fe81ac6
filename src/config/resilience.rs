//! What contains a failing origin: `services.NAME.retry`, `.health`,
//! `.max_in_flight` and a route's `fallback` and `retry_non_idempotent`
//! (the behaviour is `pipeline::upstream`'s).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use toml::Spanned;

use super::raw::{RawBreaker, RawFallback, RawHealth, RawRetry, RawRoute};
use super::{Compiler, Service, parse_header_name};
use crate::shared::grpc::Code;

/// When a failed try is tried again. Without a `[services.NAME.retry]`
/// table a request gets one more try, and only on a target it has not
/// tried (so none for a single-target service): sending the same request
/// to the origin that just failed it is a choice an operator makes, by
/// writing the table; then a retry goes to another target where there is
/// one, else to the same.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retry {
    /// Tries in all, the first included (1: no retries). Default: 2.
    pub(crate) attempts: u32,
    /// Answers worth another try (idempotent requests). Default: 502, 503, 504.
    pub(crate) on_status: Vec<StatusCode>,
    /// gRPC statuses worth another try, when an origin answers with one
    /// before any message (a trailers-only answer). Default: none.
    pub(crate) on_grpc_status: Vec<Code>,
    /// The most one try may take, within the service's `request_timeout`.
    pub(crate) per_try_timeout: Option<Duration>,
    /// Exponential backoff with full jitter: a random wait below
    /// `min(max_backoff, backoff × 2^retry)`.
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// Retries may be this share of the requests of the last 10 s…
    pub(crate) budget_percent: u32,
    /// …plus this many a second.
    pub(crate) min_per_second: u32,
    /// Request bodies up to this size (by `Content-Length`) are kept for
    /// another try; a larger or chunked body is streamed once.
    pub(crate) max_body: u64,
    /// Whether the service spelled out its policy (`[services.NAME.retry]`).
    pub(crate) explicit: bool,
}

/// The most tries one request may make (`retry.attempts`).
pub(crate) const MAX_ATTEMPTS: u32 = 10;

impl Retry {
    /// Tries in all for a service of `targets` targets: without the table,
    /// at most one per target.
    pub(crate) fn attempts_over(&self, targets: usize) -> u32 {
        match self.explicit {
            true => self.attempts,
            false => self.attempts.min(u32::try_from(targets).unwrap_or(u32::MAX)),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_status: vec![StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT],
            on_grpc_status: Vec::new(),
            per_try_timeout: None,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
            min_per_second: 3,
            max_body: 64 << 10,
            explicit: false,
        }
    }
}

/// Passive health: a target that fails `failures` times in a row (connect
/// errors, timeouts, 5xx) is ejected for `eject_for`, doubled for each
/// ejection in a row up to `max_eject_for`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Health {
    /// 0: never eject. Default: 5.
    pub(crate) failures: u32,
    pub(crate) eject_for: Duration,
    pub(crate) max_eject_for: Duration,
    /// At most this share of the targets is out at once. Default: 50 %.
    pub(crate) max_ejected_percent: u32,
    /// With every target out: try them anyway (true, the default) or
    /// answer 503 `no-healthy-upstream`.
    pub(crate) try_when_all_down: bool,
    /// Active checks (the node runs them; the edge cannot: no background work).
    pub(crate) probe: Option<Probe>,
}

/// An HTTP probe of each target: `GET path` every `interval`; a target is
/// down after `unhealthy` failed probes in a row, up after `healthy`
/// passed ones. The first round runs before the node starts listening and
/// decides at once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    /// Path and query, after the target's base path.
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    /// Answers that pass. Default: 200.
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) healthy: u32,
    pub(crate) unhealthy: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            failures: 5,
            eject_for: Duration::from_secs(10),
            max_eject_for: Duration::from_secs(300),
            max_ejected_percent: 50,
            try_when_all_down: true,
            probe: None,
        }
    }
}

/// A service's circuit breaker (`[services.NAME.breaker]`; none without).
/// It opens when at least `failure_rate` of the requests of the last
/// `window` failed (once there were `min_requests`), or when
/// `consecutive_failures` failed in a row; stays open `open_for`; then lets
/// `probes` requests through, closing if they all succeed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breaker {
    /// Percent; `None`: off. Default: 50 %.
    pub(crate) failure_rate: Option<u32>,
    /// Default: 20.
    pub(crate) min_requests: u32,
    /// At most 60 s. Default: 10 s.
    pub(crate) window: Duration,
    /// `None`: off. Default: 5.
    pub(crate) consecutive_failures: Option<u32>,
    /// Default: 30 s.
    pub(crate) open_for: Duration,
    /// Default: 3.
    pub(crate) probes: u32,
    /// How often an instance reads the fleet's record. Default: 1 s.
    pub(crate) sync: Duration,
}

/// A route's static answer while its service cannot answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fallback {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// Methods that may be sent twice with the effect of once (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn percent(text: &str) -> Result<u32, String> {
    text.strip_suffix('%')
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("`{text}`: a share such as \"20%\" (0% to 100%)"))
}

impl Compiler<'_> {
    pub(super) fn retry(&mut self, key: &str, raw: Option<&Spanned<RawRetry>>) -> Retry {
        let mut retry = Retry::default();
        let Some(raw) = raw.map(Spanned::get_ref) else { return retry };
        retry.explicit = true;
        let k = |field: &str| format!("{key}.retry.{field}");
        if let Some(a) = &raw.attempts {
            match *a.get_ref() {
                n @ 1..=MAX_ATTEMPTS => retry.attempts = n,
                n => self.error(
                    a.span(),
                    k("attempts"),
                    format!("{n}: tries in all, from 1 (no retries) to {MAX_ATTEMPTS}"),
                ),
            }
        }
        if let Some(list) = &raw.on_status {
            retry.on_status = list
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let parsed = StatusCode::from_u16(*s.get_ref())
                        .ok()
                        .filter(|c| c.is_server_error() || *c == StatusCode::TOO_MANY_REQUESTS)
                        .ok_or_else(|| format!("{}: only 5xx and 429 answers are tried again", s.get_ref()));
                    self.check(s.span(), &format!("{}[{i}]", k("on_status")), parsed)
                })
                .collect();
        }
        if let Some(list) = &raw.on_grpc_status {
            retry.on_grpc_status = list
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    self.check(s.span(), &format!("{}[{i}]", k("on_grpc_status")), Code::parse(s.get_ref()))
                })
                .collect();
        }
        if raw.per_try_timeout.is_some() {
            retry.per_try_timeout = Some(self.duration(&raw.per_try_timeout, &k("per_try_timeout"), Duration::MAX));
        }
        retry.backoff = self.duration(&raw.backoff, &k("backoff"), retry.backoff);
        retry.max_backoff = self.duration(&raw.max_backoff, &k("max_backoff"), retry.max_backoff.max(retry.backoff));
        if retry.max_backoff < retry.backoff
            && let Some(m) = &raw.max_backoff
        {
            self.error(m.span(), k("max_backoff"), "must be at least `backoff`");
        }
        if let Some(b) = &raw.budget {
            retry.budget_percent = self.check(b.span(), &k("budget"), percent(b.get_ref())).unwrap_or(0);
        }
        if let Some(m) = &raw.min_per_second {
            retry.min_per_second = *m.get_ref();
        }
        retry.max_body = self.size(raw.max_body.clone(), &k("max_body"), retry.max_body);
        retry
    }

    pub(super) fn health(&mut self, key: &str, raw: Option<&Spanned<RawHealth>>) -> Health {
        let mut health = Health::default();
        let Some(spanned) = raw else { return health };
        let raw = spanned.get_ref();
        let k = |field: &str| format!("{key}.health.{field}");
        if let Some(f) = &raw.failures {
            health.failures = *f.get_ref();
        }
        health.eject_for = self.duration(&raw.eject_for, &k("eject_for"), health.eject_for);
        health.max_eject_for =
            self.duration(&raw.max_eject_for, &k("max_eject_for"), health.max_eject_for.max(health.eject_for));
        if health.max_eject_for < health.eject_for
            && let Some(m) = &raw.max_eject_for
        {
            self.error(m.span(), k("max_eject_for"), "must be at least `eject_for`");
        }
        if let Some(m) = &raw.max_ejected {
            health.max_ejected_percent = self.check(m.span(), &k("max_ejected"), percent(m.get_ref())).unwrap_or(50);
        }
        health.try_when_all_down = self.either(
            raw.when_all_down.as_ref(),
            spanned.span(),
            k("when_all_down"),
            ("try", "send to the targets anyway"),
            ("refuse", "answer 503"),
        );
        health.probe = raw.probe.as_ref().and_then(|p| self.probe(&k("probe"), p.get_ref()));
        health
    }

    fn probe(&mut self, key: &str, raw: &super::raw::RawProbe) -> Option<Probe> {
        let k = |field: &str| format!("{key}.{field}");
        let path = raw.path.get_ref().clone();
        let valid = path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok();
        if !valid {
            self.error(raw.path.span(), k("path"), format!("`{path}`: a path such as \"/healthz\""));
        }
        let interval = self.duration(&raw.interval, &k("interval"), Duration::from_secs(5));
        let timeout = self.duration(&raw.timeout, &k("timeout"), Duration::from_secs(1));
        if let Some(t) = raw.timeout.as_ref().filter(|_| timeout > interval) {
            self.error(t.span(), k("timeout"), "must not be longer than `interval`");
        }
        let statuses = match &raw.statuses {
            None => vec![StatusCode::OK],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let parsed = StatusCode::from_u16(*s.get_ref())
                        .ok()
                        .filter(|c| !c.is_informational())
                        .ok_or_else(|| format!("{}: a final status, 200 to 599", s.get_ref()));
                    self.check(s.span(), &format!("{}[{i}]", k("statuses")), parsed)
                })
                .collect(),
        };
        let mut threshold = |v: &Option<Spanned<u32>>, field: &str, default: u32| match v {
            Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.error(n.span(), k(field), format!("{}: from 1 to 100", n.get_ref()));
                default
            }
            None => default,
        };
        let healthy = threshold(&raw.healthy, "healthy", 2);
        let unhealthy = threshold(&raw.unhealthy, "unhealthy", 3);
        valid.then_some(Probe { path, interval, timeout, statuses, healthy, unhealthy })
    }

    pub(super) fn breaker(&mut self, key: &str, raw: Option<&Spanned<RawBreaker>>) -> Option<Breaker> {
        let spanned = raw?;
        let raw = spanned.get_ref();
        let k = |field: &str| format!("{key}.breaker.{field}");
        let failure_rate = match &raw.failure_rate {
            None => Some(50),
            Some(r) if r.get_ref() == "off" => None,
            Some(r) => {
                let parsed = percent(r.get_ref()).and_then(|p| {
                    if p == 0 {
                        Err("0% would open on any request; write \"off\" to count failures in a row only".into())
                    } else {
                        Ok(p)
                    }
                });
                Some(self.check(r.span(), &k("failure_rate"), parsed).unwrap_or(50))
            }
        };
        let mut count =
            |value: &Option<Spanned<u32>>, field: &str, default: u32, range: std::ops::RangeInclusive<u32>| {
                let Some(v) = value else { return default };
                let n = *v.get_ref();
                if range.contains(&n) {
                    n
                } else {
                    let message = format!("{n}: from {} to {}", range.start(), range.end());
                    self.error(v.span(), k(field), message);
                    default
                }
            };
        let min_requests = count(&raw.min_requests, "min_requests", 20, 1..=1_000_000);
        let probes = count(&raw.probes, "probes", 3, 1..=100);
        let consecutive = count(&raw.consecutive_failures, "consecutive_failures", 5, 0..=1_000_000);
        let consecutive_failures = (consecutive > 0).then_some(consecutive);
        let window = self.duration(&raw.window, &k("window"), Duration::from_secs(10));
        if let Some(w) =
            raw.window.as_ref().filter(|_| window > Duration::from_secs(60) || window < Duration::from_secs(1))
        {
            self.error(w.span(), k("window"), "from 1s to 60s");
        }
        let open_for = self.duration(&raw.open_for, &k("open_for"), Duration::from_secs(30));
        let sync = self.duration(&raw.sync, &k("sync"), Duration::from_secs(1));
        if failure_rate.is_none() && consecutive_failures.is_none() {
            self.error(
                spanned.span(),
                k("failure_rate"),
                "with `failure_rate = \"off\"` and `consecutive_failures = 0` the circuit never opens",
            );
        }
        Some(Breaker { failure_rate, min_requests, window, consecutive_failures, open_for, probes, sync })
    }

    pub(super) fn fallback(&mut self, key: &str, raw: &Spanned<RawFallback>) -> Option<Fallback> {
        let f = raw.get_ref();
        let errors_before = self.errors.len();
        let status = StatusCode::from_u16(*f.status.get_ref())
            .ok()
            .filter(|s| !s.is_informational())
            .ok_or_else(|| format!("{}: a final status, 200 to 599", f.status.get_ref()));
        let status = self.check(f.status.span(), &format!("{key}.status"), status);
        let mut headers = Vec::new();
        for (name, value) in &f.headers {
            let k = format!("{key}.headers.{}", name.get_ref());
            let n = self.check(name.span(), &k, parse_header_name(name.get_ref()));
            let v = HeaderValue::from_str(value.get_ref())
                .map_err(|_| format!("`{}` is not a valid header value", value.get_ref()));
            if let (Some(n), Some(v)) = (n, self.check(value.span(), &k, v)) {
                headers.push((n, v));
            }
        }
        let body = Bytes::from(f.body.as_ref().map(|b| b.get_ref().clone()).unwrap_or_default());
        (self.errors.len() == errors_before).then_some(Fallback { status: status?, headers, body })
    }

    /// `retry_non_idempotent`: only where the service tries again at all,
    /// and said out loud where a route takes only methods that are not
    /// idempotent and its service has an explicit retry policy (unless the
    /// policy is gRPC's: its statuses are retried whatever the method).
    pub(super) fn route_retry(
        &mut self,
        span: Range<usize>,
        key: &str,
        raw: &RawRoute,
        methods: Option<&[Method]>,
        service: &Service,
    ) -> bool {
        let key = format!("{key}.retry_non_idempotent");
        let Some(opt) = &raw.retry_non_idempotent else {
            let never_idempotent = methods.is_some_and(|m| !m.is_empty() && !m.iter().any(is_idempotent));
            let grpc = !service.retry.on_grpc_status.is_empty();
            if service.retry.explicit && service.retry.attempts > 1 && never_idempotent && !grpc {
                let message = format!(
                    "service `{}` retries, but this route's methods are not idempotent: set \
                     `retry_non_idempotent = true` to retry them on 5xx too, or `false` to retry only what never reached the origin",
                    service.name
                );
                self.error(span, key, message);
            }
            return false;
        };
        if *opt.get_ref() && service.retry.attempts < 2 {
            let message = format!("service `{}` never retries (`retry.attempts = 1`)", service.name);
            self.error(opt.span(), key, message);
        }
        *opt.get_ref()
    }
}
