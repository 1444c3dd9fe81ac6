//! What only the node does: process life (start-up errors, reload, drain),
//! its access log, h2c, streaming, and hyper's backstop limits. Behaviour
//! shared with the edge lives in the conformance suite.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test: processes, files and clocks

#[path = "node/acme.rs"]
mod acme;
#[path = "node/cache.rs"]
mod cache;
#[path = "node/fast_path.rs"]
mod fast_path;
#[path = "node/grpc.rs"]
mod grpc;
#[path = "node/h2_abuse.rs"]
mod h2_abuse;
#[path = "node/introspection.rs"]
mod introspection;
#[path = "node/observability.rs"]
mod observability;
#[path = "node/origin_h1.rs"]
mod origin_h1;
#[path = "node/origin_tls.rs"]
mod origin_tls;
#[path = "node/smoothing.rs"]
mod smoothing;
#[path = "node/smuggling.rs"]
mod smuggling;
mod support;
#[path = "node/tls.rs"]
mod tls;
#[path = "node/websocket.rs"]
mod websocket;

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::origin::Origin;
use support::{Node, connect_from, get, raw, send, try_send_chunked_from, try_send_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn config(origin: &Origin) -> String {
    format!(
        r#"
[services.echo]
url = "http://127.0.0.1:{port}"
request_timeout = "5s"

[[routes]]
name = "echo"
path = "/echo/{{*rest}}"
service = "echo"
strip_prefix = "/echo"
"#,
        port = origin.port()
    )
}

#[tokio::test]
async fn access_log_has_one_complete_line_per_request_without_query() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);
    let req = Request::post("/echo/things?token=secret123")
        .header("host", "gw.test")
        .header("x-request-id", "log-me-1")
        .body(Bytes::from_static(b"0123456789"))
        .unwrap();
    let reply = send(node.addr, req).await;
    assert_eq!(reply.status, 200);
    let line = node.wait_for_log(|l| l["request_id"] == "log-me-1");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["host"], "gw.test");
    assert_eq!(line["path"], "/echo/things");
    assert_eq!(line["route"], "echo");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 10);
    assert_eq!(line["bytes_out"], reply.body.len() as u64);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["upstream"].as_str().unwrap().starts_with("echo http://127.0.0.1:"));
    assert!(line["upstream_latency_us"].as_u64().is_some());
    assert!(line["total_latency_us"].as_u64().unwrap() >= line["upstream_latency_us"].as_u64().unwrap());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
    let all = node.access_log();
    assert!(!format!("{all:?}").contains("secret123"), "query strings are never logged");

    let reply = send(node.addr, get("/nowhere")).await;
    assert_eq!(reply.status, 404);
    let line = node.wait_for_log(|l| l["status"] == 404);
    assert_eq!(line["route"], serde_json::Value::Null);
    assert_eq!(line["error"], "no route matches this request");
}

#[tokio::test]
async fn bad_config_at_start_is_reported_with_line_and_key() {
    let path = support::temp_path("bad.toml");
    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nservice = \"missing\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":3:11: routes[0].service: no service named `missing`"), "{stderr}");
}

#[tokio::test]
async fn check_command_reports_every_error_and_exits_nonzero() {
    let path = support::temp_path("check.toml");
    std::fs::write(
        &path,
        "[services.a]\nurl = \"nope\"\n[[routes]]\npath = \"/x\"\nservice = \"a\"\nrewrite = \"/{y}\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check"])
        .arg(&path)
        .args(["--spin-manifest", concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2:7: services.a.url:"), "{stderr}");

    let shipped = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "routes/gateway.toml"])
        .output()
        .unwrap();
    assert!(shipped.status.success(), "{}", String::from_utf8_lossy(&shipped.stderr));

    // Checked for the edge (a Spin manifest): an mtls provider can never
    // authenticate there; listeners and gRPC are the node's alone.
    std::fs::write(
        &path,
        "[services.a]\nurl = \"http://127.0.0.1:3000\"\nhttp2 = true\n[[routes]]\npath = \"/x\"\nservice = \"a\"\n\n[auth.mtls.certs]\nconsumers = [{ id = \"a\", common_name = \"a\" }]\n\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n",
    )
    .unwrap();
    let edge = |manifest: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("check").arg(&path).current_dir(std::env::temp_dir());
        if let Some(m) = manifest {
            cmd.args(["--spin-manifest", m]);
        }
        cmd.output().unwrap()
    };
    let out = edge(Some(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth.mtls.certs: the edge never sees a client certificate"), "{stderr}");
    assert!(stderr.contains("warning: listeners: the edge has no listeners"), "{stderr}");
    assert!(stderr.contains("warning: services.a.http2:") && stderr.contains("UNIMPLEMENTED"), "{stderr}");
    let node_only = edge(None);
    assert!(
        node_only.status.success(),
        "for the node alone it is fine: {}",
        String::from_utf8_lossy(&node_only.stderr)
    );
}

#[tokio::test]
async fn sighup_reload_keeps_the_running_config_when_the_new_one_is_bad() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);
    assert_eq!(send(node.addr, get("/echo/a")).await.status, 200);

    std::fs::write(&node.config_path, format!("{}\n[[routes]]\npath = \"/b\"\nservice = \"nope\"\n", config(&origin)))
        .unwrap();
    node.signal("HUP");
    let err = node.wait_for_stderr("no service named");
    assert!(err.contains("\"line\":14") && err.contains("routes[1].service"), "{err}");
    node.wait_for_stderr("config rejected");
    assert_eq!(send(node.addr, get("/echo/a")).await.status, 200, "old config still serves");

    std::fs::write(&node.config_path, format!("{}\n[[routes]]\npath = \"/b\"\nservice = \"echo\"\n", config(&origin)))
        .unwrap();
    node.signal("HUP");
    node.wait_for_stderr("config reloaded");
    let reply = send(node.addr, get("/b")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/b");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let mut node = Node::start(&config(&origin), &[]);
    let addr = node.addr;
    let slow = tokio::spawn(async move { send(addr, get("/echo/delay/1500")).await });
    // Wait until the origin has the request, so it is surely in flight.
    while origin.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.signal("TERM");
    node.wait_for_stderr("draining");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed while draining");
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completed");
    assert_eq!(node.wait(Duration::from_secs(10)), Some(0));
    assert!(node.access_log().iter().any(|l| l["path"] == "/echo/delay/1500"), "its log line was flushed");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let uri = format!("http://gw.test:{}/echo/h2", node.addr.port());
    let req = Request::get(uri).body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/h2");
    assert_eq!(echo["version"], "HTTP/1.1", "the origin is spoken to over HTTP/1.1");
    let fwd_host = echo["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-forwarded-host").unwrap()[1].clone();
    assert_eq!(fwd_host, format!("gw.test:{}", node.addr.port()));

    // RFC 9113 §8.3.1: a Host header must agree with :authority.
    let uri = format!("http://gw.test:{}/echo/h2", node.addr.port());
    let req = Request::get(uri).header("host", "evil.test").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "urn:portcullis:problem:ambiguous-host");
}

/// An HTTP/2 request with neither `:authority` nor `Host` names no host: 400,
/// as its HTTP/1.1 counterpart without `Host`. (Written as raw frames: a
/// client library fills `:authority` in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_without_authority_or_host_is_refused() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);
    // The answer's body: a problem, or the origin's echo.
    let body_of = |block: &[u8]| {
        let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::{Read, Write};
        let mut out = H2_PREFACE.to_vec();
        out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
        let len = block.len();
        // HEADERS, END_STREAM | END_HEADERS, stream 1.
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 5, 0, 0, 0, 1]);
        out.extend_from_slice(block);
        stream.write_all(&out).unwrap();
        let mut body = Vec::new();
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).unwrap();
            // DATA on stream 1, until END_STREAM.
            if head[3] == 0 && head[8] == 1 {
                body.extend_from_slice(&payload);
                if head[4] & 1 == 1 {
                    return String::from_utf8_lossy(&body).into_owned();
                }
            }
        }
    };
    // :method GET, :scheme http, :path /echo/h2 — and nothing else.
    let bare = [&[0x82, 0x86, 0x04, 8][..], b"/echo/h2"].concat();
    let refused = body_of(&bare);
    assert!(refused.contains("urn:portcullis:problem:ambiguous-host"), "no :authority, no Host: {refused}");
    // The same with `host: gw.test` (a literal, name from the static table).
    let with_host = [&bare[..], &[0x0f, 0x17, 7], b"gw.test"].concat();
    let served = body_of(&with_host);
    assert!(served.contains(r#""path":"/h2""#), "Host stands in for :authority: {served}");
}

/// The protocol is told from the first bytes; a client whose first bytes
/// come in pieces is served in the protocol it speaks: an HTTP/2 preface
/// split after 10 bytes, and an HTTP/1.1 head whose first byte is also the
/// preface's.
#[tokio::test]
async fn a_protocol_sent_in_pieces_is_told_apart() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);

    // HTTP/2: hyper's client writes to one end of a pipe; the other end goes
    // to the node with a pause after the preface's first 10 bytes.
    let (client_end, mut relay_end) = tokio::io::duplex(64 << 10);
    let mut tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let relay = tokio::spawn(async move {
        let mut first = [0u8; 10];
        relay_end.read_exact(&mut first).await.unwrap();
        tcp.write_all(&first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::io::copy_bidirectional(&mut relay_end, &mut tcp).await;
    });
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_end)).await.unwrap();
    tokio::spawn(conn);
    let uri = format!("http://gw.test:{}/echo/split", node.addr.port());
    let resp = sender.send_request(Request::get(uri).body(http_body_util::Empty::<Bytes>::new()).unwrap()).await;
    let resp = resp.expect("served over HTTP/2");
    assert_eq!((resp.status(), resp.version()), (http::StatusCode::OK, http::Version::HTTP_2));
    drop(sender);
    relay.abort();

    // HTTP/1.1 starting with "P", the rest a moment later.
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"OST /echo/split HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await.unwrap().unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("\"method\":\"POST\""), "{}", String::from_utf8_lossy(&reply));
}

/// A response body fed by the test through a channel, chunk by chunk.
struct Fed(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// An origin that answers its one request with a body the test feeds.
async fn fed_origin() -> (u16, mpsc::Sender<Bytes>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let body = std::sync::Mutex::new(Some(Fed(rx)));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_req| {
            let fed = body.lock().unwrap().take().expect("one request");
            async move { Ok::<_, Infallible>(http::Response::new(fed)) }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    });
    (port, tx)
}

#[tokio::test]
async fn responses_stream_through_without_buffering() {
    let (port, feed) = fed_origin().await;
    let cfg =
        format!("[services.fed]\nurl = \"http://127.0.0.1:{port}\"\n[[routes]]\npath = \"/fed\"\nservice = \"fed\"\n");
    // One worker: one pool (each worker keeps its own).
    let node = Node::start_args(&cfg, &[], &["--workers", "1"]);
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(get("/fed").map(http_body_util::Full::new)).await.unwrap();
    let mut body = resp.into_body();
    feed.send(Bytes::from_static(b"first")).await.unwrap();
    // The origin has not finished (it waits for us), yet the first chunk arrives:
    // the gateway forwards as it reads.
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk forwarded")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    feed.send(Bytes::from_static(b"second")).await.unwrap();
    drop(feed);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

#[tokio::test]
async fn hyper_backstop_limits_and_garbage_never_take_the_node_down() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(&origin), &[]);
    // Far beyond the configured header limit: hyper itself answers 431.
    let huge = format!("GET /echo/x HTTP/1.1\r\nhost: gw.test\r\nx-big: {}\r\n\r\n", "a".repeat(100 << 10));
    let answer = raw(node.addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Garbage gets 400 from hyper, and the node keeps serving.
    let answer = raw(node.addr, b"\x16\x03\x01garbage\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(
        node.addr,
        b"GET /echo/x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A client that disconnects mid-response leaves nothing broken.
    let _ = raw(node.addr, b"GET /echo/bytes/5000000 HTTP/1.1\r\nhost: a\r\n\r\n", Duration::from_millis(1)).await;
    assert_eq!(send(node.addr, get("/echo/ok")).await.status, 200);
}

/// A TLS origin on loopback whose certificate (for `localhost`) is signed by
/// a test CA; returns its port and the CA in PEM.
async fn tls_origin() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from_static(b"over tls"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_are_verified_against_the_trusted_roots() {
    let (port, ca) = tls_origin().await;
    let ca_file = support::temp_path("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let cfg =
        format!("[services.tls]\nurl = \"https://localhost:{port}\"\n[[routes]]\npath = \"/tls\"\nservice = \"tls\"\n");
    let trusting = Node::start_env(&cfg, &[], &[], &[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    let reply = send(trusting.addr, get("/tls")).await;
    assert_eq!((reply.status, &reply.body[..]), (200, &b"over tls"[..]));

    // Without the test CA among its roots the node refuses the origin's certificate.
    let empty = support::temp_path("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let strict = Node::start_env(&cfg, &[], &[], &[("SSL_CERT_FILE", empty.to_str().unwrap())]);
    let reply = send(strict.addr, get("/tls")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["type"], "urn:portcullis:problem:upstream-unavailable");
}

// Connection bounds: deadlines, counts, idle pools.

/// Opens a connection from `source`, writes `bytes`, reads whatever comes
/// and returns how long the node took to close it, or `None` if it was
/// still open after `within`.
async fn closed_after(node: &Node, source: IpAddr, bytes: &[u8], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut stream = connect_from(node.addr, source).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink)).await.ok().map(|_| start.elapsed())
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test]
async fn connections_without_a_complete_request_are_closed_at_their_deadline() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start_args(&config(&origin), &[], &["--first-request-timeout", "1s"]);
    let settings = [H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
    let cases: [(&str, &[u8]); 6] = [
        ("silent", b""),
        ("one byte", b"G"),
        ("part of the HTTP/2 preface", &H2_PREFACE[..10]),
        ("the h2c preface", H2_PREFACE),
        ("the h2c preface and SETTINGS", &settings),
        ("half an HTTP/1.1 head", b"GET /echo/x HTTP/1.1\r\nhost: gw.test\r\n"),
    ];
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let waits = futures::future::join_all(
        cases.iter().map(|(_, bytes)| closed_after(&node, localhost, bytes, Duration::from_secs(8))),
    )
    .await;
    for ((what, _), waited) in cases.iter().zip(waits) {
        let waited = waited.unwrap_or_else(|| panic!("{what}: still open after 8 s"));
        assert!(waited >= Duration::from_millis(900), "{what}: closed too early, after {waited:?}");
        assert!(waited < Duration::from_secs(3), "{what}: closed after {waited:?}");
    }
    assert_eq!(send(node.addr, get("/echo/ok")).await.status, 200, "the node serves on");
}

#[tokio::test]
async fn zero_workers_is_refused_at_start() {
    let path = support::temp_path("workers.toml");
    std::fs::write(&path, "").unwrap();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "0", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node that started anyway would serve until killed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = serve.kill();
    let out = serve.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "it started");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers must be at least 1"));
}

/// `--workers 3`: each worker accepts on a socket of its own (SO_REUSEPORT)
/// and the kernel spreads new connections over them; every connection is
/// answered, and `/metrics` says how many each worker took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_each_take_a_share_of_new_connections() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start_args(&config(&origin), &[], &["--workers", "3"]);
    // A connection a request: 3 workers all missed by 60 draws: < 1e-9.
    for _ in 0..60 {
        assert_eq!(send(node.addr, get("/echo/spread")).await.status, 200);
    }
    let metrics = send(node.metrics_addr.expect("metrics listener"), get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let accepted: Vec<u64> = (0..3)
        .map(|w| {
            let series = format!("portcullis_connections_accepted_total{{worker=\"{w}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse().ok()).unwrap_or(0)
        })
        .collect();
    assert!(accepted.iter().all(|&n| n > 0), "a worker took no connection: {accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), 60, "{accepted:?}");
    assert!(!text.contains("worker=\"3\""), "only three workers");
}

#[tokio::test]
async fn kept_alive_connections_close_when_idle_but_not_while_busy() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let args = ["--first-request-timeout", "1s", "--idle-timeout", "1s"];
    let node = Node::start_args(&config(&origin), &[], &args);

    // HTTP/1.1: a request slower than both deadlines is served whole; then
    // the idle connection is closed.
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let http1 = tokio::spawn(conn);
    let resp = sender.send_request(get("/echo/delay/2500").map(http_body_util::Full::new)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), http1).await.expect("HTTP/1.1: idle connection not closed").ok();
    assert!(idle.elapsed() >= Duration::from_millis(900), "closed before its idle timeout");

    // HTTP/2 the same, with GOAWAY.
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let h2 = tokio::spawn(conn);
    let uri = format!("http://gw.test:{}/echo/delay/2500", node.addr.port());
    let resp = sender.send_request(Request::get(uri).body(http_body_util::Empty::<Bytes>::new()).unwrap()).await;
    assert_eq!(resp.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(4), h2).await.expect("HTTP/2: idle connection not closed").ok();
}

/// Lifts this process's open-file limit to its hard limit; returns it.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    #[allow(unsafe_code)]
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Opens up to `n` connections from `source` and keeps those the node did
/// not close at once (each gets a moment to be refused).
async fn hold_silent(node: &Node, source: IpAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let connects = futures::stream::iter(0..n).map(|_| async move {
        let mut stream =
            tokio::time::timeout(Duration::from_secs(2), connect_from(node.addr, source)).await.ok()?.ok()?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
            Err(_) => Some(stream), // still open
            Ok(_) => None,          // refused
        }
    });
    connects.buffer_unordered(256).filter_map(|s| async { s }).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_silent_connections_cannot_stop_a_node_serving_others() {
    let hostile = usize::try_from(raise_fd_limit().saturating_sub(200)).unwrap_or(usize::MAX).min(5000);
    if hostile < 5000 {
        support::notice(&format!("the open-file limit allows {hostile} hostile connections, not 5000"));
    }
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    // 256 descriptors: 96 connections in all, 16 per client IP.
    let node = Node::start_with_fd_limit(&config(&origin), &["--first-request-timeout", "30s"], 256);
    let held = hold_silent(&node, IpAddr::from([127, 0, 0, 1]), hostile).await;
    assert_eq!(held.len(), 16, "one IP holds its share of connections, no more");
    for i in 0..20 {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            try_send_from(node.addr, IpAddr::from([127, 0, 0, 2]), get(&format!("/echo/{i}"))),
        )
        .await;
        assert!(matches!(reply, Ok(Ok(ref r)) if r.status == 200), "request {i} from another client failed");
    }
    let stderr = node.stderr().join("\n");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    drop(held);
}

/// Silent sockets from many addresses (each under the per-IP share) fill
/// the node ten times over; a new client is still served within a second:
/// the node closes the oldest connections that sent nothing to take new
/// ones, and says so at most once a second. With one worker (every task on
/// one thread) as with two (each accepting on its own socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_many_addresses_cannot_keep_a_new_client_waiting() {
    for workers in ["1", "2"] {
        silent_connections_cannot_keep_a_new_client_waiting(workers).await;
    }
}

async fn silent_connections_cannot_keep_a_new_client_waiting(workers: &str) {
    raise_fd_limit();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    // 256 descriptors: 96 connections in all, 16 per client IP.
    let node = Node::start_with_fd_limit(&config(&origin), &["--workers", workers], 256);
    let started = Instant::now();
    let silent: Vec<tokio::net::TcpStream> = futures::stream::iter(0..960u32)
        .map(|i| connect_from(node.addr, IpAddr::from([127, 0, 1, (i % 100) as u8 + 10])))
        .buffer_unordered(64)
        .filter_map(|s| async { s.ok() })
        .collect()
        .await;
    assert!(silent.len() >= 900, "{} of 960 silent connections made", silent.len());
    for i in 0..5 {
        let asked = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            try_send_from(node.addr, IpAddr::from([127, 0, 0, 2]), get(&format!("/echo/{i}"))),
        )
        .await;
        let status = reply.as_ref().map(|r| r.as_ref().map(|r| r.status));
        assert!(matches!(status, Ok(Ok(200))), "{workers} workers, request {i}: {status:?}");
        let waited = asked.elapsed();
        assert!(waited < Duration::from_secs(1), "{workers} workers: request {i} waited {waited:?}");
    }
    let elapsed = started.elapsed().as_secs() + 1;
    let said = node.stderr();
    let pressure = said.iter().filter(|l| l.contains("connection pressure")).count() as u64;
    assert!(pressure >= 1, "the pressure is logged: {said:?}");
    assert!(pressure <= elapsed, "{pressure} pressure lines in {elapsed} s");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_are_logged_at_most_once_a_second() {
    raise_fd_limit();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    // Connection bounds above what the descriptors allow: accept runs out of them.
    let args = ["--max-connections", "1000", "--max-connections-per-ip", "1000", "--first-request-timeout", "60s"];
    let node = Node::start_with_fd_limit(&config(&origin), &args, 128);
    let held = hold_silent(&node, IpAddr::from([127, 0, 0, 1]), 300).await;
    node.wait_for_stderr("Too many open files");
    let before = node.stderr().iter().filter(|l| l.contains("accept failed")).count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged = node.stderr().iter().filter(|l| l.contains("accept failed")).count() - before;
    assert!(logged <= 4, "{logged} accept-failure lines in 3 s");
    drop(held);
    let reply = tokio::time::timeout(Duration::from_secs(5), send(node.addr, get("/echo/after"))).await;
    assert_eq!(reply.expect("served once descriptors are free").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_origins_are_capped_and_expire() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let args = ["--upstream-max-idle", "4", "--upstream-idle-timeout", "1s"];
    let node = Node::start_args(&config(&origin), &[], &args);
    let replies =
        futures::future::join_all((0..40).map(|i| send(node.addr, get(&format!("/echo/delay/300?{i}"))))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Four a worker, and the node has two (the tests' default).
    let open = origin.open_connections();
    assert!(open <= 8, "{open} idle connections to the origin");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(origin.open_connections(), 0, "idle connections outlived their timeout");
}

/// A response still streaming holds its connection to the origin: another
/// request meanwhile gets a connection of its own, and once the stream is
/// done both connections serve later requests.
#[tokio::test]
async fn a_connection_streaming_a_response_is_not_lent_to_another_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (feed, fed) = mpsc::channel::<Bytes>(1);
    let fed = std::sync::Arc::new(std::sync::Mutex::new(Some(Fed(fed))));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let fed = fed.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = match req.uri().path() {
                    "/slow" => http_body_util::Either::Left(fed.lock().unwrap().take().expect("one slow request")),
                    _ => http_body_util::Either::Right(http_body_util::Full::new(Bytes::from_static(b"quick"))),
                };
                async move { Ok::<_, Infallible>(http::Response::new(body)) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    let cfg =
        format!("[services.o]\nurl = \"http://127.0.0.1:{port}\"\n[[routes]]\npath = \"/{{*p}}\"\nservice = \"o\"\n");
    let node = Node::start(&cfg, &[]);
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let slow = sender.send_request(get("/slow").map(http_body_util::Full::new)).await.unwrap();
    let quick = tokio::time::timeout(Duration::from_secs(5), send(node.addr, get("/quick"))).await;
    assert_eq!(quick.expect("answered while the slow one streams").body, "quick");
    feed.send(Bytes::from_static(b"at last")).await.unwrap();
    drop(feed);
    assert_eq!(slow.into_body().collect().await.unwrap().to_bytes(), "at last");
    for _ in 0..10 {
        assert_eq!(send(node.addr, get("/quick")).await.body, "quick");
    }
    // Both kept and reused; a third at most, when a request comes before
    // either has read its last response to the end (not yet ready).
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&opened), "{opened} connections: both kept and reused");
}

/// An origin that closes each connection right after its response without
/// saying so (no `Connection: close`), as an origin whose keep-alive timeout
/// is shorter than the node's does: the node keeps the connection, finds it
/// closed when the next request comes, and sends that request on a new one.
#[tokio::test]
async fn kept_connections_the_origin_closed_are_replaced_not_failed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if support::origin::read_head(&mut stream).await.is_some() {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    let cfg = format!(
        "[services.brief]\nurl = \"http://127.0.0.1:{port}\"\n[[routes]]\npath = \"/x\"\nservice = \"brief\"\n"
    );
    let node = Node::start(&cfg, &[]);
    for i in 0..100 {
        let reply = send(node.addr, get("/x")).await;
        assert_eq!((reply.status, &reply.body[..]), (200, &b"ok"[..]), "request {i}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 100, "one connection per request");
}

/// Active health checks: a target that fails its first probe is out before
/// the node listens (no request ever tries it), and comes back once it
/// answers its probes; both changes are in the operational log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_keep_a_dead_target_out_from_the_start_and_restore_it() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let late_port = support::free_port();
    let config = support::api_config(&format!(
        r#"targets = [{{ url = "http://127.0.0.1:{}/a" }}, {{ url = "http://127.0.0.1:{late_port}/b" }}]
[services.api.retry]
attempts = 1
[services.api.health.probe]
path = "/healthz"
interval = "200ms"
timeout = "150ms"
healthy = 1
unhealthy = 2"#,
        origin.port()
    ));
    let node = Node::start(&config, &[]);
    for i in 0..20 {
        let reply = send(node.addr, get(&format!("/x/{i}"))).await;
        assert_eq!(reply.status, 200, "request {i}: the dead target is never tried");
    }
    assert!(node.wait_for_stderr("upstream target down (active health)").contains(&format!(":{late_port}")));
    let late = Origin::start(&format!("127.0.0.1:{late_port}")).await.unwrap();
    let started = Instant::now();
    loop {
        send(node.addr, get("/x/again")).await;
        if late.received().iter().any(|r| r.uri == "/b/x/again") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the target never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(late.received().iter().any(|r| r.uri == "/b/healthz"), "probed at its path");
    node.wait_for_stderr("upstream target up (active health)");
}

/// A flapping target (every other answer 503) under concurrent load: retries
/// and passive health keep what clients see far below the target's own
/// error rate (about half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_target_under_load_is_contained() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = support::api_config(&format!(
        r#"targets = [{{ url = "http://127.0.0.1:{port}/ok" }}, {{ url = "http://127.0.0.1:{port}/flap" }}]
[services.api.health]
failures = 3
eject_for = "1s""#,
        port = origin.port()
    ));
    let node = Node::start(&config, &[]);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let addr = node.addr;
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for i in 0..50 {
                if send(addr, get(&format!("/w{worker}/{i}"))).await.status != 200 {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut client_failures = 0;
    for t in tasks {
        client_failures += t.await.unwrap();
    }
    let flap: Vec<_> = origin.received().into_iter().filter(|r| r.uri.starts_with("/flap/")).collect();
    // Every other answer of the target fails, so passive health may take it
    // out early (three failures in a row, as concurrent requests complete):
    // containment either way.
    assert!(flap.len() >= 3, "the flapping target was tried {} times", flap.len());
    let client_rate = f64::from(client_failures) / 400.0;
    support::notice(&format!(
        "flapping target: {} tries at ~50% errors; clients saw {client_failures} errors of 400 ({:.1}%)",
        flap.len(),
        client_rate * 100.0
    ));
    assert!(client_rate < 0.05, "clients saw {:.1}% errors", client_rate * 100.0);
}

/// In a full outage the retry budget bounds what reaches the service:
/// at most 20 % more than the clients sent, plus 3 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_holds_in_a_full_outage() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = support::api_config(&format!(
        r#"targets = [{{ url = "http://127.0.0.1:{port}/status/503" }}, {{ url = "http://127.0.0.1:{port}/status/503/b" }}]
[services.api.retry]
attempts = 5
backoff = "1ms"
max_backoff = "2ms"
[services.api.health]
failures = 0"#,
        port = origin.port()
    ));
    let node = Node::start(&config, &[]);
    let started = Instant::now();
    let clients = 400;
    for i in 0..clients {
        assert_eq!(send(node.addr, get(&format!("/r/{i}"))).await.status, 503);
    }
    let seconds = started.elapsed().as_secs_f64();
    let reached = origin.received().len() as f64;
    let bound = f64::from(clients) * 1.2 + 3.0 * (seconds + 10.0);
    support::notice(&format!(
        "full outage: {clients} client requests, {reached} reached the service (bound {bound:.0})"
    ));
    assert!(reached <= bound, "{reached} requests reached the service for {clients}");
    assert!(reached > f64::from(clients), "some were retried");
}

/// A body without `Content-Length` streams to the first try with a copy
/// kept, so a retry sends it whole to the other target.
#[tokio::test]
async fn a_streamed_body_is_sent_again_to_another_target() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let port = origin.port();
    let config = format!(
        r#"
[services.pair]
targets = [{{ url = "http://127.0.0.1:{port}/status/503" }}, {{ url = "http://127.0.0.1:{port}/ok" }}]
[services.pair.retry]
attempts = 2
max_body = "64KiB"

[[routes]]
path = "/upload"
methods = ["POST"]
service = "pair"
retry_non_idempotent = true
"#
    );
    let node = Node::start(&config, &[]);
    let body = Bytes::from(vec![b'z'; 20_000]);
    for _ in 0..6 {
        let req = Request::post("/upload").header("host", "gw.test").body(body.clone()).unwrap();
        let reply = try_send_chunked_from(node.addr, "127.0.0.1".parse().unwrap(), req).await.unwrap();
        assert_eq!(reply.status, 200, "the retry answered");
        assert_eq!(reply.json()["body_len"], 20_000, "the whole body reached the target that answered");
    }
    let received = origin.received();
    assert!(received.iter().any(|r| r.uri.starts_with("/status/503")), "some went to the failing target first");
    assert!(received.iter().all(|r| r.body_len == 20_000), "every try carried the whole body");
}
