//! A route's `grpc_web`: gRPC-Web calls (from browsers) are bridged to a
//! gRPC origin. Pages at other origins call it under a CORS policy: the
//! route's `grpc_web_origins` or `cors` (`config/cors.rs`).

use http::Method;

use super::raw::RawRoute;
use super::{Compiler, Service};

impl Compiler<'_> {
    /// `grpc_web`: a POST to an HTTP/2 service.
    pub(super) fn route_grpc_web(
        &mut self,
        key: &impl Fn(&str) -> String,
        raw: &RawRoute,
        methods: Option<&[Method]>,
        service: &Service,
    ) -> bool {
        let on = raw.grpc_web.as_ref().is_some_and(|w| *w.get_ref());
        if let Some(list) = raw.grpc_web_origins.as_ref().filter(|_| !on) {
            self.error(list.span(), key("grpc_web_origins"), "needs `grpc_web = true`");
        }
        let Some(w) = raw.grpc_web.as_ref().filter(|_| on) else { return false };
        if methods.is_some_and(|ms| !ms.contains(&Method::POST)) {
            self.error(w.span(), key("grpc_web"), "a gRPC-Web call is a POST request: add \"POST\" to `methods`");
        }
        if !service.http2 {
            let message = format!(
                "service `{}` speaks HTTP/1.1; gRPC goes to origins over HTTP/2: set `http2 = true` on it",
                service.name
            );
            self.error(w.span(), key("grpc_web"), message);
        }
        true
    }
}
