//! The route phase: the request's host, normalised path and method looked
//! up in the config's router (`config/router.rs`): a route, or 404/405.
//! A CORS preflight goes to the route of the method it asks for, when that
//! route has a CORS policy (which answers it); else to a route for OPTIONS.

use http::Request;

use super::{Ctx, Flow, Gateway};
use crate::config::router::RouteError;
use crate::ports::{Body, Ports};

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, RouteError> {
    if let Some(asked) = super::cors::preflight_method(&ctx.method, req.headers())
        && let Ok(matched) = gateway.config.router.find(&ctx.host, &ctx.path, &asked)
        && gateway.config.routes[matched.route].cors.is_some()
    {
        ctx.route = Some(matched.route);
        ctx.params = matched.params;
        ctx.preflight = Some(asked);
        return Ok(Flow::Continue);
    }
    let matched = gateway.config.router.find(&ctx.host, &ctx.path, &ctx.method)?;
    ctx.route = Some(matched.route);
    ctx.params = matched.params;
    Ok(Flow::Continue)
}
