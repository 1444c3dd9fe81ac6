//! The route phase: the request's host, normalised path and method looked
//! up in the config's router (`config/router.rs`): a route, or 404/405.

use http::Request;

use super::{Ctx, Flow, Gateway};
use crate::config::router::RouteError;
use crate::ports::{Body, Ports};

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    _req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, RouteError> {
    let matched = gateway.config.router.find(&ctx.host, &ctx.path, &ctx.method)?;
    ctx.route = Some(matched.route);
    ctx.params = matched.params;
    Ok(Flow::Continue)
}
