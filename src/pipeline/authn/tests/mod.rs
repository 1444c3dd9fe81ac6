//! Authentication rules with in-memory ports: the JWKS cache (TTL,
//! unknown-kid refetch and its rate limit, stale keys, 503), the verified-
//! token cache, credential handling and authorization.
//!
//! One file per topic; the fake IdP, config and helpers they share are here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::{Config, Variables};
use crate::pipeline::Gateway;
use crate::ports::testing::{FakeHttp, FakePorts, block_on};
use crate::ports::{Clock, KvStore};

mod api_keys;
mod authorization;
mod claims;
mod client_assertion;
mod failure_limits;
mod identity_headers;
mod jwks_cache;
mod jwks_store;
mod kv_schema;
mod mtls;
mod token_cache;
mod tokens;

const RSA1: &str = include_str!("../../../../tests/fixtures/keys/rsa1.pem");
const RSA2: &str = include_str!("../../../../tests/fixtures/keys/rsa2.pem");
const T0: u64 = 1_767_225_600; // FakeClock's start, in seconds.

struct Idp {
    keys: Mutex<Vec<Jwk>>,
    fail: Mutex<bool>,
    fetches: Mutex<usize>,
}

fn jwk(pem: &str, kid: &str) -> Jwk {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn mint(pem: &str, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

fn claims(exp: u64) -> serde_json::Value {
    json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": exp, "scope": "read write", "tenant": "acme" })
}

/// A fake IdP behind the HttpClient port, and ports around it.
fn setup(keys: Vec<Jwk>) -> (Arc<Idp>, FakePorts) {
    let idp = Arc::new(Idp { keys: Mutex::new(keys), fail: Mutex::new(false), fetches: Mutex::new(0) });
    let served = idp.clone();
    let http = FakeHttp::new(move |req| {
        assert_eq!(req.uri().to_string(), "http://idp.test/jwks");
        *served.fetches.lock().unwrap() += 1;
        if *served.fail.lock().unwrap() {
            return Err(crate::ports::UpstreamError::Connect("refused".into()));
        }
        let set = JwkSet { keys: served.keys.lock().unwrap().clone() };
        Ok(Response::builder()
            .header("cache-control", "max-age=120")
            .body(Bytes::from(serde_json::to_vec(&set).unwrap()))
            .unwrap())
    });
    (idp, FakePorts::new(http))
}

const CONFIG: &str = r#"
[auth.jwt.corp]
issuer = "https://idp.test/"
audiences = ["api"]
algorithms = ["RS256"]
jwks_uri = "http://idp.test/jwks"
forward_claims = { "x-user" = "sub", "x-tenant" = "tenant" }
jwks_cache = { refetch_interval = "1s", stale_for = "1h", min_ttl = "60s" }

[auth.api_key.partners]
forward = { "x-consumer" = "id" }
consumers = [
  { id = "acme", groups = ["gold"], scopes = ["read"], key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" },
  { id = "gone", key_sha256 = "e096c45c35a8e1c3827c78ffcb664e12611222877e59c1eeebdedf6ffdbba399", disabled = true },
]
"#;

fn gateway() -> Gateway {
    let text = format!(
        "{CONFIG}\n[services.s]\nurl = \"http://o.test\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = {{ any_of = [\"corp\", \"partners\"] }}\n"
    );
    Gateway::new(Config::parse(&text, "t.toml", &Variables::new()).unwrap())
}

const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

fn auth(gw: &Gateway, ports: &FakePorts, headers: &[(&str, &str)]) -> Result<Arc<Identity>, AuthError> {
    let mut req = Request::get("/x");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(()).unwrap();
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    let caller = Caller { ip: CLIENT, cert: None };
    block_on(authenticate(&gw.config.auth, route, &gw.caches, ports, caller, &mut req, &mut AuthNote::default()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn description(err: AuthError) -> String {
    match err {
        AuthError::InvalidToken { description, .. } | AuthError::InvalidRequest { description, .. } => description,
        other => format!("{other:?}"),
    }
}
