//! WebSocket upgrades: proxied with their headers on a route that takes
//! them, forwarded as plain requests elsewhere; an origin's `101` tells
//! the adapter how to hold the connection.

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::{peer, run_with};
use crate::config::Config;
use crate::pipeline::Gateway;
use crate::pipeline::upgrade::Tunnel;
use crate::ports::testing::{FakeHttp, FakePorts};

const CONFIG: &str = r#"
[services.chat]
url = "http://chat.internal"

[[routes]]
path = "/ws"
service = "chat"
websocket = true
websocket_idle_timeout = "90s"

[[routes]]
path = "/plain"
service = "chat"
"#;

fn upgrade(path: &str) -> Request<Bytes> {
    Request::get(path)
        .header("host", "gw.test")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Bytes::new())
        .unwrap()
}

fn switching() -> Result<Response<Bytes>, crate::ports::UpstreamError> {
    Ok(Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(Bytes::new())
        .unwrap())
}

#[test]
fn an_upgrade_on_a_websocket_route_reaches_the_origin_and_its_101_comes_back() {
    let gw = Gateway::new(Config::parse(CONFIG, "t.toml", &Default::default()).unwrap());
    let ports = FakePorts::new(FakeHttp::new(|_| switching()));
    let ex = run_with(&gw, &ports, upgrade("/ws"), peer("192.0.2.1"));
    assert_eq!(ex.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let h = ex.response.headers();
    assert_eq!((h["upgrade"].as_bytes(), h["connection"].as_bytes()), (&b"websocket"[..], &b"upgrade"[..]));
    assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let tunnel = ex.response.extensions().get::<Tunnel>().expect("the adapter is told to hold it");
    assert_eq!(tunnel.idle, std::time::Duration::from_secs(90));
    let sent = ports.http.last().unwrap();
    let (up, conn) = (sent.headers()["upgrade"].as_bytes(), sent.headers()["connection"].as_bytes());
    assert_eq!((up, conn), (&b"websocket"[..], &b"upgrade"[..]));
    assert_eq!(sent.headers()["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
}

#[test]
fn an_upgrade_elsewhere_is_a_plain_request_and_a_refusal_is_an_answer() {
    let gw = Gateway::new(Config::parse(CONFIG, "t.toml", &Default::default()).unwrap());
    let ports = FakePorts::new(FakeHttp::ok());
    let ex = run_with(&gw, &ports, upgrade("/plain"), peer("192.0.2.1"));
    assert_eq!(ex.response.status(), 200);
    let sent = ports.http.last().unwrap();
    assert!(!sent.headers().contains_key("upgrade") && !sent.headers().contains_key("connection"));
    assert!(ex.response.extensions().get::<Tunnel>().is_none());

    // The origin refuses the upgrade: its answer, and nothing to hold.
    let ports = FakePorts::new(FakeHttp::new(|_| Ok(Response::builder().status(403).body(Bytes::new()).unwrap())));
    let ex = run_with(&gw, &ports, upgrade("/ws"), peer("192.0.2.1"));
    assert_eq!(ex.response.status(), 403);
    assert!(ex.response.extensions().get::<Tunnel>().is_none());
}
