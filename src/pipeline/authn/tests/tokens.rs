//! Bad, over-long and forged tokens are refused with reasons.

use super::*;

#[test]
fn bad_tokens_are_refused_with_reasons() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let now = ports.clock.now().as_secs();
    let cases: Vec<(String, &str)> = vec![
        (
            mint(RSA1, "k1", json!({"iss": "https://evil/", "aud": "api", "exp": now + 60})),
            "the token's issuer is not accepted",
        ),
        (
            mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "other", "exp": now + 60})),
            "the token's audience is not accepted",
        ),
        (mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api"})), "the token lacks the `exp` claim"),
        (mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "exp": now - 61})), "the token has expired"),
        (
            mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "exp": now + 600, "nbf": now + 120})),
            "the token is not valid yet",
        ),
        (mint(RSA2, "k1", claims(now + 60)), "the token's signature is invalid"),
        ("not.a.jwt".into(), "the token is malformed"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".into(), "the token is malformed"),
        (format!("{}.{}.x", "a".repeat(6000), "b".repeat(6000)), "the token is too large"),
    ];
    for (token, why) in cases {
        let err = auth(&gw, &ports, &[("authorization", &bearer(&token))]).unwrap_err();
        assert_eq!(description(err), why, "{token:.60}");
    }
    let err = auth(&gw, &ports, &[("authorization", "Bearer not.a.jwt!")]).unwrap_err();
    assert!(matches!(err, AuthError::InvalidRequest { .. }), "outside RFC 6750's token grammar: {err:?}");
    // Within leeway (60s) an expired token still passes.
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&mint(RSA1, "k1", claims(now - 30))))]).is_ok());
}

#[test]
fn tokens_living_longer_than_max_lifetime_are_refused() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let config = CONFIG.replace("min_ttl = \"60s\" }", "min_ttl = \"60s\" }\nmax_lifetime = \"1h\"");
    let text = format!(
        "{config}\n[services.s]\nurl = \"http://o.test\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = {{ any_of = [\"corp\"] }}\n"
    );
    let gw = Gateway::new(Config::parse(&text, "t.toml", &Variables::new()).unwrap());
    let now = ports.clock.now().as_secs();
    let token = |iat: Option<u64>, exp: f64| {
        let mut c = json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": exp });
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        bearer(&mint(RSA1, "k1", c))
    };
    let refused = "the token lives longer than this API accepts";
    for (what, t) in [
        ("exp 1e300", token(None, 1e300)),
        ("iat + 1 h + 1 s", token(Some(now - 10), (now - 10 + 3601) as f64)),
        ("now + 2 h, no iat", token(None, (now + 7200) as f64)),
    ] {
        assert_eq!(description(auth(&gw, &ports, &[("authorization", &t)]).unwrap_err()), refused, "{what}");
    }
    for (what, t) in [
        ("iat + 1 h", token(Some(now - 10), (now - 10 + 3600) as f64)),
        ("now + 59 m", token(None, (now + 3540) as f64)),
    ] {
        assert!(auth(&gw, &ports, &[("authorization", &t)]).is_ok(), "{what}");
    }
    // Without `max_lifetime` any `exp` is accepted (the token cache caps how long it is kept).
    assert!(auth(&gateway(), &ports, &[("authorization", &token(None, 1e300))]).is_ok());
}

#[test]
fn hmac_with_the_public_key_is_refused() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let secret = include_str!("../../../../tests/fixtures/keys/rsa1.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(&header, &claims(T0 + 60), &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
    assert_eq!(description(err), "the token's algorithm is not accepted");
}
