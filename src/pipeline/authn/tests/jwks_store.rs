//! Key sets shared through the key-value store between instances.

use super::*;

#[test]
fn a_fresh_instance_takes_keys_from_the_store_not_the_idp() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    assert!(auth(&gateway(), &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    assert_eq!(*idp.fetches.lock().unwrap(), 1);
    // New caches (a new instance), same key-value store.
    let token = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "dave", "exp": T0 + 3600}));
    assert!(auth(&gateway(), &ports, &[("authorization", &bearer(&token))]).is_ok());
    assert_eq!(*idp.fetches.lock().unwrap(), 1, "the stored key set was used");
    let stored = block_on(ports.kv.get(&jwks::kv_key("http://idp.test/jwks"))).unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(record["fresh_until_ms"], json!((T0 + 120) * 1000));
    assert!(record["jwks"].as_str().unwrap().contains("\"kid\":\"k1\""));
}

#[test]
fn instances_sharing_a_store_fetch_at_most_once_per_interval() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    assert!(auth(&gateway(), &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    // Every later instance starts empty; the store tells each when the last
    // fetch was, and it waits for the next window rather than fetching now.
    let started = ports.clock.now();
    for i in 0..5 {
        let bogus = mint(RSA1, &format!("bogus-{i}"), claims(T0 + 3600));
        let err = auth(&gateway(), &ports, &[("authorization", &bearer(&bogus))]).unwrap_err();
        assert_eq!(description(err), "the token's signing key is unknown");
    }
    let elapsed = ports.clock.now() - started;
    assert!(elapsed >= Duration::from_secs(4), "instances did not wait for their windows: {elapsed:?}");
    assert_eq!(*idp.fetches.lock().unwrap(), 1 + 5);
}

#[test]
fn keys_are_fetched_once_on_a_store_that_misreports_its_swaps() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    ports.kv.spin_like.store(true, std::sync::atomic::Ordering::SeqCst);
    ports.kv.spin.store.set_lying(true);
    // Instances of one request each (WASI 0.2) sharing a Spin store on Redis.
    for sub in ["a", "b", "c"] {
        let token = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": sub, "exp": T0 + 3600}));
        assert!(auth(&gateway(), &ports, &[("authorization", &bearer(&token))]).is_ok(), "{sub}");
    }
    assert_eq!(*idp.fetches.lock().unwrap(), 1, "the claim was recognised as landed, and its result shared");
}

#[test]
fn a_fetch_claimed_by_an_instance_that_died_is_taken_over_at_its_deadline() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let now_ms = ports.clock.now().as_millis() as u64;
    let abandoned = jwks::Stored {
        attempted_at_ms: now_ms,
        claimed_until_ms: Some(now_ms + 2_000),
        fetched_at_ms: None,
        fresh_until_ms: None,
        jwks: None,
    };
    let key = jwks::kv_key("http://idp.test/jwks");
    block_on(ports.kv.set(&key, &serde_json::to_vec(&abandoned).unwrap(), None)).unwrap();
    // The request waits for the claimant (the fake clock moves while it
    // polls), then fetches itself once the claim's deadline has passed.
    let started = ports.clock.now();
    assert!(auth(&gateway(), &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(T0 + 3600))))]).is_ok());
    assert_eq!(*idp.fetches.lock().unwrap(), 1);
    let waited = ports.clock.now() - started;
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "waited {waited:?}");
}
