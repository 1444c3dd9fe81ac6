//! The IP-rules phases: the client's address (resolved through
//! `trusted_proxies`) against the route's rules — its service's, then its
//! own — right after CORS (so a page can read the refusal), before any
//! other work; and against an authenticated consumer's, right after
//! authentication. A refusal is 403 `ip-refused`.

use http::{Request, StatusCode};

use super::{Ctx, Flow, Gateway};
use crate::config::ip_rules::IpLevel;
use crate::ports::{Body, Ports};
use crate::shared::problem::{Answer, Problem, Source};

/// A client address the rules of one level refuse.
#[derive(Debug, thiserror::Error)]
#[error("the {} rules refuse the client address {address}", level.name())]
pub(crate) struct IpRefused {
    pub(crate) level: IpLevel,
    address: std::net::IpAddr,
}

impl Answer for IpRefused {
    fn problem(&self) -> Problem {
        let detail = match self.level {
            IpLevel::Consumer => "this consumer may not call from this address",
            IpLevel::Service | IpLevel::Route => "requests from this address may not call this route",
        };
        Problem::new(StatusCode::FORBIDDEN, "ip-refused", detail, Source::Client)
    }
}

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    _req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, IpRefused> {
    let Some(route) = gateway.route(ctx) else { return Ok(Flow::Continue) };
    match route.ip_rules.iter().find(|(_, rules)| !rules.admits(ctx.client_ip)) {
        Some(&(level, _)) => Err(ctx.ip_refused(level)),
        None => Ok(Flow::Continue),
    }
}

pub(crate) async fn consumer_phase<P: Ports>(
    _gateway: &Gateway,
    _ports: &P,
    _req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, IpRefused> {
    match ctx.identity.as_ref().and_then(|id| id.networks.as_ref()) {
        Some(rules) if !rules.admits(ctx.client_ip) => Err(ctx.ip_refused(IpLevel::Consumer)),
        _ => Ok(Flow::Continue),
    }
}

impl Ctx {
    fn ip_refused(&mut self, level: IpLevel) -> IpRefused {
        self.ip_refused = Some(level);
        IpRefused { level, address: self.client_ip }
    }
}
