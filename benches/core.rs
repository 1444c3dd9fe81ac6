//! Criterion benchmarks of the core's hot paths (native build):
//!
//!     cargo bench --bench core
//!
//! - the GCRA step alone, and one in-memory rate-limit decision;
//! - compiling configs (what a WASI 0.2 instance does per request);
//! - JWT verification: a cached token, and uncached RS256 / ES256 / EdDSA
//!   with keys already parsed (the token cache is empty each time);
//! - an opaque token introspected before (RFC 7662, the answer cached);
//! - an API key among 100 000 consumers held from the registry.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::config::{Config, Variables};
use portcullis::native::consumers::{self, Consumer};
use portcullis::pipeline::authn::{AuthCaches, AuthNote, Caller, authenticate};

const CLIENT: Caller<'static> =
    Caller { ip: std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)), cert: None };
use portcullis::ports::memory::MemoryKv;
use portcullis::ports::{Clock, HttpClient, KvStore, LimitStep, Ports, UpstreamError, UpstreamOptions};
use portcullis::shared::gcra::{self, Rate};

/// Drives a future whose ports answer at once.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[derive(Clone, Copy)]
struct Fixed;

const NOW: Duration = Duration::from_secs(1_767_225_600);

impl Clock for Fixed {
    fn now(&self) -> Duration {
        NOW
    }
    fn monotonic(&self) -> Duration {
        NOW
    }
    async fn sleep(&self, _: Duration) {}
}

/// An identity provider behind the HttpClient port.
struct Jwks(Bytes);

impl HttpClient for Jwks {
    type Body = Full<Bytes>;
    /// A `Full` body is one frame: what was read of it was all of it.
    fn prefixed(prefix: Bytes, _: Full<Bytes>) -> Full<Bytes> {
        Full::new(prefix)
    }
    async fn send(&self, _: Request<Full<Bytes>>, _: &UpstreamOptions) -> Result<Response<Full<Bytes>>, UpstreamError> {
        Ok(Response::builder().header("cache-control", "max-age=3600").body(Full::new(self.0.clone())).unwrap())
    }
}

struct BenchPorts {
    kv: MemoryKv<Fixed>,
    http: Jwks,
}

impl Ports for BenchPorts {
    type Kv = MemoryKv<Fixed>;
    type Http = Jwks;
    type Clock = Fixed;
    fn kv(&self) -> &Self::Kv {
        &self.kv
    }
    fn http(&self) -> &Self::Http {
        &self.http
    }
    fn clock(&self) -> &Fixed {
        &Fixed
    }
    fn event(&self, _: &str) {}
}

fn gcra_benches(c: &mut Criterion) {
    let rate = Rate::new(100, 1_000_000, 100).unwrap();
    let now = 1_767_225_600_000_000u64;
    c.bench_function("gcra/decide", |b| b.iter(|| gcra::decide(black_box(Some(now - 5_000)), black_box(now), rate, 1)));

    let kv = MemoryKv::new(Fixed, 1_000_000);
    let keys: Vec<String> = (0..1024).map(|i| format!("pc1:rl:bench:{i:064x}")).collect();
    let mut i = 0;
    let fast = Rate::new(1_000_000, 1_000_000, 1_000_000).unwrap();
    c.bench_function("gcra/memory-decision", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let steps = [LimitStep::rate(&keys[i], fast, 1)];
            ready(kv.limit(&steps, now)).unwrap()
        })
    });
}

fn config_benches(c: &mut Criterion) {
    let mut vars = Variables::new();
    vars.insert("origin_port", "9080");
    let bench = include_str!("gateway.toml");
    c.bench_function("config/compile-bench", |b| {
        b.iter(|| Config::parse(black_box(bench), "gateway.toml", &vars).unwrap())
    });
    let conformance = include_str!("../tests/conformance/gateway.toml");
    let mut all = Variables::new();
    for name in portcullis::config::vars::referenced(conformance) {
        all.insert(name.clone(), if name.ends_with("secret") { "s".repeat(40) } else { "1".into() });
    }
    c.bench_function("config/compile-conformance", |b| {
        b.iter(|| Config::parse(black_box(conformance), "gateway.toml", &all).unwrap())
    });
}

fn key(file: &str, kid: &str, alg: Algorithm) -> (EncodingKey, Jwk) {
    let pem = std::fs::read(format!("{}/tests/fixtures/keys/{file}.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    (enc, jwk)
}

fn jwt_benches(c: &mut Criterion) {
    let algs =
        [("rsa1", "rs", Algorithm::RS256), ("ec256", "es", Algorithm::ES256), ("ed25519", "ed", Algorithm::EdDSA)];
    let keys: Vec<_> = algs.iter().map(|(f, kid, alg)| (key(f, kid, *alg), *kid, *alg)).collect();
    let set = JwkSet { keys: keys.iter().map(|((_, jwk), _, _)| jwk.clone()).collect() };
    let text = r#"
[auth.jwt.corp]
issuer = "https://idp.bench/"
audiences = ["api"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_uri = "http://idp.bench/jwks"
[services.s]
url = "http://o.bench"
[[routes]]
path = "/x"
service = "s"
auth = { any_of = ["corp"] }
"#;
    let config = Config::parse(text, "bench.toml", &Variables::new()).unwrap();
    let route = config.routes[0].auth.clone().unwrap();
    let ports =
        BenchPorts { kv: MemoryKv::new(Fixed, 100_000), http: Jwks(Bytes::from(serde_json::to_vec(&set).unwrap())) };
    let warm = Arc::new(AuthCaches::new(&config.auth));
    for ((enc, _), kid, alg) in &keys {
        let claims =
            serde_json::json!({"iss": "https://idp.bench/", "aud": "api", "sub": "bench", "exp": NOW.as_secs() + 3600});
        let mut header = Header::new(*alg);
        header.kid = Some(kid.to_string());
        let token = jsonwebtoken::encode(&header, &claims, enc).unwrap();
        let request = || Request::get("/x").header("authorization", format!("Bearer {token}")).body(()).unwrap();
        // Prime the key set (and, for the cached case, the token).
        ready(authenticate(&config.auth, &route, &warm, &ports, CLIENT, &mut request(), &mut AuthNote::default()))
            .unwrap();
        c.bench_function(&format!("jwt/uncached-{alg:?}"), |b| {
            b.iter_batched(
                || (warm.renewed(&config.auth), request()),
                |(caches, mut req)| {
                    ready(authenticate(
                        &config.auth,
                        &route,
                        &caches,
                        &ports,
                        CLIENT,
                        &mut req,
                        &mut AuthNote::default(),
                    ))
                    .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        if *alg == Algorithm::RS256 {
            c.bench_function("jwt/cached", |b| {
                b.iter_batched(
                    request,
                    |mut req| {
                        ready(authenticate(
                            &config.auth,
                            &route,
                            &warm,
                            &ports,
                            CLIENT,
                            &mut req,
                            &mut AuthNote::default(),
                        ))
                        .unwrap()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
}

/// An opaque token whose introspection is cached: what every request after
/// the first costs (the endpoint is behind the HttpClient port).
fn introspection_benches(c: &mut Criterion) {
    let answer = serde_json::json!({
        "active": true, "sub": "bench", "scope": "orders:read", "exp": NOW.as_secs() + 3600,
    });
    let text = r#"
[auth.introspection.opaque]
endpoint = "http://idp.bench/introspect"
client_id = "gateway"
client_secret = "secret"
[services.s]
url = "http://o.bench"
[[routes]]
path = "/x"
service = "s"
auth = { any_of = ["opaque"], scopes = ["orders:read"] }
"#;
    let config = Config::parse(text, "bench.toml", &Variables::new()).unwrap();
    let route = config.routes[0].auth.clone().unwrap();
    let ports = BenchPorts { kv: MemoryKv::new(Fixed, 100_000), http: Jwks(Bytes::from(answer.to_string())) };
    let caches = AuthCaches::new(&config.auth);
    let request = || Request::get("/x").header("authorization", "Bearer 2YotnFZFEjr1zCsicMWpAA").body(()).unwrap();
    let mut note = AuthNote::default();
    ready(authenticate(&config.auth, &route, &caches, &ports, CLIENT, &mut request(), &mut note)).unwrap();
    // From here the endpoint answers nothing usable: only a cached answer passes.
    let down = BenchPorts { kv: MemoryKv::new(Fixed, 100_000), http: Jwks(Bytes::from_static(b"down")) };
    c.bench_function("introspection/cached", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let mut note = AuthNote::default();
                ready(authenticate(&config.auth, &route, &caches, &down, CLIENT, &mut req, &mut note)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

/// An API key of one of 100 000 consumers held from the registry: the
/// key's SHA-256 and the lookup (the config's own consumers: none).
fn registry_consumer_benches(c: &mut Criterion) {
    use sha2::Digest;
    let text = r#"
[auth.api_key.partners]
[services.s]
url = "http://o.bench"
[[routes]]
path = "/x"
service = "s"
auth = { any_of = ["partners"] }
"#;
    let config = Config::parse(text, "bench.toml", &Variables::new()).unwrap();
    let route = config.routes[0].auth.clone().unwrap();
    let ports = BenchPorts { kv: MemoryKv::new(Fixed, 100), http: Jwks(Bytes::new()) };
    let caches = AuthCaches::new(&config.auth);
    let all: Vec<Consumer> = (0..100_000)
        .map(|i| Consumer {
            provider: "partners".into(),
            id: format!("consumer-{i}"),
            key_sha256: portcullis::shared::hex::hex(&sha2::Sha256::digest(format!("key-{i}").as_bytes())),
            groups: vec!["gold".into()],
            scopes: Vec::new(),
            ip_allow: None,
            ip_deny: None,
            added_at: String::new(),
        })
        .collect();
    consumers::hold(&all, caches.registered());
    let request = || Request::get("/x").header("x-api-key", "key-54321").body(()).unwrap();
    c.bench_function("apikey/registry-100k", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let mut note = AuthNote::default();
                ready(authenticate(&config.auth, &route, &caches, &ports, CLIENT, &mut req, &mut note)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, gcra_benches, config_benches, jwt_benches, introspection_benches, registry_consumer_benches);
criterion_main!(benches);
