//! The upstream phase: which of the service's targets, the exchange with it
//! under the service's timeouts, and its failures by cause
//! ([`UpstreamError`]: connect → 502, timeouts → 504). The choice of target
//! is [`balance`]'s; retries grow here.

pub(crate) mod balance;

use http::{HeaderMap, Request, Response};

use super::{Ctx, Gateway, caller};
use crate::config::balance::Balance;
use crate::config::{Route, Service, Target};
use crate::ports::{Body, Clock, HttpClient, Ports, UpstreamError, UpstreamOptions};
use balance::Pick;

/// The service's target for this request, by the service's `balance`.
pub(crate) fn choose<'g>(
    gateway: &'g Gateway,
    service: usize,
    ctx: &mut Ctx,
    headers: &HeaderMap,
) -> (&'g Target, Pick<'g>) {
    let svc = &gateway.config.services[service];
    let caller = match &svc.balance {
        Balance::ConsistentHash(key) => Some(caller::value(&gateway.config, key, ctx, headers)),
        _ => None,
    };
    let pick = gateway.balancers[service].pick(svc, caller.as_deref(), ctx.entropy.choice());
    let target = &svc.targets[pick.index];
    ctx.upstream = Some(target.label.clone());
    (target, pick)
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
