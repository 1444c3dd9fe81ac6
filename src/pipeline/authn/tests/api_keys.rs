//! API keys.

use super::*;

#[test]
fn api_keys_identify_consumers_and_revoked_ones_fail() {
    let (idp, ports) = setup(vec![]);
    let gw = gateway();
    // sha256("acme-secret-key") is in the config; "gone" is disabled.
    let id = auth(&gw, &ports, &[("x-api-key", "acme-secret-key")]).unwrap();
    assert_eq!((id.subject.as_str(), id.groups.as_slice()), ("acme", &["gold".to_string()][..]));
    assert_eq!(description(auth(&gw, &ports, &[("x-api-key", "wrong")]).unwrap_err()), "the API key is not valid");
    assert!(matches!(auth(&gw, &ports, &[]).unwrap_err(), AuthError::Missing { .. }));
    assert_eq!(*idp.fetches.lock().unwrap(), 0, "API keys never touch the IdP");
}

#[test]
fn registry_consumers_read_from_the_store_are_believed_for_their_time() {
    use crate::config::published::{Consumer, consumer_key};
    use crate::ports::KvStore;
    use std::sync::atomic::Ordering;

    let (_, ports) = setup(vec![]);
    let mut gw = gateway();
    gw.caches.read_consumers_from_store(Duration::from_secs(1), 100);
    let sha = crate::shared::hex::hex(&Sha256::digest(b"registry-key"));
    let key = consumer_key("partners", &sha);
    let consumer = |provider: &str| Consumer {
        provider: provider.into(),
        id: "globex".into(),
        key_sha256: sha.clone(),
        groups: vec!["silver".into()],
        scopes: vec![],
        ip_allow: None,
        ip_deny: None,
        added_at: String::new(),
    };
    let presented = [("x-api-key", "registry-key")];
    let refused = |gw: &Gateway| description(auth(gw, &ports, &presented).unwrap_err()) == "the API key is not valid";
    assert!(refused(&gw), "not in the store yet");
    let record = serde_json::to_vec(&consumer("partners")).unwrap();
    block_on(ports.kv.set(&key, &record, None)).unwrap();
    assert!(refused(&gw), "the miss is believed for a second");
    ports.clock.advance(Duration::from_millis(1_001));
    let id = auth(&gw, &ports, &presented).unwrap();
    assert_eq!((id.subject.as_str(), id.groups.as_slice()), ("globex", &["silver".to_string()][..]));
    block_on(ports.kv.delete(&key)).unwrap();
    assert!(auth(&gw, &ports, &presented).is_ok(), "the find is believed for a second");
    ports.clock.advance(Duration::from_millis(1_001));
    assert!(refused(&gw), "revoked");
    // A record under this key that names another provider is no consumer.
    block_on(ports.kv.set(&key, &serde_json::to_vec(&consumer("others")).unwrap(), None)).unwrap();
    ports.clock.advance(Duration::from_millis(1_001));
    assert!(refused(&gw));
    // The store down: 503, not a verdict on the key; the config's keys still pass.
    ports.clock.advance(Duration::from_millis(1_001));
    ports.kv.down.store(true, Ordering::SeqCst);
    assert!(matches!(auth(&gw, &ports, &presented).unwrap_err(), AuthError::RegistryUnavailable));
    assert!(auth(&gw, &ports, &[("x-api-key", "acme-secret-key")]).is_ok());
}

#[test]
fn without_the_registry_in_the_store_an_unknown_key_reads_nothing() {
    let (_, ports) = setup(vec![]);
    let gw = gateway();
    ports.kv.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = auth(&gw, &ports, &[("x-api-key", "registry-key")]).unwrap_err();
    assert_eq!(description(err), "the API key is not valid");
}
