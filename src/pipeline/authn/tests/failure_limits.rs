//! Failed attempts are limited per provider and client.

use super::*;

/// A client that keeps failing is answered 429 before its tokens are
/// checked (a good token it has not used before included); cached tokens
/// and other clients are not affected, and the count drains with time.
#[test]
fn failed_attempts_are_limited_per_provider_and_client() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let text = format!(
        "{}\n[services.s]\nurl = \"http://o.test\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = {{ any_of = [\"corp\", \"partners\"] }}\n",
        CONFIG
            .replace("jwks_cache = {", "failure_limit = \"3/minute\"\njwks_cache = {")
            .replace("forward = { \"x-consumer\"", "failure_limit = \"3/minute\"\nforward = { \"x-consumer\"")
    );
    let gw = Gateway::new(Config::parse(&text, "t.toml", &Variables::new()).unwrap());
    let good = mint(RSA1, "k1", claims(T0 + 3600));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&good))]).is_ok());
    let forged = {
        let t = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "eve", "exp": T0 + 3600}));
        format!("{}x", &t[..t.len() - 1])
    };
    for _ in 0..3 {
        let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken { .. }), "{err:?}");
    }
    let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
    assert_eq!(err, AuthError::TooManyFailures { retry_after: 20 });
    let fresh = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "bob", "exp": T0 + 3600}));
    let err = auth(&gw, &ports, &[("authorization", &bearer(&fresh))]).unwrap_err();
    assert!(matches!(err, AuthError::TooManyFailures { .. }), "no signature checked: {err:?}");
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&good))]).is_ok(), "a verified token is cached");
    // Bad API keys count too, against their own provider.
    for _ in 0..3 {
        assert!(auth(&gw, &ports, &[("x-api-key", "not-a-key")]).is_err());
    }
    assert!(matches!(auth(&gw, &ports, &[("x-api-key", "not-a-key")]), Err(AuthError::TooManyFailures { .. })));
    // Another client is not affected.
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    let mut req = Request::get("/x").header("authorization", bearer(&fresh)).body(()).unwrap();
    let other = Caller { ip: "198.51.100.8".parse().unwrap(), cert: None };
    assert!(
        block_on(authenticate(&gw.config.auth, route, &gw.caches, &ports, other, &mut req, &mut AuthNote::default()))
            .is_ok()
    );
    // One failure drains every 20 s.
    ports.clock.advance(Duration::from_secs(20));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&fresh))]).is_ok());
    assert_eq!(*idp.fetches.lock().unwrap(), 1);
}
