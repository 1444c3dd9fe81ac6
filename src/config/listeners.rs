//! `[[listeners]]`: the sockets a node serves — plaintext or TLS (per-SNI
//! certificates from files, client certificates), which hosts each answers,
//! PROXY protocol. Checked here as data; the node reads the files they name
//! (`native::tls`). The edge has no listeners of its own: Spin owns its
//! sockets and terminates TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use toml::Spanned;

use super::raw::{RawClientAuth, RawListener, RawTls};
use super::router::HostPattern;
use super::{Compiler, Place};

/// A socket the node serves.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Default: the address as written.
    pub(crate) name: Arc<str>,
    pub address: SocketAddr,
    /// Where the address was written (a socket that cannot be had is reported there).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) place: Place,
    /// The hosts it answers; another gets 421. Empty: any.
    pub(crate) hosts: Vec<HostPattern>,
    /// A PROXY protocol header (v1 or v2) opens every connection: the
    /// client's address is the one it gives.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) proxy_protocol: bool,
    /// Plaintext only: every request is answered 308 to `https://` on this port.
    pub(crate) redirect_to_https: Option<u16>,
    pub(crate) tls: Option<Tls>,
}

impl Listener {
    /// A plaintext listener for every host (the node's `--listen`).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn plaintext(name: &str, address: SocketAddr) -> Self {
        let place = Place { file: "(command line)".into(), line: 0, column: 0, key: name.into() };
        Self {
            name: name.into(),
            address,
            place,
            hosts: Vec::new(),
            proxy_protocol: false,
            redirect_to_https: None,
            tls: None,
        }
    }
}

/// TLS termination on a listener.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Tls {
    /// Chain and key files; names come from each certificate. The first
    /// is the default (a client without SNI, or with an unknown name).
    pub(crate) certificates: Vec<CertificateFiles>,
    /// An SNI no certificate names: the handshake fails (true) or the
    /// default certificate answers. Default: the default answers.
    pub(crate) refuse_unknown_sni: bool,
    /// TLS 1.3 only (true) or 1.2 and 1.3. Default: 1.2 and 1.3.
    pub(crate) tls13_only: bool,
    /// Protocols offered by ALPN, in order. Default: `h2`, `http/1.1`.
    pub(crate) alpn: Vec<Vec<u8>>,
    /// `Strict-Transport-Security` on every answer. Default: none.
    pub(crate) hsts: Option<HeaderValue>,
    /// Resumption by tickets (keys rotated) and by a session cache of this
    /// many entries. Defaults: on, 10 000.
    pub(crate) session_tickets: bool,
    pub(crate) session_cache: usize,
    /// `/readyz` fails while a served certificate expires within this. Default: 24 h.
    pub(crate) expiry_margin: Duration,
    pub(crate) client_auth: Option<ClientAuth>,
    /// Names whose certificates the node orders (`[acme]`), each its own.
    pub(crate) acme: Vec<String>,
    /// Where the `tls` table was written.
    pub(crate) place: Place,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct CertificateFiles {
    pub(crate) cert: File,
    pub(crate) key: File,
}

/// A file the config names, and where: a mistake in it is reported there.
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct File {
    pub(crate) path: String,
    pub(crate) place: Place,
}

/// Client certificates, verified against `ca` (and the CRLs).
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct ClientAuth {
    pub(crate) ca: File,
    /// A client without a certificate is refused at the handshake (true),
    /// or served without one (its routes may still require `mtls`).
    pub(crate) required: bool,
    pub(crate) crls: Vec<File>,
}

/// The default readiness margin for certificates about to expire.
const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_SESSION_CACHE: u32 = 10_000;

impl Compiler<'_> {
    pub(super) fn listeners(&mut self, raw: &[Spanned<RawListener>], acme: bool) -> Vec<Listener> {
        let mut listeners: Vec<Listener> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let Some(listener) = self.listener(i, spanned, acme) else { continue };
            let key = format!("listeners[{i}]");
            if listeners.iter().any(|l| l.address == listener.address && listener.address.port() != 0) {
                let r = spanned.get_ref();
                self.error(r.address.span(), format!("{key}.address"), "another listener has this address");
            } else if listeners.iter().any(|l| l.name == listener.name) {
                let span = spanned.get_ref().name.as_ref().map_or(spanned.span(), Spanned::span);
                self.error(span, format!("{key}.name"), format!("another listener is named `{}`", listener.name));
            } else {
                listeners.push(listener);
            }
        }
        listeners
    }

    fn listener(&mut self, i: usize, spanned: &Spanned<RawListener>, acme: bool) -> Option<Listener> {
        let r = spanned.get_ref();
        let k = |field: &str| format!("listeners[{i}].{field}");
        let before = self.errors.len();
        let address_text = self.value(&r.address, &k("address"))?;
        let address = self.check(
            r.address.span(),
            &k("address"),
            address_text.parse::<SocketAddr>().map_err(|_| {
                format!("`{address_text}` is not an address: write an IP and a port, e.g. \"0.0.0.0:443\"")
            }),
        );
        let name = match &r.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.error(n.span(), k("name"), "must not be empty");
                None
            }
            Some(n) => Some(n.get_ref().clone()),
            None => Some(address_text.clone()),
        };
        let hosts = r
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(j, h)| self.check(h.span(), &format!("{}[{j}]", k("hosts")), HostPattern::parse(h.get_ref())))
            .collect();
        let tls = r.tls.as_ref().and_then(|t| self.tls(&k("tls"), t, acme));
        let redirect_to_https = match (&r.redirect_to_https, &r.tls) {
            (Some(on), Some(_)) if *on.get_ref() => {
                self.error(
                    on.span(),
                    k("redirect_to_https"),
                    "a TLS listener serves HTTPS itself: redirect from a plaintext one",
                );
                None
            }
            (Some(on), None) if *on.get_ref() => Some(r.https_port.as_ref().map_or(443, |p| *p.get_ref())),
            _ => {
                if let Some(p) = &r.https_port {
                    self.error(p.span(), k("https_port"), "goes with `redirect_to_https = true`");
                }
                None
            }
        };
        (self.errors.len() == before).then_some(Listener {
            name: name?.into(),
            address: address?,
            place: self.place(r.address.span(), k("address")),
            hosts,
            proxy_protocol: r.proxy_protocol.unwrap_or(false),
            redirect_to_https,
            tls,
        })
    }

    fn tls(&mut self, key: &str, spanned: &Spanned<RawTls>, acme_section: bool) -> Option<Tls> {
        let t = spanned.get_ref();
        let k = |field: &str| format!("{key}.{field}");
        let before = self.errors.len();
        if t.certificates.is_empty() && t.acme.is_empty() {
            self.error(
                spanned.span(),
                k("certificates"),
                "give at least one: certificates = [{ cert = \"…\", key = \"…\" }], or names to order: acme = [\"…\"]",
            );
        }
        if let Some(first) = t.acme.first().filter(|_| !acme_section) {
            self.error(
                first.span(),
                k("acme"),
                "names to order need an [acme] section: its directory = \"https://…\" and contact",
            );
        }
        let mut acme: Vec<String> = Vec::new();
        for (i, name) in t.acme.iter().enumerate() {
            let ak = format!("{}[{i}]", k("acme"));
            if let Some(n) = self.acme_name(name, &ak) {
                if acme.contains(&n) {
                    self.error(name.span(), ak, format!("`{n}` is listed twice"));
                } else {
                    acme.push(n);
                }
            }
        }
        let certificates = t
            .certificates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.get_ref();
                let ck = format!("{}[{i}]", k("certificates"));
                Some(CertificateFiles {
                    cert: self.file(&c.cert, &format!("{ck}.cert"))?,
                    key: self.file(&c.key, &format!("{ck}.key"))?,
                })
            })
            .collect();
        let refuse_unknown_sni = !self.either(
            t.unknown_sni.as_ref(),
            spanned.span(),
            k("unknown_sni"),
            ("default", "the first certificate answers"),
            ("refuse", "the handshake fails"),
        );
        let tls13_only = match t.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => false,
            Some((_, "1.3")) => true,
            Some((v, other)) => {
                self.error(
                    v.span(),
                    k("min_version"),
                    format!("`{other}`: \"1.2\" or \"1.3\" (older versions are never offered)"),
                );
                false
            }
        };
        let alpn = match &t.alpn {
            None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match p.get_ref().as_str() {
                    "h2" | "http/1.1" => Some(p.get_ref().as_bytes().to_vec()),
                    other => {
                        self.error(
                            p.span(),
                            format!("{}[{i}]", k("alpn")),
                            format!("`{other}`: \"h2\" or \"http/1.1\""),
                        );
                        None
                    }
                })
                .collect(),
        };
        let hsts = t.hsts.as_ref().and_then(|h| {
            let ok = h.get_ref().to_ascii_lowercase().contains("max-age=");
            let value = HeaderValue::from_str(h.get_ref()).ok().filter(|_| ok);
            if value.is_none() {
                self.error(
                    h.span(),
                    k("hsts"),
                    "a Strict-Transport-Security value, e.g. \"max-age=31536000; includeSubDomains\"",
                );
            }
            value
        });
        let session_cache = t.session_cache.as_ref().map_or(DEFAULT_SESSION_CACHE, |n| *n.get_ref());
        let expiry_margin = match &t.expiry_margin {
            Some(m) if m.get_ref().trim() == "0s" => Duration::ZERO,
            _ => self.duration(&t.expiry_margin, &k("expiry_margin"), DEFAULT_EXPIRY_MARGIN),
        };
        let client_auth = t.client_auth.as_ref().and_then(|c| self.client_auth(&k("client_auth"), c));
        (self.errors.len() == before).then_some(Tls {
            certificates,
            refuse_unknown_sni,
            tls13_only,
            alpn,
            hsts,
            session_tickets: t.session_tickets.unwrap_or(true),
            session_cache: usize::try_from(session_cache).unwrap_or(usize::MAX),
            expiry_margin,
            client_auth,
            acme,
            place: self.place(spanned.span(), key),
        })
    }

    fn client_auth(&mut self, key: &str, spanned: &Spanned<RawClientAuth>) -> Option<ClientAuth> {
        let c = spanned.get_ref();
        let required = self.either(
            c.mode.as_ref(),
            spanned.span(),
            format!("{key}.mode"),
            ("require", "a client without a valid certificate fails the handshake"),
            ("request", "a client may come without one; one it sends must be valid"),
        );
        let crls = c.crls.iter().enumerate().filter_map(|(i, f)| self.file(f, &format!("{key}.crls[{i}]"))).collect();
        Some(ClientAuth { ca: self.file(&c.ca, &format!("{key}.ca"))?, required, crls })
    }

    /// A file path (placeholders filled in), remembered with its place.
    pub(super) fn file(&mut self, value: &Spanned<String>, key: &str) -> Option<File> {
        let path = self.value(value, key)?;
        if path.trim().is_empty() {
            self.error(value.span(), key, "must name a file");
            return None;
        }
        Some(File { path, place: self.place(value.span(), key) })
    }
}
