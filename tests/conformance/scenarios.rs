//! Scenarios that need the identity provider to change mid-run, run in
//! every home after the declarative cases.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::Request;
use jsonwebtoken::Algorithm;
use serde_json::json;

use super::support::idp::{self, Idp};
use super::support::send;
use super::tokens;

/// Held by the scenarios that load the machine or time their answers
/// (bursts of hundreds of requests, fetch windows): the homes run side by
/// side, and one home's burst would otherwise stretch another's timings.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn get_with(addr: SocketAddr, token: &str) -> u16 {
    get_from(addr, IpAddr::from([127, 0, 0, 1]), token).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn get_from(addr: SocketAddr, source: IpAddr, token: &str) -> Result<u16, String> {
    let req = Request::get("/secure/x")
        .header("host", "gw.test")
        .header("authorization", format!("Bearer {token}"))
        .body(Bytes::new())
        .expect("request");
    super::support::try_send_from(addr, source, req).await.map(|r| r.status)
}

fn token_for(key: &idp::TestKey, sub: &str) -> String {
    idp::mint(
        key,
        &json!({"iss": "https://idp.conformance/", "aud": "api://conformance", "sub": sub, "exp": idp::now_secs() + 600}),
    )
}

/// Key rotation without an outage, and no IdP flood from made-up `kid`s.
/// Right after a key-set fetch the IdP publishes a new key: a burst of
/// requests signed with it waits for the next fetch window (the refetch
/// interval is 1 s) and gets 200, not 401, within about a second, costing
/// one fetch. Then 1 000 tokens with made-up `kid`s (from many client
/// addresses, so no per-client limit steps in) each get 401 — from a key
/// set fetched after they arrived — while the IdP sees at most two fetches
/// a second.
pub async fn key_rotation(home: &str, addr: SocketAddr, idp: &Idp) {
    let _alone = ALONE.lock().await;
    let rotated = idp::key("rsa2", "k-rotated", Algorithm::RS256);
    let mut bogus = rotated.clone();
    bogus.kid = "made-up-before-rotation".into();
    // A made-up kid: answered once a fetch (now) has found it absent.
    let localhost = IpAddr::from([127, 0, 0, 1]);
    assert_eq!(get_from(addr, localhost, &token_for(&bogus, "x")).await, Ok(401), "[{home}] made-up kid");
    let mut keys = tokens::published();
    keys.push(rotated.clone());
    idp.set_keys(&keys.iter().collect::<Vec<_>>());
    let before = idp.fetches();
    let rotated_at = Instant::now();
    let burst = (0..12).map(|i| {
        let token = token_for(&rotated, &format!("rotated-{i}"));
        async move { (get_from(addr, localhost, &token).await, rotated_at.elapsed()) }
    });
    let answers = futures::future::join_all(burst).await;
    assert!(answers.iter().all(|(s, _)| *s == Ok(200)), "[{home}] rotated key: {answers:?}");
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    assert!(slowest < Duration::from_millis(1800), "[{home}] the new key took {slowest:?} to be served");
    assert_eq!(idp.fetches() - before, 1, "[{home}] one fetch for the whole burst");

    let before = idp.fetches();
    let started = Instant::now();
    let spray = futures::stream::iter(0..1000u32)
        .map(|i| {
            let mut key = rotated.clone();
            key.kid = format!("made-up-{i}");
            let token = token_for(&key, "spray");
            let source = IpAddr::from([127, 0, 1, 1 + (i % 250) as u8]);
            async move { get_from(addr, source, &token).await }
        })
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.fetches() - before;
    let refused = spray.iter().filter(|s| **s == Ok(401)).count();
    assert_eq!(refused, 1000, "[{home}] every made-up kid is a 401: {:?}", spray.iter().find(|s| **s != Ok(401)));
    assert!(fetches as f64 <= 2.0 * elapsed + 1.0, "[{home}] {fetches} IdP fetches in {elapsed:.1} s");
    super::support::notice(&format!("[{home}] kid spray: 1000 x 401 in {elapsed:.1} s, {fetches} IdP fetches"));
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
/// sweep after that deletes them all. A store that drops expired records on
/// its own (`self_purging`: the node's in-memory store, every 5 s) may have
/// done so first: then they must be gone all the same.
pub async fn expiry_and_sweep(home: &str, addr: SocketAddr, self_purging: bool) {
    let clients = 40;
    for i in 0..clients {
        let reply = send(addr, limited_get("/brief", &format!("sweep-{i}"))).await;
        assert_eq!(reply.status, 200, "[{home}] client {i}");
    }
    let (keys_before, _) = sweep_all(home, addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (keys_expired, deleted) = sweep_all(home, addr).await;
    let (keys_after, _) = sweep_all(home, addr).await;
    assert!(keys_before >= clients, "[{home}] {keys_before} keys");
    assert!(
        keys_after + clients <= keys_before,
        "[{home}] {keys_before} keys, then {keys_after}: the expired are gone"
    );
    if !self_purging {
        assert!(deleted >= clients, "[{home}] deleted {deleted} of {keys_expired} keys");
    }
    assert_eq!(keys_after, keys_expired - deleted, "[{home}] what the sweep deleted is gone");
}

/// Who the request is for must be unambiguous. Two `Host` headers get a
/// 400 problem on the node, and at the edge wherever the host lets the
/// component see them (Spin 4.1's WASI 0.3); where it hands over only the
/// authority (WASI 0.2, and WASI 0.3 from wasmtime 48: `Host` is a
/// forbidden header there), Spin takes the first and so does everything
/// the component does. An HTTP/1.1 request without `Host`: the node
/// answers 400; Spin refuses it itself, before the component, by closing
/// the connection without an answer.
pub async fn host_ambiguity(home: &str, addr: SocketAddr, behind_spin: bool) {
    let two = super::support::raw(
        addr,
        b"GET /admin HTTP/1.1\r\nhost: gw.test\r\nhost: evil.test\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let refused = two.starts_with("HTTP/1.1 400") && two.contains("urn:portcullis:problem:ambiguous-host");
    if !behind_spin || !two.starts_with("HTTP/1.1 200") {
        assert!(refused, "[{home}] two Host headers: {two}");
    } else {
        assert!(two.contains(r#"["x-forwarded-host","gw.test"]"#), "[{home}] the first Host rules: {two}");
        assert!(!two.contains("evil.test"), "[{home}] {two}");
    }
    let none =
        super::support::raw(addr, b"GET /admin HTTP/1.1\r\nconnection: close\r\n\r\n", Duration::from_secs(5)).await;
    if behind_spin {
        assert_eq!(none, "", "[{home}] Spin refuses a request without Host by closing the connection");
    } else {
        assert!(none.starts_with("HTTP/1.1 400"), "[{home}] no Host: {none}");
        assert!(none.contains("urn:portcullis:problem:ambiguous-host"), "[{home}] {none}");
    }
}

/// Which target (`/a`, `/b`, `/c`: its base path, as the origin saw it) served a request.
async fn served_by(home: &str, addr: SocketAddr, req: Request<Bytes>) -> String {
    let reply = send(addr, req).await;
    let uri = reply.json()["uri"].as_str().map(str::to_string);
    assert_eq!(reply.status, 200, "[{home}] {:?}", reply.try_json());
    let uri = uri.unwrap_or_default();
    uri.split('/').nth(1).map(|t| format!("/{t}")).unwrap_or(uri)
}

async fn shares(home: &str, addr: SocketAddr, path: &str, n: usize) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut order = Vec::new();
    for _ in 0..n {
        order.push(served_by(home, addr, super::support::get(path)).await);
    }
    let mut counts = BTreeMap::new();
    order.iter().for_each(|t| *counts.entry(t.clone()).or_insert(0) += 1);
    (order, counts)
}

/// Balancing, as a client sees it. Round robin alternates exactly where one
/// balancer sees every request (the node); where an instance lives for one
/// request it is a random start of the cycle, so an even split. Weights
/// hold (weight 0: never). Consistent hashing sends a shard key (header) or a
/// session (cookie) to the same target every time, in every home, and a
/// request without the key by its client IP.
pub async fn balancing(home: &str, addr: SocketAddr, one_balancer: bool) {
    let (order, counts) = shares(home, addr, "/lb/round-robin", 60).await;
    let a = counts.get("/a").copied().unwrap_or(0);
    assert!((12..=48).contains(&a) && a + counts.get("/b").copied().unwrap_or(0) == 60, "[{home}] {counts:?}");
    if one_balancer {
        assert_eq!(a, 30, "[{home}] {order:?}");
        assert!(order.windows(2).all(|w| w[0] != w[1]), "[{home}] round robin alternates: {order:?}");
    }

    let (_, counts) = shares(home, addr, "/lb/weighted", 200).await;
    let a = counts.get("/a").copied().unwrap_or(0);
    assert!(!counts.contains_key("/c"), "[{home}] weight 0 is never chosen: {counts:?}");
    assert!((120..=180).contains(&a), "[{home}] 3:1 weights: {counts:?}");

    let (_, counts) = shares(home, addr, "/lb/least", 40).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["/a", "/b"], "[{home}] idle targets share: {counts:?}");

    let tenant = |t: usize| {
        Request::get("/lb/sticky").header("host", "gw.test").header("x-shard", format!("t{t}")).body(Bytes::new())
    };
    let mut seen = BTreeMap::new();
    for round in 0..3 {
        for t in 0..30 {
            let target = served_by(home, addr, tenant(t).expect("request")).await;
            let first = seen.entry(t).or_insert_with(|| target.clone());
            assert_eq!(*first, target, "[{home}] tenant t{t} moved in round {round}");
        }
    }
    let used: std::collections::BTreeSet<_> = seen.values().collect();
    assert!(used.len() >= 2, "[{home}] 30 tenants on {used:?}");
    let (_, by_ip) = shares(home, addr, "/lb/sticky", 5).await;
    assert_eq!(by_ip.len(), 1, "[{home}] without the header, by client IP: {by_ip:?}");

    let session = |s: usize| {
        Request::get("/lb/session").header("host", "gw.test").header("cookie", format!("theme=dark; session=s{s}"))
    };
    let mut used = std::collections::BTreeSet::new();
    for s in 0..20 {
        let first = served_by(home, addr, session(s).body(Bytes::new()).expect("request")).await;
        let again = served_by(home, addr, session(s).body(Bytes::new()).expect("request")).await;
        assert_eq!(first, again, "[{home}] session s{s}");
        used.insert(first);
    }
    assert_eq!(used.len(), 2, "[{home}] 20 sessions on {used:?}");
}

/// Retries, as a client and the origin see them: GETs never see the
/// target that fails (refused or 503); a POST answered 503 is not tried
/// again (the origin saw each such POST once) unless its route opts in.
pub async fn retries(home: &str, addr: SocketAddr, origin: &super::support::origin::Origin, one_balancer: bool) {
    for path in ["/rs/retry", "/rs/flaky"] {
        let (_, counts) = shares(home, addr, path, 20).await;
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["/ok"], "[{home}] {path}: {counts:?}");
    }
    let post = |path: &str| Request::post(path).header("host", "gw.test").body(Bytes::from_static(b"x=1"));
    let before = origin.received().iter().filter(|r| r.uri.starts_with("/status/503/rs/flaky")).count();
    let mut failed = 0;
    for _ in 0..20 {
        let reply = send(addr, post("/rs/flaky").expect("request")).await;
        match reply.status {
            200 => {}
            503 => {
                assert_eq!(reply.json()["uri"], "/status/503/rs/flaky", "[{home}] the origin's own 503");
                failed += 1;
            }
            other => panic!("[{home}] POST /rs/flaky: {other} {:?}", reply.try_json()),
        }
    }
    let seen = origin.received().iter().filter(|r| r.uri.starts_with("/status/503/rs/flaky")).count() - before;
    assert!(failed > 0, "[{home}] no POST met the failing target");
    assert_eq!(seen, failed, "[{home}] each failed POST reached the origin once");
    if one_balancer {
        assert_eq!(failed, 10, "[{home}] round robin: every other POST");
    }
    for _ in 0..10 {
        let reply = send(addr, post("/rs/flaky-post").expect("request")).await;
        assert_eq!(reply.status, 200, "[{home}] retry_non_idempotent: {:?}", reply.try_json());
    }
}

/// The circuit breaker: three failed requests in a row open it; then the
/// service is not called and every request gets a 503 `circuit-open` with
/// `Retry-After` (or the route's fallback); after `open_for` one probe goes
/// through, fails, and opens it again (everywhere within `sync`).
pub async fn circuit_breaker(home: &str, addr: SocketAddr) {
    let get = |path: &str| send(addr, super::support::get(path));
    for i in 0..3 {
        let reply = get("/rs/breaker").await;
        assert_eq!(reply.status, 502, "[{home}] failure {i}: {:?}", reply.try_json());
    }
    let started = Instant::now();
    let open = get("/rs/breaker").await;
    assert_eq!(open.status, 503, "[{home}] {:?}", open.try_json());
    assert_eq!(open.json()["type"], "urn:portcullis:problem:circuit-open", "[{home}]");
    let wait: u64 = open.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=2).contains(&wait), "[{home}] Retry-After {wait}");
    assert!(started.elapsed() < Duration::from_millis(500), "[{home}] answered at once: {:?}", started.elapsed());
    let fallback = get("/rs/breaker/fallback").await;
    assert_eq!((fallback.status, &fallback.body[..]), (503, &b"maintenance"[..]), "[{home}] the fallback while open");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let probe = get("/rs/breaker").await;
    assert_eq!(probe.status, 502, "[{home}] the probe reaches the (still failing) service: {:?}", probe.try_json());
    // Where several instances serve (Spin's WASI 0.3 instances), the others
    // learn of the reopening from the store within `sync` (1 s).
    let probed = Instant::now();
    loop {
        let reply = get("/rs/breaker").await;
        if reply.json()["type"] == "urn:portcullis:problem:circuit-open" {
            break;
        }
        assert!(
            probed.elapsed() < Duration::from_millis(1500),
            "[{home}] a failed probe reopens it: {} {:?}",
            reply.status,
            reply.try_json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sticky canary assignment: each caller (`x-user-id`) keeps its variant,
/// and which callers get the canary is the same in every home: a caller is
/// in the canary when the first 8 bytes of SHA-256("cn-split\nheader:<id>"),
/// little-endian, modulo 10 000 fall below the share (30 % = 3 000).
pub async fn canary_split(home: &str, addr: SocketAddr) {
    use sha2::{Digest, Sha256};
    let mut canaries = 0;
    for u in 0..100 {
        let user = format!("user-{u}");
        let digest = Sha256::digest(format!("cn-split\nheader:{user}"));
        let bucket = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % 10_000;
        let want = if bucket < 3_000 { "/v2" } else { "/v1" };
        for _ in 0..2 {
            let req = Request::get("/cn/split").header("host", "gw.test").header("x-user-id", &user);
            let got = served_by(home, addr, req.body(Bytes::new()).expect("request")).await;
            assert_eq!(got, want, "[{home}] {user}");
        }
        canaries += usize::from(want == "/v2");
    }
    assert!((20..=40).contains(&canaries), "[{home}] {canaries} of 100 callers on the canary");
}

/// Spin keeps a pool of WASI 0.3 instances once a burst made it grow, and
/// spreads later requests over them: a breaker's threshold must hold over
/// the pool (`consecutive_failures = 3` opens at the third failure in a
/// row), as it does on the node and under WASI 0.2. The pool is grown first
/// with 50 requests at once, each held 200 ms by the origin.
pub async fn circuit_breaker_over_a_pool(home: &str, addr: SocketAddr) {
    let _alone = ALONE.lock().await;
    let burst = futures::future::join_all((0..50).map(|_| send(addr, super::support::get("/pool/200")))).await;
    assert!(burst.iter().all(|r| r.status == 200), "[{home}] {:?}", burst.iter().map(|r| r.status).collect::<Vec<_>>());
    let get = || send(addr, super::support::get("/rs/pool-breaker"));
    for i in 0..3 {
        let reply = get().await;
        assert_eq!(reply.status, 502, "[{home}] failure {i}: {:?}", reply.try_json());
    }
    let open = get().await;
    assert_eq!(open.status, 503, "[{home}] the fourth request: {:?}", open.try_json());
    assert_eq!(open.json()["type"], "urn:portcullis:problem:circuit-open", "[{home}]");
}

/// Concurrent requests on one rate-limit key far below its limit (a global
/// limit's shape) are never refused: on Spin's stores they race on the
/// key's compare-and-swap, and a request that loses races is tried again
/// until it is decided, not answered 429 (nor, within the deadline, 503).
pub async fn hot_key(home: &str, addr: SocketAddr) {
    let _alone = ALONE.lock().await;
    for (clients, each) in [(16, 8), (64, 4)] {
        let statuses = concurrent_gets(&[addr], clients, each, "/hot", ("x-hot", &format!("hot-{clients}"))).await;
        let refused = statuses.iter().filter(|s| **s != 200).count();
        assert_eq!(refused, 0, "[{home}] {clients} clients: {refused} of {} refused: {statuses:?}", statuses.len());
    }
}

/// A store `latency` away per call: a request on a new rate-limit key
/// makes at least five calls (a watch, its creation ticket, a watch again,
/// the swap, the ticket given back; WASI 0.2 reads the key first too), so
/// it takes at least five times that.
pub async fn distant_store(home: &str, addr: SocketAddr, latency: Duration) {
    let started = Instant::now();
    let req = Request::get("/spent").header("host", "gw.test").header("x-spent", "distant-first");
    let reply = send(addr, req.body(Bytes::new()).expect("request")).await;
    assert_eq!(reply.status, 200, "[{home}] {:?}", reply.try_json());
    assert!(started.elapsed() >= latency * 5, "[{home}] {:?} for five store calls", started.elapsed());
}

/// `clients` clients at once, each sending `each` GETs of `path` with one
/// header in a row, to the gateways at `addrs` in turn: every status.
async fn concurrent_gets(
    addrs: &[SocketAddr],
    clients: usize,
    each: usize,
    path: &str,
    header: (&str, &str),
) -> Vec<u16> {
    let one = |addr: SocketAddr| async move {
        let mut statuses = Vec::new();
        for _ in 0..each {
            let req = Request::get(path).header("host", "gw.test").header(header.0, header.1);
            statuses.push(send(addr, req.body(Bytes::new()).expect("request")).await.status);
        }
        statuses
    };
    futures::future::join_all((0..clients).map(|i| one(addrs[i % addrs.len()]))).await.into_iter().flatten().collect()
}

/// A burst of 400 requests from 16 clients on one key of `300/hour`: the
/// home admits no more than the limit (what refills meanwhile included),
/// whether it decides through the store alone, from pools (WASI 0.2) or
/// mostly under leases (the node, WASI 0.3), and no less than 90 % of it.
pub async fn burst_on_one_key(home: &str, addr: SocketAddr) {
    burst_on_one_key_across(home, &[addr], "one-key").await;
}

/// The same burst, its clients spread over gateways that share one store
/// (two Spin processes on one Redis): the fleet admits the limit and no more.
pub async fn burst_on_one_key_across(home: &str, addrs: &[SocketAddr], key: &str) {
    let _alone = ALONE.lock().await;
    let started = Instant::now();
    let statuses = concurrent_gets(addrs, 16, 25, "/spent", ("x-spent", key)).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    let limit = 300 + started.elapsed().as_secs() * 300 / 3_600 + 1;
    assert_eq!(admitted + refused, 400, "[{home}] only 200 and 429: {statuses:?}");
    assert!(admitted <= limit, "[{home}] {admitted} admitted of {limit}");
    assert!(admitted * 10 >= limit * 9, "[{home}] {admitted} admitted of {limit}");
}

/// A holder that leased part of a key's burst and went quiet loses none of
/// it: 20 requests in a row on a fresh key of `100/hour`, a pause past the
/// holder's idle time (and past Spin's idle-instance timeout, so a WASI 0.3
/// instance that held ranges is gone and the rest is decided by a new
/// one), then requests until one is refused: the home admits exactly the
/// burst (what refills meanwhile included). Had the first holder kept what
/// it leased, that part would stay out of use until it passed (36 s a unit).
pub async fn quiet_key_gives_back(home: &str, addr: SocketAddr) {
    let _alone = ALONE.lock().await;
    let one = || async move {
        let req = Request::get("/quiet").header("host", "gw.test").header("x-quiet", "quiet");
        send(addr, req.body(Bytes::new()).expect("request")).await.status
    };
    // Spin drops a WASI 0.3 instance idle for a second: the burst starts on a new one.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(one().await, 200, "[{home}] request {i} of the first 20");
    }
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let mut second = 0;
    while second < 150 && one().await == 200 {
        second += 1;
    }
    let limit = 100 + started.elapsed().as_secs() * 100 / 3_600 + 1;
    let admitted = 20 + second;
    assert!(admitted <= limit, "[{home}] {admitted} admitted of {limit}");
    assert!(admitted >= 100, "[{home}] {admitted} admitted of 100: a leased range was not given back");
}

/// Without a `[retry]` table, a request that a single-target service's
/// origin failed (here with broken framing) is not sent to it again.
pub async fn single_target_is_not_retried(home: &str, addr: SocketAddr, raw: &super::support::origin::RawOrigin) {
    let before = raw.hits("/te-and-cl");
    let reply = send(addr, super::support::get("/rs/single-raw/te-and-cl")).await;
    assert_eq!(reply.status, 502, "[{home}] {:?}", reply.try_json());
    assert_eq!(raw.hits("/te-and-cl") - before, 1, "[{home}] the origin was tried once");
}

/// A gRPC call past every phase: the node carries it to the origin over
/// HTTP/2 with `TE: trailers`; the edge, which does not carry trailers,
/// answers UNIMPLEMENTED and says where gRPC is served.
pub async fn grpc_call(home: &str, addr: SocketAddr, carries: bool) {
    let req = Request::post("/grpc.Echo/Call")
        .header("host", "gw.test")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "5S")
        .body(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .expect("request");
    let reply = send(addr, req).await;
    assert_eq!(reply.status, 200, "[{home}]");
    if carries {
        let echo = reply.json();
        assert_eq!(echo["version"], "HTTP/2.0", "[{home}] {echo}");
        assert_eq!(reply.echoed("te"), ["trailers"], "[{home}]");
        assert_eq!(reply.echoed("grpc-timeout"), ["5S"], "[{home}]");
    } else {
        assert_eq!(reply.header("grpc-status"), Some("12"), "[{home}]");
        let message = reply.header("grpc-message").unwrap_or_default();
        assert!(message.contains("served by the node"), "[{home}] {message}");
    }
}

/// A gRPC-Web call from a listed page on a bridged route: the node sends
/// the origin a gRPC call (its content type, `TE: trailers`, no
/// `x-grpc-web`) over HTTP/2; the edge answers UNIMPLEMENTED as gRPC-Web.
/// Either way the page may read the answer.
pub async fn grpc_web_call(home: &str, addr: SocketAddr, carries: bool) {
    let req = Request::post("/grpc.Web/Call")
        .header("host", "gw.test")
        .header("origin", "https://app.test")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .expect("request");
    let reply = send(addr, req).await;
    assert_eq!(reply.status, 200, "[{home}]");
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.test"), "[{home}]");
    if carries {
        let echo = reply.json();
        assert_eq!(echo["version"], "HTTP/2.0", "[{home}] {echo}");
        assert_eq!(reply.echoed("content-type"), ["application/grpc+proto"], "[{home}]");
        assert_eq!(reply.echoed("te"), ["trailers"], "[{home}]");
        assert!(reply.echoed("x-grpc-web").is_empty(), "[{home}]");
    } else {
        assert_eq!(reply.header("grpc-status"), Some("12"), "[{home}]");
        assert_eq!(reply.header("content-type"), Some("application/grpc-web+proto"), "[{home}]");
        let message = reply.header("grpc-message").unwrap_or_default();
        assert!(message.contains("served by the node"), "[{home}] {message}");
    }
}

/// A WebSocket upgrade on a route that takes them: the node sends it to
/// the origin as an upgrade (this origin answers it as a plain request);
/// the edge, which cannot hold the connection, answers 501.
pub async fn websocket_upgrade(home: &str, addr: SocketAddr, holds: bool) {
    let req = Request::get("/ws/socket")
        .header("host", "gw.test")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Bytes::new())
        .expect("request");
    let reply = send(addr, req).await;
    if holds {
        assert_eq!(reply.status, 200, "[{home}]");
        assert_eq!(reply.echoed("upgrade"), ["websocket"], "[{home}]");
        assert_eq!(reply.echoed("connection"), ["upgrade"], "[{home}]");
    } else {
        assert_eq!(reply.status, 501, "[{home}]");
        assert_eq!(reply.json()["type"], "urn:portcullis:problem:upgrade-unsupported", "[{home}]");
    }
}

/// The response cache over several requests: a write purges its URL,
/// answers vary by the headers the origin names, and concurrent misses
/// for one URL reach the origin once (collapsed forwarding; through the
/// store where instances do not share memory).
pub async fn response_cache(home: &str, addr: SocketAddr, origin: &super::support::origin::Origin) {
    let cached = |method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gw.test")
            .header("x-echo-response-header", "cache-control: max-age=60")
            .header("x-echo-response-header", "vary: accept-language");
        for (n, v) in extra {
            req = req.header(*n, *v);
        }
        req.body(Bytes::new()).expect("request")
    };
    let status = |reply: &super::support::Reply| reply.header("cache-status").unwrap_or_default().to_string();
    let path = "/cache/items/written";
    send(addr, cached("GET", path, &[])).await;
    let hit = send(addr, cached("GET", path, &[])).await;
    assert!(status(&hit).starts_with("portcullis; hit"), "[{home}] {}", status(&hit));
    let put = send(addr, cached("PUT", path, &[])).await;
    assert_eq!((put.status, status(&put).as_str()), (200, "portcullis; fwd=method"), "[{home}]");
    let after = send(addr, cached("GET", path, &[])).await;
    // The URL's Vary marker stays; its entries are gone.
    assert!(status(&after).contains("fwd=vary-miss"), "[{home}] a write purges its URL: {}", status(&after));

    let path = "/cache/items/languages";
    for (lang, expect) in [("de", "fwd=uri-miss"), ("fr", "fwd=vary-miss"), ("de", "hit"), ("fr", "hit")] {
        let reply = send(addr, cached("GET", path, &[("accept-language", lang)])).await;
        assert!(status(&reply).contains(expect), "[{home}] {lang}: {}", status(&reply));
        assert!(reply.echoed("accept-language").contains(&lang.to_string()), "[{home}] {lang}: the right variant");
    }

    let _alone = ALONE.lock().await;
    let path = "/cache/delay/300/collapsed";
    let before = origin.received().iter().filter(|r| r.uri == "/delay/300/collapsed").count();
    let misses: Vec<_> = (0..20).map(|_| tokio::spawn(send(addr, cached("GET", path, &[])))).collect();
    let mut statuses = Vec::new();
    for miss in misses {
        let reply = miss.await.expect("request task");
        assert_eq!(reply.status, 200, "[{home}]");
        statuses.push(status(&reply));
    }
    let fetched = origin.received().iter().filter(|r| r.uri == "/delay/300/collapsed").count() - before;
    assert_eq!(fetched, 1, "[{home}] 20 concurrent misses reach the origin once: {statuses:?}");
    let collapsed = statuses.iter().filter(|s| s.contains("detail=collapsed")).count();
    assert_eq!(collapsed, 19, "[{home}] {statuses:?}");
}

/// A daily quota in `Europe/Berlin` renews at midnight there (22:00 or
/// 23:00 UTC), not at UTC midnight: its `t` is the time to the next Berlin
/// midnight by the test's own tz database, and `w` that day's length.
pub async fn quota_in_a_time_zone(home: &str, addr: SocketAddr) {
    use jiff::tz::TimeZone;
    let berlin = TimeZone::get("Europe/Berlin").expect("Europe/Berlin");
    let before = jiff::Timestamp::now();
    let reply =
        super::support::send(addr, super::support::get_with("/quota-berlin", "x-client", &format!("tz-{home}"))).await;
    let after = jiff::Timestamp::now();
    assert_eq!(reply.status, 200, "[{home}]");
    let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let number = |text: &str, key: &str| {
        text.split(';').find_map(|p| p.strip_prefix(key)).and_then(|n| n.parse::<i64>().ok()).unwrap_or(-1)
    };
    let (t, w) = (number(&header("ratelimit"), "t="), number(&header("ratelimit-policy"), "w="));
    let today = berlin.to_datetime(before).date();
    let start = today.to_zoned(berlin.clone()).expect("midnight").timestamp().as_second();
    let end = today.tomorrow().expect("tomorrow").to_zoned(berlin).expect("midnight").timestamp().as_second();
    assert_eq!(w, end - start, "[{home}] {}", header("ratelimit-policy"));
    // `t` is rounded up to whole seconds, from a moment between the two readings.
    let range = (end - after.as_second() - 1)..=(end - before.as_second() + 1);
    assert!(range.contains(&t), "[{home}] t={t}, expected within {range:?}");
}
