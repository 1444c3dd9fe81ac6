//! The upgrade phase: a WebSocket upgrade (`GET` with `Upgrade: websocket`
//! and `Connection: upgrade`; the node turns HTTP/2's extended CONNECT
//! into one) on a route with `websocket = true` is proxied as an upgrade;
//! on any other route its upgrade headers go like every hop-by-hop header.
//! A home that cannot hold an upgraded connection (the edge) refuses it
//! here, after every other phase, so each refusal before it is the same in
//! every home. What the adapter needs to carry the bytes, the core says in
//! the answer ([`Tunnel`]).

use std::time::Duration;

use http::header::{CONNECTION, RETRY_AFTER, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::{Ctx, Flow, Gateway, Outcome};
use crate::ports::{Body, HttpClient, Ports, UpgradeSlot};
use crate::shared::headers::has_token;
use crate::shared::problem::{Answer, Problem, Source};

/// Why an upgrade is refused before it reaches an origin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("a WebSocket upgrade needs a connection held open, which this home does not do")]
    Unsupported,
    #[error("{0} upgraded connections are open, the most allowed")]
    Full(usize),
}

impl Answer for UpgradeError {
    fn problem(&self) -> Problem {
        match self {
            Self::Unsupported => Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "upgrade-unsupported",
                "WebSocket is served by the node, not by the edge component",
                Source::Client,
            ),
            Self::Full(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upgrades-full",
                "the gateway holds as many upgraded connections as it may",
                Source::Internal,
            )
            .header(RETRY_AFTER, HeaderValue::from_static("1")),
        }
    }
}

/// Set on an upgrade's `101 Switching Protocols` for the adapter: the
/// upgraded connection closes after `idle` without a byte either way, and
/// holds `slot` until it closes.
#[derive(Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the edge never holds one
pub(crate) struct Tunnel {
    pub(crate) idle: Duration,
    pub(crate) slot: UpgradeSlot,
}

/// Whether a request asks for a WebSocket upgrade (RFC 6455 §4.1).
pub(crate) fn is_websocket(method: &Method, headers: &HeaderMap) -> bool {
    let lists = |name, token| headers.get_all(name).iter().any(|v| has_token(v, token));
    method == Method::GET && lists(UPGRADE, "websocket") && lists(CONNECTION, "upgrade")
}

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, UpgradeError> {
    let Some(idle) = gateway.route(ctx).and_then(|r| r.websocket) else {
        return Ok(Flow::Continue);
    };
    if !<P::Http as HttpClient>::UPGRADES {
        // Spin drops `Upgrade` and `Connection` (hop-by-hop) before the
        // component sees the request; a WebSocket handshake's own header stays.
        let handshake = req.method() == Method::GET && req.headers().contains_key(SEC_WEBSOCKET_KEY);
        return if handshake || is_websocket(req.method(), req.headers()) {
            Err(UpgradeError::Unsupported)
        } else {
            Ok(Flow::Continue)
        };
    }
    if !is_websocket(req.method(), req.headers()) {
        return Ok(Flow::Continue);
    }
    let slot = ports.http().upgrade_slot().map_err(UpgradeError::Full)?;
    ctx.tunnel = Some(Tunnel { idle, slot });
    Ok(Flow::Continue)
}

/// The upgrade headers, put back on an upgrade after hop-by-hop removal.
pub(crate) fn restore(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// The response phase: an origin's `101` to an upgrade keeps its upgrade
/// headers and tells the adapter how to hold the connection; any other
/// answer to it is an answer like others.
pub(crate) async fn response_phase<P: Ports>(
    _gateway: &Gateway,
    _ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    if let (Ok(resp), Some(tunnel)) = (outcome, ctx.tunnel.take()) {
        switched(resp, tunnel);
    }
}

fn switched<B>(resp: &mut Response<B>, tunnel: Tunnel) {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        restore(resp.headers_mut());
        resp.extensions_mut().insert(tunnel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_upgrades_by_method_and_both_headers() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let ws = headers(&[("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade")]);
        assert!(is_websocket(&Method::GET, &ws));
        assert!(!is_websocket(&Method::POST, &ws), "an upgrade is a GET");
        assert!(!is_websocket(&Method::GET, &headers(&[("upgrade", "websocket")])), "Connection must say upgrade");
        assert!(!is_websocket(&Method::GET, &headers(&[("upgrade", "h2c"), ("connection", "upgrade")])));
    }
}
