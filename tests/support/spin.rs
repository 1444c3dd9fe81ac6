//! The edge home as users run it: the component under the real Spin CLI
//! (`spin up`), named by `PORTCULLIS_SPIN`. Each app gets its own directory,
//! so its default (SQLite) key-value store starts empty; with a runtime
//! config the store is Redis instead.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Spin CLI the real-Spin homes use, if `PORTCULLIS_SPIN` names one.
pub fn binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("PORTCULLIS_SPIN")?);
    assert!(path.is_file(), "PORTCULLIS_SPIN={} is not a file", path.display());
    Some(path)
}

/// A `spin up` process serving one component; stopped when dropped.
pub struct SpinApp {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// `spin up` runs the app in a child process (`spin trigger http`), which a
/// SIGKILL of `spin up` would leave running: the whole process group gets
/// SIGTERM (Spin stops its trigger), then SIGKILL if anything lingers.
impl Drop for SpinApp {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill").args([sig, "--", &group]).stderr(Stdio::null()).status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves `component` with Spin variables `vars`, allowed to call any
/// loopback port; `store_url`: a Redis URL for the default key-value store
/// (Spin's own SQLite store otherwise).
pub fn up(spin: &Path, component: &Path, vars: &[(&str, String)], store_url: Option<&str>) -> SpinApp {
    up_env(spin, component, vars, store_url, &[])
}

/// Like [`up`], with environment variables for Spin (`OTEL_*`, say).
pub fn up_env(
    spin: &Path,
    component: &Path,
    vars: &[(&str, String)],
    store_url: Option<&str>,
    env: &[(&str, String)],
) -> SpinApp {
    let dir = super::temp_path("spin-app");
    std::fs::create_dir_all(&dir).expect("app dir");
    let declared: String = vars.iter().map(|(k, _)| format!("{k} = {{ required = true }}\n")).collect();
    let passed: String = vars.iter().map(|(k, _)| format!("{k} = \"{{{{ {k} }}}}\"\n")).collect();
    let manifest = format!(
        r#"spin_manifest_version = 2

[application]
name = "portcullis-test"
version = "0.1.0"

[variables]
{declared}
[[trigger.http]]
route = "/..."
component = "portcullis"

[component.portcullis]
source = "{source}"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
key_value_stores = ["default"]

[component.portcullis.variables]
{passed}"#,
        source = component.display(),
    );
    std::fs::write(dir.join("spin.toml"), manifest).expect("write spin.toml");
    let mut args: Vec<String> = Vec::new();
    if let Some(url) = store_url {
        let config = dir.join("runtime-config.toml");
        std::fs::write(&config, format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"))
            .expect("write runtime config");
        args.extend(["--runtime-config-file".to_string(), config.display().to_string()]);
    }
    for (k, v) in vars {
        args.extend(["--variable".to_string(), format!("{k}={v}")]);
    }
    launch(spin, &dir.join("spin.toml"), dir, &args, env)
}

/// Serves a manifest as it is (one of those the repository ships), its
/// state (key-value store, logs) in a fresh directory.
pub fn up_manifest(spin: &Path, manifest: &Path) -> SpinApp {
    let dir = super::temp_path("spin-state");
    std::fs::create_dir_all(&dir).expect("state dir");
    launch(spin, manifest, dir, &[], &[])
}

impl SpinApp {
    /// What the component wrote on stdout so far (Spin keeps it in the
    /// state directory's logs).
    pub fn component_stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join(".spin/logs/portcullis_stdout.txt")).unwrap_or_default()
    }
}

/// Starts `spin up` on a free port; if another process took the port
/// between its choice and Spin's bind (tests run side by side), on another.
fn launch(spin: &Path, manifest: &Path, dir: PathBuf, args: &[String], env: &[(&str, String)]) -> SpinApp {
    let mut tries = 0;
    loop {
        tries += 1;
        match try_launch(spin, manifest, &dir, args, env) {
            Ok(app) => return app,
            Err(lines) if tries < 5 && lines.iter().any(|l| l.contains("is already in use")) => continue,
            Err(lines) => panic!("spin up failed: {lines:?}"),
        }
    }
}

fn try_launch(
    spin: &Path,
    manifest: &Path,
    dir: &Path,
    args: &[String],
    env: &[(&str, String)],
) -> Result<SpinApp, Vec<String>> {
    let port = super::free_port();
    let mut child = Command::new(spin)
        .process_group(0)
        .current_dir(dir)
        .arg("up")
        .arg("--from")
        .arg(manifest)
        .arg("--state-dir")
        .arg(dir.join(".spin"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("SPIN_DISABLE_TELEMETRY", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spin up");
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    drain(child.stdout.take(), &output);
    drain(child.stderr.take(), &output);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            // The pipes close with the process: its last words are in by now.
            std::thread::sleep(Duration::from_millis(100));
            let mut lines = output.lock().unwrap().clone();
            lines.push(format!("(exited with {status})"));
            return Err(lines);
        }
        assert!(Instant::now() < deadline, "spin up did not listen: {:?}", output.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(SpinApp { addr, child, dir: dir.to_path_buf() })
}

/// Keeps reading a pipe (the component's log and Spin's), so Spin never
/// blocks on it; the last lines stay for a failure report.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>, into: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let Some(pipe) = pipe else { return };
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut lines = into.lock().unwrap();
            if lines.len() >= 50 {
                lines.remove(0);
            }
            lines.push(line);
        }
    });
}
