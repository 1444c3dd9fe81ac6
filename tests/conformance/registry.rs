//! The registry at the edge: a component that follows it serves the config
//! published there and the consumers added there, and refuses the keys
//! revoked there, within its bound; published through the component's
//! admin route, or with the `portcullis` CLI into the Redis behind Spin's
//! key-value store.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use super::homes::{self, Backends};
use super::support;

/// The admin route's token, and the variable that turns the route on.
pub const TOKEN: &str = "registry-token-for-tests";

pub fn token_variable() -> (&'static str, String) {
    ("portcullis_registry_token_sha256", support::hex_sha256(TOKEN.as_bytes()))
}

/// A key no config has, and the consumer the registry gives it.
const KEY: &str = "hooli-key-0005";
pub const PUBLISHED_ROUTE: &str = "/published-route";

/// How a home is published to.
pub enum Publisher {
    /// The component's admin route.
    Admin,
    /// `portcullis publish` and `portcullis consumers` against this Redis.
    Cli { url: String },
}

/// The conformance config with one more route.
pub fn published_config() -> String {
    let text = std::fs::read_to_string(homes::CONFIG).expect("conformance config");
    format!("{text}\n[[routes]]\nname = \"published\"\npath = \"{PUBLISHED_ROUTE}\"\nservice = \"echo\"\n")
}

pub fn admin_request(method: &str, path: &str, token: &str, body: impl Into<Bytes>) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(format!("/.portcullis/registry{path}"))
        .header("host", "gateway.test")
        .header("authorization", format!("Bearer {token}"))
        .header("x-portcullis-file", "published.toml")
        .body(body.into())
        .expect("request")
}

/// Runs `portcullis ARGS` with the conformance variables in its environment.
fn cli(b: &Backends, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (k, v) in homes::variables(b) {
        cmd.env(format!("PORTCULLIS_VAR_{}", k.to_ascii_uppercase()), v);
    }
    let out = cmd.args(args).output().expect("portcullis");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "portcullis {args:?}: {said}");
    said
}

/// Asks `path` (with an API key, if given) until it answers `status`;
/// how long that took. Fails after `within`.
async fn until(home: &str, addr: SocketAddr, path: &str, key: Option<&str>, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let req = match key {
            Some(key) => support::get_with(path, "x-api-key", key),
            None => support::get(path),
        };
        let got = support::send(addr, req).await.status;
        if got == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "[{home}] {path} still answers {got}, not {status}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes a config with one more route and a consumer with a new key,
/// then revokes it: each is served within `bound` (a WASI 0.3 instance
/// looks once a second; a WASI 0.2 one reads the store each request).
pub async fn follows(home: &str, addr: SocketAddr, b: &Backends, publisher: &Publisher, bound: Duration) {
    // Generous over the bound: a loaded machine, and Spin's instance churn.
    let within = bound + Duration::from_millis(1_500);
    assert_eq!(support::send(addr, support::get(PUBLISHED_ROUTE)).await.status, 404, "[{home}] before publishing");
    assert_eq!(
        support::send(addr, support::get_with("/partner", "x-api-key", KEY)).await.status,
        401,
        "[{home}] an unknown key"
    );
    let text = published_config();
    let consumer = serde_json::json!({
        "provider": "partners", "id": "hooli", "groups": ["gold"], "key_sha256": support::hex_sha256(KEY.as_bytes()),
    });
    match publisher {
        Publisher::Admin => {
            // Nothing that does not compile is published, and it says where.
            let bad =
                text.replace("[[routes]]\nname = \"published\"", "[[routes]]\nnot_a_key = 1\nname = \"published\"");
            let refused = support::send(addr, admin_request("PUT", "/config", TOKEN, bad)).await;
            assert_eq!(refused.status, 422, "[{home}] {:?}", refused.try_json());
            let detail = refused.json()["detail"].as_str().unwrap_or_default().to_string();
            assert!(detail.contains("published.toml") && detail.contains("not_a_key"), "[{home}] {detail}");
            let wrong = support::send(addr, admin_request("PUT", "/config", "not-the-token", text.clone())).await;
            assert_eq!(wrong.status, 401, "[{home}] a wrong token");
            assert_eq!(wrong.json()["type"], "urn:portcullis:problem:unauthorized", "[{home}]");
            let current = support::send(addr, admin_request("GET", "", TOKEN, "")).await;
            assert_eq!(current.json()["current"], serde_json::Value::Null, "[{home}] nothing was published");
            let done = support::send(addr, admin_request("PUT", "/config", TOKEN, text)).await;
            assert_eq!(
                (done.status, done.json()["current"].as_u64()),
                (200, Some(1)),
                "[{home}] {:?}",
                done.try_json()
            );
        }
        Publisher::Cli { url } => {
            let file = support::temp_path("published.toml");
            std::fs::write(&file, text).expect("write config");
            let said = cli(b, &["publish", &file.display().to_string(), "--store", url]);
            assert!(said.contains("as version 1"), "[{home}] {said}");
        }
    }
    let took = until(home, addr, PUBLISHED_ROUTE, None, 200, within).await;
    support::notice(&format!("[{home}] a published version served after {took:?}"));
    // The running config's routes still answer as before.
    assert_eq!(support::send(addr, support::get("/v1/users/7")).await.status, 200, "[{home}]");
    match publisher {
        Publisher::Admin => {
            let added = support::send(addr, admin_request("PUT", "/consumers", TOKEN, consumer.to_string())).await;
            assert_eq!(added.status, 200, "[{home}] {:?}", added.try_json());
            let unknown = consumer.to_string().replace("partners", "nobody");
            let refused = support::send(addr, admin_request("PUT", "/consumers", TOKEN, unknown)).await;
            assert_eq!(refused.status, 422, "[{home}] a consumer of no provider: {:?}", refused.try_json());
        }
        Publisher::Cli { url } => {
            let hash = support::hex_sha256(KEY.as_bytes());
            let args = ["consumers", "add", "--provider", "partners", "--id", "hooli", "--group", "gold"];
            cli(b, &[&args[..], &["--key-sha256", &hash, "--store", url]].concat());
        }
    }
    let took = until(home, addr, "/partner", Some(KEY), 200, within).await;
    support::notice(&format!("[{home}] a consumer added accepted after {took:?}"));
    let reply = support::send(addr, support::get_with("/partner", "x-api-key", KEY)).await;
    assert_eq!(reply.echoed("x-consumer-id"), ["hooli"], "[{home}]");
    match publisher {
        Publisher::Admin => {
            let path = format!("/consumers/partners/{}", support::hex_sha256(KEY.as_bytes()));
            let revoked = support::send(addr, admin_request("DELETE", &path, TOKEN, "")).await;
            assert_eq!(revoked.status, 200, "[{home}] {:?}", revoked.try_json());
        }
        Publisher::Cli { url } => {
            cli(b, &["consumers", "revoke", "--provider", "partners", "--id", "hooli", "--store", url]);
        }
    }
    let took = until(home, addr, "/partner", Some(KEY), 401, within).await;
    support::notice(&format!("[{home}] a revoked key refused after {took:?}"));
}
