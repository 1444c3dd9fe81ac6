//! The kv-schema documents match the records the code stores.

use super::*;

/// The `key` and `value` blocks of a kv-schema document.
fn schema(doc: &str) -> (String, serde_json::Value) {
    let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
    (block("text key"), serde_json::from_str(&block("json value")).expect("value block is JSON"))
}

fn matches_layout(key: &str, layout: &str) {
    let prefix = layout.strip_suffix("{sha256-hex}").expect("layout ends with {sha256-hex}");
    let rest = key.strip_prefix(prefix).unwrap_or_else(|| panic!("{key} does not start with {prefix}"));
    assert!(crate::ports::testing::is_sha256_hex(rest), "{key}");
}

#[test]
fn kv_schema_jwks_matches_the_code() {
    let (layout, example) = schema(include_str!("../../../../kv-schema/jwks.md"));
    matches_layout(&jwks::kv_key("https://idp.example.com/jwks"), &layout);
    let stored: jwks::Stored = serde_json::from_value(example.clone()).expect("the example is a record");
    assert_eq!(serde_json::to_value(&stored).unwrap(), example, "every field documented, none invented");
}

#[test]
fn kv_schema_verified_tokens_matches_the_code() {
    let (layout, example) = schema(include_str!("../../../../kv-schema/verified-tokens.md"));
    matches_layout(&jwt::token_key(&digest("corp", "a.b.c")), &layout);
    let stored: jwt::SharedToken = serde_json::from_value(example.clone()).expect("the example is a record");
    assert_eq!(serde_json::to_value(&stored).unwrap(), example, "every field documented, none invented");
}

#[test]
fn kv_schema_auth_failures_matches_the_code() {
    let doc = include_str!("../../../../kv-schema/auth-failures.md");
    let (layout, _) = schema(&doc.replace("```text value", "```json value"));
    matches_layout(&failures::key("corp", CLIENT), &layout.replace("{provider}", "corp"));
}

#[test]
fn kv_schema_introspection_matches_the_code() {
    let doc = include_str!("../../../../kv-schema/introspection.md");
    let (layout, _) = schema(&doc.replace("```text value\nasking", "```json value\n\"asking\""));
    matches_layout(&introspection::claim_key(&digest("opaque", "token")), &layout);
    for mark in [introspection::ASKING, introspection::INACTIVE] {
        let word = std::str::from_utf8(mark).unwrap();
        assert!(doc.contains(&format!("`{word}`")), "{word} is documented");
    }
}
