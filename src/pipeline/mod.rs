//! The request pipeline: the phases of ARCHITECTURE.md ("The request
//! lifecycle"), in the order [`proxy`] runs them, over a per-request [`Ctx`].
//! A phase passes the request on, answers it itself ([`Flow::Respond`]), or
//! fails with its own error, which knows its answer
//! ([`crate::shared::problem::Answer`]).

pub(crate) mod accept;
pub mod authn;
pub(crate) mod caller;
pub(crate) mod canary;
pub(crate) mod error;
pub(crate) mod ids;
pub(crate) mod log;
pub(crate) mod rate_limit;
pub(crate) mod respond;
pub(crate) mod route;
pub(crate) mod sweep;
pub(crate) mod trace;
pub(crate) mod transform;
pub(crate) mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use crate::config::{Config, GatewaySettings};
use crate::ports::{Body, Clock, Ports};
use crate::shared::entropy::Entropy;
use crate::shared::identity::Identity;
use authn::AuthCaches;
use canary::CanaryState;
use error::GatewayError;
use ids::Trace;
use log::{AccessLog, AuthNote, Failure, LimitOutcome};
use trace::{SpanKind, SpanRecord};
use upstream::ServiceState;

/// What the adapter knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Downstream {
    /// The TCP peer (at the edge: the address Spin reports).
    pub(crate) peer: IpAddr,
    /// `http` or `https`, as the client spoke to this hop.
    pub(crate) scheme: &'static str,
}

/// Per-request state, filled in phase by phase.
pub(crate) struct Ctx {
    /// Who is calling, once authenticated.
    pub(crate) identity: Option<Arc<Identity>>,
    /// Rate-limit headers every answer of this request carries.
    pub(crate) limit_headers: rate_limit::Headers,
    pub(crate) request_id: HeaderValue,
    pub(crate) trace: Trace,
    pub(crate) peer: IpAddr,
    pub(crate) client_ip: IpAddr,
    pub(crate) scheme: &'static str,
    pub(crate) method: Method,
    /// Lower case, without port.
    pub(crate) host: String,
    /// The client's `Host` (or `:authority`), as sent.
    pub(crate) host_header: Option<HeaderValue>,
    /// Normalised once accepted; the raw path before that.
    pub(crate) path: String,
    pub(crate) route: Option<usize>,
    /// The target that answered (the last one tried).
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) upstream_latency: Option<Duration>,
    /// Tries sent to targets.
    pub(crate) attempts: u32,
    /// The service the request went to (the canary's, when that served).
    pub(crate) service: Option<usize>,
    /// How authentication went, on routes with `auth`.
    pub(crate) auth: Option<AuthNote>,
    /// What each rate-limit policy checked decided.
    pub(crate) limits: Vec<(usize, LimitOutcome)>,
    /// Failed tries, by kind.
    pub(crate) try_failures: Vec<&'static str>,
    /// Time spent waiting on targets, all tries together.
    pub(crate) upstream_time: Duration,
    /// The request's finished spans, while its trace is sampled and the
    /// home exports spans; the request span's id is `trace.span_id`.
    pub(crate) spans: Option<Vec<SpanRecord>>,
    /// The route's fallback answered.
    pub(crate) fallback: bool,
    /// Which side of the route's canary served.
    pub(crate) variant: Option<canary::Variant>,
    /// What went wrong, for the access log (the answer, or a failure the
    /// request survived, such as a store that was down for a fail-open limit).
    pub(crate) failure: Option<Failure>,
    started: Duration,
    received_at: Duration,
    entropy: Entropy,
}

/// The answer to a request plus its (not yet finished) access-log record.
pub(crate) struct Exchange<B> {
    pub(crate) response: Response<B>,
    pub(crate) log: AccessLog,
}

/// What a phase that may answer the request itself decided.
pub(crate) enum Flow<B> {
    Continue,
    Respond(Response<B>),
}

/// A compiled config with the caches that go with it: what a request
/// borrows. A reload builds a new one ([`Gateway::reloaded`]) and swaps it
/// in whole.
pub(crate) struct Gateway {
    pub(crate) config: Config,
    /// Only save work (verified tokens, key sets); they live as long as the
    /// home keeps this value: a process, a reused instance, or one request.
    pub(crate) caches: AuthCaches,
    /// Per service, what the upstream phase keeps (same lifetime).
    pub(crate) upstreams: Box<[ServiceState]>,
    /// Per route, its canary's state (same lifetime).
    pub(crate) canaries: Box<[Option<CanaryState>]>,
}

impl Gateway {
    pub(crate) fn new(config: Config) -> Self {
        let caches = AuthCaches::new(&config.auth);
        let upstreams = config.services.iter().map(ServiceState::new).collect();
        let canaries = canaries(&config);
        Self { config, caches, upstreams, canaries }
    }

    /// The store keys of the routes' canary records.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn canary_keys(&self) -> Vec<String> {
        self.config.routes.iter().filter(|r| r.canary.is_some()).map(CanaryState::key_for).collect()
    }

    /// The gateway for a new config, keeping what stays valid (key sets).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn reloaded(&self, config: Config) -> Self {
        let caches = self.caches.renewed(&config.auth);
        let upstreams = config.services.iter().map(ServiceState::new).collect();
        let canaries = canaries(&config);
        Self { config, caches, upstreams, canaries }
    }
}

fn canaries(config: &Config) -> Box<[Option<CanaryState>]> {
    config.routes.iter().map(|r| r.canary.as_ref().map(|_| CanaryState::new(r))).collect()
}

/// Runs one request through every phase. Never fails: errors become answers.
pub(crate) async fn handle<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: Request<Body<P>>,
    downstream: Downstream,
) -> Exchange<Body<P>> {
    let mut ctx = Ctx::new(&gateway.config.gateway, ports.clock(), &req, downstream, ports.spans());
    let response = match proxy(gateway, ports, req, &mut ctx).await {
        Ok(resp) => resp,
        Err(err) => respond::problem(&err, &mut ctx).map(Body::<P>::from),
    };
    respond::finish(&gateway.config, response, ctx, ports.clock())
}

/// The phase chart. Nothing reaches an origin before it is accepted,
/// routed, authenticated, authorized and within its limits.
async fn proxy<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    mut req: Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Response<Body<P>>, GatewayError> {
    let config = &gateway.config;
    accept::host(&req)?;
    ctx.path = accept::head(&config.gateway, req.headers(), req.uri().path())?;
    if let Flow::Respond(answer) = sweep::phase(config, ports, &req, ctx).await? {
        return Ok(answer.map(Body::<P>::from));
    }
    let matched = route::phase(config, ctx)?;
    let route = &config.routes[matched.route];
    accept::body_size(req.headers(), route.max_body_size)?;
    authn::drop_identity_headers(&config.auth, req.headers_mut());
    if let Some(route_auth) = &route.auth {
        let started = ports.clock().monotonic();
        let mut note = AuthNote::default();
        let verdict =
            authn::authenticate(&config.auth, route_auth, &gateway.caches, ports, ctx.client_ip, &mut req, &mut note)
                .await
                .and_then(|identity| authn::authorize(route_auth, &identity).map(|()| identity));
        note.outcome = verdict.as_ref().map_or_else(authn::AuthError::reason, |_| "ok");
        ctx.auth = Some(note);
        ctx.auth_span(config, started, ports.clock().monotonic(), &verdict);
        let identity = verdict?;
        ctx.identity = Some(identity);
    }
    rate_limit::phase(config, route, ctx, req.headers(), ports).await?;
    let service = canary::phase(gateway, ports, matched.route, ctx, req.headers()).await;
    ctx.service = Some(service);
    let req = transform::request(req, ctx, route, &matched, config);
    // Boxed: the upstream phase is most of a request's state; unboxed, each
    // enclosing future (and the slot a connection keeps for one) would
    // carry and copy all of it.
    let result = Box::pin(upstream::phase(gateway, ports, route, service, req, ctx)).await;
    canary::record(gateway, ports, matched.route, ctx, upstream::answered_well(&result, ctx)).await;
    let mut resp = transform::response(result?, route);
    if let Some((name, value)) = canary::variant_header(route, ctx) {
        resp.headers_mut().insert(name, value);
    }
    Ok(resp)
}

impl Ctx {
    fn new<B>(
        g: &GatewaySettings,
        clock: &impl Clock,
        req: &Request<B>,
        downstream: Downstream,
        record_spans: bool,
    ) -> Self {
        let started = clock.monotonic();
        let received_at = clock.now();
        let entropy = Entropy::draw(received_at.as_nanos() ^ started.as_nanos());
        let headers = req.headers();
        let host_header = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| headers.get(header::HOST).cloned());
        let host = host_header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
            .unwrap_or_default();
        let trace = Trace::from_header(headers.get("traceparent"), &entropy, g.trace_sample_ratio);
        let spans = (record_spans && trace.sampled()).then(Vec::new);
        Self {
            identity: None,
            limit_headers: Vec::new(),
            request_id: ids::request_id(headers.get(&transform::X_REQUEST_ID), &entropy),
            trace,
            spans,
            peer: transform::canonical(downstream.peer),
            client_ip: transform::client_ip(downstream.peer, headers, &g.trusted_proxies),
            scheme: downstream.scheme,
            method: req.method().clone(),
            host,
            host_header,
            path: req.uri().path().to_string(),
            route: None,
            upstream: None,
            upstream_latency: None,
            attempts: 0,
            service: None,
            auth: None,
            limits: Vec::new(),
            try_failures: Vec::new(),
            upstream_time: Duration::ZERO,
            fallback: false,
            variant: None,
            failure: None,
            started,
            received_at,
            entropy,
        }
    }
}

impl Ctx {
    /// The authentication span, with the key-set fetch under it.
    fn auth_span(
        &mut self,
        config: &Config,
        start: Duration,
        end: Duration,
        verdict: &Result<Arc<Identity>, authn::AuthError>,
    ) {
        let (Some(spans), Some(note)) = (&mut self.spans, &self.auth) else { return };
        let provider = note.provider.map_or("", |i| &*config.auth.providers[i].name);
        let span = SpanRecord::new("portcullis.authn", SpanKind::Internal, &self.trace.span_id, start, end)
            .attr("portcullis.auth.provider", provider)
            .attr("portcullis.auth.outcome", note.outcome)
            .failed(verdict.as_ref().err().map(ToString::to_string));
        if let Some(fetch) = note.fetch {
            let outcome = if fetch.ok { "ok" } else { "failed" };
            spans.push(
                SpanRecord::new("portcullis.jwks_fetch", SpanKind::Client, &span.span_id, fetch.started, fetch.ended)
                    .attr("portcullis.auth.provider", provider)
                    .attr("portcullis.jwks.outcome", outcome)
                    .failed((!fetch.ok).then(|| "the key set could not be fetched".to_string())),
            );
        }
        spans.push(span);
    }
}

#[cfg(test)]
mod tests;
