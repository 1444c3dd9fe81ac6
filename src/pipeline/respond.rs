//! The respond phase: the headers every answer carries (request id,
//! rate-limit state), problem answers for failed requests, and the
//! access-log record, which the adapter finishes when the body is done.

use bytes::Bytes;
use http::Response;

use super::error::GatewayError;
use super::log::{AccessLog, Failure, micros, rfc3339};
use super::{Ctx, Exchange, transform};
use crate::config::Config;
use crate::ports::Clock;
use crate::shared::problem::Answer;

/// The answer to a request that failed; the failure is noted for the log
/// (over any the request survived on the way, such as a store outage).
pub(crate) fn problem(err: &GatewayError, ctx: &mut Ctx) -> Response<Bytes> {
    let problem = err.problem();
    ctx.failure = Some(Failure { problem: Some(problem.slug), source: problem.source, detail: err.to_string() });
    problem.to_response(&ctx.request_id)
}

/// Headers every answer carries, and the log record.
pub(crate) fn finish<B>(config: &Config, mut response: Response<B>, ctx: Ctx, clock: &impl Clock) -> Exchange<B> {
    response.headers_mut().insert(transform::X_REQUEST_ID, ctx.request_id.clone());
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
        attempts: (ctx.attempts > 0).then_some(ctx.attempts),
        fallback: ctx.fallback,
        variant: ctx.variant.map(super::canary::Variant::name),
        upstream_latency_us: ctx.upstream_latency.map(micros),
        total_latency_us: micros(clock.monotonic().saturating_sub(ctx.started)),
        bytes_in: 0,
        bytes_out: 0,
        problem: ctx.failure.as_ref().and_then(|f| f.problem),
        source: ctx.failure.as_ref().map(|f| f.source),
        error: ctx.failure.map(|f| f.detail),
        started: ctx.started,
    };
    Exchange { response, log }
}
