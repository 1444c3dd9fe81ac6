//! A plain Pingora proxy for the side-by-side benchmark (`benches/run.sh
//! proxy`), next to nginx, HAProxy, Caddy and the bare hyper proxy: one
//! service, one worker thread (no work stealing: a single runtime, as the
//! bare proxy's current-thread one), every request forwarded over HTTP/1.1
//! to one origin through Pingora's keep-alive connection pool. No TLS, no
//! daemon, no logger installed (so Pingora's own `log` lines go nowhere)
//! and no access log.
//!
//! A crate of its own, outside the root workspace: Pingora's build needs
//! cmake, and neither `make test` nor CI builds it (benches/lib.sh does,
//! for the proxy mode).
//!
//!     CARGO_TARGET_DIR=~/.cache/portcullis/pingora-target \
//!         cargo build --release --manifest-path benches/pingora-proxy/Cargo.toml
//!     pingora-proxy 127.0.0.1:8082 127.0.0.1:9080
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a bench tool: the command line (the repo's clippy.toml is the core's)

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

/// Every request to the one origin, as it came.
struct Forward {
    origin: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        // Same peer, same pool key: the connection pool reuses idle connections.
        Ok(Box::new(self.origin.clone()))
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pingora-proxy LISTEN ORIGIN (e.g. 127.0.0.1:8082 127.0.0.1:9080)";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse().map_err(|e| format!("LISTEN: {e}"))?;
    let origin: SocketAddr = args.next().ok_or(usage)?.parse().map_err(|e| format!("ORIGIN: {e}"))?;

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        daemon: false,
        // SIGTERM (the bench's `kill`) ends it at once, not after Pingora's
        // default grace period of five minutes.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Plain HTTP to the origin: no TLS, no SNI.
    let forward = Forward { origin: HttpPeer::new(origin, false, String::new()) };
    let mut service = http_proxy_service(&server.configuration, forward);
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever()
}
