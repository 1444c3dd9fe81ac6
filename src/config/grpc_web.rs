//! A route's `grpc_web` and `grpc_web_origins`: gRPC-Web calls (from
//! browsers) are bridged to a gRPC origin, and pages at these origins may
//! make them (their CORS preflights answered by the gateway).

use http::{HeaderValue, Method};

use super::raw::RawRoute;
use super::{Compiler, Service};

/// The bridge on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrpcWeb {
    /// Page origins (`https://app.example.com`) allowed to call, as sent in
    /// `Origin`; empty: no cross-origin calls (no CORS headers).
    pub(crate) origins: Vec<HeaderValue>,
    /// Any origin (`"*"`).
    pub(crate) any_origin: bool,
}

impl GrpcWeb {
    /// Whether a page at `origin` may call.
    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }
}

impl Compiler<'_> {
    /// `grpc_web` (a POST to an HTTP/2 service) and its origins (which
    /// need OPTIONS for preflights, where the route lists methods).
    pub(super) fn route_grpc_web(
        &mut self,
        key: &impl Fn(&str) -> String,
        raw: &RawRoute,
        methods: Option<&[Method]>,
        service: &Service,
    ) -> Option<GrpcWeb> {
        let on = raw.grpc_web.as_ref().is_some_and(|w| *w.get_ref());
        if let Some(list) = raw.grpc_web_origins.as_ref().filter(|_| !on) {
            self.error(list.span(), key("grpc_web_origins"), "needs `grpc_web = true`");
        }
        let w = raw.grpc_web.as_ref().filter(|_| on)?;
        let listed = |m: &Method| methods.is_none_or(|ms| ms.contains(m));
        if !listed(&Method::POST) {
            self.error(w.span(), key("grpc_web"), "a gRPC-Web call is a POST request: add \"POST\" to `methods`");
        }
        if !service.http2 {
            let message = format!(
                "service `{}` speaks HTTP/1.1; gRPC goes to origins over HTTP/2: set `http2 = true` on it",
                service.name
            );
            self.error(w.span(), key("grpc_web"), message);
        }
        let mut bridge = GrpcWeb { origins: Vec::new(), any_origin: false };
        let Some(list) = &raw.grpc_web_origins else { return Some(bridge) };
        if !list.get_ref().is_empty() && !listed(&Method::OPTIONS) {
            let message = "browsers ask first with a preflight: add \"OPTIONS\" to `methods`";
            self.error(list.span(), key("grpc_web_origins"), message);
        }
        for (i, origin) in list.get_ref().iter().enumerate() {
            let k = format!("{}[{i}]", key("grpc_web_origins"));
            let Some(value) = self.value(origin, &k) else { continue };
            if value == "*" {
                bridge.any_origin = true;
                continue;
            }
            let parsed = value.parse::<http::Uri>().ok().filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some()
                    && u.path_and_query().is_none_or(|p| p.as_str() == "/")
                    && !value.ends_with('/')
            });
            match parsed.and_then(|_| HeaderValue::from_str(&value.to_ascii_lowercase()).ok()) {
                Some(v) => bridge.origins.push(v),
                None => self.error(
                    origin.span(),
                    k,
                    format!(
                        "`{value}` is not an origin: a scheme and a host, e.g. \"https://app.example.com\", or \"*\""
                    ),
                ),
            }
        }
        Some(bridge)
    }
}
