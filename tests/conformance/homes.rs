//! The homes the suite runs in, each started on the conformance config with
//! the same variables.

use super::support::{self, Node, origin::Origin};

pub const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/gateway.toml"
);

/// The placeholder values every home gets.
pub fn variables(origin: &Origin) -> Vec<(&'static str, String)> {
    vec![
        ("origin_port", origin.port().to_string()),
        ("closed_port", support::closed_port().to_string()),
        ("env_name", "conformance".to_string()),
    ]
}

pub fn node(origin: &Origin) -> Node {
    let path = support::temp_path("conformance.toml");
    std::fs::copy(CONFIG, &path).expect("copy config");
    Node::start_with(path, &variables(origin), &[])
}
