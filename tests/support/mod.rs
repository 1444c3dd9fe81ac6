//! Shared test support: a real origin, the real `portcullis` binary, and a
//! client that sends exactly the bytes a test means (no path cleaning).
#![allow(dead_code)] // each test crate uses a different part

pub mod delay;
pub mod edge;
pub mod idp;
pub mod origin;
pub mod otlp;
pub mod pki;
pub mod redis;
pub mod spin;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A line on the terminal that the test harness does not capture (a
/// skipped home must be visible in a passing run).
pub fn notice(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "notice: {text}");
}

/// A fresh path under the system temp dir.
pub fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("portcullis-test-{}-{n}-{name}", std::process::id()))
}

/// A `portcullis serve` process; killed when dropped.
pub struct Node {
    pub addr: SocketAddr,
    /// `/metrics` and the admin API (on free loopback ports unless the
    /// test gives its own `--metrics-listen`/`--admin-listen`).
    pub metrics_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub config_path: PathBuf,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts the binary on `config` text with `vars` as `PORTCULLIS_VAR_*`.
    pub fn start(config: &str, vars: &[(&str, String)]) -> Node {
        Self::start_args(config, vars, &[])
    }

    /// Like [`Node::start`], with extra `serve` arguments.
    pub fn start_args(config: &str, vars: &[(&str, String)], args: &[&str]) -> Node {
        Self::start_env(config, vars, args, &[])
    }

    /// Like [`Node::start_args`], with extra environment variables.
    pub fn start_env(config: &str, vars: &[(&str, String)], args: &[&str], env: &[(&str, &str)]) -> Node {
        let config_path = temp_path("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(config_path, vars, args, env)
    }

    pub fn start_with(config_path: PathBuf, vars: &[(&str, String)], extra_args: &[&str]) -> Node {
        Self::spawn(config_path, vars, extra_args, &[])
    }

    /// Like [`Node::start_args`], with the process's open-file limit set to `fds`.
    pub fn start_with_fd_limit(config: &str, args: &[&str], fds: u32) -> Node {
        let config_path = temp_path("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(config_path, &[], args, &[("PORTCULLIS_TEST_FDS", &fds.to_string())])
    }

    fn spawn(config_path: PathBuf, vars: &[(&str, String)], extra_args: &[&str], env: &[(&str, &str)]) -> Node {
        let bin = env!("CARGO_BIN_EXE_portcullis");
        let mut cmd = if env.iter().any(|(k, _)| *k == "PORTCULLIS_TEST_FDS") {
            let mut sh = Command::new("sh");
            sh.args(["-c", r#"ulimit -n "$PORTCULLIS_TEST_FDS" && exec "$0" "$@""#, bin]);
            sh
        } else {
            Command::new(bin)
        };
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(
                [OsStr::new("--config"), config_path.as_os_str()]
                    .iter()
                    .filter(|_| !extra_args.contains(&"--config-from")),
            )
            .args(["--workers", "2"].iter().filter(|_| !extra_args.contains(&"--workers")))
            .args(extra_args)
            .args(
                ["--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
                    .chunks(2)
                    .filter(|flag| !extra_args.contains(&flag[0]))
                    .flatten(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(format!("PORTCULLIS_VAR_{}", k.to_ascii_uppercase()), v);
        }
        let mut child = cmd.spawn().expect("spawn portcullis");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let found = stderr.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "listening").then(|| v["fields"]["addr"].as_str()?.parse().ok())?
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("portcullis exited with {status}: {:?}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "portcullis did not start: {:?}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        let bound = |what: &str| {
            stderr.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == what).then(|| v["fields"]["addr"].as_str()?.parse().ok())?
            })
        };
        let (metrics_addr, admin_addr) = (bound("metrics listening"), bound("admin listening"));
        Node { addr, metrics_addr, admin_addr, config_path, child, stdout, stderr }
    }

    /// The address a listener of the config (by name) was given.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.stderr.lock().unwrap().iter().rev().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "listening" && v["fields"]["listener"] == name)
                    .then(|| v["fields"]["addr"].as_str()?.parse().ok())?
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no listener {name}: {:?}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Access-log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        json_lines(&self.stdout)
    }

    /// Waits until an access-log line satisfies `pred`.
    pub fn wait_for_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.access_log().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "no such access-log line in {:?}", self.access_log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until an operational (stderr) log line contains `text`.
    pub fn wait_for_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.stderr.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no stderr line with {text:?} in {:?}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// The lines that parse as JSON, parsed.
pub fn json_lines(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    lines.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn collect_lines(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A response with its body read.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// Why the body broke off, if it did (a reset connection, say).
    pub body_error: Option<String>,
}

impl Reply {
    /// The body as JSON, or why it is not.
    pub fn try_json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as JSON; `null` if it is not (so a check reports it rather than aborting).
    pub fn json(&self) -> serde_json::Value {
        self.try_json().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header the origin echoed back as having received.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        let json = self.json();
        json["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter(|h| h[0].as_str() == Some(name))
                    .filter_map(|h| h[1].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends one request over a new HTTP/1.1 connection from `source` (any
/// 127.0.0.0/8 address), path exactly as given.
pub async fn send_from(addr: SocketAddr, source: IpAddr, req: Request<Bytes>) -> Reply {
    try_send_from(addr, source, req).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`send_from`], but a failed exchange is an error, not a panic.
pub async fn try_send_from(addr: SocketAddr, source: IpAddr, req: Request<Bytes>) -> Result<Reply, String> {
    exchange(addr, source, req.map(Full::new)).await
}

/// Like [`try_send_from`], but the body goes chunked (no Content-Length), in 500-byte pieces.
pub async fn try_send_chunked_from(addr: SocketAddr, source: IpAddr, req: Request<Bytes>) -> Result<Reply, String> {
    exchange(addr, source, req.map(Chunked)).await
}

/// A TCP connection from `source` (any 127.0.0.0/8 address).
pub async fn connect_from(addr: SocketAddr, source: IpAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
    socket.connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))
}

/// One exchange. A response whose body breaks off keeps what arrived and
/// says so in `body_error`.
async fn exchange<B>(addr: SocketAddr, source: IpAddr, req: Request<B>) -> Result<Reply, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_from(addr, source).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let resp: Response<hyper::body::Incoming> =
        sender.send_request(req).await.map_err(|e| format!("no response: {e}"))?;
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body: Bytes::from(bytes), body_error })
}

/// A body of unknown length, so hyper sends it chunked.
pub struct Chunked(Bytes);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let n = self.0.len().min(500);
        let piece = self.0.split_to(n);
        std::task::Poll::Ready((n > 0).then(|| Ok(hyper::body::Frame::data(piece))))
    }
}

pub async fn send(addr: SocketAddr, req: Request<Bytes>) -> Reply {
    send_from(addr, IpAddr::from([127, 0, 0, 1]), req).await
}

/// A GET with a Host header.
pub fn get(path: &str) -> Request<Bytes> {
    Request::get(path).header("host", "gw.test").body(Bytes::new()).expect("request")
}

/// A GET with a Host header and one more header.
pub fn get_with(path: &str, name: &str, value: &str) -> Request<Bytes> {
    Request::get(path).header("host", "gw.test").header(name, value).body(Bytes::new()).expect("request")
}

/// Writes raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A free loopback port for a server started later, below Linux's
/// ephemeral range (32768+): a port the system hands out for `:0` may be
/// taken by another test's outgoing connection before the server binds it.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (std::process::id().wrapping_mul(7919).wrapping_add(n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port nothing listens on, ever: 1 (tcpmux, below 1024 and served by
/// nothing on a test machine). A port the system handed out for `:0` and
/// let go can be handed out again to a server another test starts (seen:
/// an "unreachable" origin answered by one).
pub fn closed_port() -> u16 {
    1
}

/// A config with one service, `api` (the rest of its table given), behind a
/// catch-all route.
/// Lower-case hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    portcullis::shared::hex::hex(&sha2::Sha256::digest(bytes))
}

pub fn api_config(service: &str) -> String {
    format!("[services.api]\n{service}\n\n[[routes]]\npath = \"/{{*rest}}\"\nservice = \"api\"\n")
}
