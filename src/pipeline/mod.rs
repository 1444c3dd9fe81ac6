//! The request pipeline: one fixed sequence of phases over a per-request
//! [`Ctx`]. Each phase either passes the request on or fails with its own
//! error, which [`crate::error`] turns into the answer.
//!
//! ```text
//! accept ─► route ─► limits ─► authn ─► authz ─► transform ─► upstream ─► respond ─► log
//!  431/400   404/405   413   401/400/503   403                  502/504
//! ```

pub mod authn;
pub mod forward;
pub mod gcra;
pub mod ids;
pub mod limit;
pub mod log;
pub mod normalize;
pub mod route;
pub mod sweep;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};

use crate::config::{Config, GatewaySettings, Route, Service, Target};
use crate::error::{AcceptError, GatewayError};
use crate::ports::{Body, Clock, HttpClient, Ports, UpstreamOptions};
use authn::AuthCaches;
use ids::{Entropy, Trace};
use log::{AccessLog, micros, rfc3339};

/// What the adapter knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    /// The TCP peer (at the edge: the address Spin reports).
    pub peer: IpAddr,
    /// `http` or `https`, as the client spoke to this hop.
    pub scheme: &'static str,
}

/// Per-request state, filled in phase by phase.
pub struct Ctx {
    /// Who is calling, once authenticated.
    pub identity: Option<Arc<authn::Identity>>,
    /// Rate-limit headers every answer of this request carries.
    pub limit_headers: limit::Headers,
    pub request_id: HeaderValue,
    pub trace: Trace,
    pub peer: IpAddr,
    pub client_ip: IpAddr,
    pub scheme: &'static str,
    pub method: Method,
    /// Lower case, without port.
    pub host: String,
    /// The client's `Host` (or `:authority`), as sent.
    pub host_header: Option<HeaderValue>,
    /// Normalised once routing starts; the raw path before that.
    pub path: String,
    pub route: Option<usize>,
    pub upstream: Option<Arc<str>>,
    pub upstream_latency: Option<Duration>,
    pub error: Option<String>,
    started: Duration,
    received_at: Duration,
    entropy: Entropy,
}

/// The answer to a request plus its (not yet finished) access-log record.
pub struct Exchange<B> {
    pub response: Response<B>,
    pub log: AccessLog,
}

/// A compiled config with the caches that go with it: what a request
/// borrows. A reload builds a new one ([`Gateway::reloaded`]) and swaps it
/// in whole.
pub struct Gateway {
    pub config: Config,
    /// Only save work (verified tokens, key sets); they live as long as the
    /// home keeps this value: a process, a reused instance, or one request.
    pub caches: AuthCaches,
}

impl Gateway {
    pub fn new(config: Config) -> Self {
        let caches = AuthCaches::new(&config.auth);
        Self { config, caches }
    }

    /// The gateway for a new config, keeping what stays valid (key sets).
    pub fn reloaded(&self, config: Config) -> Self {
        let caches = self.caches.renewed(&config.auth);
        Self { config, caches }
    }
}

/// Runs one request through every phase. Never fails: errors become answers.
pub async fn handle<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: Request<Body<P>>,
    downstream: Downstream,
) -> Exchange<Body<P>> {
    let (config, caches) = (&gateway.config, &gateway.caches);
    let mut ctx = Ctx::new(&config.gateway, ports.clock(), &req, downstream);
    let response = match proxy(config, caches, ports, req, &mut ctx).await {
        Ok(resp) => resp,
        Err(err) => {
            // A store failure noted on the way does not hide the error that ended the request.
            ctx.error = Some(err.to_string());
            err.to_response(&ctx.request_id).map(Body::<P>::from)
        }
    };
    respond(config, response, ctx, ports.clock())
}

async fn proxy<P: Ports>(
    config: &Config,
    caches: &AuthCaches,
    ports: &P,
    mut req: Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Response<Body<P>>, GatewayError> {
    // Phase 1, accept: a head we are willing to read, a path we can trust.
    check_head(&config.gateway, req.headers())?;
    ctx.path = normalize::normalize_path(req.uri().path()).map_err(AcceptError::from)?;
    if let Some(sweep) = config.sweep.as_ref().filter(|s| s.path == ctx.path) {
        return Ok(sweep::sweep(sweep, ports, &req).await?.map(Body::<P>::from));
    }

    // Phase 2, route.
    let matched = config.router.find(&ctx.host, &ctx.path, &ctx.method)?;
    let route = &config.routes[matched.route];
    ctx.route = Some(matched.route);

    // Phase 3, limits known from the head alone.
    check_content_length(req.headers(), route.max_body_size)?;

    // Phases 4 and 5, authn and authz, before anything costs an origin a thing.
    authn::drop_identity_headers(&config.auth, req.headers_mut());
    if let Some(route_auth) = &route.auth {
        let identity = authn::authenticate(&config.auth, route_auth, caches, ports, &mut req).await?;
        ctx.identity = Some(identity.clone());
        authn::authorize(route_auth, &identity)?;
    }

    // Phase 6, rate limit, by whoever the caller turned out to be.
    if !route.limits.is_empty() {
        let applied = limit::check(config, route, ctx, req.headers(), ports).await?;
        ctx.limit_headers = applied.headers;
        if applied.store_error.is_some() {
            ctx.error = applied.store_error;
        }
    }

    // Phase 7, transform; phase 8, upstream.
    let service = &config.services[route.service];
    let target = pick_target(service, ctx.entropy.choice());
    ctx.upstream = Some(target.label.clone());
    let upstream_req = forward::upstream_request(req, ctx, route, &matched, target, &config.gateway.trusted_proxies);
    let options = upstream_options(service, route);
    let sent_at = ports.clock().monotonic();
    let result = ports.http().send(upstream_req, &options).await;
    ctx.upstream_latency = Some(ports.clock().monotonic().saturating_sub(sent_at));
    Ok(forward::downstream_response(result?, route))
}

fn upstream_options(service: &Service, route: &Route) -> UpstreamOptions {
    UpstreamOptions {
        connect_timeout: service.connect_timeout,
        request_timeout: service.request_timeout,
        max_request_body: route.max_body_size,
    }
}

/// Weighted choice among a service's targets (`draw` is uniform random).
fn pick_target(service: &Service, draw: u64) -> &Target {
    let total: u64 = service.targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut point = if total == 0 { 0 } else { draw % total };
    for target in &service.targets {
        if point < u64::from(target.weight) {
            return target;
        }
        point -= u64::from(target.weight);
    }
    // Compiled services always have a target with weight > 0.
    &service.targets[0]
}

fn check_head(g: &GatewaySettings, headers: &HeaderMap) -> Result<(), AcceptError> {
    let count = headers.len();
    if count > g.max_header_count as usize {
        return Err(AcceptError::TooManyHeaders { count, limit: g.max_header_count });
    }
    let size: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum();
    if size > g.max_header_size {
        return Err(AcceptError::HeadersTooLarge { size, limit: g.max_header_size });
    }
    Ok(())
}

fn check_content_length(headers: &HeaderMap, limit: u64) -> Result<(), AcceptError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let size: u64 = value.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or(AcceptError::BadContentLength)?;
    if size > limit {
        return Err(AcceptError::BodyTooLarge { size, limit });
    }
    Ok(())
}

/// Phase 9, respond: headers every answer carries, and the log record.
fn respond<B>(config: &Config, mut response: Response<B>, ctx: Ctx, clock: &impl Clock) -> Exchange<B> {
    response.headers_mut().insert(forward::X_REQUEST_ID, ctx.request_id.clone());
    for (name, value) in ctx.limit_headers {
        response.headers_mut().insert(name, value);
    }
    let log = AccessLog {
        time: rfc3339(ctx.received_at),
        request_id: ctx.request_id,
        trace_id: ctx.trace.trace_id,
        client_ip: ctx.client_ip,
        method: ctx.method,
        host: ctx.host,
        path: ctx.path,
        route: ctx.route.map(|i| config.routes[i].name.clone()),
        identity: ctx.identity,
        status: response.status().as_u16(),
        upstream: ctx.upstream,
        upstream_latency_us: ctx.upstream_latency.map(micros),
        total_latency_us: micros(clock.monotonic().saturating_sub(ctx.started)),
        bytes_in: 0,
        bytes_out: 0,
        error: ctx.error,
        started: ctx.started,
    };
    Exchange { response, log }
}

impl Ctx {
    fn new<B>(g: &GatewaySettings, clock: &impl Clock, req: &Request<B>, downstream: Downstream) -> Self {
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
        Self {
            identity: None,
            limit_headers: Vec::new(),
            request_id: ids::request_id(headers.get(&forward::X_REQUEST_ID), &entropy),
            trace: Trace::from_header(headers.get("traceparent"), &entropy),
            peer: forward::canonical(downstream.peer),
            client_ip: forward::client_ip(downstream.peer, headers, &g.trusted_proxies),
            scheme: downstream.scheme,
            method: req.method().clone(),
            host,
            host_header,
            path: req.uri().path().to_string(),
            route: None,
            upstream: None,
            upstream_latency: None,
            error: None,
            started,
            received_at,
            entropy,
        }
    }
}

#[cfg(test)]
mod tests;
