//! gRPC-Web, browsers' gRPC (`application/grpc-web…` over HTTP/1.1 or
//! HTTP/2). On a route with `grpc_web`, two phases (pages at other
//! origins call under the route's CORS policy, `pipeline/cors.rs`):
//!
//! - **The bridge** (before the gRPC phase): the call becomes a gRPC call
//!   for the origin — its content type, and its body decoded from base64
//!   for `-text` by the home ([`HttpClient::grpc_web_request`]).
//! - **The answer** (a response phase): a gRPC answer becomes a gRPC-Web
//!   one — its trailers a last length-prefixed frame in the body, all of
//!   it base64 for `-text` ([`HttpClient::grpc_web_response`]).
//!
//! Every answer the gateway gives a gRPC-Web call itself is a gRPC status
//! in the headers (a trailers-only answer, which gRPC-Web clients read),
//! on any route. On a route without `grpc_web` a call goes on as it came,
//! for an origin that speaks gRPC-Web itself.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request};

use super::{Ctx, Flow, Gateway, Outcome};
use crate::ports::{Body, HttpClient, Ports};

/// How a gRPC-Web call is framed: `-text` (base64) or binary, and the
/// message format after `+` (`+proto`, `+json`), if named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) text: bool,
    suffix: String,
}

impl Mode {
    /// The call's mode, if its content type is gRPC-Web.
    pub(crate) fn of(content_type: &HeaderValue) -> Option<Mode> {
        // Every request with a body asks: nothing is allocated unless it is one.
        const WEB: &[u8] = b"application/grpc-web";
        let value = content_type.as_bytes();
        let essence = value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        if essence.len() < WEB.len() || !essence[..WEB.len()].eq_ignore_ascii_case(WEB) {
            return None;
        }
        let rest = &essence[WEB.len()..];
        let (text, rest) = match rest.get(..5) {
            Some(t) if t.eq_ignore_ascii_case(b"-text") => (true, &rest[5..]),
            _ => (false, rest),
        };
        let suffix = std::str::from_utf8(rest).ok()?.to_ascii_lowercase();
        (suffix.is_empty() || suffix.starts_with('+')).then_some(Mode { text, suffix })
    }

    /// The content type of the gateway's own answers to the call.
    pub(crate) fn content_type(&self) -> HeaderValue {
        let kind = if self.text { "application/grpc-web-text" } else { "application/grpc-web" };
        HeaderValue::from_str(&format!("{kind}{}", self.suffix)).unwrap_or(HeaderValue::from_static(kind))
    }

    fn grpc_content_type(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("application/grpc{}", self.suffix))
            .unwrap_or(HeaderValue::from_static("application/grpc"))
    }
}

/// The header a gRPC-Web client library marks its calls with.
const X_GRPC_WEB: HeaderName = HeaderName::from_static("x-grpc-web");

pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, std::convert::Infallible> {
    let Some(mode) = ctx.grpc_web.clone() else { return Ok(Flow::Continue) };
    if gateway.route(ctx).is_none_or(|r| !r.grpc_web) {
        return Ok(Flow::Continue);
    }
    ctx.grpc = true;
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, mode.grpc_content_type());
    headers.remove(X_GRPC_WEB);
    if mode.text {
        headers.remove(CONTENT_LENGTH); // base64 is longer than what it encodes
        let body = std::mem::replace(req.body_mut(), Body::<P>::from(bytes::Bytes::new()));
        *req.body_mut() = <P::Http as HttpClient>::grpc_web_request(body);
    }
    Ok(Flow::Continue)
}

/// A bridged call's gRPC answer, as gRPC-Web; anything else (an origin
/// that did not answer in gRPC) goes as it is.
pub(crate) async fn response_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    let (Some(mode), Ok(resp)) = (&ctx.grpc_web, outcome.as_mut()) else { return };
    // Bridged (the route's), and answered in gRPC.
    if gateway.route(ctx).is_none_or(|r| !r.grpc_web) || !super::grpc::is_call(resp.headers()) {
        return;
    }
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, mode.content_type());
    headers.remove(CONTENT_LENGTH);
    let body = std::mem::replace(resp.body_mut(), Body::<P>::from(bytes::Bytes::new()));
    *resp.body_mut() = <P::Http as HttpClient>::grpc_web_response(body, mode.text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_by_content_type() {
        let mode = |ct: &'static str| {
            Mode::of(&HeaderValue::from_static(ct)).map(|m| (m.text, m.content_type(), m.grpc_content_type()))
        };
        let v = HeaderValue::from_static;
        assert_eq!(mode("application/grpc-web"), Some((false, v("application/grpc-web"), v("application/grpc"))));
        assert_eq!(
            mode("application/grpc-web-text+proto"),
            Some((true, v("application/grpc-web-text+proto"), v("application/grpc+proto")))
        );
        assert_eq!(
            mode("Application/GRPC-Web+json; charset=utf-8"),
            Some((false, v("application/grpc-web+json"), v("application/grpc+json")))
        );
        for not in ["application/grpc", "application/grpc+proto", "application/grpc-webx", "text/plain"] {
            assert_eq!(mode(not), None, "{not}");
        }
    }
}
