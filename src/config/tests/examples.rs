//! The shipped configs compile.

use super::*;

#[test]
fn shipped_configs_compile() {
    for (name, text) in [
        ("routes/gateway.toml", include_str!("../../../routes/gateway.toml")),
        ("tests/conformance/gateway.toml", include_str!("../../../tests/conformance/gateway.toml")),
    ] {
        if let Err(e) = Config::parse(text, name, &conformance_vars()) {
            panic!("{e}");
        }
    }
}

/// Values for every placeholder the shipped configs use.
fn conformance_vars() -> Variables {
    let mut vars = Variables::new();
    for name in vars::referenced(include_str!("../../../tests/conformance/gateway.toml")) {
        let value = match name {
            _ if name.ends_with("secret") => "s".repeat(40),
            _ if name.ends_with("_key") => include_str!("../../../tests/fixtures/keys/ec256.pem").to_string(),
            _ => "1".to_string(),
        };
        vars.insert(name, value);
    }
    vars
}
