//! The listener phase: what the node's socket a request came on says of
//! it (`[[listeners]]`). A host the listener does not answer gets 421; a
//! plaintext listener that redirects answers every request 308 to
//! `https://`. (At the edge there is no listener: the phase passes.)

use http::header::{CONTENT_LENGTH, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use thiserror::Error;

use super::{Ctx, Flow, Gateway};
use crate::config::{Config, Listener};
use crate::ports::{Body, Ports};
use crate::shared::problem::{Answer, Problem, Source};

/// The request is for a host this listener does not serve.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("this listener does not serve the host `{0}`")]
pub(crate) struct Misdirected(pub(crate) String);

impl Answer for Misdirected {
    fn problem(&self) -> Problem {
        Problem::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected-request",
            "this address does not serve the requested host",
            Source::Client,
        )
    }
}

/// The listener a request came on, in the running config.
fn of<'g>(gateway: &'g Gateway, ctx: &Ctx) -> Option<&'g Listener> {
    let name = ctx.listener.as_deref()?;
    gateway.config.listeners.iter().find(|l| &*l.name == name)
}

/// The `Strict-Transport-Security` value of a TLS listener, if it sets one.
pub(crate) fn hsts<'c>(config: &'c Config, listener: &str) -> Option<&'c HeaderValue> {
    let listener = config.listeners.iter().find(|l| &*l.name == listener)?;
    listener.tls.as_ref()?.hsts.as_ref()
}

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, Misdirected> {
    let Some(listener) = of(gateway, ctx) else {
        return Ok(Flow::Continue);
    };
    if !listener.hosts.is_empty() && !listener.hosts.iter().any(|h| h.matches(&ctx.host)) {
        return Err(Misdirected(ctx.host.clone()));
    }
    let Some(port) = listener.redirect_to_https else {
        return Ok(Flow::Continue);
    };
    // `ctx.host` is the bare name: an IPv6 address gets its brackets back.
    let host = if ctx.host.contains(':') { format!("[{}]", ctx.host) } else { ctx.host.clone() };
    let port = if port == 443 { String::new() } else { format!(":{port}") };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut resp = Response::new(Body::<P>::from(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{}{query}", ctx.path)) {
        resp.headers_mut().insert(LOCATION, location);
    }
    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(Flow::Respond(resp))
}
