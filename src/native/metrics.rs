//! The node's metrics, exposed as OpenMetrics text by `prometheus-client`.
//! Requests feed them from their finished access-log record (one call per
//! request, off the request path: when the body is done); what the gateway
//! holds (circuits, target health, connections, the process) is read when
//! scraped. Every label value comes from the config — route, service,
//! provider, policy and target names — or from a fixed set (method, status
//! class, outcome); never from a raw path, a caller or an address, so the
//! series are bounded by the config.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pipeline::Gateway;
use crate::pipeline::log::{AccessLog, LimitOutcome};
use crate::system_clock;

/// Bucket bounds in seconds: 25 µs to 10 s, fine enough below a
/// millisecond to see the gateway's own time.
const BUCKETS: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The route label of a request no route matched.
const UNMATCHED: &str = "(unmatched)";
/// The service label of a request that reached no service.
const NO_SERVICE: &str = "(none)";

#[derive(Clone, Copy, Debug)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

type Histograms<L> = Family<L, Histogram, Buckets>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    service: Arc<str>,
    method: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CorsLabels {
    route: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    route: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpLabels {
    route: Arc<str>,
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    policy: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    service: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    /// Bounded by `--workers`.
    worker: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcmeLabels {
    /// A name a listener orders (bounded by the config).
    name: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    sha256: String,
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    listener: Arc<str>,
    /// The certificate's first name (bounded by the config's certificates).
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    service: Arc<str>,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    service: Arc<str>,
    target: Arc<str>,
}

/// Registers each metric (a clone: the registry and the struct share it).
macro_rules! register {
    ($registry:expr, $($name:literal, $help:literal, $metric:expr;)*) => {
        $( $registry.register($name, $help, $metric.clone()); )*
    };
}

/// The node's metrics. Cheap to share (`Arc`); every family is bounded by
/// the config (see the module comment).
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    duration: Histograms<RouteLabel>,
    overhead: Histograms<RouteLabel>,
    upstream_duration: Histograms<ServiceLabel>,
    auth: Family<OutcomeLabels, Counter>,
    token_cache: Family<OutcomeLabels, Counter>,
    jwks_fetches: Family<OutcomeLabels, Counter>,
    limits: Family<LimitLabels, Counter>,
    tries: Family<ServiceLabel, Counter>,
    retries: Family<ServiceLabel, Counter>,
    try_failures: Family<FailureLabels, Counter>,
    fallbacks: Family<RouteLabel, Counter>,
    cors: Family<CorsLabels, Counter>,
    ip_refusals: Family<IpLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    limit_delay: Histograms<RouteLabel>,
    store_duration: Histograms<OperationLabel>,
    store_errors: Family<OperationLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    accepted: Family<WorkerLabel, Counter>,
    config: Family<ConfigLabels, Gauge>,
    config_loaded: Gauge<f64, AtomicU64>,
    config_version: Gauge,
    store_keys: Gauge,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    acme_orders: Family<AcmeLabels, Counter>,
    unmatched: Arc<str>,
    no_service: Arc<str>,
    /// Off when nothing serves `/metrics` (`--metrics-listen off`): requests
    /// then record nothing.
    enabled: bool,
    /// The series of the config requests last ran on.
    resolved: ArcSwapOption<Series>,
    /// The callers limits refused most lately (the admin API's `/refusals`).
    pub(crate) top_refused: super::refusals::TopRefused,
}

/// What the node holds, read at each scrape.
pub(crate) struct State {
    pub(crate) gateway: Box<dyn Fn() -> Arc<Gateway> + Send + Sync>,
    pub(crate) connections: Box<dyn Fn() -> usize + Send + Sync>,
    pub(crate) upstream_connections: Arc<super::client::Connections>,
}

impl Metrics {
    pub(crate) fn new(state: State, enabled: bool) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            requests: Family::default(),
            in_flight: Gauge::default(),
            duration: Family::new_with_constructor(Buckets),
            overhead: Family::new_with_constructor(Buckets),
            upstream_duration: Family::new_with_constructor(Buckets),
            auth: Family::default(),
            token_cache: Family::default(),
            jwks_fetches: Family::default(),
            limits: Family::default(),
            tries: Family::default(),
            retries: Family::default(),
            try_failures: Family::default(),
            fallbacks: Family::default(),
            cors: Family::default(),
            ip_refusals: Family::default(),
            cache: Family::default(),
            limit_delay: Family::new_with_constructor(Buckets),
            store_duration: Family::new_with_constructor(Buckets),
            store_errors: Family::default(),
            reloads: Family::default(),
            accepted: Family::default(),
            config: Family::default(),
            config_loaded: Gauge::default(),
            config_version: Gauge::default(),
            store_keys: Gauge::default(),
            certificate_expiry: Family::default(),
            acme_orders: Family::default(),
            unmatched: UNMATCHED.into(),
            no_service: NO_SERVICE.into(),
            enabled,
            resolved: ArcSwapOption::empty(),
            top_refused: Default::default(),
            registry: Registry::default(),
        };
        // name, what it counts, the metric.
        register!(registry,
            "portcullis_requests", "Requests answered, by route, service, method and status class", m.requests;
            "portcullis_requests_in_flight", "Requests being answered now", m.in_flight;
            "portcullis_request_duration_seconds", "Time from a request's arrival to the end of its response body", m.duration;
            "portcullis_gateway_overhead_seconds", "The gateway's own time to the response head: total less the time spent waiting on targets", m.overhead;
            "portcullis_upstream_duration_seconds", "Time spent waiting on a service's targets for a request (all tries)", m.upstream_duration;
            "portcullis_auth", "Authentication outcomes by provider (`ok` or why not)", m.auth;
            "portcullis_token_cache", "Verified-token cache lookups by provider (hit or miss)", m.token_cache;
            "portcullis_jwks_fetches", "Key-set fetches by provider and result", m.jwks_fetches;
            "portcullis_rate_limit_decisions", "Rate-limit decisions by policy and outcome", m.limits;
            "portcullis_upstream_tries", "Tries sent to a service's targets", m.tries;
            "portcullis_upstream_retries", "Tries after a request's first", m.retries;
            "portcullis_upstream_try_failures", "Tries that got no answer, by service and kind", m.try_failures;
            "portcullis_fallbacks", "Answers from a route's fallback", m.fallbacks;
            "portcullis_rate_limit_delay_seconds", "Time requests waited for their turn under a rate-limit policy's max_delay, by route", m.limit_delay;
            "portcullis_ip_refusals", "Requests refused by IP rules, by route and the level of the rules (service, route, consumer)", m.ip_refusals;
            "portcullis_cache", "Requests on routes with a response cache, by route and what the cache did (hit, collapsed, stale, miss, expired, revalidated, bypass, invalidated)", m.cache;
            "portcullis_cors", "Calls from pages on routes with a CORS policy, by outcome (preflight, allowed, refused)", m.cors;
            "portcullis_store_duration_seconds", "Round trips to the shared store (Redis), by operation", m.store_duration;
            "portcullis_store_errors", "Failed calls to the shared store (Redis), by operation", m.store_errors;
            "portcullis_config_reloads", "Config reloads by result (ok, rejected)", m.reloads;
            "portcullis_connections_accepted", "Client connections accepted, by the worker that serves them (--workers)", m.accepted;
            "portcullis_config_info", "The loaded config: its file and SHA-256 (value 1)", m.config;
            "portcullis_config_loaded_timestamp_seconds", "When the running config was loaded (Unix time)", m.config_loaded;
            "portcullis_config_version", "The registry version the node runs (0: a config file)", m.config_version;
            "portcullis_store_keys", "Records in the in-memory store after its last purge of expired ones", m.store_keys;
            "portcullis_tls_certificate_expiry_timestamp_seconds", "When each certificate a TLS listener serves expires (Unix time), by listener and its first name", m.certificate_expiry;
            "portcullis_acme_orders", "Certificate orders to the ACME directory by name and result (issued, failed)", m.acme_orders;
        );
        registry.register_collector(Box::new(Live { state, started: unix_now() }));
        Self { registry, ..m }
    }

    /// The exposition, as `/metrics` answers it.
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(64 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A request began; the guard ends it.
    pub(crate) fn begin(&self) -> Option<InFlight> {
        self.enabled.then(|| {
            self.in_flight.inc();
            InFlight(self.in_flight.clone())
        })
    }

    /// The series of `gateway`'s routes and services (resolved the first
    /// time a config is seen); `None` when requests record nothing.
    pub(crate) fn series(&self, gateway: &Arc<Gateway>) -> Option<Arc<Series>> {
        if !self.enabled {
            return None;
        }
        if let Some(series) =
            self.resolved.load_full().filter(|s| std::ptr::eq(s.gateway.as_ptr(), Arc::as_ptr(gateway)))
        {
            return Some(series);
        }
        let series = Arc::new(Series::new(self, gateway));
        self.resolved.store(Some(series.clone()));
        Some(series)
    }

    /// Counts a finished request from its access-log record, with the
    /// series of the config it ran on.
    pub(crate) fn request(&self, log: &AccessLog, series: &Series) {
        let observed = &log.observed;
        let (method, class) = (method(&log.method), status_class(log.status));
        let route = observed.route.and_then(|r| series.routes.get(r));
        match route {
            Some(r) if observed.service == Some(r.service) => {
                r.requests[method.0][class.0].get_or_init(|| self.requests_series(log, method.1, class.1)).inc();
            }
            _ => {
                self.requests_series(log, method.1, class.1).inc();
            }
        }
        let (total, overhead) = (seconds_us(log.total_latency_us), seconds_us(log.overhead_us));
        match route {
            Some(r) => {
                r.duration.observe(total);
                r.overhead.observe(overhead);
            }
            None => {
                let label = RouteLabel { route: self.unmatched.clone() };
                self.duration.get_or_create(&label).observe(total);
                self.overhead.get_or_create(&label).observe(overhead);
            }
        }
        if log.fallback
            && let Some(route) = &log.route
        {
            self.fallbacks.get_or_create(&RouteLabel { route: route.clone() }).inc();
        }
        if let (Some(cors), Some(route)) = (log.cors, &log.route) {
            self.cors.get_or_create(&CorsLabels { route: route.clone(), outcome: cors.name() }).inc();
        }
        if let (Some(delay), Some(route)) = (log.limit_delay_us, &log.route) {
            self.limit_delay.get_or_create(&RouteLabel { route: route.clone() }).observe(seconds_us(delay));
        }
        if let (Some(result), Some(route)) = (log.cache, &log.route) {
            self.cache.get_or_create(&CacheLabels { route: route.clone(), result: result.name() }).inc();
        }
        if let (Some(level), Some(route)) = (log.ip_refused, &log.route) {
            self.ip_refusals.get_or_create(&IpLabels { route: route.clone(), level }).inc();
        }
        let observed = &log.observed;
        if let Some(auth) = &log.auth {
            let provider = || auth.provider.clone().unwrap_or_else(|| self.no_service.clone());
            let labels = |outcome| OutcomeLabels { provider: provider(), outcome };
            let resolved = observed.auth.and_then(|a| a.provider).and_then(|i| series.providers.get(i));
            match resolved {
                Some(p) if auth.outcome == "ok" => {
                    p.ok.get_or_init(|| self.auth.get_or_create_owned(&labels("ok"))).inc()
                }
                _ => self.auth.get_or_create(&labels(auth.outcome)).inc(),
            };
            if let Some(hit) = auth.cached {
                let family = || self.token_cache.get_or_create_owned(&labels(if hit { "hit" } else { "miss" }));
                match resolved {
                    Some(p) => p.cache[usize::from(hit)].get_or_init(family).inc(),
                    None => family().inc(),
                };
            }
            if let Some(fetch) = observed.auth.and_then(|a| a.fetch) {
                self.jwks_fetch(&provider(), fetch.ok);
            }
        }
        if log.limits.iter().any(|l| l.outcome == LimitOutcome::Limited) {
            let caller = match &log.identity {
                Some(id) => format!("{}:{}", id.provider, id.subject),
                None => format!("ip:{}", log.client_ip),
            };
            self.top_refused.record(&caller, observed.received_at.as_secs() / 60);
        }
        for limit in &log.limits {
            let labels = || LimitLabels { policy: limit.policy.clone(), outcome: limit.outcome.name() };
            let family = || self.limits.get_or_create_owned(&labels());
            match series.policies.get(limit.index).and_then(|p| p.get(limit.outcome.index())) {
                Some(cell) => cell.get_or_init(family).inc(),
                None => family().inc(),
            };
        }
        if let (Some(s), Some(attempts)) = (observed.service.and_then(|s| series.services.get(s)), log.attempts) {
            s.upstream.observe(observed.upstream_time.as_secs_f64());
            s.tries.inc_by(u64::from(attempts));
            if attempts > 1 {
                self.retries.get_or_create(&ServiceLabel { service: s.name.clone() }).inc_by(u64::from(attempts - 1));
            }
            for &kind in &observed.try_failures {
                self.try_failures.get_or_create(&FailureLabels { service: s.name.clone(), kind }).inc();
            }
        }
    }

    /// The `portcullis_requests_total` series of a request.
    fn requests_series(&self, log: &AccessLog, method: &'static str, status_class: &'static str) -> Counter {
        let labels = RequestLabels {
            route: log.route.clone().unwrap_or_else(|| self.unmatched.clone()),
            service: log.service.clone().unwrap_or_else(|| self.no_service.clone()),
            method,
            status_class,
        };
        self.requests.get_or_create_owned(&labels)
    }

    /// A key-set fetch (by a request, or the node's warm-up).
    pub(crate) fn jwks_fetch(&self, provider: &Arc<str>, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.jwks_fetches.get_or_create(&OutcomeLabels { provider: provider.clone(), outcome }).inc();
    }

    /// A call to the shared store took `elapsed`; `ok`: it answered.
    pub(crate) fn store_call(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        let label = OperationLabel { operation };
        self.store_duration.get_or_create(&label).observe(elapsed.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&label).inc();
        }
    }

    /// A config was loaded (at start, or by a reload).
    pub(crate) fn config_loaded(&self, file: &str, sha256: &str, version: Option<u64>) {
        self.config.clear();
        self.config.get_or_create(&ConfigLabels { sha256: sha256.to_string(), file: file.to_string() }).set(1);
        self.config_loaded.set(unix_now());
        self.config_version.set(version.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
    }

    /// Records in the in-memory store after its last purge.
    pub(crate) fn store_keys(&self, keys: usize) {
        self.store_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// The certificates the listeners serve now (at start, after a reload
    /// or a certificate file changed): each one's expiry.
    pub(crate) fn certificates(&self, served: &[(Arc<str>, super::tls::Served, std::time::Duration)]) {
        self.certificate_expiry.clear();
        for (listener, cert, _) in served {
            let name = cert.names.first().cloned().unwrap_or_default();
            self.certificate_expiry
                .get_or_create(&CertificateLabels { listener: listener.clone(), name })
                .set(cert.not_after);
        }
    }

    /// An ACME order for `name`: issued, or failed (the certificate served stays).
    pub(crate) fn acme_order(&self, name: &str, issued: bool) {
        let result = if issued { "issued" } else { "failed" };
        self.acme_orders.get_or_create(&AcmeLabels { name: name.to_string(), result }).inc();
    }

    /// The count of client connections a worker accepted (`None` when
    /// requests record nothing), looked up once by its accept loop.
    pub(crate) fn accepted(&self, worker: usize) -> Option<Counter> {
        self.enabled.then(|| self.accepted.get_or_create(&WorkerLabel { worker: worker as u64 }).clone())
    }

    /// A reload: `ok`, or rejected (the running config stays).
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "rejected" } }).inc();
    }
}

/// Keeps a request counted in flight until dropped.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Methods as labels (and their index in [`RouteSeries::requests`]).
const METHODS: usize = 10;

fn method(m: &Method) -> (usize, &'static str) {
    match *m {
        Method::GET => (0, "GET"),
        Method::HEAD => (1, "HEAD"),
        Method::POST => (2, "POST"),
        Method::PUT => (3, "PUT"),
        Method::DELETE => (4, "DELETE"),
        Method::PATCH => (5, "PATCH"),
        Method::OPTIONS => (6, "OPTIONS"),
        Method::CONNECT => (7, "CONNECT"),
        Method::TRACE => (8, "TRACE"),
        _ => (9, "other"),
    }
}

fn status_class(status: u16) -> (usize, &'static str) {
    match status {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

/// One config's series, by route and service index: a request updates
/// them without hashing a label.
pub(crate) struct Series {
    /// The config they belong to (held weakly: its address stays reserved,
    /// so a new config is never taken for it).
    gateway: Weak<Gateway>,
    routes: Box<[RouteSeries]>,
    services: Box<[ServiceSeries]>,
    /// By provider: `portcullis_auth` when it is `ok`, and
    /// `portcullis_token_cache` (miss, hit), resolved on first use.
    providers: Box<[ProviderSeries]>,
    /// By policy: `portcullis_rate_limit_decisions` by outcome, resolved on first use.
    policies: Box<[[OnceLock<Counter>; LimitOutcome::COUNT]]>,
}

#[derive(Default)]
struct ProviderSeries {
    ok: OnceLock<Counter>,
    cache: [OnceLock<Counter>; 2],
}

struct RouteSeries {
    /// The route's own service (requests to a canary's go by label).
    service: usize,
    duration: Histogram,
    overhead: Histogram,
    /// `portcullis_requests_total` to the route's service, by method and
    /// status class, resolved on first use.
    requests: [[OnceLock<Counter>; 5]; METHODS],
}

struct ServiceSeries {
    name: Arc<str>,
    upstream: Histogram,
    tries: Counter,
}

impl Series {
    fn new(m: &Metrics, gateway: &Arc<Gateway>) -> Self {
        let config = &gateway.config;
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let label = RouteLabel { route: r.name.clone() };
                RouteSeries {
                    service: r.service,
                    duration: m.duration.get_or_create_owned(&label),
                    overhead: m.overhead.get_or_create_owned(&label),
                    requests: Default::default(),
                }
            })
            .collect();
        let services = config
            .services
            .iter()
            .map(|s| {
                let label = ServiceLabel { service: s.name.clone() };
                ServiceSeries {
                    name: s.name.clone(),
                    upstream: m.upstream_duration.get_or_create_owned(&label),
                    tries: m.tries.get_or_create_owned(&label),
                }
            })
            .collect();
        let providers = config.auth.providers.iter().map(|_| ProviderSeries::default()).collect();
        let policies = config.rate_limits.iter().map(|_| Default::default()).collect();
        Self { gateway: Arc::downgrade(gateway), routes, services, providers, policies }
    }
}

fn seconds_us(us: u64) -> f64 {
    us as f64 / 1e6
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What is read at scrape time.
struct Live {
    state: State,
    started: f64,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gateway = (self.state.gateway)();
        let now = unix_now();
        let mono = system_clock::monotonic();
        let circuits = Family::<CircuitLabels, Gauge>::default();
        let targets = Family::<TargetLabels, Gauge>::default();
        let busy = Family::<ServiceLabel, Gauge>::default();
        for (service, state) in gateway.config.services.iter().zip(gateway.upstreams.iter()) {
            if let Some(current) = state.circuit(Duration::from_secs_f64(now)) {
                for s in ["closed", "open", "half_open"] {
                    let labels = CircuitLabels { service: service.name.clone(), state: s };
                    circuits.get_or_create(&labels).set(i64::from(s == current));
                }
            }
            for (i, target) in service.targets.iter().enumerate() {
                let labels = TargetLabels { service: service.name.clone(), target: target.label.clone() };
                targets.get_or_create(&labels).set(i64::from(state.target_in(i, mono)));
            }
            busy.get_or_create(&ServiceLabel { service: service.name.clone() }).set(i64::from(state.in_flight()));
        }
        family(&mut encoder, "portcullis_circuit_state", "A service's circuit: 1 for its current state", &circuits)?;
        family(
            &mut encoder,
            "portcullis_target_healthy",
            "1 while a target may serve (not ejected, not down by its probes)",
            &targets,
        )?;
        family(&mut encoder, "portcullis_upstream_in_flight", "Requests waiting on a service now", &busy)?;
        let cached = ConstGauge::new(i64::try_from(gateway.cache_memory.bytes()).unwrap_or(i64::MAX));
        let help = "Bytes of response-cache records held in memory";
        family(&mut encoder, "portcullis_cache_memory_bytes", help, &cached)?;
        let connections = (self.state.connections)() as i64;
        family(
            &mut encoder,
            "portcullis_connections_open",
            "Client connections open now",
            &ConstGauge::new(connections),
        )?;
        let upstream = &self.state.upstream_connections;
        let open = ConstGauge::new(upstream.open.load(Ordering::Relaxed) as i64);
        let help = "Connections to origins open now, idle in the pool or busy";
        family(&mut encoder, "portcullis_upstream_connections_open", help, &open)?;
        let opened = ConstCounter::new(upstream.opened.load(Ordering::Relaxed));
        let help = "Connections to origins opened since start";
        family(&mut encoder, "portcullis_upstream_connections_opened", help, &opened)?;
        let process = Process::read();
        if let Some(cpu) = process.cpu_seconds {
            family(
                &mut encoder,
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                &ConstCounter::new(cpu),
            )?;
        }
        if let Some(rss) = process.resident_bytes {
            family(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                &ConstGauge::new(rss),
            )?;
        }
        if let Some(fds) = process.open_fds {
            family(&mut encoder, "process_open_fds", "Open file descriptors", &ConstGauge::new(fds))?;
        }
        if let Some(max) = super::conn::fd_limit() {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            family(&mut encoder, "process_max_fds", "The limit on open file descriptors", &ConstGauge::new(max))?;
        }
        family(
            &mut encoder,
            "process_start_time_seconds",
            "When the process started (Unix time)",
            &ConstGauge::new(self.started),
        )
    }
}

fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The process, from `/proc/self` (Linux).
#[derive(Default)]
struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    open_fds: Option<i64>,
}

/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl Process {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the command (which may hold spaces) start at `state`.
        let cpu_seconds = stat.as_deref().and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / TICKS_PER_SECOND)
        });
        let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            let kb = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<i64>().ok()?;
            Some(kb * 1024)
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
        Self { cpu_seconds, resident_bytes, open_fds }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Config;
    use crate::pipeline::authn::{AuthNote, Fetched};
    use crate::pipeline::log::{AuthLog, LimitLog, LimitOutcome, Observed};

    const CONFIG: &str = r#"
[services.api]
url = "http://127.0.0.1:9"
breaker = { consecutive_failures = 3 }

[[routes]]
name = "api"
path = "/{*rest}"
service = "api"
"#;

    /// A request that did everything a request can: auth with a key-set
    /// fetch, a limit, a page's call, an address refused, two tries (one failed), the fallback.
    fn record() -> AccessLog {
        AccessLog {
            request_id: http::HeaderValue::from_static("r"),
            trace_id: Default::default(),
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            listener: None,
            tls: None,
            method: Method::GET,
            host: String::new(),
            path: "/raw/path".into(),
            route: Some("api".into()),
            service: Some("api".into()),
            identity: None,
            status: 200,
            auth: Some(AuthLog { provider: Some("corp".into()), outcome: "ok", cached: Some(false) }),
            limits: smallvec::smallvec![LimitLog {
                policy: "per_ip".into(),
                index: 0,
                outcome: LimitOutcome::Admitted
            }],
            upstream: None,
            attempts: Some(2),
            fallback: true,
            variant: None,
            cors: Some(crate::pipeline::cors::CorsOutcome::Allowed),
            ip_refused: Some("route"),
            cache: Some(crate::pipeline::cache::CacheResult::Hit),
            limit_delay_us: Some(250),
            upstream_latency_us: Some(100),
            overhead_us: 40,
            config_us: None,
            total_latency_us: 200,
            bytes_in: 0,
            bytes_out: 0,
            upgraded_us: None,
            problem: None,
            source: None,
            error: None,
            started: Duration::ZERO,
            observed: Observed {
                route: Some(0),
                service: Some(0),
                auth: Some(AuthNote {
                    provider: Some(0),
                    outcome: "ok",
                    cached: Some(false),
                    fetch: Some(Fetched { started: Duration::ZERO, ended: Duration::ZERO, ok: true }),
                }),
                try_failures: vec!["connect_error"],
                upstream_time: Duration::from_micros(160),
                logged: true,
                received_at: Duration::ZERO,
                spans: None,
            },
        }
    }

    /// Metrics (recording if `enabled`) over a gateway on `config`, with
    /// `connections` open.
    fn metrics_on(config: &str, connections: usize, enabled: bool) -> (Arc<Gateway>, Metrics) {
        let gateway = Arc::new(Gateway::new(Config::parse(config, "t.toml", &Default::default()).unwrap()));
        let current = gateway.clone();
        let state = State {
            gateway: Box::new(move || current.clone()),
            connections: Box::new(move || connections),
            upstream_connections: Arc::default(),
        };
        (gateway, Metrics::new(state, enabled))
    }

    /// Every family, each with a series.
    fn exposition() -> String {
        let (gateway, metrics) = metrics_on(CONFIG, 3, true);
        let _busy = metrics.begin();
        let series = metrics.series(&gateway).unwrap();
        metrics.request(&record(), &series);
        // A request no route matched goes by label.
        let mut unmatched = record();
        (unmatched.route, unmatched.service, unmatched.observed.route, unmatched.observed.service) =
            (None, None, None, None);
        (unmatched.status, unmatched.auth, unmatched.observed.auth, unmatched.attempts) = (404, None, None, None);
        (unmatched.limits, unmatched.fallback) = (Default::default(), false);
        metrics.request(&unmatched, &series);
        metrics.store_call("gcra", Duration::from_micros(300), false);
        metrics.reload(false);
        metrics.accepted(1).map(|accepted| accepted.inc());
        metrics.config_loaded("t.toml", "abc", Some(3));
        let served = crate::native::tls::Served {
            names: vec!["a.test".into()],
            not_before: 1_767_000_000,
            not_after: 1_767_225_600,
        };
        metrics.certificates(&[("public".into(), served, Duration::ZERO)]);
        metrics.acme_order("a.test", false);
        metrics.encode().unwrap()
    }

    fn families(text: &str) -> BTreeSet<String> {
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_string)).collect()
    }

    /// Metric names in a text, as families (suffixes of samples removed).
    fn named(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
        let re = regex::Regex::new(r"\b(?:portcullis|process)_[a-z0-9_]+").unwrap();
        re.find_iter(text)
            .map(|m| {
                let name = m.as_str();
                ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s))
                    .find(|base| known.contains(*base))
                    .unwrap_or(name)
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_docs_and_the_dashboard_name_exactly_the_exported_families() {
        let text = exposition();
        let exported = families(&text);
        assert_eq!(exported.len(), 39, "{exported:?}");
        let docs = named(include_str!("../../docs/operations.md"), &exported);
        assert_eq!(docs, exported, "docs/operations.md against the exporter");
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../edge-deploy/grafana-dashboard.json")).unwrap();
        let exprs: Vec<&str> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter_map(|t| t["expr"].as_str())
            .collect();
        let used = named(&exprs.join("\n"), &exported);
        assert!(used.len() >= 8, "{used:?}");
        assert!(used.is_subset(&exported), "the dashboard uses what is not exported: {:?}", used.difference(&exported));
    }

    /// Outcomes counted through the series resolved per provider and
    /// policy land under their own labels, as counting by label would.
    #[test]
    fn resolved_auth_and_limit_series_count_under_their_own_labels() {
        let sha = "b".repeat(64);
        let config = format!(
            "[auth.api_key.one]\nconsumers = [{{ id = \"a\", key_sha256 = \"{sha}\" }}]\n\
             [auth.api_key.two]\nconsumers = [{{ id = \"b\", key_sha256 = \"{sha}\" }}]\n\
             [limits.first]\nrate = \"5/s\"\n[limits.second]\nrate = \"5/s\"\n{CONFIG}"
        );
        let (gateway, metrics) = metrics_on(&config, 0, true);
        let series = metrics.series(&gateway).unwrap();
        let index = |name: &str, names: Vec<&str>| names.iter().position(|n| *n == name).unwrap();
        let providers = || gateway.config.auth.providers.iter().map(|p| &*p.name).collect::<Vec<_>>();
        let policies = || gateway.config.rate_limits.iter().map(|l| &*l.name).collect::<Vec<_>>();
        let request = |provider: &str, outcome: &'static str, cached: Option<bool>, limits: &[(&str, LimitOutcome)]| {
            let mut log = record();
            let i = index(provider, providers());
            log.auth = Some(AuthLog { provider: Some(provider.into()), outcome, cached });
            log.observed.auth = Some(AuthNote { provider: Some(i), outcome, cached, fetch: None });
            log.limits = limits
                .iter()
                .map(|&(p, outcome)| LimitLog { policy: p.into(), index: index(p, policies()), outcome })
                .collect();
            metrics.request(&log, &series);
        };
        use LimitOutcome::{Admitted, Leased, Limited};
        request("one", "ok", Some(true), &[("first", Admitted), ("second", Leased)]);
        request("one", "ok", Some(true), &[("first", Admitted)]);
        request("one", "ok", Some(false), &[("second", Limited)]);
        request("two", "ok", Some(false), &[("first", Leased)]);
        request("two", "invalid_token", Some(false), &[]);
        let text = metrics.encode().unwrap();
        for line in [
            r#"portcullis_auth_total{provider="one",outcome="ok"} 3"#,
            r#"portcullis_auth_total{provider="two",outcome="ok"} 1"#,
            r#"portcullis_auth_total{provider="two",outcome="invalid_token"} 1"#,
            r#"portcullis_token_cache_total{provider="one",outcome="hit"} 2"#,
            r#"portcullis_token_cache_total{provider="one",outcome="miss"} 1"#,
            r#"portcullis_token_cache_total{provider="two",outcome="miss"} 2"#,
            r#"portcullis_rate_limit_decisions_total{policy="first",outcome="admitted"} 2"#,
            r#"portcullis_rate_limit_decisions_total{policy="first",outcome="leased"} 1"#,
            r#"portcullis_rate_limit_decisions_total{policy="second",outcome="leased"} 1"#,
            r#"portcullis_rate_limit_decisions_total{policy="second",outcome="limited"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains(r#"provider="two",outcome="hit""#), "{text}");
        assert_eq!(text.matches("portcullis_rate_limit_decisions_total{").count(), 4, "{text}");
    }

    #[test]
    fn with_no_listener_requests_record_nothing() {
        let (gateway, metrics) = metrics_on(CONFIG, 0, false);
        assert!(metrics.begin().is_none());
        assert!(metrics.series(&gateway).is_none());
    }

    #[test]
    fn labels_are_config_names_and_fixed_words_only() {
        let text = exposition();
        assert!(!text.contains("/raw/path") && !text.contains("127.0.0.1\""), "{text}");
        assert!(
            text.contains(r#"portcullis_requests_total{route="api",service="api",method="GET",status_class="2xx"} 1"#)
        );
        assert!(text.contains(r#"portcullis_upstream_retries_total{service="api"} 1"#));
        assert!(text.contains(r#"portcullis_circuit_state{service="api",state="closed"} 1"#));
        assert!(text.contains(r#"portcullis_token_cache_total{provider="corp",outcome="miss"} 1"#));
        assert!(text.contains(r#"portcullis_requests_in_flight 1"#));
        assert!(text.contains(
            r#"portcullis_requests_total{route="(unmatched)",service="(none)",method="GET",status_class="4xx"} 1"#
        ));
        assert!(text.contains(r#"portcullis_request_duration_seconds_count{route="(unmatched)"} 1"#));
    }
}
