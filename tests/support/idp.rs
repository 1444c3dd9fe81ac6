//! A real identity provider on loopback for tests: it serves a JWKS the test
//! controls (rotate keys, fail, hang), counts fetches, and the test mints
//! tokens with the matching private keys (`tests/fixtures/keys/`, test-only).
//! It also introspects opaque tokens (RFC 7662, `POST /introspect`) for a
//! client that authenticates as [`INTROSPECTION_CLIENT`] (a secret) or as
//! [`ASSERTING_CLIENT`] (a signed assertion): what a token is follows from
//! its name (see [`introspected`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;

/// A signing key with the public half the IdP publishes.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Jwk,
    /// The public key in PEM (for algorithm-confusion attempts).
    pub public_pem: String,
}

/// Loads `tests/fixtures/keys/<file>.pem` as a key for `alg` named `kid`.
pub fn key(file: &str, kid: &str, alg: Algorithm) -> TestKey {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    let private = std::fs::read(format!("{dir}/{file}.pem")).expect("test key");
    let public_pem = std::fs::read_to_string(format!("{dir}/{file}.pub.pem")).expect("test public key");
    let encoding = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&private),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&private),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
        _ => panic!("{alg:?} is not a public-key algorithm"),
    }
    .expect("parse test key");
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    TestKey { kid: kid.to_string(), alg, encoding, jwk, public_pem }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Signs `claims` with `key` (header: its `alg` and `kid`).
pub fn mint(key: &TestKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

/// Signs with HMAC; `kid` optional.
pub fn mint_hmac(secret: &[u8], alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// How the IdP answers `/jwks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// 500 Internal Server Error.
    Fail,
    /// Closes the connection without answering.
    Drop,
    /// Answers after this long.
    Slow(Duration),
}

struct State {
    keys: Vec<Jwk>,
    mode: Mode,
    max_age: u64,
    fetches: usize,
    introspections: usize,
    /// Client assertions' `jti`s seen: a replay is refused.
    assertions: std::collections::HashSet<String>,
}

/// The client id and secret the gateway introspects with.
pub const INTROSPECTION_CLIENT: (&str, &str) = ("gateway", "introspection-secret");
/// The client that authenticates with `private_key_jwt` (RFC 7523), and its
/// key (`tests/fixtures/keys/<file>.pem`, ES256).
pub const ASSERTING_CLIENT: (&str, &str) = ("gateway-signed", "ec256");

/// A private key in PEM from `tests/fixtures/keys/` (e.g. [`ASSERTING_CLIENT`]'s), for a gateway's config.
pub fn private_key(file: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    std::fs::read_to_string(format!("{dir}/{file}.pem")).expect("private key")
}

/// A client assertion as RFC 7523 §3 asks, for this endpoint: signed by
/// [`ASSERTING_CLIENT`]'s key, `iss` = `sub` = its id, `aud` the endpoint,
/// not expired, its `jti` never seen before (recorded).
fn assertion_valid(form: &[(String, String)], audience: &str, seen: &mut std::collections::HashSet<String>) -> bool {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (client, file) = ASSERTING_CLIENT;
    if field("client_assertion_type") != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        || field("client_id").is_some_and(|id| id != client)
    {
        return false;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    let public = std::fs::read(format!("{dir}/{file}.pub.pem")).expect("client public key");
    let key = jsonwebtoken::DecodingKey::from_ec_pem(&public).expect("client public key");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client]);
    validation.sub = Some(client.to_string());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let Some(token) = field("client_assertion") else { return false };
    match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
        Ok(data) => data.claims["jti"].as_str().is_some_and(|jti| seen.insert(jti.to_string())),
        Err(_) => false,
    }
}

/// The endpoint's answer for an opaque token, by its name:
/// `opaque-active-<sub>` is active for `<sub>` (scope `orders:read`, groups
/// `staff`, tenant `acme`, an hour left); `opaque-expired-…` is active but
/// past its `exp`; `opaque-elsewhere-…` is for another audience; any other
/// is inactive.
pub fn introspected(token: &str) -> serde_json::Value {
    let now = now_secs();
    let active = |sub: &str, exp: u64, aud: &str| {
        serde_json::json!({
            "active": true, "sub": sub, "client_id": "web-app", "scope": "orders:read profile",
            "groups": ["staff"], "tenant": "acme", "iss": "https://idp.conformance/", "aud": aud,
            "exp": exp, "iat": now - 10, "token_type": "Bearer",
        })
    };
    if let Some(sub) = token.strip_prefix("opaque-active-") {
        active(sub, now + 3600, "api://conformance")
    } else if token.starts_with("opaque-expired-") {
        active("late", now - 5, "api://conformance")
    } else if token.starts_with("opaque-elsewhere-") {
        active("other", now + 3600, "api://other")
    } else {
        serde_json::json!({ "active": false })
    }
}

#[derive(Clone)]
pub struct Idp {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Idp {
    /// Serves `keys` at `/jwks` with `Cache-Control: max-age=<max_age>`.
    pub async fn start(keys: &[&TestKey], max_age: u64) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            mode: Mode::Serve,
            max_age,
            fetches: 0,
            introspections: 0,
            assertions: Default::default(),
        }));
        let idp = Idp { port, state: state.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, state.clone()));
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        idp
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Requests for `/jwks` so far.
    pub fn fetches(&self) -> usize {
        self.state.lock().unwrap().fetches
    }

    /// Requests for `/introspect` so far.
    pub fn introspections(&self) -> usize {
        self.state.lock().unwrap().introspections
    }
}

/// `POST /introspect`: the client must authenticate; the token is a form field.
async fn introspect(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    use base64::Engine;
    use http_body_util::BodyExt;
    let mode = {
        let mut s = state.lock().unwrap();
        s.introspections += 1;
        s.mode
    };
    let (client, secret) = INTROSPECTION_CLIENT;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}")));
    let header = req.headers().get("authorization").cloned();
    let basic = header.as_ref().is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let form = req.headers().get("content-type").is_some_and(|v| v == "application/x-www-form-urlencoded");
    let audience =
        format!("http://{}{}", req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or(""), req.uri().path());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let authenticated =
        basic || (header.is_none() && assertion_valid(&fields, &audience, &mut state.lock().unwrap().assertions));
    match mode {
        Mode::Serve => {}
        Mode::Fail => return Ok(status(StatusCode::INTERNAL_SERVER_ERROR)),
        Mode::Drop => return Err(std::io::Error::other("dropped on purpose")),
        Mode::Slow(d) => tokio::time::sleep(d).await,
    }
    if !authenticated {
        return Ok(status(StatusCode::UNAUTHORIZED));
    }
    let token = fields.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v);
    let Some(token) = token.filter(|_| form) else { return Ok(status(StatusCode::BAD_REQUEST)) };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(introspected(&token).to_string())))
        .expect("response"))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

async fn answer(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/introspect" && req.method() == http::Method::POST {
        return introspect(req, state).await;
    }
    if req.uri().path() != "/jwks" {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let (mode, body, max_age) = {
        let mut s = state.lock().unwrap();
        s.fetches += 1;
        let set = JwkSet { keys: s.keys.clone() };
        (s.mode, serde_json::to_vec(&set).unwrap_or_default(), s.max_age)
    };
    match mode {
        Mode::Serve => {}
        Mode::Fail => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"idp broken")));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(resp);
        }
        // An error from the service makes hyper close the connection unanswered.
        Mode::Drop => return Err(std::io::Error::other("dropped on purpose")),
        Mode::Slow(d) => tokio::time::sleep(d).await,
    }
    let _: Infallible;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", format!("public, max-age={max_age}"))
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}
