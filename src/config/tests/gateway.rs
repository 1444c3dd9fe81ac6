//! The `[gateway]` header hardening and observability settings, and admin tokens.

use super::*;

#[test]
fn header_hardening_settings_are_checked() {
    let e = one(&format!("[gateway]\nunderscores_in_headers = \"allow\"\nmax_response_header_size = \"1MiB\"\n{SVC}"));
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.underscores_in_headers"));
    assert!(e.message.contains("\"drop\"") && e.message.contains("\"keep\""), "{}", e.message);
    let e = one(&format!("[gateway]\nmax_response_header_size = \"lots\"\n{SVC}"));
    assert_eq!(e.key, "gateway.max_response_header_size");
}

#[test]
fn observability_settings_are_checked() {
    let text = format!(
        "[gateway]\naccess_log_sample = 1.5\ntrace_sample_ratio = -0.1\n{SVC}[admin]\ntoken_sha256 = [\"{}\", \"xyz\"]\n",
        "ab".repeat(32)
    );
    expect_errors(
        &text,
        &[
            (2, "gateway.access_log_sample", "a share from 0 to 1"),
            (3, "gateway.trace_sample_ratio", "a share from 0 to 1"),
            (7, "admin.token_sha256[1]", "64 hex digits"),
        ],
    );
    let ok = format!(
        "[gateway]\naccess_log_sample = 0\ntrace_sample_ratio = 0.01\n{SVC}[admin]\ntoken_sha256 = [\"{}\"]\n",
        "ab".repeat(32)
    );
    let c = Config::parse(&ok, "t.toml", &Variables::new()).unwrap();
    assert_eq!((c.gateway.access_log_sample, c.gateway.trace_sample_ratio), (0.0, 0.01));
    assert_eq!(c.admin_tokens, vec![[0xab; 32]]);
}
