//! Certificates ordered from a real ACME server on loopback: Debian's
//! `pebble`, with `pebble-challtestsrv` as its DNS (every name is
//! 127.0.0.1), validating the node's own HTTP-01 answers and TLS-ALPN-01
//! handshakes. Issuance, a restart served from the state folder, renewal
//! at two thirds of the lifetime, and a failed renewal that keeps the
//! certificate being served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::support::origin::Origin;
use super::support::pki::{Ca, Client, write};
use super::support::{self, Node, free_port, get, send};

/// pebble and its DNS, killed when dropped.
struct Pebble {
    directory: String,
    /// pebble's own TLS (the directory), for the node to trust.
    ca_file: PathBuf,
    /// The root the certificates it issues chain to.
    root: CertificateDer<'static>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`;
    /// issues certificates valid for `validity`.
    async fn start(http_port: u16, tls_port: u16, validity: Duration) -> Pebble {
        let dir = support::temp_path("pebble");
        let ca = Ca::new("pebble's own CA");
        let pair = ca.server(&["localhost"], Duration::from_secs(3600));
        let (cert, key) = (write(&dir, "pebble.pem", &pair.cert), write(&dir, "pebble.key", &pair.key));
        let ca_file = write(&dir, "pebble-ca.pem", &ca.pem());
        let (listen, manage, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{manage}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        let config_file = write(&dir, "pebble.json", &config.to_string());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port()), "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble)");
        let pebble = Command::new("pebble")
            .args(["-config"])
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (Debian package pebble)");
        let mut started = Pebble {
            directory: format!("https://localhost:{listen}/dir"),
            ca_file,
            root: CertificateDer::from(Vec::new()),
            dir,
            children: vec![dns_server, pebble],
        };
        // The root it issues under, from its management interface.
        let client = Client::trusting(&ca);
        let manage = SocketAddr::from(([127, 0, 0, 1], manage));
        let deadline = Instant::now() + Duration::from_secs(20);
        let root = loop {
            match client.get(manage, "localhost", "localhost", "/roots/0").await {
                Ok(a) if a.status == 200 => break a.body,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("pebble did not start: {:?}", other.map(|a| a.status)),
            }
        };
        started.root = CertificateDer::from_pem_slice(&root).expect("pebble's root");
        started
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node with a plaintext listener on `http_port` and a TLS one named
/// `tls` on `tls_port` ordering `app.test` by `challenge`.
fn config(pebble: &Pebble, origin: &Origin, state: &std::path::Path, ports: (u16, u16), challenge: &str) -> String {
    format!(
        r#"[services.echo]
url = "http://127.0.0.1:{origin}"

[[routes]]
path = "/{{*rest}}"
service = "echo"

[acme]
directory = "{directory}"
contact = ["mailto:ops@app.test"]
state = "{state}"
directory_ca = "{ca}"
challenge = "{challenge}"

[[listeners]]
name = "web"
address = "127.0.0.1:{http}"

[[listeners]]
name = "tls"
address = "127.0.0.1:{tls}"
[listeners.tls]
acme = ["app.test"]
"#,
        origin = origin.port(),
        directory = pebble.directory,
        state = state.display(),
        ca = pebble.ca_file.display(),
        http = ports.0,
        tls = ports.1,
    )
}

/// The leaf the `tls` listener serves for `app.test`, verified against
/// pebble's root, once there is one (waits up to `within`); the request
/// through it must be answered by the origin.
async fn served(client: &Client, tls_port: u16, within: Duration) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let deadline = Instant::now() + within;
    loop {
        match client.get(addr, "app.test", "app.test", "/hello").await {
            Ok(answer) => {
                assert_eq!(answer.status, 200, "served through the ordered certificate");
                return answer.peer.expect("a certificate").to_vec();
            }
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("no certificate for app.test within {within:?}: {e}"),
        }
    }
}

fn trusting(root: &CertificateDer<'static>) -> Client {
    let mut client = Client::trusting(&Ca::new("unused"));
    client.roots = vec![root.clone()];
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_orders_a_certificate_and_a_restart_serves_it_from_the_state_folder() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1, Duration::from_secs(3600)).await;
    let state = support::temp_path("acme-state");
    let config = config(&pebble, &origin, &state, ports, "http-01");
    let client = trusting(&pebble.root);

    let node = Node::start(&config, &[]);
    let first = served(&client, ports.1, Duration::from_secs(60)).await;
    node.wait_for_stderr("certificate issued by the ACME directory");
    // The directory asked the plaintext listener for its token, not the pipeline.
    assert!(
        !node.access_log().iter().any(|l| l["path"].as_str().is_some_and(|p| p.contains("acme-challenge"))),
        "the HTTP-01 answer is the node's own"
    );
    let metrics = send(node.metrics_addr.unwrap(), get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l.starts_with("portcullis_tls_certificate_expiry") && l.contains("name=\"app.test\"")),
        "its expiry is a metric: {text}"
    );
    let kept = std::fs::read_to_string(state.join("app.test.pem")).expect("the certificate is kept");
    assert!(kept.contains("BEGIN CERTIFICATE") && kept.contains("PRIVATE KEY"));
    let account = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("account-"));
    assert_eq!(account.count(), 1, "the account is kept");
    drop(node);

    // A restart serves the kept certificate at once, ordering nothing.
    let node = Node::start(&config, &[]);
    let again = served(&client, ports.1, Duration::from_secs(5)).await;
    assert_eq!(first, again, "the same certificate");
    node.wait_for_stderr("certificate read from the ACME state folder");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!node.stderr().iter().any(|l| l.contains("issued by the ACME directory")), "nothing was ordered");
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_renews_at_two_thirds_and_a_failed_renewal_keeps_the_certificate() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let ports = (free_port(), free_port());
    let validity = Duration::from_secs(15);
    let mut pebble = Pebble::start(ports.0, ports.1, validity).await;
    let state = support::temp_path("acme-state");
    let config = config(&pebble, &origin, &state, ports, "tls-alpn-01");
    let client = trusting(&pebble.root);

    let node = Node::start(&config, &[]);
    let first = served(&client, ports.1, Duration::from_secs(60)).await;
    node.wait_for_stderr("TLS-ALPN-01 validation handshake");
    // Renewed two thirds into its 15 s: a new certificate by 10 s and a bit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now = served(&client, ports.1, Duration::from_secs(5)).await;
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "the certificate was not renewed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // The directory goes away: the next renewal fails, and the certificate
    // being served stays (still valid for a third of its life).
    pebble.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.stderr().iter().any(|l| l.contains("ordering a certificate failed")) {
        assert!(Instant::now() < deadline, "no failed renewal: {:?}", node.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = served(&client, ports.1, Duration::from_secs(2)).await;
    assert_eq!(after, second, "the renewed certificate is still served");
    let metrics = send(node.metrics_addr.unwrap(), get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let orders = |result: &str| -> u64 {
        let series = format!("portcullis_acme_orders_total{{name=\"app.test\",result=\"{result}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)?.trim().parse().ok()).unwrap_or(0)
    };
    assert!(orders("issued") >= 2 && orders("failed") >= 1, "orders are counted: {text}");
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_ca_that_does_not_load_is_named_at_start_and_by_check() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let dir = support::temp_path("acme-bad");
    let not_pem = write(&dir, "ca.pem", "not a certificate\n");
    let text = format!(
        "[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\nstate = \"{}\"\ndirectory_ca = \"{}\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\nacme = [\"app.test\"]\n",
        origin.port(),
        dir.join("state").display(),
        not_pem.display()
    );
    let path = write(&dir, "gateway.toml", &text);
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let check = Command::new(bin).arg("check").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("acme.directory_ca") && said.contains("no PEM certificate"), "{said}");
    assert!(!dir.join("state").exists(), "check makes no state folder");
    let serve = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--admin-listen", "off", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(2), "{said}");
    assert!(said.contains("gateway.toml:7") && said.contains("acme.directory_ca"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_orders_once_and_every_node_serves_and_answers() {
    let redis = super::support::redis::Redis::start();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    // The directory validates HTTP-01 on node A's plaintext port only.
    let (a_ports, b_ports) = ((free_port(), free_port()), (free_port(), free_port()));
    let pebble = Pebble::start(a_ports.0, a_ports.1, Duration::from_secs(3600)).await;
    let (a_state, b_state) = (support::temp_path("acme-a"), support::temp_path("acme-b"));
    let store = ["--store", &redis.url()];
    let a = Node::start_args(&config(&pebble, &origin, &a_state, a_ports, "http-01"), &[], &store);
    let b = Node::start_args(&config(&pebble, &origin, &b_state, b_ports, "http-01"), &[], &store);
    let client = trusting(&pebble.root);
    let from_a = served(&client, a_ports.1, Duration::from_secs(60)).await;
    let from_b = served(&client, b_ports.1, Duration::from_secs(30)).await;
    assert_eq!(from_a, from_b, "one certificate for the fleet");
    let said = |node: &Node, what: &str| node.stderr().iter().filter(|l| l.contains(what)).count();
    let issued = said(&a, "issued by the ACME directory") + said(&b, "issued by the ACME directory");
    let taken = said(&a, "certificate taken from the store") + said(&b, "certificate taken from the store");
    assert_eq!((issued, taken), (1, 1), "one node ordered, the other took it");
    // Any node answers a token another put in the store.
    let store = portcullis::native::redis_kv::RedisKv::new(&redis.url(), 1, Duration::from_secs(1)).unwrap();
    let key = format!("pc1:acme-http01:{}", super::support::hex_sha256(b"another-nodes-token"));
    portcullis::ports::KvStore::set(&store, &key, b"another-nodes-token.thumbprint", None).await.unwrap();
    let answer =
        send(SocketAddr::from(([127, 0, 0, 1], a_ports.0)), get("/.well-known/acme-challenge/another-nodes-token"))
            .await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"another-nodes-token.thumbprint"[..]));
    let unknown = send(SocketAddr::from(([127, 0, 0, 1], a_ports.0)), get("/.well-known/acme-challenge/nobody")).await;
    assert_eq!(unknown.json()["path"], "/.well-known/acme-challenge/nobody", "an unknown token goes on to the routes");
    for state in [a_state, b_state] {
        let _ = std::fs::remove_dir_all(state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_order_the_fleet_waits_out_the_backoff() {
    let redis = super::support::redis::Redis::start();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let dir = support::temp_path("acme-down");
    let ca = write(&dir, "ca.pem", &Ca::new("a directory's CA").pem());
    // A directory nobody answers at: every order fails.
    let config = |state: &str| {
        format!(
            "[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[acme]\ndirectory = \"https://127.0.0.1:{}/dir\"\nstate = \"{}\"\ndirectory_ca = \"{}\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\nacme = [\"app.test\"]\n",
            origin.port(),
            free_port(),
            dir.join(state).display(),
            ca.display()
        )
    };
    let store = ["--store", &redis.url()];
    let a = Node::start_args(&config("a"), &[], &store);
    let b = Node::start_args(&config("b"), &[], &store);
    let failed = || {
        [&a, &b]
            .iter()
            .map(|n| n.stderr().iter().filter(|l| l.contains("ordering a certificate failed")).count())
            .sum::<usize>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed() == 0 {
        assert!(Instant::now() < deadline, "no order failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the fleet's look at the store (5 s): nobody else tries.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(failed(), 1, "one node tried; the claim held the other off for the backoff");
    let _ = std::fs::remove_dir_all(&dir);
}
