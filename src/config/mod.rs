//! Config: `routes/*.toml` → a validated, compiled, immutable [`Config`].
//!
//! Parsing mirrors the file exactly ([`raw`], unknown keys refused); compiling
//! checks everything else (URLs, templates, conflicts, header names) and
//! reports every problem with file, line and key. A request only ever sees a
//! compiled `Config`: router built, templates parsed, headers encoded.

pub(crate) mod acme;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod balance;
pub(crate) mod cache;
pub(crate) mod caller_key;
pub(crate) mod canary;
pub(crate) mod cors;
pub(crate) mod digest;
#[allow(dead_code)] // `digest()` runs in build.rs and tests; the tags are shared
pub(crate) mod digest_write;
pub(crate) mod grpc_web;
pub(crate) mod introspection;
pub(crate) mod ip_rules;
pub(crate) mod listeners;
pub(crate) mod origin;
pub mod published;
pub mod rate_limits;
pub(crate) mod raw;
pub(crate) mod resilience;
pub(crate) mod router;
mod sections;
pub mod spin;
pub(crate) mod sweep;
pub(crate) mod template;
pub mod vars;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use toml::Spanned;

use crate::config::router::{HostPattern, RouteError, RouteSpec, Router};
use crate::shared::networks::IpRules;
use crate::shared::path::PathParameters;
use auth::{AuthConfig, RouteAuth};
use balance::{Balance, MAX_WEIGHT};
use canary::Canary;
pub use listeners::Listener;
use rate_limits::RateLimit;
use raw::{RawConfig, RawHeaderOps, RawRoute, RawService, Size};
use resilience::{Breaker, Fallback, Health, Retry};
use sweep::Sweep;
use template::Template;
pub use vars::Variables;

/// A compiled gateway config: one snapshot, shared read-only by requests.
pub struct Config {
    pub(crate) gateway: GatewaySettings,
    pub(crate) services: Vec<Service>,
    pub routes: Vec<Route>,
    pub(crate) router: Router,
    pub auth: AuthConfig,
    /// Rate-limit policies (routes refer to them by index).
    pub(crate) rate_limits: Vec<RateLimit>,
    /// The store sweep, if configured.
    pub(crate) sweep: Option<Sweep>,
    /// SHA-256 of the bearer tokens the node's admin API accepts from
    /// beyond loopback (`[admin]`). Checked in every home, used by the node.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) admin_tokens: Vec<[u8; 32]>,
    /// The node's sockets (`[[listeners]]`); the edge has none of its own.
    pub listeners: Vec<Listener>,
    /// Where the node orders the certificates its listeners name (`[acme]`).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) acme: Option<acme::Acme>,
}

/// `[gateway]`, with defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct GatewaySettings {
    /// Host used for requests whose host names no route. Default: none.
    pub(crate) default_host: Option<String>,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are believed. Default: none.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Largest request body. Default: 10 MiB.
    pub(crate) max_body_size: u64,
    /// Largest total of header names and values. Default: 32 KiB.
    pub(crate) max_header_size: u64,
    /// Most request headers. Default: 100.
    pub(crate) max_header_count: u32,
    /// Write one JSON line per request. Default: true.
    pub(crate) access_log: bool,
    /// Share of successful requests logged (failed ones always are). Default: 1.
    pub(crate) access_log_sample: f64,
    /// Share of new traces (no sampled `traceparent` from the client) that are
    /// sampled. Default: 1, as OpenTelemetry's parent-based default.
    pub(crate) trace_sample_ratio: f64,
    /// Drop request headers whose name has `_` (`underscores_in_headers =
    /// "drop"`, the default) or only those that disguise a header the
    /// gateway sets (`"keep"`).
    pub(crate) drop_underscore_headers: bool,
    /// Largest response head an origin may send (502 beyond). Default: 64 KiB.
    pub(crate) max_response_header_size: u64,
    /// `;` path parameters: refuse dot segments carrying them (the
    /// default) or any `;`.
    pub(crate) path_parameters: PathParameters,
    /// The in-memory level of the response cache holds at most this many
    /// bytes of entries (per process or instance). Default: 64 MiB.
    pub(crate) cache_memory: u64,
}

pub(crate) const DEFAULT_MAX_BODY_SIZE: u64 = 10 << 20;
pub(crate) const DEFAULT_MAX_HEADER_SIZE: u64 = 32 << 10;
pub(crate) const DEFAULT_MAX_HEADER_COUNT: u32 = 100;
pub(crate) const DEFAULT_MAX_RESPONSE_HEADER_SIZE: u64 = 64 << 10;
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An origin service.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) name: Arc<str>,
    pub(crate) targets: Vec<Target>,
    pub(crate) balance: Balance,
    pub(crate) retry: Retry,
    pub(crate) health: Health,
    pub(crate) breaker: Option<Breaker>,
    /// Requests in flight at most (per process or instance); beyond, 503 at once.
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// HTTP/2 to its origins: ALPN `h2` over HTTPS, prior knowledge over
    /// plaintext (what gRPC needs). Default: HTTP/1.1.
    pub(crate) http2: bool,
    /// TLS settings for its HTTPS origins. Default: the system's roots.
    pub(crate) tls: Option<origin::OriginTls>,
    /// The CORS policy of its routes that name none. Default: none.
    pub(crate) cors: Option<Arc<cors::Cors>>,
    /// Client addresses its routes take. Default: any.
    pub(crate) ip_rules: Option<Arc<IpRules>>,
}

/// One origin address of a service.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The `Host` header the origin gets.
    pub(crate) host: HeaderValue,
    /// `service scheme://host:port`, as the access log names it.
    pub(crate) label: Arc<str>,
    /// Path prefix from the URL, without a trailing `/` (often empty).
    pub(crate) base_path: String,
    pub(crate) weight: u32,
    /// `scheme://host:port`, with the port spelled out.
    pub(crate) origin: String,
}

/// A route: which requests, and what happens to them on the way.
#[derive(Debug, Clone)]
pub struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) host: HostPattern,
    pub(crate) path: String,
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) service: usize,
    pub(crate) rewrite: PathRewrite,
    pub(crate) max_body_size: u64,
    pub(crate) request_headers: HeaderOps,
    pub(crate) response_headers: HeaderOps,
    /// Who may call; `None`: a public route.
    pub auth: Option<RouteAuth>,
    /// Rate-limit policies that apply (indexes into `Config::limits`).
    pub(crate) rate_limits: Vec<usize>,
    /// Retry 5xx answers and timeouts of methods that are not idempotent.
    pub(crate) retry_non_idempotent: bool,
    /// Served while the service cannot answer.
    pub(crate) fallback: Option<Fallback>,
    /// Part of the callers to another service.
    pub(crate) canary: Option<Canary>,
    /// WebSocket upgrades are proxied, and an upgraded connection is closed
    /// after this long without a byte either way. `None`: an upgrade
    /// request is forwarded as a plain one.
    pub(crate) websocket: Option<Duration>,
    /// gRPC-Web calls are translated to gRPC for the origin and back.
    /// Default: a gRPC-Web call goes to the origin as it came.
    pub(crate) grpc_web: bool,
    /// Which pages may call, answered by the gateway (preflights never
    /// reach the origin): the route's policy, else its service's. Default: none.
    pub(crate) cors: Option<Arc<cors::Cors>>,
    /// Client addresses it takes: its service's rules, then its own (each
    /// must admit). Default: any.
    pub(crate) ip_rules: Vec<(ip_rules::IpLevel, Arc<IpRules>)>,
    /// Its answers kept and served by the gateway. Default: none.
    pub(crate) cache: Option<cache::RouteCache>,
}

/// How the matched path becomes the upstream path.
#[derive(Debug, Clone)]
pub(crate) enum PathRewrite {
    Keep,
    StripPrefix(String),
    Template(Template),
}

/// Header edits, applied as remove → set → add.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderOps {
    pub(crate) remove: Vec<HeaderName>,
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// Dotted key path, e.g. `routes[2].rewrite`.
    pub(crate) key: String,
    pub(crate) message: String,
}

/// Where a value was written in the config: a mistake found later (in a
/// file it names, say) is reported there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) key: String,
}

impl Place {
    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        let Place { file, line, column, key } = self.clone();
        ConfigError { file, line, column, key, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.key, self.message)
    }
}

/// Every problem found in a config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Parses and compiles `text`, filling `{{ name }}` placeholders from
    /// `vars`; `file` is only used to name it in errors.
    pub fn parse(text: &str, file: &str, vars: &Variables) -> Result<Config, ConfigErrors> {
        let mut c = Compiler { file, text, vars, errors: Vec::new() };
        // The whole file at once; if it does not fit, entry by entry, so
        // that every independent mistake is reported in one run.
        let raw = match toml::from_str::<RawConfig>(text) {
            Ok(raw) => raw,
            Err(_) => c.sections(),
        };
        c.finish(raw)
    }

    /// Compiles the config `text` from its digest (made at build time, see
    /// [`digest`], which also checked its shape), so no TOML is parsed.
    pub fn from_digest(digest: &[u8], text: &str, file: &str, vars: &Variables) -> Result<Config, ConfigErrors> {
        let c = Compiler { file, text, vars, errors: Vec::new() };
        match digest::read(digest) {
            Ok(raw) => c.finish(raw),
            Err(e) => {
                let message = format!("{e} (rebuild the component)");
                Err(ConfigErrors(vec![ConfigError {
                    file: file.into(),
                    line: 0,
                    column: 0,
                    key: "(digest)".into(),
                    message,
                }]))
            }
        }
    }

    /// How many services and routes the config has (for `portcullis check`).
    pub fn size(&self) -> (usize, usize) {
        (self.services.len(), self.routes.len())
    }
}

/// What routes may refer to: the compiled services, providers and
/// policies, and the names of those that are defined but invalid.
struct Known<'a> {
    services: &'a [Service],
    auth: &'a AuthConfig,
    rate_limits: &'a [RateLimit],
    cors: &'a [Arc<cors::Cors>],
    broken: &'a Broken,
}

/// Names defined in the file whose entries did not parse or compile.
#[derive(Default)]
struct Broken {
    services: Vec<String>,
    providers: Vec<String>,
    limits: Vec<String>,
    cors: Vec<String>,
}

impl From<&raw::Unparsed> for Broken {
    fn from(u: &raw::Unparsed) -> Self {
        Self {
            services: u.services.clone(),
            providers: u.providers.clone(),
            limits: u.limits.clone(),
            cors: u.cors.clone(),
        }
    }
}

/// Turns byte offsets into lines and collects errors.
struct Compiler<'a> {
    file: &'a str,
    text: &'a str,
    vars: &'a Variables,
    errors: Vec<ConfigError>,
}

impl Compiler<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let place = self.place(span, key);
        self.errors.push(place.error(message));
    }

    /// The file, line and column of `span`, with its key.
    fn place(&self, span: Range<usize>, key: impl Into<String>) -> Place {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
        Place { file: self.file.to_string(), line, column, key: key.into() }
    }

    /// Records the error of a failed check and yields `None`.
    fn check<T>(&mut self, span: Range<usize>, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|msg| self.error(span, key, msg)).ok()
    }

    /// A string value with its placeholders filled in.
    fn value(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        let filled = vars::substitute(v.get_ref(), self.vars);
        self.check(v.span(), key, filled)
    }

    fn finish(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        match self.compile(raw) {
            Some(config) if self.errors.is_empty() => Ok(config),
            _ => {
                // In the file's order, whatever order they were found in.
                self.errors.sort_by_key(|e| (e.line, e.column));
                Err(ConfigErrors(self.errors))
            }
        }
    }

    /// Everything that parsed is compiled, and every error recorded; a
    /// broken entry is left out, and references to it are not reported again.
    fn compile(&mut self, raw: RawConfig) -> Option<Config> {
        let gateway = self.gateway(raw.gateway);
        let mut services = Vec::new();
        let mut broken = Broken::from(&raw.unparsed);
        let cors = self.cors_policies(&raw.cors);
        broken.cors.extend(raw.cors.keys().filter(|n| !cors.iter().any(|c| *c.name == ***n)).cloned());
        for (name, svc) in &raw.services {
            match self.service(name, svc, &cors, &broken.cors) {
                Some(s) => services.push(s),
                None => broken.services.push(name.clone()),
            }
        }
        let auth = self.auth(&raw.auth);
        broken.providers.extend(
            raw.auth
                .jwt
                .keys()
                .chain(raw.auth.api_key.keys())
                .chain(raw.auth.mtls.keys())
                .chain(raw.auth.introspection.keys())
                .cloned(),
        );
        broken.providers.retain(|name| !auth.providers.iter().any(|p| *p.name == **name));
        let rate_limits = self.limits(&raw.limits);
        broken.limits.extend(raw.limits.keys().filter(|n| !rate_limits.iter().any(|l| *l.name == ***n)).cloned());
        let sweep = self.sweep(&raw.sweep);
        let admin_tokens = self.admin(&raw.admin);
        let acme = self.acme(&raw.acme);
        let listeners = self.listeners(&raw.listeners, raw.acme.is_some());
        let known = Known { services: &services, auth: &auth, rate_limits: &rate_limits, cors: &cors, broken: &broken };
        let mut routes = Vec::new();
        let mut origins = Vec::new();
        let mut seen_names = BTreeMap::new();
        for (n, r) in raw.routes.iter().enumerate() {
            let i = raw.route_indexes.get(n).copied().unwrap_or(n);
            if let Some(route) = self.route(i, r, &gateway, &known) {
                // A name made of the path is shared by routes that split one
                // path by method; a name given that another route has is a mistake.
                let given = r.get_ref().name.is_some();
                if let Some(earlier_given) = seen_names.insert(route.name.clone(), given)
                    && (given || earlier_given)
                {
                    let span = r.get_ref().name.as_ref().map_or(r.span(), |n| n.span());
                    self.error(span, format!("routes[{i}].name"), format!("route name `{}` is used twice", route.name));
                }
                routes.push(route);
                origins.push((i, r.get_ref().path.span()));
            }
        }
        let specs: Vec<RouteSpec<'_>> = routes
            .iter()
            .zip(&origins)
            .map(|(r, (i, _))| RouteSpec {
                file_index: *i,
                host: &r.host,
                path: &r.path,
                methods: r.methods.as_deref(),
            })
            .collect();
        let router = match Router::build(&specs, gateway.default_host.clone()) {
            Ok(router) => router,
            Err(errors) => {
                for e in errors {
                    let (i, span) = origins[e.route].clone();
                    self.error(span, format!("routes[{i}].path"), e.message);
                }
                return None;
            }
        };
        if let (Some(sw), Some(raw_sweep)) = (&sweep, &raw.sweep) {
            let shadowed = match router.find("", &sw.path, &Method::POST) {
                Ok(found) => Some(format!("route `{}`", routes[found.route].name)),
                Err(RouteError::MethodNotAllowed { .. }) => Some("a route".to_string()),
                Err(_) => None,
            };
            if let Some(route) = shadowed {
                self.error(raw_sweep.get_ref().path.span(), "sweep.path", format!("{route} also answers this path"));
            }
        }
        Some(Config { gateway, services, routes, router, auth, rate_limits, sweep, admin_tokens, listeners, acme })
    }

    /// Resolves a reference by name among the compiled items: their index,
    /// or `None` with an error (for a name nobody defined) or without one
    /// (for an item defined but invalid: its own errors say why).
    fn resolve<'n>(
        &mut self,
        name: &Spanned<String>,
        key: String,
        kind: &str,
        compiled: impl Iterator<Item = &'n str> + Clone,
        broken: &[String],
    ) -> Option<usize> {
        if let Some(index) = compiled.clone().position(|n| n == name.get_ref()) {
            return Some(index);
        }
        if broken.contains(name.get_ref()) {
            return None;
        }
        let mut defined: Vec<String> =
            compiled.map(|n| format!("`{n}`")).chain(broken.iter().map(|n| format!("`{n}`"))).collect();
        defined.sort();
        let defined = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
        self.error(name.span(), key, format!("no {kind} named `{}` (defined: {defined})", name.get_ref()));
        None
    }

    fn gateway(&mut self, g: raw::RawGateway) -> GatewaySettings {
        let default_host = g.default_host.and_then(|h| {
            let parsed = HostPattern::parse(h.get_ref());
            match self.check(h.span(), "gateway.default_host", parsed)? {
                HostPattern::Exact(name) => Some(name),
                _ => {
                    self.error(h.span(), "gateway.default_host", "must be one exact host name, not a pattern");
                    None
                }
            }
        });
        let trusted_proxies = g
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let parsed = parse_cidr(p.get_ref());
                self.check(p.span(), &format!("gateway.trusted_proxies[{i}]"), parsed)
            })
            .collect();
        let max_header_count = g.max_header_count.map_or(DEFAULT_MAX_HEADER_COUNT, |n| {
            if *n.get_ref() == 0 {
                self.error(n.span(), "gateway.max_header_count", "must be at least 1");
            }
            *n.get_ref()
        });
        GatewaySettings {
            default_host,
            trusted_proxies,
            max_body_size: self.size(g.max_body_size, "gateway.max_body_size", DEFAULT_MAX_BODY_SIZE),
            max_header_size: self.size(g.max_header_size, "gateway.max_header_size", DEFAULT_MAX_HEADER_SIZE),
            max_header_count,
            access_log: g.access_log.unwrap_or(true),
            access_log_sample: self.ratio(g.access_log_sample.as_ref(), "gateway.access_log_sample"),
            trace_sample_ratio: self.ratio(g.trace_sample_ratio.as_ref(), "gateway.trace_sample_ratio"),
            drop_underscore_headers: self.either(
                g.underscores_in_headers.as_ref(),
                0..0,
                "gateway.underscores_in_headers".into(),
                ("drop", "as nginx does"),
                ("keep", "forwarded, but never one that reads as a header the gateway sets"),
            ),
            max_response_header_size: self.size(
                g.max_response_header_size,
                "gateway.max_response_header_size",
                DEFAULT_MAX_RESPONSE_HEADER_SIZE,
            ),
            path_parameters: match self.either(
                g.path_parameters.as_ref(),
                0..0,
                "gateway.path_parameters".into(),
                ("refuse_dot_segments", "`..;` and `.;` segments refused, other parameters forwarded"),
                ("refuse", "any `;` in a path refused"),
            ) {
                true => PathParameters::RefuseDotSegments,
                false => PathParameters::Refuse,
            },
            cache_memory: self.size(g.cache_memory, "gateway.cache_memory", cache::DEFAULT_CACHE_MEMORY),
        }
    }

    /// A share from 0 to 1 (default 1).
    fn ratio(&mut self, value: Option<&Spanned<f64>>, key: &str) -> f64 {
        match value {
            None => 1.0,
            Some(v) if (0.0..=1.0).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(v.span(), key, "must be a share from 0 to 1 (0.01 is 1 %)");
                1.0
            }
        }
    }

    fn size(&mut self, value: Option<Spanned<Size>>, key: &str, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) if v.get_ref().0 == 0 => {
                self.error(v.span(), key, "must be more than 0");
                default
            }
            Some(v) => v.get_ref().0,
        }
    }

    /// A two-way setting: the first option (true) when absent, the second
    /// (false), or an error naming both with what they mean.
    fn either(
        &mut self,
        value: Option<&Spanned<String>>,
        parent: std::ops::Range<usize>,
        key: String,
        yes: (&str, &str),
        no: (&str, &str),
    ) -> bool {
        match value.map(|v| v.get_ref().as_str()) {
            None => true,
            Some(v) if v == yes.0 => true,
            Some(v) if v == no.0 => false,
            Some(other) => {
                let span = value.map_or(parent, |v| v.span());
                self.error(span, key, format!("`{other}`: use \"{}\" ({}) or \"{}\" ({})", yes.0, yes.1, no.0, no.1));
                true
            }
        }
    }

    fn duration(&mut self, value: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = value else { return default };
        let parsed = match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => Err("must be longer than 0".to_string()),
            Ok(d) => Ok(d),
            Err(e) => Err(format!("`{}` is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"1m\"", v.get_ref())),
        };
        self.check(v.span(), key, parsed).unwrap_or(default)
    }

    fn service(
        &mut self,
        name: &str,
        svc: &Spanned<RawService>,
        cors: &[Arc<cors::Cors>],
        broken_cors: &[String],
    ) -> Option<Service> {
        let key = format!("services.{name}");
        let raw = svc.get_ref();
        let connect_timeout =
            self.duration(&raw.connect_timeout, &format!("{key}.connect_timeout"), DEFAULT_CONNECT_TIMEOUT);
        let request_timeout =
            self.duration(&raw.request_timeout, &format!("{key}.request_timeout"), DEFAULT_REQUEST_TIMEOUT);
        let errors_before = self.errors.len();
        let targets: Vec<Target> = match (&raw.url, raw.targets.is_empty()) {
            (Some(url), true) => {
                let k = format!("{key}.url");
                let parsed = self.value(url, &k).map(|u| parse_target(name, &u, 1));
                parsed.and_then(|p| self.check(url.span(), &k, p)).into_iter().collect()
            }
            (None, false) => raw
                .targets
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let t_ref = t.get_ref();
                    let weight = t_ref.weight.as_ref().map_or(1, |w| *w.get_ref());
                    if let Some(w) = t_ref.weight.as_ref().filter(|w| *w.get_ref() > MAX_WEIGHT) {
                        let message = format!("{weight}: weights are relative, from 0 to {MAX_WEIGHT}");
                        self.error(w.span(), format!("{key}.targets[{i}].weight"), message);
                    }
                    let k = format!("{key}.targets[{i}].url");
                    let parsed = self.value(&t_ref.url, &k).map(|u| parse_target(name, &u, weight));
                    parsed.and_then(|p| self.check(t_ref.url.span(), &k, p))
                })
                .collect(),
            (Some(url), false) => {
                self.error(url.span(), format!("{key}.url"), "give either `url` or `targets`, not both");
                Vec::new()
            }
            (None, true) => {
                self.error(svc.span(), key.clone(), "a service needs `url` or `targets`");
                Vec::new()
            }
        };
        if self.errors.len() == errors_before && targets.iter().all(|t| t.weight == 0) {
            self.error(svc.span(), format!("{key}.targets"), "at least one target needs a weight above 0");
        }
        let balance = self.balance(&key, raw);
        let retry = self.retry(&key, raw.retry.as_ref());
        let health = self.health(&key, raw.health.as_ref());
        let breaker = self.breaker(&key, raw.breaker.as_ref());
        let http2 = raw.http2.as_ref().is_some_and(|h| *h.get_ref());
        let tls = self.origin_tls(&key, raw.tls.as_ref(), &targets);
        let max_in_flight = raw.max_in_flight.as_ref().and_then(|m| {
            let parsed = Some(*m.get_ref()).filter(|n| *n > 0).ok_or_else(|| "must be at least 1".to_string());
            self.check(m.span(), &format!("{key}.max_in_flight"), parsed)
        });
        let cors = self.service_cors(&key, raw.cors.as_ref(), cors, broken_cors);
        let ip_rules = self.ip_rules(&key, raw.ip_allow.as_ref(), raw.ip_deny.as_ref());
        (self.errors.len() == errors_before).then(|| Service {
            name: name.into(),
            targets,
            balance,
            retry,
            health,
            breaker,
            max_in_flight,
            connect_timeout,
            request_timeout,
            http2,
            tls,
            cors,
            ip_rules,
        })
    }

    fn route(&mut self, i: usize, r: &Spanned<RawRoute>, g: &GatewaySettings, known: &Known<'_>) -> Option<Route> {
        let key = |field: &str| format!("routes[{i}].{field}");
        let raw = r.get_ref();
        let errors_before = self.errors.len();

        let host = match &raw.host {
            Some(h) => {
                let parsed = HostPattern::parse(h.get_ref());
                self.check(h.span(), &key("host"), parsed).unwrap_or(HostPattern::Any)
            }
            None => HostPattern::Any,
        };
        let path = raw.path.get_ref().clone();
        let params = self.check(raw.path.span(), &key("path"), template::path_params(&path)).unwrap_or_default();
        let methods = raw.methods.as_ref().map(|list| self.route_methods(i, r.span(), list));
        let names = known.services.iter().map(|s| &*s.name);
        let service = self.resolve(&raw.service, key("service"), "service", names, &known.broken.services);
        let rewrite = self.route_rewrite(&key, raw, &path, &params);
        let max_body_size = self.size(raw.max_body_size.clone(), &key("max_body_size"), g.max_body_size);
        let request_headers = self.header_ops(&raw.request_headers, &key("request_headers"));
        let response_headers = self.header_ops(&raw.response_headers, &key("response_headers"));
        let route_auth = raw.auth.as_ref().and_then(|a| self.route_auth(a, &key("auth"), known));
        let route_limits = self.route_limits(&raw.limits, &key("limits"), known);
        let name = self.route_name(&key("name"), raw.name.as_ref(), &host, &path);
        let fallback = raw.fallback.as_ref().and_then(|f| self.fallback(&key("fallback"), f));
        let canary = raw
            .canary
            .as_ref()
            .and_then(|c| self.canary(&key("canary"), &name, service, route_auth.as_ref(), c, known));
        let own_cors = self.route_cors(&key, raw, known.cors, &known.broken.cors);
        let own_ip_rules = self.ip_rules(&format!("routes[{i}]"), raw.ip_allow.as_ref(), raw.ip_deny.as_ref());
        let service = service?;
        let svc = &known.services[service];
        self.route_balance(raw.service.span(), &key("service"), svc, route_auth.as_ref(), known.auth);
        if let (Some(c), Some(raw_canary)) = (&canary, &raw.canary) {
            let (span, k) = (raw_canary.get_ref().service.span(), key("canary.service"));
            self.route_balance(span, &k, &known.services[c.service], route_auth.as_ref(), known.auth);
        }
        let retry_non_idempotent = self.route_retry(r.span(), &format!("routes[{i}]"), raw, methods.as_deref(), svc);
        let websocket = self.route_websocket(&key, raw, methods.as_deref(), svc);
        let grpc_web = self.route_grpc_web(&key, raw, methods.as_deref(), svc);
        let other_use = (grpc_web.then_some("gRPC-Web")).or(websocket.map(|_| "WebSocket"));
        let cache = raw.cache.as_ref().and_then(|c| self.route_cache(&key("cache"), c, methods.as_deref(), other_use));
        let cors = own_cors.or_else(|| svc.cors.clone()).map(|p| if grpc_web { Arc::new(p.for_grpc_web()) } else { p });
        let ip_rules = [(ip_rules::IpLevel::Service, svc.ip_rules.clone()), (ip_rules::IpLevel::Route, own_ip_rules)]
            .into_iter()
            .filter_map(|(level, rules)| Some((level, rules?)))
            .collect();
        (self.errors.len() == errors_before).then(|| Route {
            name: Arc::from(name),
            host,
            path,
            methods,
            service,
            rewrite,
            max_body_size,
            request_headers,
            response_headers,
            auth: route_auth,
            rate_limits: route_limits,
            retry_non_idempotent,
            fallback,
            canary,
            websocket,
            grpc_web,
            cors,
            ip_rules,
            cache,
        })
    }

    /// `websocket` and its `websocket_idle_timeout` (default 10 minutes);
    /// an upgrade is a GET, so a route that lists methods must list it, and
    /// an HTTP/1.1 one, so its service must speak HTTP/1.1.
    fn route_websocket(
        &mut self,
        key: &impl Fn(&str) -> String,
        raw: &RawRoute,
        methods: Option<&[Method]>,
        service: &Service,
    ) -> Option<Duration> {
        let on = raw.websocket.as_ref().is_some_and(|w| *w.get_ref());
        let idle = self.duration(&raw.websocket_idle_timeout, &key("websocket_idle_timeout"), Duration::from_secs(600));
        match (&raw.websocket, &raw.websocket_idle_timeout) {
            (_, Some(t)) if !on => {
                self.error(t.span(), key("websocket_idle_timeout"), "needs `websocket = true`");
            }
            (Some(w), _) if on && methods.is_some_and(|m| !m.contains(&Method::GET)) => {
                self.error(w.span(), key("websocket"), "an upgrade is a GET request: add \"GET\" to `methods`");
            }
            (Some(w), _) if on && service.http2 => {
                let message =
                    format!("service `{}` speaks HTTP/2; WebSocket goes to origins over HTTP/1.1", service.name);
                self.error(w.span(), key("websocket"), message);
            }
            _ => {}
        }
        on.then_some(idle)
    }

    /// A route's `methods`: each a method, none twice; an empty list allows nothing.
    fn route_methods(&mut self, i: usize, span: Range<usize>, list: &[Spanned<String>]) -> Vec<Method> {
        if list.is_empty() {
            self.error(
                span,
                format!("routes[{i}].methods"),
                "an empty list allows nothing; leave `methods` out to allow every method",
            );
        }
        let mut methods: Vec<Method> = Vec::new();
        for (j, m) in list.iter().enumerate() {
            let parsed = parse_method(m.get_ref());
            if let Some(m) = self.check(m.span(), &format!("routes[{i}].methods[{j}]"), parsed)
                && !methods.contains(&m)
            {
                methods.push(m);
            }
        }
        methods
    }

    /// How the path changes on the way: `strip_prefix` or a `rewrite` template, not both.
    fn route_rewrite(
        &mut self,
        key: &impl Fn(&str) -> String,
        raw: &RawRoute,
        path: &str,
        params: &[String],
    ) -> PathRewrite {
        match (&raw.strip_prefix, &raw.rewrite) {
            (Some(p), Some(_)) => {
                self.error(p.span(), key("strip_prefix"), "give either `strip_prefix` or `rewrite`, not both");
                PathRewrite::Keep
            }
            (Some(p), None) => {
                let checked = check_strip_prefix(p.get_ref(), path);
                self.check(p.span(), &key("strip_prefix"), checked).map_or(PathRewrite::Keep, PathRewrite::StripPrefix)
            }
            (None, Some(t)) => {
                let parsed = Template::parse(t.get_ref(), params);
                self.check(t.span(), &key("rewrite"), parsed).map_or(PathRewrite::Keep, PathRewrite::Template)
            }
            (None, None) => PathRewrite::Keep,
        }
    }

    /// The route's name, or one made of its host and path.
    fn route_name(&mut self, key: &str, name: Option<&Spanned<String>>, host: &HostPattern, path: &str) -> String {
        match name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.error(n.span(), key, "must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => match host {
                HostPattern::Any => path.to_string(),
                HostPattern::Exact(h) => format!("{h}{path}"),
                HostPattern::Wildcard(s) => format!("*{s}{path}"),
            },
        }
    }

    fn header_ops(&mut self, raw: &RawHeaderOps, key: &str) -> HeaderOps {
        let mut ops = HeaderOps::default();
        for (j, name) in raw.remove.iter().enumerate() {
            let parsed = parse_header_name(name.get_ref());
            if let Some(n) = self.check(name.span(), &format!("{key}.remove[{j}]"), parsed) {
                ops.remove.push(n);
            }
        }
        for (field, map, out) in [("set", &raw.set, &mut ops.set), ("add", &raw.add, &mut ops.add)] {
            for (name, value) in map {
                let k = format!("{key}.{field}.{}", name.get_ref());
                let n = self.check(name.span(), &k, parse_header_name(name.get_ref()));
                let v = self.value(value, &k).and_then(|text| {
                    let parsed = HeaderValue::from_str(&text).map_err(|_| {
                        format!("`{text}` is not a valid header value (visible ASCII only, no line breaks)")
                    });
                    self.check(value.span(), &k, parsed)
                });
                if let (Some(n), Some(v)) = (n, v) {
                    out.push((n, v));
                }
            }
        }
        ops
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("`{text}` is not an IP address or CIDR range (e.g. \"10.0.0.0/8\", \"::1\")"))
}

fn parse_method(text: &str) -> Result<Method, String> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("methods are case-sensitive: write `{}`", text.to_ascii_uppercase()));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not an HTTP method"))
}

fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a valid header name"))?;
    if crate::shared::headers::is_hop_by_hop(&name) {
        return Err(format!("`{text}` is a hop-by-hop header; the gateway manages it per connection"));
    }
    Ok(name)
}

fn parse_target(service: &str, url: &str, weight: u32) -> Result<Target, String> {
    let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(other) => {
            return Err(format!("`{url}`: scheme `{other}` is not supported (use http or https)"));
        }
        None => return Err(format!("`{url}` needs a scheme, e.g. http://{url}")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: credentials in URLs are not allowed; use request_headers.set"));
    }
    if authority.host().is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}`: a service URL cannot have a query"));
    }
    let port = explicit_port(&authority).map_err(|e| format!("`{url}`: {e}"))?;
    let port = port.unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
    let origin = format!("{scheme}://{}:{port}", authority.host());
    let base_path = uri.path().trim_end_matches('/').to_string();
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| format!("`{url}` has an invalid host"))?;
    let label = Arc::from(format!("{service} {origin}"));
    Ok(Target { scheme, authority, host, label, base_path, weight, origin })
}

/// The port an authority names, if it names one. The `http` crate reads a
/// port that is not a number as no port at all, which would send requests
/// to the scheme's default port without a word: here it is an error.
pub(crate) fn explicit_port(authority: &http::uri::Authority) -> Result<Option<u16>, String> {
    let host_port = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, rest)| rest);
    match host_port.strip_prefix(authority.host()).and_then(|rest| rest.strip_prefix(':')) {
        None => Ok(None),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(format!("the port `{text}` is not a number from 1 to 65535")),
        },
    }
}

/// The prefix must cover whole segments of the route path's literal start.
fn check_strip_prefix(prefix: &str, path: &str) -> Result<String, String> {
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        return Err(format!("`{prefix}` must start with `/`, name at least one segment and not end with `/`"));
    }
    let literal = template::static_prefix(path);
    let at_boundary = |rest: &str| rest.is_empty() || rest.starts_with('/');
    if !literal.strip_prefix(prefix).is_some_and(at_boundary) {
        return Err(format!("`{prefix}` is not a leading part of the route path `{path}`"));
    }
    Ok(prefix.to_string())
}

#[cfg(test)]
mod tests;
