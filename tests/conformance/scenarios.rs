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
