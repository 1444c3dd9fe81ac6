//! Scopes, claims and groups; RFC 6750 challenges.

use super::*;

#[test]
fn authorization_checks_scopes_claims_and_groups() {
    let auth_config = gateway().config.auth;
    assert!(matches!(auth_config.providers[0].kind, crate::config::auth::ProviderKind::Jwt(_)));
    let route = |scopes: &[&str], claims: &[(&str, &[&str])], groups: &[&str]| RouteAuth {
        providers: vec![0],
        challenge: Challenge { realm: auth_config.realm.clone(), bearer: true, api_key: false },
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: claims.iter().map(|(c, v)| (c.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
    };
    let id = Identity {
        provider: "corp".into(),
        subject: "alice".into(),
        groups: vec!["gold".into()],
        scopes: vec!["read".into(), "write".into()],
        claims: json!({"tenant": "acme", "roles": ["ops", "dev"], "level": 3}).as_object().unwrap().clone(),
        networks: None,
    };
    assert!(authorize(&route(&["read"], &[("tenant", &["acme"])], &["gold", "silver"]), &id).is_ok());
    assert!(authorize(&route(&[], &[("roles", &["admin", "ops"]), ("level", &["3"])], &[]), &id).is_ok());
    let err = authorize(&route(&["read", "admin"], &[], &[]), &id).unwrap_err();
    assert!(matches!(&err, AuthError::InsufficientScope { scope, .. } if scope == "read admin"));
    let challenge = www_authenticate(&err);
    assert_eq!(challenge[0], "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"read admin\"");
    assert!(matches!(authorize(&route(&[], &[("tenant", &["globex"])], &[]), &id), Err(AuthError::Forbidden { .. })));
    assert!(matches!(authorize(&route(&[], &[], &["platinum"]), &id), Err(AuthError::Forbidden { .. })));
}

#[test]
fn challenges_follow_rfc_6750() {
    let c = Challenge { realm: "api".into(), bearer: true, api_key: true };
    let missing = www_authenticate(&AuthError::Missing { challenge: c.clone() });
    assert_eq!(missing, ["Bearer realm=\"api\"", "ApiKey realm=\"api\""]);
    let invalid = www_authenticate(&AuthError::InvalidToken {
        reason: "expired",
        description: "the token has \"expired\"".into(),
        challenge: c,
    });
    assert_eq!(
        invalid[0],
        "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
    assert!(www_authenticate(&AuthError::KeysUnavailable).is_empty());
}
