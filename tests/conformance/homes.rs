//! The homes the suite runs in, each started on the conformance config with
//! the same variables.

use super::support::origin::{Origin, RawOrigin};
use super::support::{self, Node, idp::Idp};
use super::tokens::{self, HS_SECRET};

pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/gateway.toml");

/// The real servers on loopback every home stands in front of: the echoing
/// origin, one that misbehaves at the byte level, the identity provider,
/// and a slow server for a key set that never comes in time (apart from
/// the echoing origin, whose calls the cases count: a node warms key sets
/// at start and retries them).
pub struct Backends {
    pub origin: Origin,
    pub raw: RawOrigin,
    pub idp: Idp,
    pub slow: Origin,
}

impl Backends {
    pub async fn start() -> Backends {
        Backends {
            origin: Origin::start("127.0.0.1:0").await.expect("origin"),
            raw: RawOrigin::start().await.expect("raw origin"),
            idp: tokens::idp().await,
            slow: Origin::start("127.0.0.1:0").await.expect("slow origin"),
        }
    }
}

/// The placeholder values every home gets.
pub fn variables(b: &Backends) -> Vec<(&'static str, String)> {
    let (origin, idp) = (&b.origin, &b.idp);
    vec![
        ("origin_port", origin.port().to_string()),
        ("raw_port", b.raw.port().to_string()),
        ("slow_port", b.slow.port().to_string()),
        ("closed_port", support::closed_port().to_string()),
        ("env_name", "conformance".to_string()),
        ("idp_port", idp.port.to_string()),
        ("hs_secret", HS_SECRET.to_string()),
        ("client_key", support::idp::private_key(support::idp::ASSERTING_CLIENT.1)),
        ("wrong_client_key", support::idp::private_key("ed25519")),
    ]
}

pub fn node(b: &Backends) -> Node {
    let path = support::temp_path("conformance.toml");
    std::fs::copy(CONFIG, &path).expect("copy config");
    Node::start_with(path, &variables(b), &[])
}

/// A component in the test host, in front of the same origin.
pub struct Edge {
    pub addr: std::net::SocketAddr,
    /// The host's first line (`component`: `compiled` or `cached`).
    pub said: serde_json::Value,
    child: std::process::Child,
    log: support::edge::Lines,
}

impl Edge {
    /// The component's access-log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        support::json_lines(&self.log)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the test host on the conformance build of `flavour` (`p2`/`p3`),
/// with extra host flags.
pub fn edge(flavour: &str, b: &Backends, flags: &[&str]) -> Edge {
    edge_with(flavour, &variables(b), flags)
}

/// Like [`edge`], with the Spin variables given.
pub fn edge_with(flavour: &str, vars: &[(&str, String)], flags: &[&str]) -> Edge {
    edge_on(&support::edge::component(&format!("conformance-{flavour}")), vars, flags)
}

/// `component` in the test host, with the Spin variables given.
pub fn edge_on(component: &std::path::Path, vars: &[(&str, String)], flags: &[&str]) -> Edge {
    let (addr, child, said, log) = support::edge::serve(component, vars, flags);
    Edge { addr, said, child, log }
}

/// The WASI 0.2 conformance build pre-initialised with `vars`, as
/// `edge-deploy/build.sh p2 --var …` makes it.
pub fn preinitialised(vars: &[(&str, String)]) -> std::path::PathBuf {
    let out = support::temp_path("conformance-p2-preinit.wasm");
    let done = support::edge::preinit(&support::edge::component("conformance-p2"), vars, &out);
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success() && said.contains("pre-initialised"), "preinit: {said}");
    out
}

/// Of access-log `lines`, how many compiled the config (`config_us`), and how many in all.
pub fn compiled_config(lines: &[serde_json::Value]) -> (usize, usize) {
    (lines.iter().filter(|l| l["config_us"].is_u64()).count(), lines.len())
}

/// Of the access-log lines for `path`, how many had a limit decided with
/// `outcome`, and how many there were.
pub fn limit_outcomes(lines: &[serde_json::Value], path: &str, outcome: &str) -> (usize, usize) {
    let on_path: Vec<_> = lines.iter().filter(|l| l["path"] == path).collect();
    let with =
        on_path.iter().filter(|l| l["limits"].as_array().is_some_and(|ls| ls.iter().any(|x| x["outcome"] == outcome)));
    (with.count(), on_path.len())
}
