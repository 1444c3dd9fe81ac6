//! TLS to origins: a service's own CA bundle, the name it verifies (and
//! sends as SNI), its client certificate, HTTP/2 by ALPN; files that do not
//! load are named at their key; a client certificate whose files change is
//! shown on new connections. Real TLS origins on loopback.

use std::time::{Duration, Instant};

use super::support::origin::Origin;
use super::support::pki::{Ca, server_config, write};
use super::support::{self, Node, get};

/// The config's files go beside it, in a folder of their own.
fn dir(name: &str) -> std::path::PathBuf {
    support::temp_path(name)
}

fn service(name: &str, port: u16, table: &str) -> String {
    format!(
        "[services.{name}]\nurl = \"https://127.0.0.1:{port}\"\n{table}\n\n[[routes]]\npath = \"/{name}/{{*rest}}\"\nservice = \"{name}\"\nstrip_prefix = \"/{name}\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_ca_name_and_client_certificate_reach_its_origin() {
    let (servers, clients) = (Ca::new("origin CA"), Ca::new("client CA"));
    // Named for a DNS name only: reached by IP, the name must be given.
    let pair = servers.server(&["origin.internal"], Duration::from_secs(3600));
    let open = Origin::start_tls("127.0.0.1:0", server_config(&pair, None)).await.unwrap();
    let strict = Origin::start_tls("127.0.0.1:0", server_config(&pair, Some(&clients))).await.unwrap();
    let files = dir("origin-tls");
    let ca = write(&files, "ca.pem", &servers.pem());
    let me = clients.client("gateway", Vec::new());
    let (cert, key) = (write(&files, "me.pem", &me.cert), write(&files, "me.key", &me.key));
    let (ca, cert, key) = (ca.display(), cert.display(), key.display());
    let named = format!("[services.NAME.tls]\nca = \"{ca}\"\nserver_name = \"origin.internal\"");
    let with = |n: &str| named.replace("NAME", n);
    let config = [
        service("system", open.port(), ""),
        service("unnamed", open.port(), &format!("[services.unnamed.tls]\nca = \"{ca}\"")),
        service("named", open.port(), &with("named")),
        service("h2", open.port(), &format!("http2 = true\n{}", with("h2"))),
        service("anonymous", strict.port(), &with("anonymous")),
        service("mtls", strict.port(), &format!("{}\ncert = \"{cert}\"\nkey = \"{key}\"", with("mtls"))),
    ]
    .concat();
    let node = Node::start(&config, &[]);

    let status = |path: &'static str| {
        let addr = node.addr;
        async move { support::send(addr, get(path)).await.status }
    };
    assert_eq!(status("/system/x").await, 502, "the system's roots do not know the origin's CA");
    assert_eq!(status("/unnamed/x").await, 502, "the certificate does not name 127.0.0.1");
    assert_eq!(status("/named/x").await, 200, "its CA, and the name it has");
    let sni: Vec<_> = open.handshakes().into_iter().filter_map(|h| h.sni).collect();
    assert_eq!(sni, ["origin.internal"], "the name is sent as SNI (an address never is)");

    let reply = support::send(node.addr, get("/h2/x")).await;
    assert_eq!(reply.json()["version"], "HTTP/2.0", "HTTP/2 chosen by ALPN");
    assert!(open.handshakes().iter().any(|h| h.alpn.as_deref() == Some(b"h2")));

    assert_eq!(status("/anonymous/x").await, 502, "the origin wants a client certificate");
    assert_eq!(status("/mtls/x").await, 200);
    let shown: Vec<_> = strict.handshakes().into_iter().filter_map(|h| h.client_cert).collect();
    assert_eq!(shown, [me.der.to_vec()], "the service's certificate, shown to its origin");

    // A renewed client certificate is shown on the next connection.
    let renewed = clients.client("gateway", Vec::new());
    write(&files, "me.key", &renewed.key);
    write(&files, "me.pem", &renewed.cert);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(status("/mtls/x").await, 200);
        if strict.handshakes().iter().any(|h| h.client_cert.as_deref() == Some(&renewed.der[..])) {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was never shown");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn an_origin_file_that_does_not_load_is_named_at_its_key() {
    let files = dir("origin-tls-bad");
    let garbage = write(&files, "garbage.pem", "not a certificate\n");
    let config = format!(
        "[services.s]\nurl = \"https://127.0.0.1:1\"\n[services.s.tls]\nca = \"{}\"\ncert = \"{}/missing.pem\"\nkey = \"{}/missing.key\"\n",
        garbage.display(),
        files.display(),
        files.display()
    );
    let path = write(&files, "gateway.toml", &config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis")).arg("check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":4:6: services.s.tls.ca:") && stderr.contains("no PEM certificate"), "{stderr}");
    assert!(stderr.contains(":5:8: services.s.tls.cert:"), "every file, in one run: {stderr}");
    assert!(stderr.contains(":6:7: services.s.tls.key:"), "{stderr}");
    let _ = std::fs::remove_dir_all(&files);
}
