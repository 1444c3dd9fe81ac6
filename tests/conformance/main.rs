//! The conformance suite: every case in `cases/*.toml` runs against every
//! home — the node binary and the Spin component in both flavours inside the
//! test host — in front of the same real loopback origin, with the same
//! config (`gateway.toml`). A case that behaves differently anywhere fails.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test: processes, files and clocks

#[path = "../support/mod.rs"]
mod support;

mod homes;
mod registry;
mod scenarios;
mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use homes::Backends;
use http::Request;
use regex::Regex;
use serde::Deserialize;
use support::origin::{Origin, Received};

/// A file of cases.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: Req,
    expect: Expect,
    #[serde(default)]
    origin: OriginExpect,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Req {
    #[serde(default = "get")]
    method: String,
    path: String,
    /// Source address: 127.0.0.1 (untrusted) unless set.
    from: Option<IpAddr>,
    /// Header pairs in order; a value `@N` means N bytes of `a`.
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Extra filler headers, to reach a total header count.
    header_count: Option<usize>,
    body: Option<String>,
    /// A body of this many bytes instead of `body`.
    body_size: Option<usize>,
    /// Send the body chunked, without Content-Length.
    #[serde(default)]
    chunked: bool,
    /// A token the driver mints for this request.
    token: Option<TokenSpec>,
    /// Where the token goes: `header` (Authorization: Bearer, default),
    /// `cookie:<name>` or `query:<name>`.
    token_at: Option<String>,
    /// Send the same request this many times first, unchecked (to use up a limit).
    #[serde(default)]
    repeat_before: usize,
}

/// A token to mint. Defaults: issuer of the key's provider, audience
/// `api://conformance`, `sub = "alice"`, expiring in an hour.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    /// `rsa1` (RS256), `rsa2` (PS256), `ec256`, `ec384`, `ed25519`, or `hmac` (HS256).
    key: String,
    /// Overrides the key's own `kid`.
    kid: Option<String>,
    #[serde(default)]
    claims: toml::Table,
    /// Seconds from now; negative for the past. Default 3600.
    exp_in: Option<i64>,
    #[serde(default)]
    no_exp: bool,
    nbf_in: Option<i64>,
    /// A broken token instead: `alg-none`, `hs256-with-public-key`,
    /// `garbage`, `bad-header`, `huge`, `wrong-secret`, `bad-signature`.
    forge: Option<String>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// The problem type slug (`urn:portcullis:problem:<slug>`); implies a problem body.
    problem: Option<String>,
    #[serde(default)]
    headers: toml::Table,
    #[serde(default)]
    absent_headers: Vec<String>,
    #[serde(default)]
    body_contains: Vec<String>,
    #[serde(default)]
    body_lacks: Vec<String>,
    body_len: Option<usize>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct OriginExpect {
    /// `false`: the origin must not see the request. Default: don't care,
    /// unless other fields are given (then it must have been called once).
    called: Option<bool>,
    method: Option<String>,
    uri: Option<String>,
    #[serde(default)]
    headers: toml::Table,
    #[serde(default)]
    absent_headers: Vec<String>,
}

fn load_cases() -> Vec<Case> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/cases");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("cases dir").filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
        let text = std::fs::read_to_string(f).expect("read cases");
        let file: CaseFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        cases.extend(file.case);
    }
    assert!(cases.len() >= 40, "expected the whole suite, found {} cases", cases.len());
    cases
}

/// Checks a value against an expectation: exact text, or a regex after `~`.
fn matches(expected: &str, actual: &str) -> bool {
    match expected.strip_prefix('~') {
        Some(pattern) => match Regex::new(pattern) {
            Ok(re) => re.is_match(actual),
            Err(_) => fancy_match(pattern, actual),
        },
        None => expected == actual,
    }
}

/// `regex` has no look-ahead; cases use one form of it, `(?!literal)`,
/// which we check by matching without it and rejecting the literal.
fn fancy_match(pattern: &str, actual: &str) -> bool {
    let Some(start) = pattern.find("(?!") else {
        return false;
    };
    let Some(len) = pattern[start..].find(')') else {
        return false;
    };
    let forbidden = &pattern[start + 3..start + len];
    let relaxed = format!("{}{}", &pattern[..start], &pattern[start + len + 1..]);
    Regex::new(&relaxed).is_ok_and(|re| re.is_match(actual)) && !actual.contains(forbidden)
}

fn expected_values(value: &toml::Value) -> Vec<String> {
    match value {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        other => vec![other.to_string()],
    }
}

fn build_request(case: &Case) -> Request<Bytes> {
    let r = &case.request;
    let token = r.token.as_ref().map(tokens::mint);
    let placement = r.token_at.as_deref().unwrap_or("header");
    let mut path = r.path.clone();
    if let (Some(t), Some(name)) = (&token, placement.strip_prefix("query:")) {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("{name}={t}"));
    }
    let mut req = Request::builder().method(r.method.as_str()).uri(path.as_str());
    match (&token, placement) {
        (Some(t), "header") => req = req.header("authorization", format!("Bearer {t}")),
        (Some(t), p) if p.starts_with("cookie:") => req = req.header("cookie", format!("theme=dark; {}={t}", &p[7..])),
        _ => {}
    }
    let has_host = r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if !has_host {
        req = req.header("host", "gw.test");
    }
    for (k, v) in &r.headers {
        let value = match v.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => "a".repeat(n),
            None => v.clone(),
        };
        req = req.header(k.as_str(), value);
    }
    if let Some(total) = r.header_count {
        for i in r.headers.len()..total {
            req = req.header(format!("x-filler-{i}"), "f");
        }
    }
    let body = match (&r.body, r.body_size) {
        (_, Some(n)) => Bytes::from(vec![b'b'; n]),
        (Some(text), None) => Bytes::from(text.clone()),
        (None, None) => Bytes::new(),
    };
    if !body.is_empty() && !r.chunked {
        req = req.header("content-length", body.len());
    }
    req.body(body).expect("case request")
}

/// Runs one case; returns what went wrong, if anything.
async fn run_case(gateway: SocketAddr, origin: &Origin, case: &Case) -> Vec<String> {
    let from = case.request.from.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    for _ in 0..case.request.repeat_before {
        if let Err(e) = support::try_send_from(gateway, from, build_request(case)).await {
            return vec![format!("no answer to a repeat: {e}")];
        }
    }
    let before = origin.received().len();
    let req = build_request(case);
    let reply = if case.request.chunked {
        support::try_send_chunked_from(gateway, from, req).await
    } else {
        support::try_send_from(gateway, from, req).await
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return vec![format!("no answer: {e}")],
    };
    let mut problems = Vec::new();
    if let Some(e) = &reply.body_error {
        problems.push(format!("the body broke off after {} bytes: {e}", reply.body.len()));
    }
    let e = &case.expect;
    if reply.status != e.status {
        problems.push(format!(
            "status {} (expected {}), body {:?}",
            reply.status,
            e.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    if let Some(slug) = &e.problem {
        if reply.header("content-type") != Some("application/problem+json") {
            problems.push(format!("content-type {:?}, expected a problem body", reply.header("content-type")));
        } else {
            let want = format!("urn:portcullis:problem:{slug}");
            match reply.try_json() {
                Ok(json) if json["type"] == want.as_str() && json["status"] == e.status => {}
                Ok(json) => problems.push(format!("problem body {json}, expected type {want}")),
                Err(why) => problems.push(format!("{why}, expected a problem of type {want}")),
            }
        }
    }
    for (name, want) in &e.headers {
        let got: Vec<String> = reply
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        check_values(&mut problems, "response", name, &expected_values(want), &got);
    }
    for name in &e.absent_headers {
        if reply.headers.contains_key(name.as_str()) {
            problems.push(format!("response has {name}: {:?}", reply.headers.get(name.as_str())));
        }
    }
    let text = String::from_utf8_lossy(&reply.body);
    for needle in &e.body_contains {
        if !text.contains(needle.as_str()) {
            problems.push(format!("body lacks {needle:?}: {}", truncate(&text)));
        }
    }
    for needle in &e.body_lacks {
        if text.contains(needle.as_str()) {
            problems.push(format!("body contains {needle:?}: {}", truncate(&text)));
        }
    }
    if let Some(len) = e.body_len
        && reply.body.len() != len
    {
        problems.push(format!("body is {} bytes, expected {len}", reply.body.len()));
    }

    let seen: Vec<Received> = origin.received().into_iter().skip(before).collect();
    let o = &case.origin;
    let wants_call = o.method.is_some() || o.uri.is_some() || !o.headers.is_empty() || !o.absent_headers.is_empty();
    match (o.called, seen.len()) {
        (Some(false), 0) => {}
        (Some(false), n) => problems.push(format!("the origin was called {n} times: {:?}", seen[0].uri)),
        (_, 0) if wants_call || o.called == Some(true) => problems.push("the origin was not called".into()),
        (_, 0) => {}
        (_, n) => {
            if wants_call && n != 1 {
                problems.push(format!("the origin was called {n} times"));
            }
            let got = &seen[0];
            if let Some(m) = &o.method
                && &got.method != m
            {
                problems.push(format!("origin saw method {}, expected {m}", got.method));
            }
            if let Some(u) = &o.uri
                && !matches(u, &got.uri)
            {
                problems.push(format!("origin saw {}, expected {u}", got.uri));
            }
            for (name, want) in &o.headers {
                let values: Vec<String> =
                    got.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect();
                check_values(&mut problems, "origin", name, &expected_values(want), &values);
            }
            for name in &o.absent_headers {
                if let Some((_, v)) = got.headers.iter().find(|(k, _)| k == name) {
                    problems.push(format!("origin received {name}: {v}"));
                }
            }
        }
    }
    problems
}

fn check_values(problems: &mut Vec<String>, side: &str, name: &str, want: &[String], got: &[String]) {
    let ok = want.len() == got.len() && want.iter().zip(got).all(|(w, g)| matches(w, g));
    if !ok {
        problems.push(format!("{side} header {name}: got {got:?}, expected {want:?}"));
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Runs the whole suite against one home and fails with every divergence.
async fn run_suite(home: &str, gateway: SocketAddr, origin: &Origin) {
    let cases = load_cases();
    let mut failures = Vec::new();
    for case in &cases {
        let problems = run_case(gateway, origin, case).await;
        if !problems.is_empty() {
            failures.push(format!("[{home}] {}:\n    {}", case.name, problems.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Every case, then every scenario any home can host.
async fn run_home(home: &str, addr: SocketAddr, b: &Backends) {
    run_suite(home, addr, &b.origin).await;
    scenarios::host_ambiguity(home, addr, home != "node").await;
    scenarios::key_rotation(home, addr, &b.idp).await;
    scenarios::concurrent_limit(home, addr).await;
    scenarios::expiry_and_sweep(home, addr, home == "node").await;
    scenarios::balancing(home, addr, home == "node").await;
    scenarios::retries(home, addr, &b.origin, home == "node").await;
    scenarios::circuit_breaker(home, addr).await;
    scenarios::circuit_breaker_over_a_pool(home, addr).await;
    scenarios::hot_key(home, addr).await;
    scenarios::burst_on_one_key(home, addr).await;
    scenarios::quiet_key_gives_back(home, addr).await;
    scenarios::single_target_is_not_retried(home, addr, &b.raw).await;
    scenarios::canary_split(home, addr).await;
    scenarios::grpc_call(home, addr, home == "node").await;
    scenarios::grpc_web_call(home, addr, home == "node").await;
    scenarios::websocket_upgrade(home, addr, home == "node").await;
    scenarios::response_cache(home, addr, &b.origin).await;
    scenarios::quota_in_a_time_zone(home, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node() {
    let b = Backends::start().await;
    let node = homes::node(&b);
    run_home("node", node.addr, &b).await;
}

/// A flavour in the test host (its store behaves like Spin's default,
/// SQLite): the whole suite, then the host's other store modes (no
/// atomics; like Spin's Redis backend). WASI 0.2 runs the suite on the
/// component pre-initialised with the suite's variables, and the other
/// modes on the one that compiles its config per request.
async fn test_host(flavour: &str) {
    let home = format!("edge {flavour}");
    if !support::edge::ready(&format!("edge_wasi_{flavour}"), &[&format!("conformance-{flavour}")]) {
        return;
    }
    let b = Backends::start().await;
    let edge = match flavour {
        "p2" => {
            let vars = homes::variables(&b);
            homes::edge_on(&homes::preinitialised(&vars), &vars, &[])
        }
        _ => homes::edge(flavour, &b, &[]),
    };
    run_home(&home, edge.addr, &b).await;
    let without_atomics = homes::edge(flavour, &b, &["--kv-no-atomics"]);
    scenarios::store_without_atomics(&home, without_atomics.addr).await;
    let misreporting = homes::edge(flavour, &b, &["--kv-backend", "redis"]);
    scenarios::misreporting_store(&home, misreporting.addr).await;
    scenarios::concurrent_limit(&home, misreporting.addr).await;
    scenarios::hot_key(&home, misreporting.addr).await;
    // A store 2 ms away per call, as an edge platform's is.
    let distant = homes::edge(flavour, &b, &["--kv-latency-us", "2000"]);
    scenarios::distant_store(&home, distant.addr, std::time::Duration::from_millis(2)).await;
    scenarios::hot_key(&home, distant.addr).await;
    scenarios::burst_on_one_key_across(&home, &[distant.addr], "distant").await;
    // Who compiled the config (`config_us` in the access log): under WASI
    // 0.2 no request of the pre-initialised component and every request of
    // the other; under WASI 0.3 an instance's first request only.
    let compiled = |edge: &homes::Edge| {
        let lines = edge.access_log();
        assert!(!lines.is_empty(), "[{home}] no access log");
        homes::compiled_config(&lines)
    };
    let (suite, misreported) = (compiled(&edge), compiled(&misreporting));
    if flavour == "p2" {
        assert_eq!(suite.0, 0, "[{home}] requests compiled the pre-initialised config");
        assert_eq!(misreported.0, misreported.1, "[{home}] requests found a config compiled");
    } else {
        assert!(suite.0 >= 1 && suite.0 * 4 < suite.1, "[{home}] {suite:?} requests compiled the config");
    }
    // The hot key's requests: under WASI 0.2 (and on either store) most
    // from the pool every instance shares, a read and an increment each.
    if flavour == "p2" {
        for (store, edge) in [("sqlite", &edge), ("redis", &misreporting)] {
            let (pooled, hot) = homes::limit_outcomes(&edge.access_log(), "/hot", "pooled");
            assert!(pooled * 2 > hot, "[{home}, {store}] {pooled} of {hot} hot-key requests pooled");
        }
    }
    // Without the Spin variables its config needs, the component answers
    // every request with a 500 problem (and says why on stderr).
    let unconfigured = homes::edge_with(flavour, &[], &[]);
    let reply = support::send(unconfigured.addr, support::get("/admin")).await;
    assert_eq!(reply.status, 500, "[{home}] {:?}", reply.try_json());
    assert_eq!(reply.json()["type"], "urn:portcullis:problem:gateway-misconfigured", "[{home}]");
    assert!(reply.header("x-request-id").is_some(), "[{home}]");
}

/// A pre-initialised WASI 0.2 component uses the config compiled into it
/// only with the variables it was compiled with: given others, each request
/// compiles the config with them, and its answers follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preinitialised_component_compiles_for_other_variables() {
    if !support::edge::ready("a_preinitialised_component_compiles_for_other_variables", &["conformance-p2"]) {
        return;
    }
    let b = Backends::start().await;
    let same = homes::variables(&b);
    let component = homes::preinitialised(&same);
    let other = support::origin::Origin::start("127.0.0.1:0").await.expect("origin");
    let mut vars = same.clone();
    for (name, value) in &mut vars {
        if *name == "origin_port" {
            *value = other.port().to_string();
        }
    }
    for (vars, origin, compiles) in [(same, &b.origin, false), (vars, &other, true)] {
        let edge = homes::edge_on(&component, &vars, &[]);
        let before = (b.origin.received().len(), other.received().len());
        for _ in 0..3 {
            let reply = support::send(edge.addr, support::get("/public/x")).await;
            assert_eq!(reply.status, 200, "{:?}", reply.try_json());
        }
        let after = (b.origin.received().len(), other.received().len());
        let served = if std::ptr::eq(origin, &b.origin) { after.0 - before.0 } else { after.1 - before.1 };
        assert_eq!(served, 3, "the origin the variables name served every request");
        assert_eq!(after.0 - before.0 + after.1 - before.1, 3, "no other origin was called");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let lines = loop {
            let lines = edge.access_log();
            if lines.len() >= 3 || std::time::Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(homes::compiled_config(&lines).0, if compiles { 3 } else { 0 }, "{lines:?}");
    }
}

/// The pre-initialiser refuses what it cannot pre-initialise, saying why:
/// a component without the export (WASI 0.3), and values with which the
/// config is invalid (named by file, line and key, as `portcullis check`
/// would). A config whose variables are not all given is written unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preinitialiser_says_what_it_cannot_do() {
    if !support::edge::ready("the_preinitialiser_says_what_it_cannot_do", &["conformance-p2", "conformance-p3"]) {
        return;
    }
    let b = Backends::start().await;
    let out = support::temp_path("preinit.wasm");
    let p3 = support::edge::preinit(&support::edge::component("conformance-p3"), &homes::variables(&b), &out);
    assert!(!p3.status.success());
    assert!(String::from_utf8_lossy(&p3.stderr).contains("has no `preinit` export"), "{p3:?}");
    assert!(!out.exists());

    let mut vars = homes::variables(&b);
    for (name, value) in &mut vars {
        if *name == "hs_secret" {
            *value = "short".to_string();
        }
    }
    let p2 = support::edge::component("conformance-p2");
    let invalid = support::edge::preinit(&p2, &vars, &out);
    let said = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success(), "{said}");
    assert!(said.contains("tests/conformance/gateway.toml:") && said.contains("hmac_secret"), "{said}");
    assert!(!out.exists());

    let partial = support::edge::preinit(&p2, &vars[..1], &out);
    let said = String::from_utf8_lossy(&partial.stderr);
    assert!(partial.status.success() && said.contains("not pre-initialised"), "{said}");
    assert_eq!(std::fs::read(&out).expect("written"), std::fs::read(&p2).expect("component"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_wasi_p3() {
    test_host("p3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_wasi_p2() {
    test_host("p2").await;
}

/// The test host keeps compiled components between starts, as Spin does: a
/// second start loads the kept one and answers alike; a damaged entry is
/// compiled again and replaced; `--disable-cache` compiles every time and
/// keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_host_keeps_compiled_components_like_spin() {
    if !support::edge::ready("the_test_host_keeps_compiled_components_like_spin", &["conformance-p2"]) {
        return;
    }
    let b = Backends::start().await;
    let dir = support::temp_path("host-cache");
    let dir_flag = dir.to_str().expect("utf-8 temp path");
    let start = |flags: &[&str]| {
        let edge = homes::edge("p2", &b, flags);
        (edge.said["component"].as_str().unwrap_or_default().to_string(), edge)
    };
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default()
    };

    let mut answers = Vec::new();
    for expected in ["compiled", "cached"] {
        let (loaded, edge) = start(&["--cache-dir", dir_flag]);
        assert_eq!(loaded, expected);
        answers.push(support::send(edge.addr, support::get("/public/x")).await.status);
    }
    assert_eq!(answers, [200, 200]);
    let kept = entries();
    assert_eq!(kept.len(), 1, "{kept:?}");

    std::fs::write(&kept[0], b"not a compiled component").expect("damage the entry");
    let (loaded, edge) = start(&["--cache-dir", dir_flag]);
    assert_eq!(loaded, "compiled");
    assert_eq!(support::send(edge.addr, support::get("/public/x")).await.status, 200);
    drop(edge);
    assert_eq!(start(&["--cache-dir", dir_flag]).0, "cached", "the damaged entry was replaced");

    let unused = support::temp_path("host-cache-unused");
    let unused_flag = unused.to_str().expect("utf-8 temp path");
    for _ in 0..2 {
        assert_eq!(start(&["--cache-dir", unused_flag, "--disable-cache"]).0, "compiled");
    }
    assert!(!unused.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A flavour under the real Spin CLI (`PORTCULLIS_SPIN`), on its default
/// store or on Redis (whose compare-and-swap Spin reports as failed after
/// committing it). A Spin store without atomics cannot be had, so that
/// scenario runs in the test host only.
async fn real_spin(test: &str, flavour: &str, redis: bool) {
    let Some(spin) = support::spin::binary() else {
        support::notice(&format!("{test}: skipped: set PORTCULLIS_SPIN to a Spin CLI to run the real-Spin homes"));
        return;
    };
    if !support::edge::ready(test, &[&format!("conformance-{flavour}")]) {
        return;
    }
    let home = format!("spin {flavour}{}", if redis { " + redis" } else { "" });
    let b = Backends::start().await;
    let store = redis.then(support::redis::Redis::start);
    // WASI 0.2 on Spin's default store runs pre-initialised, on Redis not.
    let vars = homes::variables(&b);
    let component = match (flavour, redis) {
        ("p2", false) => homes::preinitialised(&vars),
        _ => support::edge::component(&format!("conformance-{flavour}")),
    };
    let app = support::spin::up(&spin, &component, &vars, store.as_ref().map(|r| r.url()).as_deref());
    run_home(&home, app.addr, &b).await;
    if let Some(store) = &store {
        scenarios::misreporting_store(&home, app.addr).await;
        // A second Spin process on the same Redis: one fleet, one limit.
        let other = support::spin::up(&spin, &component, &vars, Some(&store.url()));
        scenarios::burst_on_one_key_across(&format!("{home}, two processes"), &[app.addr, other.addr], "two-processes")
            .await;
    }
    if flavour == "p2" {
        // Spin starts the snapshot as the test host does: no request of the
        // pre-initialised component compiled the config, every other did.
        let out = app.component_stdout();
        let lines: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert!(!lines.is_empty(), "[{home}] no access log");
        let (compiled, all) = homes::compiled_config(&lines);
        assert_eq!(compiled, if redis { all } else { 0 }, "[{home}] of {all} requests");
        let (pooled, hot) = homes::limit_outcomes(&lines, "/hot", "pooled");
        assert!(pooled * 2 > hot, "[{home}] {pooled} of {hot} hot-key requests pooled");
    }
}

/// In the test host, published through the admin route: a WASI 0.3
/// component follows the registry (it looks once a second), a WASI 0.2 one
/// when the deployment opts in (a store read each request), and not
/// otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_follows_the_registry() {
    if !support::edge::ready("the_edge_follows_the_registry", &["conformance-p2", "conformance-p3"]) {
        return;
    }
    let b = Backends::start().await;
    let mut vars = homes::variables(&b);
    vars.push(registry::token_variable());
    let p3 = homes::edge_with("p3", &vars, &[]);
    registry::follows("edge p3", p3.addr, &b, &registry::Publisher::Admin, Duration::from_secs(1)).await;
    let not_following = homes::edge_with("p2", &vars, &[]);
    let put = registry::admin_request("PUT", "/config", registry::TOKEN, registry::published_config());
    assert_eq!(support::send(not_following.addr, put).await.status, 200);
    let reply = support::send(not_following.addr, support::get(registry::PUBLISHED_ROUTE)).await;
    assert_eq!(reply.status, 404, "a WASI 0.2 component follows the registry only when the deployment says so");
    vars.push(("portcullis_registry", "follow".to_string()));
    let p2 = homes::edge_with("p2", &vars, &[]);
    registry::follows("edge p2", p2.addr, &b, &registry::Publisher::Admin, Duration::ZERO).await;
}

/// Under real Spin: a WASI 0.3 component on Spin's default store follows
/// what its admin route publishes; on Redis, both flavours (WASI 0.2 opted
/// in) follow what `portcullis publish` and `portcullis consumers` write
/// into the Redis behind Spin's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_follows_the_registry() {
    let Some(spin) = support::spin::binary() else {
        support::notice("spin_follows_the_registry: skipped: set PORTCULLIS_SPIN to a Spin CLI");
        return;
    };
    if !support::edge::ready("spin_follows_the_registry", &["conformance-p2", "conformance-p3"]) {
        return;
    }
    let b = Backends::start().await;
    let mut vars = homes::variables(&b);
    vars.push(registry::token_variable());
    let p3 = support::spin::up(&spin, &support::edge::component("conformance-p3"), &vars, None);
    registry::follows("spin p3", p3.addr, &b, &registry::Publisher::Admin, Duration::from_secs(1)).await;
    drop(p3);
    let store = support::redis::Redis::start();
    let p3 = support::spin::up(&spin, &support::edge::component("conformance-p3"), &vars, Some(&store.url()));
    let cli = registry::Publisher::Cli { url: store.url() };
    registry::follows("spin p3 + redis", p3.addr, &b, &cli, Duration::from_secs(1)).await;
    drop(p3);
    let store = support::redis::Redis::start();
    vars.push(("portcullis_registry", "follow".to_string()));
    let p2 = support::spin::up(&spin, &support::edge::component("conformance-p2"), &vars, Some(&store.url()));
    let cli = registry::Publisher::Cli { url: store.url() };
    registry::follows("spin p2 + redis", p2.addr, &b, &cli, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_p2() {
    real_spin("spin_p2", "p2", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_p3() {
    real_spin("spin_p3", "p3", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_p2_redis() {
    real_spin("spin_p2_redis", "p2", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_p3_redis() {
    real_spin("spin_p3_redis", "p3", true).await;
}

/// Under real Spin with its OpenTelemetry export on, in both flavours: the
/// origin's parent is Spin's own outbound span (exported; Spin replaces the
/// component's `traceparent` with it), under the client's trace for WASI
/// 0.2; and the component's JSON log line carries its decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_traces_and_logs_the_edges_decisions() {
    const TEST: &str = "spin_traces_and_logs_the_edges_decisions";
    let Some(spin) = support::spin::binary() else {
        support::notice(&format!("{TEST}: skipped: set PORTCULLIS_SPIN to a Spin CLI"));
        return;
    };
    if !support::edge::ready(TEST, &["conformance-p2", "conformance-p3"]) {
        return;
    }
    let (collector, port) = support::otlp::Collector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
    ];
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    for flavour in ["p2", "p3"] {
        let b = Backends::start().await;
        let component = support::edge::component(&format!("conformance-{flavour}"));
        let app = support::spin::up_env(&spin, &component, &homes::variables(&b), None, &env);
        let req = Request::get("/metered")
            .header("host", "gw.test")
            .header("x-api-key", "acme-key-0001")
            .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
            .body(Bytes::new())
            .unwrap();
        assert_eq!(support::send(app.addr, req).await.status, 200, "{flavour}");
        let received = b.origin.received();
        let sent = received.iter().rev().find_map(|r| r.headers.iter().find(|(k, _)| k == "traceparent")).unwrap();
        let parts: Vec<&str> = sent.1.split('-').collect();
        assert_ne!(parts[2], client_span, "{flavour}: a span between the client and the origin");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let parent = loop {
            let spans = collector.spans();
            if let Some(span) = spans.iter().find(|s| support::otlp::hex(&s.span_id) == parts[2]) {
                break span.clone();
            }
            assert!(std::time::Instant::now() < deadline, "{flavour}: Spin never exported span {}", parts[2]);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(support::otlp::hex(&parent.trace_id), parts[1], "{flavour}");
        assert_eq!(parent.name, "GET", "{flavour}: Spin's outbound span is the origin's parent");
        if flavour == "p2" {
            // Up from the origin's parent: Spin's component span, its request
            // span, then the client's span.
            let spans = collector.spans();
            let mut chain = Vec::new();
            let mut at = parent.clone();
            while let Some(up) = spans.iter().find(|s| s.span_id == at.parent_span_id) {
                chain.push(up.name.clone());
                at = up.clone();
            }
            assert_eq!(chain, ["execute_wasm_component portcullis", "GET /..."], "{flavour}");
            assert_eq!(support::otlp::hex(&at.parent_span_id), client_span, "{flavour}");
            assert_eq!(parts[1], client_trace, "{flavour}: the origin is in the client's trace");
        } else if parts[1] != client_trace {
            // Spin 4.1.0-pre0 runs WASI 0.3 host calls outside the request's
            // span: each outbound call starts a trace of its own.
            support::notice(&format!(
                "{TEST}: {flavour}: Spin put the origin in a trace of its own ({}), not the client's",
                parts[1]
            ));
        }
        let line = loop {
            let out = app.component_stdout();
            if let Some(line) = out
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["route"] == "metered")
            {
                break line;
            }
            assert!(std::time::Instant::now() < deadline, "{flavour}: no log line: {out}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(line["trace_id"], client_trace, "{flavour}");
        assert_eq!(line["service"], "echo", "{flavour}");
        assert_eq!(line["auth"], serde_json::json!({"provider": "partners", "outcome": "ok"}), "{flavour}");
        assert_eq!(line["limits"], serde_json::json!([{"policy": "per_consumer", "outcome": "admitted"}]), "{flavour}");
        assert!(line["upstream_latency_us"].is_u64() && line["overhead_us"].is_u64(), "{flavour}: {line}");
        assert_eq!(line["attempts"], 1, "{flavour}");
    }
}

/// The manifests the repository ships for each flavour load the shipped
/// components under real Spin, which answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_shipped_manifests() {
    let Some(spin) = support::spin::binary() else {
        support::notice("spin_shipped_manifests: skipped: set PORTCULLIS_SPIN to a Spin CLI");
        return;
    };
    if !support::edge::ready("spin_shipped_manifests", &["portcullis-p2", "portcullis-p3"]) {
        return;
    }
    for manifest in ["spin.toml", "edge-deploy/spin-p3.toml"] {
        let app = support::spin::up_manifest(&spin, &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest));
        let reply = support::send(app.addr, support::get("/no/such/route")).await;
        assert_eq!(reply.status, 404, "{manifest}");
        assert_eq!(reply.json()["type"], "urn:portcullis:problem:no-route", "{manifest}");
    }
}

/// The harness itself: an answer that breaks a case (a problem status
/// without its body) is reported as that case's failure, not a panic.
#[tokio::test]
async fn a_bad_answer_fails_its_case_and_the_suite_goes_on() {
    let origin = Origin::start("127.0.0.1:0").await.expect("origin");
    let case: CaseFile = toml::from_str(
        r#"[[case]]
name = "a problem without a body"
request = { path = "/empty/413" }
expect = { status = 413, problem = "body-too-large" }"#,
    )
    .expect("case");
    let addr = SocketAddr::from(([127, 0, 0, 1], origin.port()));
    let problems = run_case(addr, &origin, &case.case[0]).await;
    assert!(problems.iter().any(|p| p.contains("not JSON")), "{problems:?}");
    let closed = SocketAddr::from(([127, 0, 0, 1], support::closed_port()));
    let problems = run_case(closed, &origin, &case.case[0]).await;
    assert!(problems.iter().any(|p| p.starts_with("no answer")), "{problems:?}");
}
