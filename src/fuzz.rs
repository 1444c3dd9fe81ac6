//! Fuzzing without a nightly toolchain: property tests over random and
//! mutated input for every parser a client or an operator can feed, each
//! asserting that the answer is a verdict (never a panic) and the
//! invariants of that verdict. `cargo test` runs 256 cases of each; a
//! longer run, as documented in README.md:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release --lib fuzz_
//! ```

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Request};
use proptest::prelude::*;

use crate::config::auth::TokenSource;
use crate::config::{Config, Variables, digest, digest_write};
use crate::pipeline::authn::credential;
use crate::pipeline::transform::client_ip;
use crate::shared::path::normalize_path;

const SHIPPED: &str = include_str!("../tests/conformance/gateway.toml");

/// Text that is mostly the shipped config, cut, duplicated and spliced at
/// random places with random bytes.
fn mutated_config() -> impl Strategy<Value = String> {
    (prop::collection::vec((0usize..SHIPPED.len(), 0usize..40, ".{0,8}"), 1..6)).prop_map(|edits| {
        let mut text = SHIPPED.to_string();
        for (at, cut, insert) in edits {
            let at = text.floor_char_boundary(at.min(text.len()));
            let end = text.floor_char_boundary((at + cut).min(text.len()));
            text.replace_range(at..end, &insert);
        }
        text
    })
}

fn vars() -> Variables {
    let mut vars = Variables::new();
    for name in crate::config::vars::referenced(SHIPPED) {
        let value = match name {
            _ if name.ends_with("secret") => "0123456789abcdef0123456789abcdef",
            _ if name.ends_with("_key") => include_str!("../tests/fixtures/keys/ec256.pem"),
            _ => "9",
        };
        vars.insert(name, value);
    }
    vars
}

proptest! {
    /// The config compiler answers any text with a config or with errors,
    /// each on a line of the text; and the edge (reading the build-time
    /// digest) and the node (parsing TOML) agree on whether it compiles.
    #[test]
    fn fuzz_config(text in prop_oneof![".{0,200}", mutated_config()]) {
        let parsed = Config::parse(&text, "fuzz.toml", &vars());
        if let Err(errors) = &parsed {
            prop_assert!(!errors.0.is_empty());
            let lines = text.lines().count().max(1) + 1;
            prop_assert!(errors.0.iter().all(|e| e.line <= lines), "{errors}");
        }
        if let Ok(d) = digest_write::digest(&text) {
            let from_digest = Config::from_digest(&d, &text, "fuzz.toml", &vars());
            if digest::read(&d).is_ok() {
                prop_assert_eq!(from_digest.is_ok(), parsed.is_ok(), "digest and TOML disagree on:\n{}", text);
            }
        }
    }

    /// A normalised path is absolute, has no empty, `.` or `..` segments,
    /// and normalising it again changes nothing.
    #[test]
    fn fuzz_path(raw in prop_oneof!["/[a-z./%0-9A-F\\\\]{0,40}", ".{0,40}"]) {
        if let Ok(path) = normalize_path(&raw, Default::default()) {
            prop_assert!(path.starts_with('/'), "{path}");
            prop_assert!(!path.contains("//"), "{path}");
            prop_assert!(path.split('/').skip(1).all(|s| s != "." && s != ".."), "{path}");
            prop_assert_eq!(normalize_path(&path, Default::default()), Ok(path.clone()));
        }
    }

    /// Credentials are found in any header, cookie or query the client sends
    /// without a panic.
    #[test]
    fn fuzz_credentials(auth in ".{0,60}", cookie in ".{0,60}", query in "[ -~]{0,60}") {
        let sources = [
            TokenSource::Bearer,
            TokenSource::Cookie("session".into()),
            TokenSource::Query("access_token".into()),
        ];
        let mut req = Request::get(format!("/x?{}", query.replace(['#', ' '], "")).as_str());
        if let Ok(v) = HeaderValue::from_str(&auth) {
            req = req.header("authorization", v);
        }
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            req = req.header("cookie", v);
        }
        if let Ok(req) = req.body(()) {
            let _ = credential::find(&sources, &req);
        }
    }

    /// The JWT front end (shape, header, algorithm) refuses anything that is
    /// not a token, without a panic.
    #[test]
    fn fuzz_jwt_front(token in prop_oneof![".{0,80}", "[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,30}"]) {
        let config = Config::parse(SHIPPED, "c.toml", &vars()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for p in &config.auth.providers {
            if let crate::config::auth::ProviderKind::Jwt(jwt) = &p.kind {
                let _ = crate::pipeline::authn::jwt::accepted_header(jwt, &token);
            }
        }
    }

    /// The client address is the peer or one named in `X-Forwarded-For`.
    #[test]
    fn fuzz_forwarded_for(xff in prop::collection::vec(".{0,30}", 0..4), trusted in any::<bool>()) {
        let peer: IpAddr = [127, 0, 0, 2].into();
        let mut headers = HeaderMap::new();
        for v in &xff {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append("x-forwarded-for", v);
            }
        }
        let proxies = if trusted { vec!["127.0.0.2/32".parse().expect("cidr")] } else { Vec::new() };
        let ip = client_ip(peer, &headers, &proxies);
        let named = xff.iter().flat_map(|v| v.split(',')).any(|e| e.contains(&ip.to_string()));
        prop_assert!(ip == peer || (trusted && named), "{ip} from {xff:?}");
    }
}
