//! Identity headers forwarded, spoofed ones and credentials removed.

use super::*;

#[test]
fn identity_headers_are_forwarded_and_credentials_stripped() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let mut req =
        Request::get("/x").header("authorization", bearer(&mint(RSA1, "k1", claims(T0 + 60)))).body(()).unwrap();
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    let caller = Caller { ip: CLIENT, cert: None };
    block_on(authenticate(&gw.config.auth, route, &gw.caches, &ports, caller, &mut req, &mut AuthNote::default()))
        .unwrap();
    assert!(req.headers().get("authorization").is_none());
    assert_eq!(req.headers()["x-user"], "alice");
    assert_eq!(req.headers()["x-tenant"], "acme");

    let mut spoofed = http::HeaderMap::new();
    spoofed.insert("x-user", "admin".parse().unwrap());
    spoofed.insert("x-consumer", "acme".parse().unwrap());
    drop_identity_headers(&gw.config.auth, &mut spoofed);
    assert!(spoofed.is_empty());
}
