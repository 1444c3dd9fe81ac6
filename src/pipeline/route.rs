//! The route phase: the request's host, normalised path and method looked
//! up in the config's router (`config/router.rs`): a route, or 404/405.

use super::Ctx;
use crate::config::Config;
use crate::config::router::{RouteError, RouteMatch};

pub(crate) fn phase(config: &Config, ctx: &mut Ctx) -> Result<RouteMatch, RouteError> {
    let matched = config.router.find(&ctx.host, &ctx.path, &ctx.method)?;
    ctx.route = Some(matched.route);
    Ok(matched)
}
