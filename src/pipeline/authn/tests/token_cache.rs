//! Verified tokens are cached, and still expire.

use super::*;

#[test]
fn keys_are_fetched_once_and_tokens_then_come_from_the_cache() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let token = mint(RSA1, "k1", claims(T0 + 3600));
    let id = auth(&gw, &ports, &[("authorization", &bearer(&token))]).unwrap();
    assert_eq!((id.subject.as_str(), id.scopes.clone()), ("alice", vec!["read".to_string(), "write".to_string()]));
    assert_eq!(*idp.fetches.lock().unwrap(), 1);
    // The key disappears from the IdP: the verified token is still served from cache.
    idp.keys.lock().unwrap().clear();
    ports.clock.advance(Duration::from_secs(200));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&token))]).is_ok());
    // Past TOKEN_CACHE_TTL the token is verified again, and its key is gone.
    ports.clock.advance(TOKEN_CACHE_TTL);
    let err = auth(&gw, &ports, &[("authorization", &bearer(&token))]).unwrap_err();
    assert_eq!(description(err), "the token's signing key is unknown");
}

#[test]
fn cached_tokens_still_expire() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let token = mint(RSA1, "k1", claims(T0 + 10));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&token))]).is_ok());
    ports.clock.advance(Duration::from_secs(71)); // exp + 60s leeway + 1
    assert_eq!(
        description(auth(&gw, &ports, &[("authorization", &bearer(&token))]).unwrap_err()),
        "the token has expired"
    );
}
