//! Client certificates: a TLS listener verified the certificate against its
//! CA (the node's `native::tls`); here its names pick the consumer. The
//! first consumer, in config order, whose name the certificate carries
//! decides.

use std::sync::Arc;

use super::{AuthError, Challenge, Identity};
use crate::config::auth::{CertName, MtlsProvider};
use crate::shared::tls::ClientCert;

pub(crate) fn verify(
    provider: &MtlsProvider,
    cert: &ClientCert,
    challenge: &Challenge,
) -> Result<Arc<Identity>, AuthError> {
    let has = |name: &CertName| match name {
        CertName::SpiffeId(id) => cert.spiffe_id() == Some(id),
        CertName::Uri(uri) => cert.uris.iter().any(|u| u == uri),
        CertName::Dns(dns) => cert.dns.iter().any(|d| d.eq_ignore_ascii_case(dns)),
        CertName::Email(email) => cert.emails.iter().any(|e| e == email),
        CertName::CommonName(cn) => cert.common_name.as_deref() == Some(cn),
        CertName::Sha256(hex) => cert.sha256 == *hex,
    };
    match provider.consumers.iter().find(|(name, _)| has(name)) {
        Some((_, consumer)) => Ok(consumer.clone()),
        None => Err(AuthError::InvalidToken {
            reason: "unknown_certificate",
            description: "the client certificate names no consumer".into(),
            challenge: challenge.clone(),
        }),
    }
}
