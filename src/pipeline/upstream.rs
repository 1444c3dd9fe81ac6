//! The upstream phase: which of the service's targets, the exchange with it
//! under the service's timeouts, and its failures by cause
//! ([`UpstreamError`]: connect → 502, timeouts → 504). Retries and load
//! balancing grow here.

use http::{Request, Response};

use super::Ctx;
use crate::config::{Route, Service, Target};
use crate::ports::{Body, Clock, HttpClient, Ports, UpstreamError, UpstreamOptions};

/// A weighted random choice among the service's targets (a WASI 0.2
/// instance lives one request, so a counter would never move).
pub(crate) fn choose<'a>(service: &'a Service, ctx: &mut Ctx) -> &'a Target {
    let total: u64 = service.targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut point = if total == 0 { 0 } else { ctx.entropy.choice() % total };
    let mut chosen = &service.targets[0];
    for target in &service.targets {
        if point < u64::from(target.weight) {
            chosen = target;
            break;
        }
        point -= u64::from(target.weight);
    }
    ctx.upstream = Some(chosen.label.clone());
    chosen
}

/// Sends the request; the time to the response head is the upstream
/// latency. A response head larger than `max_head` bytes is refused.
pub(crate) async fn send<P: Ports>(
    ports: &P,
    service: &Service,
    route: &Route,
    max_head: u64,
    req: Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Response<Body<P>>, UpstreamError> {
    let options = UpstreamOptions {
        connect_timeout: service.connect_timeout,
        request_timeout: service.request_timeout,
        max_request_body: route.max_body_size,
    };
    let sent_at = ports.clock().monotonic();
    let result = ports.http().send(req, &options).await;
    ctx.upstream_latency = Some(ports.clock().monotonic().saturating_sub(sent_at));
    let resp = result?;
    let head: u64 = resp.headers().iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum();
    if head > max_head {
        return Err(UpstreamError::Protocol(format!("the response head is {head} bytes, more than {max_head}")));
    }
    Ok(resp)
}
