//! The edge home in tests: the component built from this repo, served by
//! the test host (`tests/edge-host`), as Spin would serve it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// A component under `target/edge/`, built by `make components`.
pub fn component(name: &str) -> PathBuf {
    let path = component_path(name);
    assert!(path.exists(), "{} is missing: build the components first (`make components`)", path.display());
    path
}

fn component_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/edge").join(format!("{name}.wasm"))
}

/// Whether the edge homes of `test` can run: the components it needs are
/// built. Without them a plain `cargo test` skips the edge homes with a
/// notice; `make test` sets `PORTCULLIS_REQUIRE_EDGE`, and then a missing
/// component fails loudly.
pub fn ready(test: &str, components: &[&str]) -> bool {
    let missing: Vec<String> =
        components.iter().map(|c| component_path(c)).filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("PORTCULLIS_REQUIRE_EDGE").is_none(),
        "{test}: missing {} (`make components` builds them)",
        missing.join(", ")
    );
    super::notice(&format!(
        "{test}: skipped: the components are not built (`make components`): {}",
        missing.join(", ")
    ));
    false
}

/// The test host binary: `PORTCULLIS_EDGE_HOST`, or the one cargo built
/// next to this test binary (`cargo build -p portcullis-edge-host`).
pub fn host_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_EDGE_HOST") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let path = profile_dir.join("portcullis-edge-host");
    assert!(path.exists(), "{} is missing: `cargo build -p portcullis-edge-host`", path.display());
    path
}

/// What the host printed after its first line: the component's access log.
pub type Lines = Arc<Mutex<Vec<String>>>;

/// Serves `component` on a free loopback port with Spin variables `vars`;
/// also returns what the host said on its first line (its address, flavour
/// and whether the component was compiled or loaded from the cache) and
/// the lines it prints after it. Compiled components are kept in
/// `target/edge-host-cache` unless `extra` names a cache.
pub fn serve(
    component: &Path,
    vars: &[(&str, String)],
    extra: &[&str],
) -> (SocketAddr, Child, serde_json::Value, Lines) {
    let mut cmd = Command::new(host_binary());
    cmd.arg("serve").arg(component).args(["--listen", "127.0.0.1:0"]).args(extra);
    if !extra.iter().any(|flag| *flag == "--cache-dir" || *flag == "--disable-cache") {
        cmd.arg("--cache-dir").arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/edge-host-cache"));
    }
    with_vars(&mut cmd, vars);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn edge host");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    let _ = stdout.read_line(&mut first);
    let first = first.trim_end();
    let json: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|_| panic!("edge host said {first:?}"));
    let addr = json["listening"].as_str().and_then(|a| a.parse().ok()).expect("listening address");
    // Keep reading stdout (the component's access log) so the host never blocks on it.
    (addr, child, json, super::collect_lines(stdout))
}

/// Runs the host's `preinit` on `component` with Spin variables `vars`, writing `out`.
pub fn preinit(component: &Path, vars: &[(&str, String)], out: &Path) -> Output {
    let mut cmd = Command::new(host_binary());
    cmd.arg("preinit").arg(component).arg("--out").arg(out);
    with_vars(&mut cmd, vars);
    cmd.output().expect("run the edge host's preinit")
}

/// Spin variables as the host takes them: `--var name=value` each.
fn with_vars(cmd: &mut Command, vars: &[(&str, String)]) {
    for (k, v) in vars {
        cmd.arg("--var").arg(format!("{k}={v}"));
    }
}
