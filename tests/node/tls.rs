//! TLS listeners: certificates by SNI, ALPN, versions, resumption, what the
//! origin and the log learn, HSTS, redirects and misdirected hosts,
//! certificates that change on disk, bad files, expiry in metrics and
//! readiness. Real rustls clients against a real listener on loopback,
//! with certificates the tests make.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::support::origin::Origin;
use super::support::pki::{Ca, Client, Pair, write};
use super::support::{self, Node, get, send};

/// A folder of PEM files for one test.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        Files(support::temp_path("tls"))
    }

    fn put(&self, name: &str, text: &str) -> String {
        write(&self.0, name, text).display().to_string()
    }

    fn pair(&self, name: &str, pair: &Pair) -> (String, String) {
        (self.put(&format!("{name}.pem"), &pair.cert), self.put(&format!("{name}.key"), &pair.key))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn echo(origin: &Origin) -> String {
    format!(
        "[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[[routes]]\nname = \"echo\"\npath = \"/echo/{{*rest}}\"\nservice = \"echo\"\nstrip_prefix = \"/echo\"\n",
        origin.port()
    )
}

/// A config with one TLS listener named `tls` on `certs` (cert, key) and `extra` TOML in its table.
fn tls_config(origin: &Origin, certs: &[(String, String)], extra: &str) -> String {
    let certs: Vec<String> = certs.iter().map(|(c, k)| format!("{{ cert = \"{c}\", key = \"{k}\" }}")).collect();
    format!(
        "{}\n[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{}]\n{extra}\n",
        echo(origin),
        certs.join(", ")
    )
}

fn leaf_of(answer: &support::pki::Answer) -> Vec<u8> {
    answer.peer.as_ref().map(|c| c.to_vec()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_and_the_protocol_by_alpn() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let default = ca.server(&["default.test"], Duration::from_secs(86_400));
    let wild = ca.server(&["*.wild.test"], Duration::from_secs(86_400));
    let exact = ca.server(&["exact.test", "also.test"], Duration::from_secs(86_400));
    let certs = [files.pair("default", &default), files.pair("wild", &wild), files.pair("exact", &exact)];
    let config = format!(
        "{}\n[[listeners]]\nname = \"strict\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\nunknown_sni = \"refuse\"\n",
        tls_config(&origin, &certs, ""),
        certs[2].0,
        certs[2].1
    );
    let node = Node::start(&config, &[]);
    let (addr, strict) = (node.listener("tls"), node.listener("strict"));
    let client = Client::trusting(&ca);
    for (sni, want) in [
        ("exact.test", &exact),
        ("also.test", &exact),
        ("a.wild.test", &wild),
        ("EXACT.test", &exact),
        ("other.test", &default),
        ("default.test", &default),
    ] {
        // A client checks the name: the default certificate would fail it, so do not check there.
        let answer = match want.serial == default.serial && sni != "default.test" {
            true => insecure_get(addr, sni).await,
            false => client.get(addr, sni, sni, "/echo/sni").await,
        };
        let answer = answer.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(answer.status, 200, "{sni}");
        assert_eq!(leaf_of(&answer), want.der.to_vec(), "{sni}: the certificate chosen");
    }
    // `*.wild.test` names one label: not the bare domain, not two labels.
    for sni in ["wild.test", "a.b.wild.test"] {
        assert_eq!(leaf_of(&insecure_get(addr, sni).await.unwrap()), default.der.to_vec(), "{sni}");
    }
    // An unknown name on the strict listener fails the handshake.
    let refused = insecure_get(strict, "other.test").await;
    assert!(refused.is_err(), "unknown SNI on a strict listener");
    assert_eq!(client.get(strict, "exact.test", "exact.test", "/echo/x").await.unwrap().status, 200);
    // ALPN: h2 when offered, HTTP/1.1 otherwise.
    let h2 = Client { alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()], ..Client::trusting(&ca) };
    let answer = h2.get(addr, "exact.test", "exact.test", "/echo/h2").await.unwrap();
    assert!(answer.h2 && answer.status == 200, "h2 chosen");
    let answer = client.get(addr, "exact.test", "exact.test", "/echo/h1").await.unwrap();
    assert!(!answer.h2 && answer.status == 200, "http/1.1");
}

/// A client that does not check the server's name or chain (to see which
/// certificate a listener picks for a name no certificate has).
async fn insecure_get(addr: std::net::SocketAddr, sni: &str) -> Result<support::pki::Answer, String> {
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let stream = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
    Ok(support::pki::Answer {
        status: 200,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
        peer,
        h2: false,
        resumed: false,
        version: None,
    })
}

/// A TLS 1.1 ClientHello gets a protocol_version alert, never a ServerHello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_and_older_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let cert = files.pair("a", &ca.server(&["a.test"], Duration::from_secs(86_400)));
    let node = Node::start(&tls_config(&origin, &[cert], ""), &[]);
    for version in [[3u8, 2u8], [3, 1], [3, 0]] {
        // ClientHello: the version, 32 random bytes, no session, one suite
        // (TLS_RSA_WITH_AES_128_CBC_SHA), no compression, no extensions.
        let mut hello = vec![1, 0, 0, 0, version[0], version[1]];
        hello.extend_from_slice(&[7u8; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x00, 0x2f, 1, 0]);
        let len = hello.len() - 4;
        hello[1..4].copy_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        let mut record = vec![0x16, version[0], version[1], (hello.len() >> 8) as u8, hello.len() as u8];
        record.extend_from_slice(&hello);
        let mut stream = tokio::net::TcpStream::connect(node.listener("tls")).await.unwrap();
        stream.write_all(&record).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(answer.len() >= 7, "{version:?}: {answer:?}");
        assert_eq!(answer[0], 0x15, "{version:?}: an alert record, not a handshake: {answer:?}");
        assert_eq!(answer[5], 2, "{version:?}: fatal: {answer:?}");
        // handshake_failure or protocol_version: nothing it offered is spoken.
        assert!(matches!(answer[6], 40 | 70), "{version:?}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_by_ticket_and_by_cache() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let cert = files.pair("a", &ca.server(&["a.test"], Duration::from_secs(86_400)));
    let node = Node::start(&tls_config(&origin, &[cert], ""), &[]);
    let addr = node.listener("tls");
    for tls12_only in [false, true] {
        let sessions = Some(rustls::client::ClientSessionMemoryCache::new(16).into());
        let client = Client { tls12_only, sessions, ..Client::trusting(&ca) };
        let first = client.get(addr, "a.test", "a.test", "/echo/1").await.unwrap();
        assert!(!first.resumed, "tls12_only {tls12_only}: the first handshake is full");
        let second = client.get(addr, "a.test", "a.test", "/echo/2").await.unwrap();
        assert!(second.resumed, "tls12_only {tls12_only}: the second resumes");
        let want = if tls12_only { rustls::ProtocolVersion::TLSv1_2 } else { rustls::ProtocolVersion::TLSv1_3 };
        assert_eq!(second.version, Some(want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_and_the_log_see_https_and_answers_carry_hsts() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let cert = files.pair("a", &ca.server(&["a.test"], Duration::from_secs(86_400)));
    let hsts = "hsts = \"max-age=31536000; includeSubDomains\"";
    let node = Node::start(&tls_config(&origin, &[cert], hsts), &[]);
    let client = Client::trusting(&ca);
    let answer = client.get(node.listener("tls"), "a.test", "a.test", "/echo/fwd").await.unwrap();
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    let header = |name: &str| {
        seen["headers"].as_array().unwrap().iter().find(|h| h[0] == name).map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(header("forwarded").as_deref(), Some("for=127.0.0.1;host=\"a.test\";proto=https"));
    assert_eq!(answer.headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
    let problem = client.get(node.listener("tls"), "a.test", "a.test", "/nowhere").await.unwrap();
    assert_eq!(problem.status, 404);
    assert!(problem.headers.contains_key("strict-transport-security"), "problem answers carry it too");
    let plain = send(node.addr, get("/echo/plain")).await;
    assert!(plain.headers.get("strict-transport-security").is_none(), "never over plaintext");
    let log = wait_for_log(&node, |l| l["path"] == "/echo/fwd");
    assert_eq!(log["listener"], "tls");
    assert_eq!(log["tls"]["version"], "1.3");
    assert_eq!(log["tls"]["sni"], "a.test");
    assert!(wait_for_log(&node, |l| l["path"] == "/echo/plain")["tls"].is_null());
}

fn wait_for_log(node: &Node, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = node.access_log().into_iter().find(|l| pick(l)) {
            return line;
        }
        assert!(Instant::now() < deadline, "no such access-log line: {:?}", node.access_log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_listener_redirects_and_a_listener_answers_only_its_hosts() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        "{}\n[[listeners]]\nname = \"redirect\"\naddress = \"127.0.0.1:0\"\nredirect_to_https = true\nhttps_port = 8443\n\n[[listeners]]\nname = \"api\"\naddress = \"127.0.0.1:0\"\nhosts = [\"api.test\", \"*.api.test\"]\n",
        echo(&origin)
    );
    let node = Node::start(&config, &[]);
    let req = |host: &str, path: &str| http::Request::get(path).header("host", host).body(bytes::Bytes::new()).unwrap();
    let moved = send(node.listener("redirect"), req("www.test", "/echo/a?b=1")).await;
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("https://www.test:8443/echo/a?b=1"));
    let api = node.listener("api");
    assert_eq!(send(api, req("api.test", "/echo/ok")).await.status, 200);
    assert_eq!(send(api, req("eu.api.test:80", "/echo/ok")).await.status, 200);
    let other = send(api, req("www.test", "/echo/no")).await;
    assert_eq!(other.status, 421);
    assert_eq!(other.json()["type"], "urn:portcullis:problem:misdirected-request");
    assert_eq!(send(node.addr, req("www.test", "/echo/any")).await.status, 200, "--listen serves every host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_whose_files_change_are_served_without_a_failed_request() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let old = ca.server(&["a.test"], Duration::from_secs(86_400));
    let cert = files.pair("a", &old);
    let node = Node::start(&tls_config(&origin, &[cert], ""), &[]);
    let addr = node.listener("tls");
    let client = Arc::new(Client::trusting(&ca));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, running) = (client.clone(), running.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while running.load(std::sync::atomic::Ordering::SeqCst) {
                    match client.get(addr, "a.test", "a.test", "/echo/load").await {
                        Ok(a) if a.status == 200 => ok += 1,
                        Ok(a) => failed.push(format!("status {}", a.status)),
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = ca.server(&["a.test"], Duration::from_secs(172_800));
    files.pair("a", &new);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.get(addr, "a.test", "a.test", "/echo/new").await.unwrap();
        if leaf_of(&answer) == new.der.to_vec() {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut served = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests during the change: {failed:?}");
        served += ok;
    }
    assert!(served > 20, "{served} requests under load");
    assert!(node.stderr().iter().any(|l| l.contains("certificates loaded again")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_is_named_and_the_running_one_stays() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let good = ca.server(&["a.test"], Duration::from_secs(86_400));
    let (cert, key) = files.pair("a", &good);
    let config = tls_config(&origin, &[(cert.clone(), key.clone())], "");
    // At start: a key that is not the certificate's stops the node, naming file, line and key.
    let other = ca.server(&["b.test"], Duration::from_secs(86_400));
    let wrong_key = files.put("wrong.key", &other.key);
    let bad = tls_config(&origin, &[(cert.clone(), wrong_key.clone())], "");
    let bad_path = support::temp_path("bad.toml");
    std::fs::write(&bad_path, &bad).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--admin-listen", "off", "--config"])
        .arg(&bad_path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("listeners[0].tls.certificates[0].key") && said.contains("wrong.key"), "{said}");
    assert!(said.contains("is not the key of"), "{said}");
    let check =
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis")).arg("check").arg(&bad_path).output().unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "`portcullis check` reads the files too: {said}");
    assert!(said.contains("listeners[0].tls.certificates[0].key") && said.contains("is not the key of"), "{said}");
    // Running: a reload with a file that does not exist is rejected; the certificate stays.
    let node = Node::start(&config, &[]);
    let client = Client::trusting(&ca);
    let missing = files.path().join("missing.pem").display().to_string();
    std::fs::write(&node.config_path, tls_config(&origin, &[(missing.clone(), key.clone())], "")).unwrap();
    node.signal("HUP");
    let line = node.wait_for_stderr("listeners[0].tls.certificates[0].cert");
    assert!(line.contains("missing.pem"), "{line}");
    node.wait_for_stderr("config rejected");
    let answer = client.get(node.listener("tls"), "a.test", "a.test", "/echo/still").await.unwrap();
    assert_eq!((answer.status, leaf_of(&answer)), (200, good.der.to_vec()));
    // A half-written change on disk (a key file that is not a key) is reported and not taken.
    files.put("a.key", "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n");
    node.wait_for_stderr("changed certificate files rejected");
    let answer = client.get(node.listener("tls"), "a.test", "a.test", "/echo/still").await.unwrap();
    assert_eq!(leaf_of(&answer), good.der.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_a_metric_and_a_certificate_about_to_expire_fails_readiness() {
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let soon = ca.server(&["soon.test"], Duration::from_secs(3600));
    let config = tls_config(&origin, &[files.pair("soon", &soon)], "expiry_margin = \"2h\"");
    let node = Node::start(&config, &[]);
    let ready = send(node.admin_addr.unwrap(), get("/readyz")).await;
    assert_eq!(ready.status, 503, "{:?}", ready.try_json());
    let body = ready.json();
    assert_eq!(body["checks"]["certificates"], false);
    assert_eq!(body["expiring_certificates"][0]["names"][0], "soon.test");
    let metrics = send(node.metrics_addr.unwrap(), get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let line = text
        .lines()
        .find(|l| l.starts_with("portcullis_tls_certificate_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("listener=\"tls\"") && line.contains("name=\"soon.test\""), "{line}");
    let expiry: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((expiry - now - 3600).abs() < 120, "expires in an hour: {expiry} against {now}");
    // A certificate for longer makes it ready.
    files.pair("soon", &ca.server(&["soon.test"], Duration::from_secs(86_400)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(node.admin_addr.unwrap(), get("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "still not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A listener that requires client certificates verifies them against its
/// CA and CRL; the `mtls` provider maps a verified one to a consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_mapped_to_consumers() {
    use rcgen::SanType;
    let uri = |u: &str| SanType::URI(rcgen::string::Ia5String::try_from(u).unwrap());
    let (origin, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Files::new());
    let (server_ca, client_ca, other_ca) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("other CA"));
    let server = files.pair("server", &server_ca.server(&["a.test"], Duration::from_secs(86_400)));
    let good = client_ca.client("svc-a", vec![uri("spiffe://corp.test/svc-a")]);
    let unmapped = client_ca.client("stranger", vec![]);
    let revoked = client_ca.client("svc-b", vec![uri("spiffe://corp.test/svc-b")]);
    let expired = client_ca.expired_client("svc-a");
    let foreign = other_ca.client("svc-a", vec![uri("spiffe://corp.test/svc-a")]);
    let ca = files.put("clients.pem", &client_ca.pem());
    let crl = files.put("clients.crl", &client_ca.crl(&[&revoked]));
    let listener = |name: &str, mode: &str| {
        format!(
            "[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = {{ ca = \"{ca}\", mode = \"{mode}\", crls = [\"{crl}\"] }}\n",
            server.0, server.1
        )
    };
    let config = format!(
        "{}\n[[routes]]\nname = \"secure\"\npath = \"/secure/{{*rest}}\"\nservice = \"echo\"\nauth = {{ any_of = [\"certs\"], groups = [\"internal\"] }}\n\n[auth.mtls.certs]\nforward = {{ \"x-client-id\" = \"id\", \"x-client-spiffe\" = \"spiffe_id\" }}\nconsumers = [\n  {{ id = \"svc-a\", spiffe_id = \"spiffe://corp.test/svc-a\", groups = [\"internal\"] }},\n  {{ id = \"svc-b\", spiffe_id = \"spiffe://corp.test/svc-b\", groups = [\"internal\"] }},\n]\n\n{}\n{}",
        echo(&origin),
        listener("required", "require"),
        listener("optional", "request")
    );
    let node = Node::start(&config, &[]);
    let (required, optional) = (node.listener("required"), node.listener("optional"));
    let as_client = |pair: Option<&Pair>| Client { identity: pair.cloned(), ..Client::trusting(&server_ca) };
    // A verified, mapped certificate: the consumer, its headers, the log.
    let answer = as_client(Some(&good)).get(required, "a.test", "a.test", "/secure/x").await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
    let seen = answer.json();
    let header = |name: &str| seen["headers"].as_array().unwrap().iter().find(|h| h[0] == name).map(|h| h[1].clone());
    assert_eq!(header("x-client-id"), Some("svc-a".into()));
    assert_eq!(header("x-client-spiffe"), Some("spiffe://corp.test/svc-a".into()));
    let log = wait_for_log(&node, |l| l["path"] == "/secure/x");
    assert_eq!(log["identity"], "certs:svc-a");
    assert_eq!(log["tls"]["client"]["uris"][0], "spiffe://corp.test/svc-a");
    // Verified but named by no consumer: 401.
    let answer = as_client(Some(&unmapped)).get(required, "a.test", "a.test", "/secure/x").await.unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["type"], "urn:portcullis:problem:unauthorized");
    // Refused at the handshake (TLS 1.3 clients learn it at their first read).
    for (what, pair) in [
        ("no certificate", None),
        ("revoked", Some(&revoked)),
        ("expired", Some(&expired)),
        ("another CA", Some(&foreign)),
    ] {
        let refused = as_client(pair).get(required, "a.test", "a.test", "/echo/x").await;
        assert!(refused.is_err(), "{what}: {:?}", refused.map(|a| a.status));
    }
    // Requested, not required: a client without one is served, but not on a route that needs one.
    assert_eq!(as_client(None).get(optional, "a.test", "a.test", "/echo/x").await.unwrap().status, 200);
    assert_eq!(as_client(None).get(optional, "a.test", "a.test", "/secure/x").await.unwrap().status, 401);
    assert_eq!(as_client(Some(&good)).get(optional, "a.test", "a.test", "/secure/x").await.unwrap().status, 200);
    assert!(
        as_client(Some(&revoked)).get(optional, "a.test", "a.test", "/echo/x").await.is_err(),
        "a revoked one is refused"
    );
    // Over plaintext there is no certificate: 401.
    assert_eq!(send(node.addr, get("/secure/x")).await.status, 401);
}

/// Behind an L4 load balancer: a listener that opts in takes the client's
/// address from the PROXY protocol header (v1 or v2), before TLS too; a
/// connection without one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_gives_the_clients_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, ca, files) = (Origin::start("127.0.0.1:0").await.unwrap(), Ca::new("test CA"), Files::new());
    let cert = files.pair("a", &ca.server(&["a.test"], Duration::from_secs(86_400)));
    let config = format!(
        "{}\n[[listeners]]\nname = \"lb\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\n[[listeners]]\nname = \"lb-tls\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        echo(&origin),
        cert.0,
        cert.1
    );
    let node = Node::start(&config, &[]);
    let lb = node.listener("lb");
    let request = b"GET /echo/pp HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n";
    let forwarded_for = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {text}"));
        json["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-forwarded-for").map(|h| h[1].clone())
    };
    let v2 = |command: u8, family: u8, addresses: &[u8]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x20 | command, family, 0, addresses.len() as u8]);
        h.extend_from_slice(addresses);
        h
    };
    let ipv4 = [203, 0, 113, 9, 127, 0, 0, 1, 0x15, 0xb3, 0x01, 0xbb];
    let mut ipv6 = [0u8; 36];
    ipv6[..16].copy_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    for (what, header, want) in [
        ("v1 TCP4", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n".to_vec(), "203.0.113.9"),
        ("v1 TCP6", b"PROXY TCP6 2001:db8::7 ::1 5555 443\r\n".to_vec(), "2001:db8::7"),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("v2 IPv4", v2(1, 0x11, &ipv4), "203.0.113.9"),
        ("v2 IPv6", v2(1, 0x21, &ipv6), "2001:db8::7"),
        ("v2 LOCAL", v2(0, 0x00, &[]), "127.0.0.1"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(lb).await.unwrap();
        stream.write_all(&[&header[..], request].concat()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert_eq!(forwarded_for(&answer), Some(want.into()), "{what}");
    }
    for (what, bytes) in [("no header", &request[..]), ("a broken header", b"PROXY TCP4 not-an-address\r\n")] {
        let mut stream = tokio::net::TcpStream::connect(lb).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(answer.is_empty(), "{what}: closed without an answer: {:?}", String::from_utf8_lossy(&answer));
    }
    // Before TLS: the header, then the handshake.
    let mut tcp = tokio::net::TcpStream::connect(node.listener("lb-tls")).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 443\r\n").await.unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert_eq!(forwarded_for(&answer), Some("198.51.100.4".into()), "{}", String::from_utf8_lossy(&answer));
}
