//! `private_key_jwt`: the assertion a call to an introspection endpoint
//! carries verifies with the client's public key and says what RFC 7523
//! §3 asks.

use jsonwebtoken::{DecodingKey, Validation, decode};

use super::*;
use crate::config::introspection::ClientAuth;
use crate::pipeline::authn::introspection::client_assertion;

#[test]
fn each_kind_of_key_signs_an_assertion_the_idp_can_check() {
    macro_rules! key {
        ($file:literal) => {
            (
                include_str!(concat!("../../../../tests/fixtures/keys/", $file, ".pem")),
                include_str!(concat!("../../../../tests/fixtures/keys/", $file, ".pub.pem")),
            )
        };
    }
    let keys = [
        (key!("rsa1"), DecodingKey::from_rsa_pem as fn(&[u8]) -> _, Algorithm::RS256),
        (key!("ec256"), DecodingKey::from_ec_pem, Algorithm::ES256),
        (key!("ec384"), DecodingKey::from_ec_pem, Algorithm::ES384),
        (key!("ed25519"), DecodingKey::from_ed_pem, Algorithm::EdDSA),
    ];
    for ((pem, public), decoder, alg) in keys {
        let text = format!(
            "[services.s]\nurl = \"http://127.0.0.1:9000\"\n[auth.introspection.o]\nendpoint = \"https://idp.test/introspect\"\nclient_id = \"gw\"\nprivate_key_id = \"k1\"\nprivate_key = \"\"\"{pem}\"\"\"\n"
        );
        let config = Config::parse(&text, "gw.toml", &Variables::default()).unwrap();
        let crate::config::auth::ProviderKind::Introspection(p) = &config.auth.providers[0].kind else { panic!() };
        let ClientAuth::Assertion(a) = &p.client else { panic!("assertion") };
        let now = Duration::from_secs(T0);
        let (first, second) = (client_assertion(a, now).unwrap(), client_assertion(a, now).unwrap());

        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.set_audience(&["https://idp.test/introspect"]);
        validation.set_issuer(&["gw"]);
        validation.sub = Some("gw".into());
        let key = decoder(public.as_bytes()).unwrap();
        let one = decode::<serde_json::Value>(&first, &key, &validation).unwrap();
        let two = decode::<serde_json::Value>(&second, &key, &validation).unwrap();
        assert_eq!((one.header.alg, one.header.kid.as_deref()), (alg, Some("k1")), "{alg:?}");
        assert_eq!((one.claims["iat"].as_u64(), one.claims["exp"].as_u64()), (Some(T0), Some(T0 + 60)));
        let jti = |c: &serde_json::Value| c["jti"].as_str().map(str::to_string).unwrap_or_default();
        assert_eq!(jti(&one.claims).len(), 32, "128 random bits");
        assert_ne!(jti(&one.claims), jti(&two.claims), "a fresh jti for each call");
    }
}
