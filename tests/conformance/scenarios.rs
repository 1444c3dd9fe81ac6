//! Scenarios that need the identity provider to change mid-run, run in
//! every home after the declarative cases.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use jsonwebtoken::Algorithm;
use serde_json::json;

use super::support::idp::{self, Idp};
use super::support::send;
use super::tokens;

async fn get_with(addr: SocketAddr, token: &str) -> u16 {
    let req = Request::get("/secure/x")
        .header("host", "gw.test")
        .header("authorization", format!("Bearer {token}"))
        .body(Bytes::new())
        .expect("request");
    send(addr, req).await.status
}

/// The IdP rotates in a new key; a burst of requests signed with it causes
/// exactly one JWKS fetch (single-flight in a process, a claim in the
/// key-value store across instances), and every request is answered 200.
/// Then a flood of made-up `kid`s within the refetch interval fetches nothing.
pub async fn key_rotation(home: &str, addr: SocketAddr, idp: &Idp) {
    let rotated = idp::key("rsa2", "k-rotated", Algorithm::RS256);
    let mut keys = tokens::published();
    keys.push(rotated.clone());
    idp.set_keys(&keys.iter().collect::<Vec<_>>());
    // Past the conformance refetch interval (1s) since the suite's last fetch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let token = idp::mint(
        &rotated,
        &json!({
            "iss": "https://idp.conformance/", "aud": "api://conformance", "sub": "rotated", "exp": idp::now_secs() + 600,
        }),
    );
    let before = idp.fetches();
    let burst: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn({
                let token = token.clone();
                async move { get_with(addr, &token).await }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await.expect("request task"));
    }
    assert!(statuses.iter().all(|s| *s == 200), "[{home}] rotated key: {statuses:?}");
    assert_eq!(idp.fetches() - before, 1, "[{home}] one fetch for the whole burst");

    let before = idp.fetches();
    for i in 0..20 {
        let mut bogus = rotated.clone();
        bogus.kid = format!("made-up-{i}");
        let t = idp::mint(
            &bogus,
            &json!({"iss": "https://idp.conformance/", "aud": "api://conformance", "exp": idp::now_secs() + 600}),
        );
        assert_eq!(get_with(addr, &t).await, 401, "[{home}] made-up kid {i}");
    }
    assert!(idp.fetches() - before <= 1, "[{home}] a kid flood fetched {} times", idp.fetches() - before);
}

/// A burst of concurrent requests on one key never admits more than the
/// limit (5 per hour), whatever the home's store and concurrency model.
pub async fn concurrent_limit(home: &str, addr: SocketAddr) {
    let burst: Vec<_> = (0..24)
        .map(|_| {
            tokio::spawn(async move {
                let req = Request::get("/concurrent")
                    .header("host", "gw.test")
                    .header("x-client", "burst")
                    .body(Bytes::new())
                    .expect("request");
                send(addr, req).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await.expect("request task"));
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 5, "[{home}] {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "[{home}] {statuses:?}");
}

/// On a Spin store that cannot compare-and-swap, an exact fail-closed
/// policy refuses with 503, and a best-effort policy still counts.
pub async fn store_without_atomics(home: &str, addr: SocketAddr) {
    let get = |path: &'static str| async move {
        let req = Request::get(path)
            .header("host", "gw.test")
            .header("x-client", "no-atomics")
            .body(Bytes::new())
            .expect("request");
        send(addr, req).await
    };
    let strict = get("/strict").await;
    assert_eq!(strict.status, 503, "[{home}] exact policy without atomics");
    assert_eq!(strict.json()["type"], "urn:portcullis:problem:rate-limit-unavailable", "[{home}]");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get("/loose").await.status);
    }
    assert_eq!(statuses, [200, 200, 429], "[{home}] best-effort policy without atomics");
}

fn limited_get(path: &'static str, client: &str) -> Request<Bytes> {
    Request::get(path).header("host", "gw.test").header("x-client", client).body(Bytes::new()).expect("request")
}

/// On a store that reports every compare-and-swap as failed after
/// committing it (Spin's Redis backend), each request is charged once and
/// JWT routes work: the component recognises its own writes.
pub async fn misreporting_store(home: &str, addr: SocketAddr) {
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(send(addr, limited_get("/limited", "misreported")).await.status);
    }
    assert_eq!(statuses, [200, 200, 429], "[{home}] 2/minute, each request charged once");
    let token = tokens::mint(&super::TokenSpec {
        key: "rsa1".into(),
        kid: None,
        claims: toml::Table::new(),
        exp_in: None,
        no_exp: false,
        nbf_in: None,
        forge: None,
    });
    assert_eq!(get_with(addr, &token).await, 200, "[{home}] the key-set fetch claim is recognised as ours");
}

/// Sweeps the whole store, batch by batch: (keys when it began, records deleted).
async fn sweep_all(home: &str, addr: SocketAddr) -> (u64, u64) {
    let (mut keys, mut deleted, mut after) = (None, 0, None::<String>);
    for _ in 0..1000 {
        let path = match &after {
            Some(cursor) => format!("/_portcullis/sweep?after={cursor}"),
            None => "/_portcullis/sweep".to_string(),
        };
        let req = Request::post(path)
            .header("host", "gw.test")
            .header("authorization", "Bearer sweep-token")
            .body(Bytes::new())
            .expect("request");
        let reply = send(addr, req).await;
        assert_eq!(reply.status, 200, "[{home}] sweep: {:?}", reply.try_json());
        let report = reply.json();
        keys.get_or_insert(report["keys"].as_u64().unwrap_or_else(|| panic!("[{home}] keys in {report}")));
        deleted += report["deleted"].as_u64().unwrap_or(0);
        match report["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return (keys.unwrap_or(0), deleted),
        }
    }
    panic!("[{home}] the sweep never reached the end");
}

/// Rate-limit records expire, and the sweep removes them in batches: 40
/// clients each leave a key that expires about a second later; a full
/// sweep after that deletes them all.
pub async fn expiry_and_sweep(home: &str, addr: SocketAddr) {
    let clients = 40;
    for i in 0..clients {
        let reply = send(addr, limited_get("/brief", &format!("sweep-{i}"))).await;
        assert_eq!(reply.status, 200, "[{home}] client {i}");
    }
    let (keys_before, _) = sweep_all(home, addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (keys_expired, deleted) = sweep_all(home, addr).await;
    let (keys_after, _) = sweep_all(home, addr).await;
    assert!(keys_before >= clients && keys_expired >= clients, "[{home}] {keys_before} then {keys_expired} keys");
    assert!(deleted >= clients, "[{home}] deleted {deleted} of {keys_expired} keys");
    assert_eq!(keys_after, keys_expired - deleted, "[{home}] what the sweep deleted is gone");
}

/// Who the request is for must be unambiguous. Two `Host` headers get a 400
/// problem in every home. An HTTP/1.1 request without `Host`: the node
/// answers 400; Spin refuses it itself, before the component, by closing
/// the connection without an answer.
pub async fn host_ambiguity(home: &str, addr: SocketAddr, behind_spin: bool) {
    let two = super::support::raw(
        addr,
        b"GET /admin HTTP/1.1\r\nhost: gw.test\r\nhost: evil.test\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(two.starts_with("HTTP/1.1 400"), "[{home}] two Host headers: {two}");
    assert!(two.contains("urn:portcullis:problem:ambiguous-host"), "[{home}] {two}");
    let none =
        super::support::raw(addr, b"GET /admin HTTP/1.1\r\nconnection: close\r\n\r\n", Duration::from_secs(5)).await;
    if behind_spin {
        assert_eq!(none, "", "[{home}] Spin refuses a request without Host by closing the connection");
    } else {
        assert!(none.starts_with("HTTP/1.1 400"), "[{home}] no Host: {none}");
        assert!(none.contains("urn:portcullis:problem:ambiguous-host"), "[{home}] {none}");
    }
}
