//! Tokens for conformance cases, minted when the case runs (expiry is
//! relative to now), and the identity provider every home fetches keys from.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::TokenSpec;
use super::support::idp::{self, Idp, TestKey};

pub const HS_SECRET: &str = "conformance-hmac-secret-0123456789abcdef";

fn keys() -> Vec<TestKey> {
    vec![
        idp::key("rsa1", "k-rs256", Algorithm::RS256),
        idp::key("rsa2", "k-ps256", Algorithm::PS256),
        idp::key("ec256", "k-es256", Algorithm::ES256),
        idp::key("ec384", "k-es384", Algorithm::ES384),
        idp::key("ed25519", "k-ed", Algorithm::EdDSA),
    ]
}

/// The keys the conformance IdP publishes.
pub fn published() -> Vec<TestKey> {
    keys()
}

/// An IdP publishing every fixture key.
pub async fn idp() -> Idp {
    let keys = keys();
    Idp::start(&keys.iter().collect::<Vec<_>>(), 300).await
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default())
}

pub fn mint(spec: &TokenSpec) -> String {
    let now = idp::now_secs() as i64;
    let hmac = spec.key == "hmac";
    let mut claims = json!({
        "iss": if hmac { "https://internal.conformance/" } else { "https://idp.conformance/" },
        "aud": "api://conformance",
        "sub": "alice",
    });
    if !spec.no_exp {
        claims["exp"] = json!(now + spec.exp_in.unwrap_or(3600));
    }
    if let Some(nbf) = spec.nbf_in {
        claims["nbf"] = json!(now + nbf);
    }
    for (k, v) in &spec.claims {
        claims[k] = serde_json::to_value(v).unwrap_or(Value::Null);
    }
    match spec.forge.as_deref() {
        Some("alg-none") => return format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims)),
        Some("garbage") => return "bm90.YS5qd3Q.Z2FyYmFnZQ".into(),
        Some("bad-header") => return format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(b"{not json"), b64(&claims)),
        Some("huge") => {
            claims["padding"] = json!("x".repeat(16 << 10));
        }
        Some("wrong-secret") => {
            return idp::mint_hmac(b"some-other-secret-0123456789abcdef", Algorithm::HS256, None, &claims);
        }
        Some("hs256-with-public-key") => {
            let rsa = keys().into_iter().next().expect("rsa key");
            return idp::mint_hmac(rsa.public_pem.as_bytes(), Algorithm::HS256, Some(&rsa.kid), &claims);
        }
        Some("bad-signature") => {}
        Some(other) => panic!("unknown forge {other}"),
        None => {}
    }
    if hmac {
        return idp::mint_hmac(HS_SECRET.as_bytes(), Algorithm::HS256, spec.kid.as_deref(), &claims);
    }
    let mut key = keys()
        .into_iter()
        .find(|k| match spec.key.as_str() {
            "rsa1" => k.kid == "k-rs256",
            "rsa2" => k.kid == "k-ps256",
            "ec256" => k.kid == "k-es256",
            "ec384" => k.kid == "k-es384",
            "ed25519" => k.kid == "k-ed",
            _ => false,
        })
        .unwrap_or_else(|| panic!("unknown key {}", spec.key));
    if let Some(kid) = &spec.kid {
        key.kid = kid.clone();
    }
    let token = idp::mint(&key, &claims);
    if spec.forge.as_deref() == Some("bad-signature") {
        // Well-formed, a known key, claims that pass: only the signature is wrong.
        let (signed, signature) = token.rsplit_once('.').expect("three segments");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        return format!("{signed}.{flipped}{}", &signature[1..]);
    }
    token
}
