//! The respond phase: the headers every answer carries (request id,
//! rate-limit state), problem answers for failed requests, and the
//! access-log record, which the adapter finishes when the body is done.

use bytes::Bytes;
use http::{HeaderValue, Response};

use super::error::GatewayError;
use super::ids::Trace;
use super::log::{AccessLog, AuthLog, Failure, LimitLog, Observed, micros};
use super::trace::{SpanKind, SpanRecord};
use super::{Ctx, Exchange, transform};
use crate::config::Config;
use crate::ports::Clock;
use crate::shared::entropy::Entropy;
use crate::shared::grpc;
use crate::shared::problem::Answer;

/// The answer to a request that failed (a gRPC status to a gRPC call);
/// the failure is noted for the log (over any the request survived on the
/// way, such as a store outage).
pub(crate) fn problem(err: &GatewayError, ctx: &mut Ctx) -> Response<Bytes> {
    let problem = err.problem();
    ctx.failure = Some(Failure { problem: Some(problem.slug), source: problem.source, detail: err.to_string() });
    match &ctx.grpc_web {
        Some(mode) => grpc::answer(&problem, mode.content_type()),
        None if ctx.grpc => grpc::answer(&problem, HeaderValue::from_static("application/grpc")),
        None => problem.to_response(&ctx.request_id),
    }
}

/// Headers every answer carries, and the log record.
pub(crate) fn finish<B>(config: &Config, mut response: Response<B>, mut ctx: Ctx, clock: &impl Clock) -> Exchange<B> {
    response.headers_mut().insert(transform::X_REQUEST_ID, ctx.request_id.clone());
    if ctx.scheme == super::Scheme::Https
        && let Some(hsts) = ctx.listener.as_deref().and_then(|name| super::listener::hsts(config, name))
    {
        response.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if let Some(policy) = ctx.route.and_then(|i| config.routes[i].cors.as_deref()) {
        let preflight = ctx.cors == Some(super::cors::CorsOutcome::Preflight);
        super::cors::finish(policy, response.headers_mut(), ctx.cors_origin.take(), preflight);
    }
    if ctx.route.is_some_and(|i| config.routes[i].cache.is_some()) {
        super::cache::finish(ctx.cache.as_deref(), response.headers_mut());
    }
    for (name, value) in ctx.limit_headers {
        response.headers_mut().insert(name, value);
    }
    let now = clock.monotonic();
    let elapsed = now.saturating_sub(ctx.started);
    let status = response.status().as_u16();
    let sample = config.gateway.access_log_sample;
    // Failed requests are always logged; successful ones at the sample rate.
    let logged = status >= 400 || ctx.failure.is_some() || sample >= 1.0 || {
        let draw = (u64::from_le_bytes(Entropy::more(elapsed.as_nanos())) >> 11) as f64 / (1u64 << 53) as f64;
        draw < sample
    };
    let spans = ctx.spans.map(|mut spans| {
        spans.push(request_span(&ctx.trace, &ctx.method, status, ctx.started, now));
        spans
    });
    let names = |i: usize| config.rate_limits[i].name.clone();
    let log = Box::new(AccessLog {
        request_id: ctx.request_id,
        trace_id: ctx.trace.trace_id,
        client_ip: ctx.client_ip,
        listener: ctx.listener,
        tls: ctx.tls,
        method: ctx.method,
        host: ctx.host,
        path: ctx.path,
        route: ctx.route.map(|i| config.routes[i].name.clone()),
        service: ctx.service.map(|i| config.services[i].name.clone()),
        identity: ctx.identity,
        status,
        auth: ctx.auth.map(|a| AuthLog {
            provider: a.provider.map(|i| config.auth.providers[i].name.clone()),
            outcome: a.outcome,
            cached: a.cached,
        }),
        limits: ctx.limits.iter().map(|&(i, outcome)| LimitLog { policy: names(i), index: i, outcome }).collect(),
        upstream: ctx.upstream,
        attempts: (ctx.attempts > 0).then_some(ctx.attempts),
        fallback: ctx.fallback,
        variant: ctx.variant.map(super::canary::Variant::name),
        cors: ctx.cors,
        ip_refused: ctx.ip_refused.map(crate::config::ip_rules::IpLevel::name),
        cache: ctx.cache.as_ref().map(|c| c.result),
        limit_delay_us: ctx.limit_delay.map(micros),
        upstream_latency_us: ctx.upstream_latency.map(micros),
        overhead_us: micros(
            elapsed.saturating_sub(ctx.upstream_time).saturating_sub(ctx.limit_delay.unwrap_or_default()),
        ),
        config_us: None,
        total_latency_us: micros(elapsed),
        bytes_in: 0,
        bytes_out: 0,
        upgraded_us: None,
        problem: ctx.failure.as_ref().and_then(|f| f.problem),
        source: ctx.failure.as_ref().map(|f| f.source),
        error: ctx.failure.map(|f| f.detail),
        started: ctx.started,
        observed: Observed {
            route: ctx.route,
            service: ctx.service,
            auth: ctx.auth,
            try_failures: ctx.try_failures,
            upstream_time: ctx.upstream_time,
            logged,
            received_at: ctx.received_at,
            spans,
        },
    });
    Exchange { response, log }
}

/// The request's own span (server), under the client's span if it sent one.
fn request_span(
    trace: &Trace,
    method: &http::Method,
    status: u16,
    start: std::time::Duration,
    end: std::time::Duration,
) -> SpanRecord {
    let mut span = SpanRecord::new("portcullis.request", SpanKind::Server, "", start, end)
        .attr("http.request.method", method.as_str())
        .attr("http.response.status_code", status.to_string());
    span.span_id = trace.span_id.to_string();
    span.parent_id = trace.parent.map(|p| p.to_string());
    if status >= 500 {
        span.error = Some(format!("answered {status}"));
    }
    span
}
