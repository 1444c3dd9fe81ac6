//! The request pipeline: the phases of ARCHITECTURE.md ("The request
//! lifecycle"), in the order [`proxy`] runs them, over a per-request [`Ctx`].
//!
//! Every request phase has one shape:
//! `async fn phase<P: Ports>(&Gateway, &P, &mut Request<Body<P>>, &mut Ctx)
//! -> Result<Flow<Body<P>>, PhaseError>`: it passes the request on
//! ([`Flow::Continue`]), answers it itself ([`Flow::Respond`]), or fails
//! with its own error, which knows its answer
//! ([`crate::shared::problem::Answer`]). The upstream phase ends the list:
//! it always answers. Then every response phase, in one fixed order
//! ([`respond_phases`]), sees the outcome — an answer or a failure not yet
//! turned into one — with the same arguments:
//! `async fn response_phase<P: Ports>(&Gateway, &P, &mut Outcome<Body<P>>, &mut Ctx)`.

pub(crate) mod accept;
pub mod authn;
pub(crate) mod cache;
pub(crate) mod caller;
pub(crate) mod canary;
pub(crate) mod cors;
pub(crate) mod error;
pub(crate) mod grpc;
pub(crate) mod grpc_web;
pub(crate) mod ids;
pub(crate) mod ip_rules;
pub(crate) mod leases;
pub(crate) mod listener;
pub(crate) mod log;
pub(crate) mod rate_limit;
pub(crate) mod respond;
pub(crate) mod route;
pub(crate) mod sweep;
pub(crate) mod trace;
pub(crate) mod transform;
pub(crate) mod upgrade;
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
use crate::shared::tls::TlsInfo;
use authn::AuthCaches;
use canary::CanaryState;
use error::GatewayError;
use ids::Trace;
use log::{AccessLog, AuthNote, Failure, LimitOutcome, PerPolicy};
use trace::SpanRecord;
use upstream::ServiceState;

/// What the adapter knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    /// The TCP peer (at the edge: the address Spin reports; behind a
    /// PROXY-protocol listener: the address the header gives).
    pub(crate) peer: IpAddr,
    /// How the client spoke to this hop.
    pub(crate) scheme: Scheme,
    /// The node's listener it came on, by name (the edge has none).
    pub(crate) listener: Option<Arc<str>>,
    /// The TLS session, where the node terminated TLS.
    pub(crate) tls: Option<Arc<TlsInfo>>,
}

impl Downstream {
    /// A connection the home does not describe further (the edge, tests).
    #[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
    pub(crate) fn plain(peer: IpAddr, scheme: Scheme) -> Self {
        Self { peer, scheme, listener: None, tls: None }
    }
}

/// The scheme a client spoke to this hop: plain or over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
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
    pub(crate) scheme: Scheme,
    /// The listener and TLS session it came on (see [`Downstream`]).
    pub(crate) listener: Option<Arc<str>>,
    pub(crate) tls: Option<Arc<TlsInfo>>,
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
    pub(crate) limits: PerPolicy<(usize, LimitOutcome)>,
    /// How long the request waited for its turn under a policy's `max_delay`.
    pub(crate) limit_delay: Option<Duration>,
    /// Failed tries, by kind.
    pub(crate) try_failures: Vec<&'static str>,
    /// Time spent waiting on targets, all tries together.
    pub(crate) upstream_time: Duration,
    /// The request's finished spans, while its trace is sampled and the
    /// home exports spans; the request span's id is `trace.span_id`.
    pub(crate) spans: Option<Vec<SpanRecord>>,
    /// The route's parameters (`{name}` in its path), once routed.
    pub(crate) params: Vec<(String, String)>,
    /// The route's fallback answered.
    pub(crate) fallback: bool,
    /// Which side of the route's canary served.
    pub(crate) variant: Option<canary::Variant>,
    /// A gRPC call: the gateway's own answers are gRPC statuses.
    pub(crate) grpc: bool,
    /// The call's `grpc-timeout`: the origin's answer is not waited longer.
    pub(crate) grpc_timeout: Option<Duration>,
    /// A gRPC-Web call: the gateway's own answers are gRPC-Web statuses.
    pub(crate) grpc_web: Option<grpc_web::Mode>,
    /// A CORS preflight routed by the method it asks for: that method.
    pub(crate) preflight: Option<Method>,
    /// What the route's CORS policy decided.
    pub(crate) cors: Option<cors::CorsOutcome>,
    /// `Access-Control-Allow-Origin` for every answer (an allowed page).
    pub(crate) cors_origin: Option<HeaderValue>,
    /// The level whose IP rules refused the client.
    pub(crate) ip_refused: Option<crate::config::ip_rules::IpLevel>,
    /// A WebSocket upgrade the route takes: how its connection is held.
    pub(crate) tunnel: Option<upgrade::Tunnel>,
    /// What the route's response cache did.
    pub(crate) cache: Option<Box<cache::CacheNote>>,
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
    /// Boxed: the record is large (~700 bytes) and goes with the response
    /// body until it is sent; unboxed, every move of either copied it.
    pub(crate) log: Box<AccessLog>,
}

/// What a request phase decided: pass the request on, or answer it.
pub(crate) enum Flow<B> {
    Continue,
    Respond(Response<B>),
}

/// How the request phases ended: an answer, or a failure that becomes a
/// problem answer once the response phases have seen it.
pub(crate) type Outcome<B> = Result<Response<B>, GatewayError>;

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
    /// Per rate-limit policy, the requests waiting for their turn (same lifetime).
    pub(crate) waiting: rate_limit::Waiting,
    /// Ranges of hot rate keys this node or instance hands out (same lifetime;
    /// unused under WASI 0.2, whose instance lives one request).
    pub(crate) leases: leases::Leases,
    /// The response cache's records in memory (kept across reloads).
    pub(crate) cache_memory: Arc<cache::Memory>,
}

impl Gateway {
    /// The route the request matched, once the route phase has run.
    pub(crate) fn route(&self, ctx: &Ctx) -> Option<&crate::config::Route> {
        self.config.routes.get(ctx.route?)
    }

    pub(crate) fn new(config: Config) -> Self {
        let caches = AuthCaches::new(&config.auth);
        let upstreams = config.services.iter().map(ServiceState::new).collect();
        let canaries = canaries(&config);
        let waiting = rate_limit::Waiting::new(&config);
        let cache_memory = Arc::new(cache::Memory::new(config.gateway.cache_memory));
        Self { config, caches, upstreams, canaries, waiting, leases: leases::Leases::default(), cache_memory }
    }

    /// The store keys of the routes' canary records.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn canary_keys(&self) -> Vec<String> {
        self.config.routes.iter().filter(|r| r.canary.is_some()).map(CanaryState::key_for).collect()
    }

    /// The gateway for a new config, keeping what stays valid (key sets).
    #[cfg(any(not(target_arch = "wasm32"), feature = "edge-p3"))]
    pub(crate) fn reloaded(&self, config: Config) -> Self {
        let caches = self.caches.renewed(&config.auth);
        let upstreams = config.services.iter().map(ServiceState::new).collect();
        let canaries = canaries(&config);
        let waiting = rate_limit::Waiting::new(&config);
        let cache_memory = if config.gateway.cache_memory == self.config.gateway.cache_memory {
            self.cache_memory.clone()
        } else {
            Arc::new(cache::Memory::new(config.gateway.cache_memory))
        };
        Self { config, caches, upstreams, canaries, waiting, leases: leases::Leases::default(), cache_memory }
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
    let outcome = proxy(gateway, ports, req, &mut ctx).await;
    let outcome = respond_phases(gateway, ports, outcome, &mut ctx).await;
    let response = match outcome {
        Ok(resp) => resp,
        Err(err) => respond::problem(&err, &mut ctx).map(Body::<P>::from),
    };
    respond::finish(&gateway.config, response, ctx, ports.clock())
}

/// Runs a request phase; its answer, if it gives one, is the request's.
macro_rules! run {
    ($phase:expr) => {
        if let Flow::Respond(answer) = $phase.await? {
            return Ok(answer);
        }
    };
}

/// The request phases, in order. Nothing reaches an origin before it is
/// accepted, routed, authenticated, authorized and within its limits.
async fn proxy<P: Ports>(gateway: &Gateway, ports: &P, mut req: Request<Body<P>>, ctx: &mut Ctx) -> Outcome<Body<P>> {
    let r = &mut req;
    run!(accept::head_phase(gateway, ports, r, ctx));
    run!(listener::phase(gateway, ports, r, ctx));
    run!(sweep::phase(gateway, ports, r, ctx));
    run!(route::phase(gateway, ports, r, ctx));
    run!(cors::phase(gateway, ports, r, ctx));
    run!(ip_rules::phase(gateway, ports, r, ctx));
    run!(accept::body_phase(gateway, ports, r, ctx));
    run!(authn::phase(gateway, ports, r, ctx));
    run!(ip_rules::consumer_phase(gateway, ports, r, ctx));
    run!(rate_limit::phase(gateway, ports, r, ctx));
    run!(canary::phase(gateway, ports, r, ctx));
    run!(grpc_web::phase(gateway, ports, r, ctx));
    run!(grpc::phase(gateway, ports, r, ctx));
    run!(upgrade::phase(gateway, ports, r, ctx));
    run!(cache::phase(gateway, ports, r, ctx));
    run!(transform::request_phase(gateway, ports, r, ctx));
    upstream::phase(gateway, ports, req, ctx).await
}

/// The response phases, in order: each sees the outcome, whatever made it
/// (the origin, a fallback, an early answer, or a failure still to become
/// a problem answer).
async fn respond_phases<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    mut outcome: Outcome<Body<P>>,
    ctx: &mut Ctx,
) -> Outcome<Body<P>> {
    let o = &mut outcome;
    cache::response_phase(gateway, ports, o, ctx).await;
    upstream::fallback_phase(gateway, ports, o, ctx).await;
    transform::response_phase(gateway, ports, o, ctx).await;
    grpc_web::response_phase(gateway, ports, o, ctx).await;
    upgrade::response_phase(gateway, ports, o, ctx).await;
    canary::response_phase(gateway, ports, o, ctx).await;
    outcome
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
        let host = host_header.as_ref().map(accept::host_of).unwrap_or_default();
        let trace = Trace::from_header(headers.get(&transform::TRACEPARENT), &entropy, g.trace_sample_ratio);
        let content_type = headers.get(header::CONTENT_TYPE);
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
            listener: downstream.listener,
            tls: downstream.tls,
            method: req.method().clone(),
            host,
            host_header,
            path: req.uri().path().to_string(),
            route: None,
            params: Vec::new(),
            upstream: None,
            upstream_latency: None,
            attempts: 0,
            service: None,
            auth: None,
            limits: PerPolicy::new(),
            limit_delay: None,
            try_failures: Vec::new(),
            upstream_time: Duration::ZERO,
            fallback: false,
            variant: None,
            grpc: content_type.is_some_and(grpc::is_call_type),
            grpc_timeout: None,
            grpc_web: content_type.and_then(grpc_web::Mode::of),
            preflight: None,
            cors: None,
            cors_origin: None,
            ip_refused: None,
            tunnel: None,
            cache: None,
            failure: None,
            started,
            received_at,
            entropy,
        }
    }
}

#[cfg(test)]
mod tests;
