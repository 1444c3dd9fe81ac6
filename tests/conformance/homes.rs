//! The homes the suite runs in, each started on the conformance config with
//! the same variables.

use super::support::{self, Node, idp::Idp, origin::Origin};
use super::tokens::HS_SECRET;

pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/gateway.toml");

/// The placeholder values every home gets.
pub fn variables(origin: &Origin, idp: &Idp) -> Vec<(&'static str, String)> {
    vec![
        ("origin_port", origin.port().to_string()),
        ("closed_port", support::closed_port().to_string()),
        ("env_name", "conformance".to_string()),
        ("idp_port", idp.port.to_string()),
        ("hs_secret", HS_SECRET.to_string()),
    ]
}

pub fn node(origin: &Origin, idp: &Idp) -> Node {
    let path = support::temp_path("conformance.toml");
    std::fs::copy(CONFIG, &path).expect("copy config");
    Node::start_with(path, &variables(origin, idp), &[])
}

/// A component in the test host, in front of the same origin.
pub struct Edge {
    pub addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the test host on the conformance build of `flavour` (`p2`/`p3`),
/// with extra host flags.
pub fn edge(flavour: &str, origin: &Origin, idp: &Idp, flags: &[&str]) -> Edge {
    edge_with(flavour, &variables(origin, idp), flags)
}

/// Like [`edge`], with the Spin variables given.
pub fn edge_with(flavour: &str, vars: &[(&str, String)], flags: &[&str]) -> Edge {
    let component = support::edge::component(&format!("conformance-{flavour}"));
    let (addr, child) = support::edge::serve(&component, vars, flags);
    Edge { addr, child }
}

/// The component of `flavour` (conformance build) under the real Spin CLI;
/// `store_url`: a Redis URL for its key-value store.
pub fn spin(
    spin: &std::path::Path,
    flavour: &str,
    origin: &Origin,
    idp: &Idp,
    store_url: Option<&str>,
) -> support::spin::SpinApp {
    let component = support::edge::component(&format!("conformance-{flavour}"));
    support::spin::up(spin, &component, &variables(origin, idp), store_url)
}
