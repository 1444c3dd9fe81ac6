//! The conformance suite: every case in `cases/*.toml` runs against every
//! home — the node binary and the Spin component in both flavours inside the
//! test host — in front of the same real loopback origin, with the same
//! config (`gateway.toml`). A case that behaves differently anywhere fails.

#[path = "../support/mod.rs"]
mod support;

mod homes;
mod scenarios;
mod tokens;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
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
    /// `garbage`, `bad-header`, `huge`, `wrong-secret`.
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
        support::send_from(gateway, from, build_request(case)).await;
    }
    let before = origin.received().len();
    let req = build_request(case);
    let reply = if case.request.chunked {
        support::send_chunked_from(gateway, from, req).await
    } else {
        support::send_from(gateway, from, req).await
    };
    let mut problems = Vec::new();
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
            let json = reply.json();
            let want = format!("urn:portcullis:problem:{slug}");
            if json["type"] != want.as_str() || json["status"] != e.status {
                problems.push(format!("problem body {json}, expected type {want}"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node() {
    let origin = Origin::start("127.0.0.1:0").await.expect("origin");
    let idp = tokens::idp().await;
    let node = homes::node(&origin, &idp);
    run_suite("node", node.addr, &origin).await;
    scenarios::key_rotation("node", node.addr, &idp).await;
    scenarios::concurrent_limit("node", node.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_wasi_p3() {
    let origin = Origin::start("127.0.0.1:0").await.expect("origin");
    let idp = tokens::idp().await;
    let edge = homes::edge("p3", &origin, &idp, &[]);
    run_suite("edge WASI 0.3", edge.addr, &origin).await;
    scenarios::key_rotation("edge WASI 0.3", edge.addr, &idp).await;
    scenarios::concurrent_limit("edge WASI 0.3", edge.addr).await;
    let without_atomics = homes::edge("p3", &origin, &idp, &["--kv-no-atomics"]);
    scenarios::store_without_atomics("edge WASI 0.3", without_atomics.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_wasi_p2() {
    let origin = Origin::start("127.0.0.1:0").await.expect("origin");
    let idp = tokens::idp().await;
    let edge = homes::edge("p2", &origin, &idp, &[]);
    run_suite("edge WASI 0.2", edge.addr, &origin).await;
    scenarios::key_rotation("edge WASI 0.2", edge.addr, &idp).await;
    scenarios::concurrent_limit("edge WASI 0.2", edge.addr).await;
    let without_atomics = homes::edge("p2", &origin, &idp, &["--kv-no-atomics"]);
    scenarios::store_without_atomics("edge WASI 0.2", without_atomics.addr).await;
}
