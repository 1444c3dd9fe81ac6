//! Authentication rules with in-memory ports: the JWKS cache (TTL,
//! unknown-kid refetch and its rate limit, stale keys, 503), the verified-
//! token cache, credential handling and authorization.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::{Config, Variables};
use crate::ports::testing::{FakeHttp, FakePorts, block_on};
use crate::ports::{Clock, KvStore};

const RSA1: &str = include_str!("../../../tests/fixtures/keys/rsa1.pem");
const RSA2: &str = include_str!("../../../tests/fixtures/keys/rsa2.pem");
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

use crate::pipeline::Gateway;

const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

fn auth(gw: &Gateway, ports: &FakePorts, headers: &[(&str, &str)]) -> Result<Arc<Identity>, AuthError> {
    let mut req = Request::get("/x");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(()).unwrap();
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    block_on(authenticate(&gw.config.auth, route, &gw.caches, ports, CLIENT, &mut req, &mut AuthNote::default()))
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
    let secret = include_str!("../../../tests/fixtures/keys/rsa1.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(&header, &claims(T0 + 60), &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
    assert_eq!(description(err), "the token's algorithm is not accepted");
}

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
fn identity_headers_are_forwarded_and_credentials_stripped() {
    let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let gw = gateway();
    let mut req =
        Request::get("/x").header("authorization", bearer(&mint(RSA1, "k1", claims(T0 + 60)))).body(()).unwrap();
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    block_on(authenticate(&gw.config.auth, route, &gw.caches, &ports, CLIENT, &mut req, &mut AuthNote::default()))
        .unwrap();
    assert!(req.headers().get("authorization").is_none());
    assert_eq!(req.headers()["x-user"], "alice");
    assert_eq!(req.headers()["x-tenant"], "acme");

    let mut spoofed = http::HeaderMap::new();
    spoofed.insert("x-user", "admin".parse().unwrap());
    spoofed.insert("x-consumer", "acme".parse().unwrap());
    drop_identity_headers(&gw.config.auth, &mut spoofed);
    assert!(spoofed.is_empty());
}

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
    let _ = StatusCode::OK;
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

/// The `key` and `value` blocks of a kv-schema document.
fn schema(doc: &str) -> (String, serde_json::Value) {
    let block = |tag: &str| {
        let start = doc.find(&format!("```{tag}\n")).unwrap_or_else(|| panic!("no {tag} block")) + tag.len() + 4;
        let end = start + doc[start..].find("```").expect("closed block");
        doc[start..end].trim().to_string()
    };
    (block("text key"), serde_json::from_str(&block("json value")).expect("value block is JSON"))
}

fn matches_layout(key: &str, layout: &str) {
    let prefix = layout.strip_suffix("{sha256-hex}").expect("layout ends with {sha256-hex}");
    let rest = key.strip_prefix(prefix).unwrap_or_else(|| panic!("{key} does not start with {prefix}"));
    assert!(rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{key}");
}

#[test]
fn kv_schema_jwks_matches_the_code() {
    let (layout, example) = schema(include_str!("../../../kv-schema/jwks.md"));
    matches_layout(&jwks::kv_key("https://idp.example.com/jwks"), &layout);
    let stored: jwks::Stored = serde_json::from_value(example.clone()).expect("the example is a record");
    assert_eq!(serde_json::to_value(&stored).unwrap(), example, "every field documented, none invented");
}

#[test]
fn kv_schema_verified_tokens_matches_the_code() {
    let (layout, example) = schema(include_str!("../../../kv-schema/verified-tokens.md"));
    matches_layout(&jwt::token_key(&digest("corp", "a.b.c")), &layout);
    let stored: jwt::SharedToken = serde_json::from_value(example.clone()).expect("the example is a record");
    assert_eq!(serde_json::to_value(&stored).unwrap(), example, "every field documented, none invented");
}

#[test]
fn kv_schema_auth_failures_matches_the_code() {
    let doc = include_str!("../../../kv-schema/auth-failures.md");
    let (layout, _) = schema(&doc.replace("```text value", "```json value"));
    matches_layout(&failures::key("corp", CLIENT), &layout.replace("{provider}", "corp"));
}

/// A client that keeps failing is answered 429 before its tokens are
/// checked (a good token it has not used before included); cached tokens
/// and other clients are not affected, and the count drains with time.
#[test]
fn failed_attempts_are_limited_per_provider_and_client() {
    let (idp, ports) = setup(vec![jwk(RSA1, "k1")]);
    let text = format!(
        "{}\n[services.s]\nurl = \"http://o.test\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nauth = {{ any_of = [\"corp\", \"partners\"] }}\n",
        CONFIG
            .replace("jwks_cache = {", "failure_limit = \"3/minute\"\njwks_cache = {")
            .replace("forward = { \"x-consumer\"", "failure_limit = \"3/minute\"\nforward = { \"x-consumer\"")
    );
    let gw = Gateway::new(Config::parse(&text, "t.toml", &Variables::new()).unwrap());
    let good = mint(RSA1, "k1", claims(T0 + 3600));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&good))]).is_ok());
    let forged = {
        let t = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "eve", "exp": T0 + 3600}));
        format!("{}x", &t[..t.len() - 1])
    };
    for _ in 0..3 {
        let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken { .. }), "{err:?}");
    }
    let err = auth(&gw, &ports, &[("authorization", &bearer(&forged))]).unwrap_err();
    assert_eq!(err, AuthError::TooManyFailures { retry_after: 20 });
    let fresh = mint(RSA1, "k1", json!({"iss": "https://idp.test/", "aud": "api", "sub": "bob", "exp": T0 + 3600}));
    let err = auth(&gw, &ports, &[("authorization", &bearer(&fresh))]).unwrap_err();
    assert!(matches!(err, AuthError::TooManyFailures { .. }), "no signature checked: {err:?}");
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&good))]).is_ok(), "a verified token is cached");
    // Bad API keys count too, against their own provider.
    for _ in 0..3 {
        assert!(auth(&gw, &ports, &[("x-api-key", "not-a-key")]).is_err());
    }
    assert!(matches!(auth(&gw, &ports, &[("x-api-key", "not-a-key")]), Err(AuthError::TooManyFailures { .. })));
    // Another client is not affected.
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    let mut req = Request::get("/x").header("authorization", bearer(&fresh)).body(()).unwrap();
    let other = "198.51.100.8".parse().unwrap();
    assert!(
        block_on(authenticate(&gw.config.auth, route, &gw.caches, &ports, other, &mut req, &mut AuthNote::default()))
            .is_ok()
    );
    // One failure drains every 20 s.
    ports.clock.advance(Duration::from_secs(20));
    assert!(auth(&gw, &ports, &[("authorization", &bearer(&fresh))]).is_ok());
    assert_eq!(*idp.fetches.lock().unwrap(), 1);
}

mod claims {
    use proptest::prelude::*;

    use super::*;

    /// A JSON value a token's `exp` or `nbf` might hold.
    fn claim_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            prop::num::f64::NORMAL.prop_map(|x| json!(x)),
            Just(json!(1e300)),
            Just(json!(-1e300)),
            Just(json!(f64::MAX)),
            (0i64..10_000).prop_map(|d| json!(T0 as i64 + d - 5_000)),
            ".{0,12}".prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(json!(null)),
            Just(json!([1, 2])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever `exp` and `nbf` a validly signed token carries, the
        /// answer is a verdict, never a panic, and the one the claims call for.
        #[test]
        fn any_exp_and_nbf_get_a_verdict(exp in claim_value(), nbf in prop::option::of(claim_value())) {
            let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
            let mut claims = json!({"iss": "https://idp.test/", "aud": "api", "sub": "p", "exp": exp});
            if let Some(nbf) = &nbf {
                claims["nbf"] = nbf.clone();
            }
            let token = mint(RSA1, "k1", claims);
            let verdict = auth(&gateway(), &ports, &[("authorization", &bearer(&token))]);
            let now = T0 as f64;
            let number = |v: &serde_json::Value| v.as_f64();
            let expect_ok = !exp.is_null()
                && number(&exp).is_some_and(|e| now < e + 60.0)
                && nbf.as_ref().is_none_or(|n| !n.is_null() && number(n).is_some_and(|n| now + 60.0 >= n));
            prop_assert_eq!(verdict.is_ok(), expect_ok, "exp {} nbf {:?}: {:?}", exp, nbf, verdict.err());
        }
    }
}
