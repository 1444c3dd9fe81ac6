//! The JWKS cache: unknown-kid refetch and its rate limit, stale keys, 503.

use super::*;

#[test]
fn an_unknown_kid_waits_for_the_next_fetch_window() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    // Rotation right after that fetch: a token with the new key waits for
    // the next window (a second on), is fetched for, and verifies.
    idp.keys.lock().unwrap().push(jwk(RSA2, "k2"));
    let started = ports.clock.now();
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA2, "k2", claims(T0 + 3600))))]).is_ok());
    let waited = ports.clock.now() - started;
    assert!(waited >= Duration::from_millis(900) && waited <= Duration::from_secs(1), "waited {waited:?}");
    assert_eq!(*idp.fetches.lock().unwrap(), 2, "one refetch for the new kid");
    // Made-up kids: each is refused only by a set fetched after it arrived,
    // and the IdP sees at most one fetch a second.
    let started = ports.clock.now();
    for i in 0..20 {
        let err =
            auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA2, &format!("bogus{i}"), claims(T0 + 3600))))]);
        assert_eq!(description(err.unwrap_err()), "the token's signing key is unknown");
    }
    let elapsed = (ports.clock.now() - started).as_secs_f64();
    let fetches = *idp.fetches.lock().unwrap() - 2;
    assert!(fetches as f64 <= elapsed + 1.0, "{fetches} fetches in {elapsed} s");
}

#[test]
fn an_unknown_kid_that_cannot_be_fetched_for_is_503_not_401() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    *idp.fail.lock().unwrap() = true;
    let err = auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA2, "k2", claims(T0 + 3600))))]).unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable, "the refetch failed: the key may exist");
    assert_eq!(*idp.fetches.lock().unwrap(), 2);
    // A window further off than a request may wait: 503 at once, no fetch.
    let slow = CONFIG.replace("refetch_interval = \"1s\"", "refetch_interval = \"30s\"");
    let text = format!(
        "{slow}\n[services.s]\nurl = \"http://o.test\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = {{ any_of = [\"corp\"] }}\n"
    );
    let gw = Gateway::new(Config::parse(&text, "t.toml", &Variables::new()).unwrap());
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    let started = ports.clock.now();
    let err = auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA2, "k2", claims(T0 + 3600))))]).unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    assert_eq!((*idp.fetches.lock().unwrap(), ports.clock.now() - started), (1, Duration::ZERO));
}

#[test]
fn stale_keys_serve_while_the_idp_is_down_and_nothing_cached_is_503() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 99_999))))]).is_ok());
    *idp.fail.lock().unwrap() = true;
    // Past freshness (120s) but within stale_for (1h): a new token still verifies.
    ports.clock.advance(Duration::from_secs(600));
    let fresh_token =
        mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "bob", "exp": T0 + 99_999}));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&fresh_token))]).is_ok());
    // Past stale_for: nothing usable, and the IdP is down.
    ports.clock.advance(Duration::from_secs(3600));
    let another =
        mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "carol", "exp": T0 + 99_999}));
    assert_eq!(auth(&gw, &ports, &[("authorization", &bearer(&another))]).unwrap_err(), AuthError::KeysUnavailable);

    // A gateway that never had keys: 503, not 401.
    let (idp, ports) = setup(vec![]);
    *idp.fail.lock().unwrap() = true;
    let err =
        auth(&gateway(), &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
}
