//! The whole pipeline with in-memory ports: no socket, no runtime.
//!
//! One file per topic; the gateway config and helpers they share are here.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use http_body_util::Full;

use super::{Downstream, Exchange, Gateway, Scheme, handle};
use crate::config::Config;
use crate::ports::testing::{FakeHttp, FakePorts, block_on};
use crate::ports::{UpstreamError, read_body};
use crate::shared::problem::Source;

mod balancing;
mod forwarding;
mod grpc;
mod hosts;
mod rate_limit_store;
mod rate_limits;
mod responses;
mod routing;
mod size_limits;
mod underscore_headers;
mod upgrades;

const CONFIG: &str = r#"
[gateway]
trusted_proxies = ["10.0.0.0/8"]
max_header_count = 20
max_header_size = "2KiB"

[services.users]
url = "http://users.internal:8080/base/"
connect_timeout = "1s"
request_timeout = "3s"

[services.admin]
url = "http://admin.internal"

[services.split]
targets = [{ url = "http://a.internal", weight = 1 }, { url = "http://b.internal", weight = 3 }]

[[routes]]
name = "users"
path = "/v1/users/{id}"
methods = ["GET", "PUT"]
service = "users"
rewrite = "/u/{id}"
max_body_size = 100
[routes.request_headers]
remove = ["x-debug"]
set = { "x-gateway" = "portcullis" }
add = { "x-tag" = "b" }
[routes.response_headers]
remove = ["server"]
set = { "x-frame-options" = "DENY" }

[[routes]]
name = "public"
path = "/v1/{*rest}"
service = "users"
strip_prefix = "/v1"

[[routes]]
name = "admin"
path = "/admin"
methods = ["GET"]
service = "admin"

[[routes]]
name = "only-api"
host = "api.example.com"
path = "/host-only"
service = "split"
"#;

fn config() -> Config {
    Config::parse(CONFIG, "test.toml", &Default::default()).unwrap()
}

fn peer(ip: &str) -> Downstream {
    Downstream::plain(ip.parse::<IpAddr>().unwrap(), Scheme::Http)
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "gw.example.com:8443")
}

fn run(ports: &FakePorts, req: Request<Bytes>, from: Downstream) -> Exchange<Bytes> {
    run_with(&Gateway::new(config()), ports, req, from)
}

/// Runs a request, reading the answer's body whole (the phases' own tests use it too).
pub(super) fn run_with(gateway: &Gateway, ports: &FakePorts, req: Request<Bytes>, from: Downstream) -> Exchange<Bytes> {
    block_on(async {
        let ex = handle(gateway, ports, req.map(Full::new), from).await;
        let (parts, body) = ex.response.into_parts();
        let body = read_body(body, usize::MAX).await.unwrap();
        Exchange { response: Response::from_parts(parts, body), log: ex.log }
    })
}

fn problem(resp: &Response<Bytes>) -> serde_json::Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    serde_json::from_slice(resp.body()).unwrap()
}
