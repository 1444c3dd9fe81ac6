//! `[acme]`: the ACME (RFC 8555) directory the node orders certificates
//! from for the names its TLS listeners list under `tls.acme`, the
//! account's contacts, where account, keys and certificates are kept, and
//! the challenge it answers. The node does the ordering (`native::acme`);
//! the edge's TLS is the platform's.

use toml::Spanned;

use super::Compiler;
use super::listeners::File;
use super::raw::RawAcme;

/// How the node proves it holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `http://NAME/.well-known/acme-challenge/TOKEN`, on port 80.
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1`, on port 443.
    TlsAlpn01,
}

/// `[acme]`, checked.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Acme {
    /// The directory URL (`https://`).
    pub(crate) directory: String,
    /// `mailto:` addresses for the account.
    pub(crate) contact: Vec<String>,
    /// The folder for the account, keys and certificates. Default: `acme`
    /// next to the config file.
    pub(crate) state: File,
    pub(crate) challenge: Challenge,
    /// A CA (PEM) trusted for the directory's own TLS instead of the
    /// system's roots: a private or test ACME server.
    pub(crate) directory_ca: Option<File>,
}

impl Compiler<'_> {
    pub(super) fn acme(&mut self, raw: &Option<Spanned<RawAcme>>) -> Option<Acme> {
        let spanned = raw.as_ref()?;
        let r = spanned.get_ref();
        let before = self.errors.len();
        let directory = self.value(&r.directory, "acme.directory");
        if let Some(d) = &directory
            && !d.starts_with("https://")
        {
            self.error(r.directory.span(), "acme.directory", format!("`{d}`: an ACME directory is an https:// URL"));
        }
        let contact = r
            .contact
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let key = format!("acme.contact[{i}]");
                let value = self.value(c, &key)?;
                let ok = value.strip_prefix("mailto:").is_some_and(|a| a.contains('@'));
                self.check(c.span(), &key, if ok { Ok(value) } else { Err(format!("`{value}`: write mailto:ADDRESS")) })
            })
            .collect();
        let state = match &r.state {
            Some(s) => self.file(s, "acme.state"),
            None => Some(File { path: "acme".to_string(), place: self.place(spanned.span(), "acme.state") }),
        };
        let challenge = match r.challenge.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None | Some((_, "http-01")) => Challenge::Http01,
            Some((_, "tls-alpn-01")) => Challenge::TlsAlpn01,
            Some((c, other)) => {
                let message = format!(
                    "`{other}`: \"http-01\" (answered on the node's plaintext listeners, port 80) or \"tls-alpn-01\" (on its TLS listeners, port 443); the node does not answer dns-01"
                );
                self.error(c.span(), "acme.challenge", message);
                Challenge::Http01
            }
        };
        let directory_ca = r.directory_ca.as_ref().and_then(|c| self.file(c, "acme.directory_ca"));
        (self.errors.len() == before).then_some(Acme {
            directory: directory?,
            contact,
            state: state?,
            challenge,
            directory_ca,
        })
    }

    /// A name to order a certificate for: a host name (no wildcard: those
    /// need dns-01), lowercased.
    pub(super) fn acme_name(&mut self, name: &Spanned<String>, key: &str) -> Option<String> {
        let value = self.value(name, key)?.to_ascii_lowercase();
        let result = if value.starts_with("*.") {
            Err(format!(
                "`{value}`: a wildcard needs the dns-01 challenge, which the node does not answer; give each name, or a certificate file"
            ))
        } else if value.parse::<std::net::IpAddr>().is_ok() {
            Err(format!("`{value}`: a host name, not an address"))
        } else if value.is_empty()
            || value.len() > 253
            || !value.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            Err(format!("`{value}` is not a host name"))
        } else {
            Ok(value)
        };
        self.check(name.span(), key, result)
    }
}
