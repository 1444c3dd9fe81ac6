//! TLS to a service's HTTPS origins where the config asks for its own
//! (`services.NAME.tls`): a CA bundle instead of the system's roots, the
//! name to verify and send as SNI, a client certificate. Read when a
//! config is loaded, like a listener's files: one that does not load
//! rejects the config at the key that names it, and the running one stays.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::config::origin::OriginTls;
use crate::config::{Config, ConfigError, ConfigErrors};

/// How the node makes TLS connections to one service's origins.
#[derive(Clone)]
pub(crate) struct Profile {
    pub(crate) connector: TlsConnector,
    /// Verified and sent as SNI instead of the target's host.
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// The services' own TLS settings, by service name.
pub(crate) type Profiles = HashMap<Arc<str>, Profile>;

/// A rustls client config: `roots`, an optional client certificate, ALPN
/// `h2` or `http/1.1`.
pub(crate) fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(config)
}

/// Reads every service's TLS files (`system`: the roots for a service
/// without a CA bundle of its own); every file that does not load is named.
pub(crate) fn prepare(config: &Config, base: &Path, system: &RootCertStore) -> Result<Profiles, ConfigErrors> {
    let mut profiles = HashMap::new();
    let mut errors = Vec::new();
    for service in &config.services {
        let Some(tls) = &service.tls else { continue };
        match profile(tls, base, system, service.http2) {
            Ok(p) => drop(profiles.insert(service.name.clone(), p)),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() { Ok(profiles) } else { Err(ConfigErrors(errors)) }
}

fn profile(tls: &OriginTls, base: &Path, system: &RootCertStore, http2: bool) -> Result<Profile, Vec<ConfigError>> {
    let roots = tls.ca.as_ref().map(|ca| {
        let path = base.join(&ca.path);
        let certs = certificates(&path).map_err(|e| ca.place.error(e))?;
        let mut roots = RootCertStore::empty();
        match roots.add_parsable_certificates(certs) {
            (0, _) => Err(ca.place.error(format!("{}: no CA certificate in it", path.display()))),
            _ => Ok(roots),
        }
    });
    let identity = tls.client.as_ref().map(|(cert, key)| {
        let chain = certificates(&base.join(&cert.path)).map_err(|e| cert.place.error(e));
        let key_path = base.join(&key.path);
        let private = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| key.place.error(format!("{}: {e}", key_path.display())));
        (chain, private)
    });
    let mut errors = Vec::new();
    let roots = match roots {
        None => Some(system.clone()),
        Some(r) => r.map_err(|e| errors.push(e)).ok(),
    };
    let identity = match identity {
        None => Some(None),
        Some((chain, key)) => match (chain, key) {
            (Ok(chain), Ok(key)) => Some(Some((chain, key))),
            (chain, key) => {
                errors.extend(chain.err().into_iter().chain(key.err()));
                None
            }
        },
    };
    let (Some(roots), Some(identity)) = (roots, identity) else { return Err(errors) };
    let place = tls.client.as_ref().map_or(&tls.place, |(_, key)| &key.place);
    let config = client_config(roots, identity, http2).map_err(|e| vec![place.error(format!("not usable: {e}"))])?;
    let server_name = tls.server_name.as_ref().and_then(|n| ServerName::try_from(n.clone()).ok());
    Ok(Profile { connector: TlsConnector::from(Arc::new(config)), server_name })
}

/// The PEM certificates in a file: at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
