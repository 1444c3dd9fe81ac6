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
