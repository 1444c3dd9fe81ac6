//! TLS termination for the node's listeners: rustls on aws-lc-rs.
//!
//! - Versions: TLS 1.2 and 1.3 (or 1.3 only); never older. Cipher suites:
//!   aws-lc-rs's defaults, all AEAD with forward secrecy — TLS 1.3
//!   AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2 ECDHE-ECDSA and
//!   ECDHE-RSA with the same three. No CBC, RC4, 3DES, static RSA or
//!   export suites exist in it to be offered.
//! - Certificates by SNI: each certificate's DNS names (its CN where it
//!   has none), exact before `*.` wildcard; the first certificate answers
//!   a client without SNI, and one with an unknown name unless the
//!   listener refuses it (the handshake then fails).
//! - Resumption: tickets whose keys rotate (rustls' rotator, 6 h) and a
//!   session cache, kept across reloads of the listener.
//! - Client certificates (mTLS): verified against the listener's CA and
//!   CRLs; required, or requested.
//!
//! A file that cannot be read, holds no certificate, or a key that does
//! not match its certificate is reported at the config key that names it,
//! and the running configuration stays.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use super::acme;
use crate::config::ConfigError;
use crate::config::listeners::{CertificateFiles, ClientAuth, File, Tls};
use crate::shared::tls::{ClientCert, TlsInfo};

/// What a TLS listener serves with.
pub(crate) struct Serving {
    pub(crate) acceptor: TlsAcceptor,
    /// From files; those ordered by ACME are in `ordered`.
    pub(crate) certificates: Vec<Served>,
    pub(crate) ordered: Option<Ordered>,
    /// `/readyz` fails while a certificate expires within this.
    pub(crate) expiry_margin: Duration,
}

/// A certificate a listener serves.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// The names it is chosen by (its first is its label in metrics).
    pub(crate) names: Vec<String>,
    /// When it became and stops being valid, in seconds since the Unix epoch.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// What resumption keeps across reloads of one listener: the ticket keys
/// (rotated) and the session cache.
pub(crate) struct Resumption {
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cache: Arc<ServerSessionMemoryCache>,
}

impl Resumption {
    pub(crate) fn new(cache_entries: usize) -> Result<Self, rustls::Error> {
        Ok(Self {
            ticketer: Some(rustls::crypto::aws_lc_rs::Ticketer::new()?),
            cache: ServerSessionMemoryCache::new(cache_entries.max(1)),
        })
    }

    /// Resumption by the session cache alone (ticket keys could not be made).
    pub(crate) fn without_tickets(cache_entries: usize) -> Self {
        Self { ticketer: None, cache: ServerSessionMemoryCache::new(cache_entries.max(1)) }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The names a listener serves with certificates the node orders (ACME).
#[derive(Clone)]
pub(crate) struct Ordered {
    pub(crate) names: Vec<String>,
    pub(crate) certificates: Arc<acme::Certificates>,
    /// TLS-ALPN-01 is answered in this listener's handshakes.
    pub(crate) tls_alpn: bool,
}

impl Ordered {
    /// The ordered certificates issued so far.
    pub(crate) fn served(&self) -> Vec<Served> {
        self.names.iter().filter_map(|n| self.certificates.issued(n)).map(|i| i.served.clone()).collect()
    }
}

impl std::fmt::Debug for Ordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered").field("names", &self.names).finish_non_exhaustive()
    }
}

/// Reads a listener's files and builds what it serves with; every
/// mistake is an error at the key that named the file. `acme` holds the
/// certificates of the names it orders.
pub(crate) fn load(
    tls: &Tls,
    base: &Path,
    resumption: &Resumption,
    acme: Option<&Arc<acme::Certificates>>,
    tls_alpn: bool,
) -> Result<Serving, Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let mut keys = Vec::new();
    let mut certificates = Vec::new();
    for files in &tls.certificates {
        match certified_key(files, base, &provider) {
            Ok((key, served)) => {
                keys.push(key);
                certificates.push(served);
            }
            Err(e) => errors.push(e),
        }
    }
    let verifier = match &tls.client_auth {
        Some(auth) => match client_verifier(auth, base, &provider) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let ordered = match acme {
        Some(certificates) if !tls.acme.is_empty() => {
            Some(Ordered { names: tls.acme.clone(), certificates: certificates.clone(), tls_alpn })
        }
        _ => None,
    };
    let resolver = BySni::new(keys, &certificates, tls.refuse_unknown_sni, ordered.clone());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls.tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12, &rustls::version::TLS13] };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![tls.place.error(format!("TLS: {e}"))])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols.clone_from(&tls.alpn);
    if ordered.as_ref().is_some_and(|o| o.tls_alpn) {
        // Last: chosen only by a client that offers nothing else (the validator).
        config.alpn_protocols.push(acme::ACME_TLS_ALPN.to_vec());
    }
    if tls.session_cache > 0 {
        config.session_storage = resumption.cache.clone();
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    if tls.session_tickets
        && let Some(ticketer) = &resumption.ticketer
    {
        config.ticketer = ticketer.clone();
    }
    Ok(Serving {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificates,
        ordered,
        expiry_margin: tls.expiry_margin,
    })
}

/// A config path, relative to the config file's folder unless absolute.
fn path(base: &Path, file: &File) -> std::path::PathBuf {
    base.join(&file.path)
}

/// A chain and its key, checked to belong together; with its names and expiry.
fn certified_key(
    files: &CertificateFiles,
    base: &Path,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Served), ConfigError> {
    let cert_path = path(base, &files.cert);
    let key_path = path(base, &files.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| files.cert.place.error(format!("{}: {e}", cert_path.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(files.cert.place.error(format!("{}: no PEM certificate in it", cert_path.display())));
    };
    let served = describe(leaf).map_err(|e| files.cert.place.error(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| files.key.place.error(format!("{}: {e}", key_path.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| files.key.place.error(format!("{}: {e}", key_path.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        files.key.place.error(format!("{} is not the key of {} ({e})", key_path.display(), cert_path.display()))
    })?;
    Ok((Arc::new(certified), served))
}

/// A chain and its key from one PEM text (the chain first), checked to
/// belong together: what the node keeps for a certificate it ordered.
pub(crate) fn certified_pem(pem: &[u8]) -> Result<(Arc<CertifiedKey>, Served), String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no PEM certificate in it")?;
    let served = describe(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("its key: {e}"))?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| format!("its key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| format!("the key is not the certificate's ({e})"))?;
    Ok((Arc::new(certified), served))
}

/// A certificate's DNS names (its CN where it has none) and expiry.
fn describe(der: &CertificateDer<'_>) -> Result<Served, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    let validity = cert.validity();
    Ok(Served { names, not_before: validity.not_before.timestamp(), not_after: validity.not_after.timestamp() })
}

/// The client-certificate verifier: the CA bundle, the CRLs, and whether
/// a client may come without a certificate.
fn client_verifier(
    auth: &ClientAuth,
    base: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Vec<ConfigError>> {
    let ca_path = path(base, &auth.ca);
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| vec![auth.ca.place.error(format!("{}: {e}", ca_path.display()))])?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(vec![auth.ca.place.error(format!("{}: no CA certificate in it", ca_path.display()))]);
    }
    let mut crls = Vec::new();
    let mut errors = Vec::new();
    for crl in &auth.crls {
        let crl_path = path(base, crl);
        match CertificateRevocationListDer::pem_file_iter(&crl_path).and_then(|l| l.collect::<Result<Vec<_>, _>>()) {
            Ok(list) if !list.is_empty() => crls.extend(list),
            Ok(_) => errors.push(crl.place.error(format!("{}: no PEM CRL in it", crl_path.display()))),
            Err(e) => errors.push(crl.place.error(format!("{}: {e}", crl_path.display()))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).with_crls(crls);
    if !auth.required {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| vec![auth.ca.place.error(format!("{}: {e}", ca_path.display()))])
}

/// Chooses a certificate by the name the client asked for: an ordered
/// name's own (once issued), else a file's by exact name, then wildcard,
/// then the default (the first file's, or the first ordered name's).
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `.example.com` for `*.example.com`, longest first.
    wildcards: Vec<(String, usize)>,
    refuse_unknown: bool,
    ordered: Option<Ordered>,
}

impl BySni {
    fn new(keys: Vec<Arc<CertifiedKey>>, served: &[Served], refuse_unknown: bool, ordered: Option<Ordered>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, s) in served.iter().enumerate() {
            for name in &s.names {
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => wildcards.push((suffix.to_string(), i)),
                    _ => {
                        exact.entry(name.clone()).or_insert(i);
                    }
                }
            }
        }
        wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Self { keys, exact, wildcards, refuse_unknown, ordered }
    }

    /// An ordered name's certificate; `Some(None)` while it is not issued.
    fn ordered(&self, name: &str) -> Option<Option<Arc<CertifiedKey>>> {
        let ordered = self.ordered.as_ref()?;
        let name = name.to_ascii_lowercase();
        ordered.names.contains(&name).then(|| ordered.certificates.issued(&name).map(|i| i.key.clone()))
    }

    fn default_key(&self) -> Option<Arc<CertifiedKey>> {
        self.keys.first().cloned().or_else(|| {
            let ordered = self.ordered.as_ref()?;
            ordered.names.iter().find_map(|n| ordered.certificates.issued(n)).map(|i| i.key.clone())
        })
    }

    fn find(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        self.exact.get(&name).copied().or_else(|| {
            // A wildcard covers one label: `*.example.com` names `a.example.com`, not `a.b.example.com`.
            let (label, rest) = name.split_once('.')?;
            (!label.is_empty()).then_some(())?;
            let suffix = format!(".{rest}");
            self.wildcards.iter().find(|(w, _)| *w == suffix).map(|(_, i)| *i)
        })
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello.alpn().is_some_and(|mut offered| offered.any(|p| p == acme::ACME_TLS_ALPN));
        if validating && let Some(ordered) = self.ordered.as_ref().filter(|o| o.tls_alpn) {
            // TLS-ALPN-01: the challenge certificate, and nothing else.
            return ordered.certificates.challenge(hello.server_name()?);
        }
        let Some(name) = hello.server_name() else { return self.default_key() };
        if let Some(Some(key)) = self.ordered(name) {
            return Some(key);
        }
        match self.find(name) {
            Some(i) => self.keys.get(i).cloned(),
            None if self.refuse_unknown => None,
            None => self.default_key(),
        }
    }
}

/// What a finished handshake says of the client, for the core.
pub(crate) fn info(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        _ => "1.2",
    };
    let client_cert = conn.peer_certificates().and_then(|chain| chain.first()).and_then(client_cert);
    TlsInfo { version, sni: conn.server_name().map(str::to_string), client_cert }
}

/// A TLS-ALPN-01 validation: the handshake was all it needed.
pub(crate) fn is_acme_validation(conn: &ServerConnection) -> bool {
    conn.alpn_protocol() == Some(acme::ACME_TLS_ALPN)
}

/// Whether the client chose HTTP/2 by ALPN.
pub(crate) fn is_h2(conn: &ServerConnection) -> bool {
    conn.alpn_protocol() == Some(b"h2")
}

/// A verified client certificate's names.
fn client_cert(der: &CertificateDer<'_>) -> Option<ClientCert> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = ClientCert {
        common_name: cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string),
        sha256: crate::shared::hex::hex(&Sha256::digest(der.as_ref())),
        ..ClientCert::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns.push((*d).to_string()),
                GeneralName::URI(u) => out.uris.push((*u).to_string()),
                GeneralName::RFC822Name(e) => out.emails.push((*e).to_string()),
                _ => {}
            }
        }
    }
    Some(out)
}
