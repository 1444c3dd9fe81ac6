//! Config errors name file, line and key; the shipped examples compile.
//!
//! One file per topic; the helpers they share are here.

use super::*;

mod auth;
mod balancing;
mod canary;
mod defaults;
mod examples;
mod gateway;
mod jwt_providers;
mod keys_and_types;
mod limits;
mod listeners;
mod placeholders;
mod recovery;
mod resilience;
mod routes;
mod services;
mod sweep;

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, "gw.toml", &Variables::default()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigErrors(list)) => list,
    }
}

fn one(text: &str) -> ConfigError {
    let list = errors(text);
    assert_eq!(list.len(), 1, "{list:?}");
    list.into_iter().next().unwrap()
}

/// The errors of `text`, in order: line, key, and a part of the message.
fn expect_errors(text: &str, expect: &[(usize, &str, &str)]) {
    let got: Vec<(usize, String, String)> = errors(text).into_iter().map(|e| (e.line, e.key, e.message)).collect();
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, key, message), (want_line, want_key, want_message)) in got.iter().zip(expect) {
        assert_eq!((*line, key.as_str()), (*want_line, *want_key), "{message}");
        assert!(message.contains(want_message), "{key}: {message}");
    }
}

const SVC: &str = "[services.s]\nurl = \"http://127.0.0.1:9000\"\n";

/// For each case, an error at `key` whose message contains the text (other
/// errors may come with it), with `{{ secret }}` (32 bytes) and `{{ short }}` set.
fn expect_each_key(cases: &[(String, &str, &str)]) {
    let mut vars = Variables::new();
    vars.insert("secret", "0123456789abcdef0123456789abcdef");
    vars.insert("short", "too-short");
    for (text, key, msg) in cases {
        let errors = match Config::parse(text, "gw.toml", &vars) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(ConfigErrors(list)) => list,
        };
        assert_eq!(errors.len(), 1, "{key}: {errors:?}");
        let e = &errors[0];
        assert_eq!(e.key, *key, "{errors:?}");
        assert!(e.message.contains(msg), "{key}: {}", e.message);
    }
}
