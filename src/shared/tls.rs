//! What a TLS session told the node about a client connection: the
//! version, the name it asked for, and a client certificate it proved.
//! Plain data the adapter fills in (the core parses no certificates).

use serde::Serialize;

/// A TLS session, as the access log and the `mtls` provider see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// `1.2` or `1.3`.
    pub version: &'static str,
    /// The server name the client asked for (SNI), if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The client's certificate, verified against the listener's CA.
    #[serde(skip_serializing_if = "Option::is_none", rename = "client")]
    pub client_cert: Option<ClientCert>,
}

/// A verified client certificate's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientCert {
    /// The subject's common name (CN), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Subject alternative names, by kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub sha256: String,
}

impl ClientCert {
    /// The SPIFFE ID, if a URI SAN is one (`spiffe://trust-domain/path`).
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uris.iter().map(String::as_str).find(|u| u.starts_with("spiffe://"))
    }
}
