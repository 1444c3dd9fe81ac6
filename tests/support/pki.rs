//! Certificates the TLS tests make (rcgen): a CA, server and client
//! certificates, CRLs, as PEM; and a TLS client that says what it got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DistinguishedName, DnType,
    IsCa, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    next_serial: std::sync::atomic::AtomicU64,
}

/// A certificate with its key, as PEM, and its DER.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    pub der: CertificateDer<'static>,
    pub serial: u64,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer, next_serial: 1.into() }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", self.issuer.der())
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names`, valid from an hour ago for `valid_for`.
    pub fn server(&self, names: &[&str], valid_for: Duration) -> Pair {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        self.sign(params, valid_for)
    }

    /// A client certificate: `cn` as its subject, and the SANs given.
    pub fn client(&self, cn: &str, sans: Vec<SanType>) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, Duration::from_secs(86_400))
    }

    /// A client certificate that expired an hour ago.
    pub fn expired_client(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now - time::Duration::hours(1);
        self.finish(params)
    }

    fn sign(&self, mut params: CertificateParams, valid_for: Duration) -> Pair {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX));
        self.finish(params)
    }

    fn finish(&self, mut params: CertificateParams) -> Pair {
        let serial = self.next_serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 100;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().clone(), serial }
    }

    /// A CRL revoking `revoked`, PEM.
    pub fn crl(&self, revoked: &[&Pair]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|p| RevokedCertParams {
                    serial_number: SerialNumber::from(p.serial),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("crl").pem().expect("pem")
    }
}

fn pem(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", lines.join("\n"))
}

/// A TLS server's config (an origin's): `pair` as its certificate, ALPN
/// `h2` and `http/1.1`, and a client certificate from `clients` required
/// if given.
#[allow(dead_code)] // not every test binary has TLS origins
pub fn server_config(pair: &Pair, clients: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions();
    let builder = builder.expect("versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("key");
    let mut config = builder.with_single_cert(vec![pair.der.clone()], key).expect("certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join(name);
    // Written whole, then renamed: a watcher never reads half a file.
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, &path).expect("rename");
    path
}

/// How a TLS client connects.
pub struct Client {
    pub roots: Vec<CertificateDer<'static>>,
    pub alpn: Vec<Vec<u8>>,
    pub identity: Option<Pair>,
    /// TLS 1.2 only (else 1.2 and 1.3).
    pub tls12_only: bool,
    /// Kept across connections (resumption).
    pub sessions: Option<Arc<rustls::client::ClientSessionMemoryCache>>,
    /// Made once: rustls resumes a session only under the config (and
    /// verifier) that made it.
    pub made: std::sync::OnceLock<Arc<ClientConfig>>,
}

impl Client {
    pub fn trusting(ca: &Ca) -> Client {
        Client {
            roots: vec![ca.der()],
            alpn: vec![b"http/1.1".to_vec()],
            identity: None,
            tls12_only: false,
            sessions: None,
            made: std::sync::OnceLock::new(),
        }
    }

    fn config(&self) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let mut roots = RootCertStore::empty();
        for r in &self.roots {
            roots.add(r.clone()).expect("root");
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some(pair) => {
                let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("key");
                builder.with_client_auth_cert(vec![pair.der.clone()], key).expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.resumption = match &self.sessions {
            Some(sessions) => rustls::client::Resumption::store(sessions.clone()),
            None => rustls::client::Resumption::disabled(),
        };
        config
    }

    /// One handshake, then `GET path` (host `host`) over what ALPN chose.
    pub async fn get(&self, addr: SocketAddr, sni: &str, host: &str, path: &str) -> Result<Answer, String> {
        let connector = tokio_rustls::TlsConnector::from(self.made.get_or_init(|| Arc::new(self.config())).clone());
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("{sni}: {e}"))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = stream.get_ref();
        let peer = conn.peer_certificates().and_then(|c| c.first()).cloned();
        let h2 = conn.alpn_protocol() == Some(b"h2");
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let version = conn.protocol_version();
        let req = Request::get(format!("https://{host}{path}"))
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = if h2 {
            let (mut sender, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(c);
            let mut req = req;
            req.headers_mut().remove("host");
            sender.send_request(req).await.map_err(|e| format!("request: {e}"))?
        } else {
            let (mut sender, c) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("h1: {e}"))?;
            tokio::spawn(c);
            let mut req = req;
            *req.uri_mut() = path.parse().expect("path");
            sender.send_request(req).await.map_err(|e| format!("request: {e}"))?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body, peer, h2, resumed, version })
    }
}

/// What a TLS request got.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The server's certificate.
    pub peer: Option<CertificateDer<'static>>,
    pub h2: bool,
    pub resumed: bool,
    pub version: Option<rustls::ProtocolVersion>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}
