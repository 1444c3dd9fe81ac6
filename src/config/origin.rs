//! How the node speaks to a service's origins: HTTP/2 (ALPN `h2` over
//! HTTPS, prior knowledge over plaintext) and TLS settings for HTTPS ones
//! — a CA bundle instead of the system's roots, the name to verify (and
//! send as SNI), a client certificate (mTLS to the origin). Checked here;
//! the node reads the files (`native::origins`). Spin's outbound HTTP has
//! neither HTTP/2 nor per-service TLS (its runtime config's `client_tls`
//! does the latter), so `portcullis check` against a Spin manifest says so.

use http::uri::Scheme;
use toml::Spanned;

use super::listeners::File;
use super::raw::RawOriginTls;
use super::{Compiler, Place, Target};

/// `services.NAME.tls`.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct OriginTls {
    /// The CA bundle origins are verified against. Default: the system's roots.
    pub(crate) ca: Option<File>,
    /// The name verified and sent as SNI. Default: the target's host.
    pub(crate) server_name: Option<String>,
    /// A client certificate and its key (mTLS to the origin).
    pub(crate) client: Option<(File, File)>,
    /// Where the table was written.
    pub(crate) place: Place,
}

impl Compiler<'_> {
    pub(super) fn origin_tls(
        &mut self,
        key: &str,
        raw: Option<&Spanned<RawOriginTls>>,
        targets: &[Target],
    ) -> Option<OriginTls> {
        let spanned = raw?;
        let t = spanned.get_ref();
        let k = |field: &str| format!("{key}.tls.{field}");
        if targets.iter().any(|target| target.scheme != Scheme::HTTPS) {
            self.error(spanned.span(), format!("{key}.tls"), "TLS settings need every target to be https://");
        }
        let ca = t.ca.as_ref().and_then(|c| self.file(c, &k("ca")));
        let server_name = t.server_name.as_ref().and_then(|n| {
            let name = self.value(n, &k("server_name"))?;
            let parsed = super::router::HostPattern::parse(&name).and_then(|p| match p {
                super::router::HostPattern::Exact(_) => Ok(name.to_ascii_lowercase()),
                _ => Err(format!("`{name}`: one DNS name, no pattern")),
            });
            self.check(n.span(), &k("server_name"), parsed)
        });
        let client = match (&t.cert, &t.key) {
            (Some(c), Some(key)) => Some((self.file(c, &k("cert"))?, self.file(key, &k("key"))?)),
            (None, None) => None,
            (Some(c), None) => {
                self.error(c.span(), k("key"), "a client certificate needs its key");
                None
            }
            (None, Some(key)) => {
                self.error(key.span(), k("cert"), "a client key needs its certificate");
                None
            }
        };
        Some(OriginTls { ca, server_name, client, place: self.place(spanned.span(), format!("{key}.tls")) })
    }
}
