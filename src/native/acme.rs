//! Certificates that take care of themselves: for each name a TLS listener
//! lists under `tls.acme`, the node orders a certificate from the `[acme]`
//! directory (RFC 8555, with `instant-acme`), proves it holds the name by
//! the configured challenge — HTTP-01 answered by every listener before
//! the pipeline, or TLS-ALPN-01 answered in the handshake — keeps account
//! and certificates in the state folder, and renews each at two thirds of
//! its lifetime. A failed order is retried with backoff (1 min doubling to
//! 1 h) and never takes away the certificate being served.
//!
//! A fleet shares the work through the store (`kv-schema/acme.md`): one
//! node claims a name and orders, every node answers its HTTP-01 tokens,
//! and every node takes the certificate from the store (looking every
//! 5 s while it waits, and before it would order).
//!
//! Handshakes read [`Certificates`]; one task per name keeps it filled.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use super::tls::{self, Served};
use super::{NodeKv, NodePorts, unix_now};
use crate::config::acme::{Acme as Settings, Challenge};
use crate::config::{Config, ConfigError};
use crate::ports::{KvStore, store_key};

/// The path HTTP-01 answers are asked at.
pub(crate) const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// How often a node looks in the store for a certificate another ordered.
const STORE_POLL: Duration = Duration::from_secs(5);
/// How long a claim to order a name, and a token in the store, last.
const CLAIM_TTL: Duration = Duration::from_secs(300);
/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Waits after a failed order: the first, doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MOST: Duration = Duration::from_secs(3600);
/// How long an order may take to be validated, and then issued.
const ORDER_DEADLINE: Duration = Duration::from_secs(120);

/// A certificate the node ordered, as handshakes use it.
pub(crate) struct Issued {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) served: Served,
}

/// What handshakes and the HTTP-01 answer read: each name's certificate,
/// and the challenges being answered.
#[derive(Default)]
pub(crate) struct Certificates {
    issued: ArcSwap<HashMap<String, Arc<Issued>>>,
    /// TLS-ALPN-01: a name's challenge certificate.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: a token's key authorization.
    http: Mutex<HashMap<String, String>>,
}

impl Certificates {
    pub(crate) fn issued(&self, name: &str) -> Option<Arc<Issued>> {
        self.issued.load().get(name).cloned()
    }

    pub(crate) fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.lock().ok()?.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The key authorization to answer `path` with, when it asks for a
    /// token being validated.
    pub(crate) fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.http.lock().ok()?.get(token).cloned()
    }

    fn publish(&self, name: &str, issued: Issued) {
        let issued = Arc::new(issued);
        self.issued.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(name.to_string(), issued.clone());
            map
        });
    }

    fn forget(&self, name: &str) {
        self.issued.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(name);
            map
        });
    }
}

/// The challenges one order put up, taken down when it ends however it ends.
struct Answering<'a> {
    certificates: &'a Certificates,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Answering<'_> {
    fn http(&mut self, token: String, key_authorization: String) {
        if let Ok(mut http) = self.certificates.http.lock() {
            http.insert(token.clone(), key_authorization);
            self.tokens.push(token);
        }
    }

    fn alpn(&mut self, name: &str, key: Arc<CertifiedKey>) {
        if let Ok(mut alpn) = self.certificates.alpn.lock() {
            alpn.insert(name.to_string(), key);
            self.names.push(name.to_string());
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Ok(mut http) = self.certificates.http.lock() {
            for token in &self.tokens {
                http.remove(token);
            }
        }
        if let Ok(mut alpn) = self.certificates.alpn.lock() {
            for name in &self.names {
                alpn.remove(name);
            }
        }
    }
}

/// Checks what `[acme]` names before the node takes it: the directory's
/// CA is a PEM certificate, and (`make_state`, not for `portcullis check`)
/// the state folder is made.
pub(crate) fn check(config: &Config, base: &Path, make_state: bool) -> Vec<ConfigError> {
    let Some(settings) = &config.acme else { return Vec::new() };
    let mut errors = Vec::new();
    let state = base.join(&settings.state.path);
    if make_state && let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&state) {
        errors.push(settings.state.place.error(format!("{}: {e}", state.display())));
    }
    if let Some(ca) = &settings.directory_ca {
        let path = base.join(&ca.path);
        match CertificateDer::pem_file_iter(&path).map(|mut certs| certs.next()) {
            Ok(Some(Ok(_))) => {}
            Ok(None) => errors.push(ca.place.error(format!("{}: no PEM certificate in it", path.display()))),
            Ok(Some(Err(e))) | Err(e) => errors.push(ca.place.error(format!("{}: {e}", path.display()))),
        }
    }
    errors
}

/// The node's ACME side: the certificates, and a task per name keeping
/// them, following the running config.
#[derive(Default)]
pub(crate) struct Acme {
    pub(crate) certificates: Arc<Certificates>,
    running: Mutex<Running>,
    /// HTTP-01 is the configured challenge: tokens may be in the store.
    http01: AtomicBool,
}

/// The tasks of the settings in effect.
#[derive(Default)]
struct Running {
    /// The settings they were started with, as they compare.
    settings: Option<String>,
    tasks: HashMap<String, AbortHandle>,
}

impl Acme {
    /// Starts keeping the names the config's listeners list, stops keeping
    /// those it no longer does; new settings start every task again.
    /// `event` is told of each order's result and each certificate published.
    pub(crate) fn follow(&self, config: &Config, base: &Path, ports: Arc<NodePorts>, event: OnEvent) {
        let names: Vec<String> =
            config.listeners.iter().filter_map(|l| l.tls.as_ref()).flat_map(|t| t.acme.iter().cloned()).collect();
        let Ok(mut running) = self.running.lock() else { return };
        let wanted = config.acme.as_ref().filter(|_| !names.is_empty());
        let fingerprint = wanted.map(|s| {
            let ca = s.directory_ca.as_ref().map(|f| f.path.as_str());
            format!("{:?}", (&s.directory, &s.contact, &s.state.path, s.challenge, ca, base))
        });
        if fingerprint != running.settings {
            for (_, task) in running.tasks.drain() {
                task.abort();
            }
            running.settings.clone_from(&fingerprint);
        }
        running.tasks.retain(|name, task| {
            let keep = names.contains(name);
            if !keep {
                task.abort();
                self.certificates.forget(name);
            }
            keep
        });
        self.http01.store(wanted.is_some_and(|s| s.challenge == Challenge::Http01), Ordering::Release);
        let Some(settings) = wanted else { return };
        let orderer = Arc::new(Orderer {
            ports,
            state: base.join(&settings.state.path),
            directory_ca: settings.directory_ca.as_ref().map(|f| base.join(&f.path)),
            settings: settings.clone(),
            account: OnceCell::new(),
            certificates: self.certificates.clone(),
            event,
        });
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.tasks.entry(name) {
                let task = tokio::spawn(keep(orderer.clone(), slot.key().clone()));
                slot.insert(task.abort_handle());
            }
        }
    }

    /// The key authorization to answer an HTTP-01 `path` with: one this
    /// node's order put up, or (a fleet) another node's, from the store.
    pub(crate) async fn http01(&self, path: &str, kv: &NodeKv) -> Option<String> {
        if let Some(local) = self.certificates.http01(path) {
            return Some(local);
        }
        let token = path.strip_prefix(HTTP01_PREFIX).filter(|_| self.http01.load(Ordering::Acquire))?;
        let value = kv.get(&token_key(token)).await.ok()??;
        String::from_utf8(value).ok()
    }

    pub(crate) fn stop(&self) {
        if let Ok(mut running) = self.running.lock() {
            for (_, task) in running.tasks.drain() {
                task.abort();
            }
        }
    }
}

/// Orders certificates under one `[acme]`.
struct Orderer {
    /// The store a fleet shares certificates, claims and tokens through.
    ports: Arc<NodePorts>,
    settings: Settings,
    state: PathBuf,
    directory_ca: Option<PathBuf>,
    /// Made (or read from the state folder) once, by the first order.
    account: OnceCell<Account>,
    certificates: Arc<Certificates>,
    event: OnEvent,
}

/// Told of each certificate's events, by name.
pub(crate) type OnEvent = Arc<dyn Fn(&str, Event) + Send + Sync>;

/// What the node hears of its certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A certificate is served (ordered, or read from the disk or the store).
    Published,
    /// An order: issued, or failed.
    Ordered { issued: bool },
}

/// Keeps `name`'s certificate: the one in the state folder (or a newer one
/// in the store), then a new one at two thirds of each one's lifetime (or
/// now, when there is none), ordered by whichever node claims the name.
async fn keep(orderer: Arc<Orderer>, name: String) {
    match orderer.read(&name) {
        Ok(Some(issued)) => {
            tracing::info!(name, not_after = issued.served.not_after, "certificate read from the ACME state folder");
            orderer.publish(&name, issued);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(name, error = %format!("{e:#}"), "a stored certificate is unusable; ordering another"),
    }
    orderer.adopt(&name).await;
    let mut failures = 0u32;
    loop {
        let due = orderer.certificates.issued(&name).map_or(0, |c| renewal_due(&c.served));
        let now = unix_now();
        if now < due {
            tokio::time::sleep(STORE_POLL.min(Duration::from_secs(due - now))).await;
            orderer.adopt(&name).await;
            continue;
        }
        if !orderer.claim(&name).await {
            // Another node orders it: its certificate comes through the store.
            tokio::time::sleep(STORE_POLL).await;
            orderer.adopt(&name).await;
            continue;
        }
        // Another node may have finished an order just before the claim.
        orderer.adopt(&name).await;
        if orderer.certificates.issued(&name).is_some_and(|c| unix_now() < renewal_due(&c.served)) {
            orderer.release(&name).await;
            continue;
        }
        let result = orderer.order(&name).await;
        (orderer.event)(&name, Event::Ordered { issued: result.is_ok() });
        match result {
            Ok(issued) => {
                orderer.release(&name).await;
                failures = 0;
                tracing::info!(name, not_after = issued.served.not_after, "certificate issued by the ACME directory");
                orderer.publish(&name, issued);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(6)).min(RETRY_MOST);
                let serving = orderer.certificates.issued(&name).map(|i| i.served.not_after);
                tracing::error!(
                    name,
                    error = %format!("{e:#}"),
                    failures,
                    retry_in_s = retry.as_secs(),
                    serving_until = serving,
                    "ordering a certificate failed; the one being served (if any) stays"
                );
                // The claim lasts the backoff: the fleet waits too, rather
                // than spend the directory's failed-validation limit.
                orderer.hold(&name, retry).await;
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// `pc1:acme-cert:{sha256-hex}`: a name's certificate (`kv-schema/acme.md`).
fn cert_key(name: &str) -> String {
    store_key(&["pc1:acme-cert:"], &Sha256::digest(name.as_bytes()))
}

/// `pc1:acme-claim:{sha256-hex}`: the node ordering a name.
fn claim_key(name: &str) -> String {
    store_key(&["pc1:acme-claim:"], &Sha256::digest(name.as_bytes()))
}

/// `pc1:acme-http01:{sha256-hex}`: an HTTP-01 token's key authorization.
fn token_key(token: &str) -> String {
    store_key(&["pc1:acme-http01:"], &Sha256::digest(token.as_bytes()))
}

/// A certificate in the store: the chain then its key (PEM), and when it expires.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedCertificate {
    pem: String,
    not_after: i64,
}

/// Who holds a claim (a node's process id and start, for whoever reads the store).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    holder: String,
}

fn holder() -> String {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    format!("{}@{}", std::process::id(), STARTED.get_or_init(unix_now))
}

/// Two thirds into the certificate's lifetime, in seconds since the epoch.
fn renewal_due(served: &Served) -> u64 {
    let lifetime = served.not_after.saturating_sub(served.not_before).max(0);
    u64::try_from(served.not_before.saturating_add(lifetime * 2 / 3)).unwrap_or(0)
}

impl Orderer {
    /// Takes the store's certificate for `name` when it outlives the one
    /// served (another node ordered it), and keeps it on disk too.
    async fn adopt(&self, name: &str) {
        let record = match self.ports.kv.get(&cert_key(name)).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => return tracing::debug!(name, error = %e, "the store's certificate could not be read"),
        };
        let Ok(shared) = serde_json::from_slice::<SharedCertificate>(&record) else {
            return tracing::warn!(name, "the store's certificate record is not one; it is left alone");
        };
        let serving = self.certificates.issued(name).map_or(i64::MIN, |i| i.served.not_after);
        if shared.not_after <= serving {
            return;
        }
        match tls::certified_pem(shared.pem.as_bytes()) {
            Ok((key, served)) if served.names.iter().any(|n| n == name) => {
                if let Err(e) = write_private(&self.file(name), shared.pem.as_bytes()) {
                    tracing::warn!(name, error = %format!("{e:#}"), "the certificate could not be kept on disk");
                }
                tracing::info!(name, not_after = served.not_after, "certificate taken from the store");
                self.publish(name, Issued { key, served });
            }
            Ok(_) => tracing::warn!(name, "the store's certificate is for another name; it is left alone"),
            Err(e) => tracing::warn!(name, error = %e, "the store's certificate does not load; it is left alone"),
        }
    }

    /// Claims `name` for this node to order; a store that cannot be
    /// reached does not stop a node from ordering its own.
    async fn claim(&self, name: &str) -> bool {
        let claim = serde_json::to_vec(&Claim { holder: holder() }).unwrap_or_default();
        match self.ports.kv.compare_and_swap(&claim_key(name), None, &claim, Some(CLAIM_TTL)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(name, error = %e, "the store is unreachable; ordering without a claim");
                true
            }
        }
    }

    /// Keeps the claim on `name` for `how_long` (after a failed order).
    async fn hold(&self, name: &str, how_long: Duration) {
        let claim = serde_json::to_vec(&Claim { holder: holder() }).unwrap_or_default();
        if let Err(e) = self.ports.kv.set(&claim_key(name), &claim, Some(how_long)).await {
            tracing::debug!(name, error = %e, "a claim could not be kept for the backoff");
        }
    }

    async fn release(&self, name: &str) {
        if let Err(e) = self.ports.kv.delete(&claim_key(name)).await {
            tracing::debug!(name, error = %e, "a claim could not be released; it expires");
        }
    }

    fn publish(&self, name: &str, issued: Issued) {
        self.certificates.publish(name, issued);
        (self.event)(name, Event::Published);
    }

    /// `NAME.pem` in the state folder: the chain, then its key.
    fn file(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.pem"))
    }

    fn read(&self, name: &str) -> anyhow::Result<Option<Issued>> {
        let path = self.file(name);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        let (key, served) = tls::certified_pem(&pem).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if !served.names.iter().any(|n| n == name) {
            bail!("{}: not a certificate for {name}", path.display());
        }
        Ok(Some(Issued { key, served }))
    }

    /// The account: read from the state folder, or made and written there.
    async fn account(&self) -> anyhow::Result<&Account> {
        self.account
            .get_or_try_init(|| async {
                let digest = Sha256::digest(self.settings.directory.as_bytes());
                let path = self.state.join(format!("account-{}.json", crate::shared::hex::hex(&digest[..8])));
                let builder = || match &self.directory_ca {
                    Some(ca) => {
                        Account::builder_with_root(ca).with_context(|| format!("acme.directory_ca: {}", ca.display()))
                    }
                    None => Account::builder().context("the system's root certificates"),
                };
                if let Ok(text) = std::fs::read(&path) {
                    let credentials: AccountCredentials =
                        serde_json::from_slice(&text).with_context(|| path.display().to_string())?;
                    return builder()?.from_credentials(credentials).await.context("the stored ACME account");
                }
                let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, credentials) = builder()?
                    .create(&new, self.settings.directory.clone(), None)
                    .await
                    .context("creating the ACME account")?;
                let text = serde_json::to_vec_pretty(&credentials)?;
                write_private(&path, &text)?;
                tracing::info!(directory = %self.settings.directory, account = account.id(), "ACME account created");
                Ok(account)
            })
            .await
    }

    /// One order for `name`, validated by the configured challenge; the
    /// certificate and its key are written to the state folder.
    async fn order(&self, name: &str) -> anyhow::Result<Issued> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(name.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("new order")?;
        let kind = match self.settings.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut answering = Answering { certificates: &self.certificates, tokens: Vec::new(), names: Vec::new() };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("authorization")?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => bail!("the authorization for {name} is {other:?}"),
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| anyhow!("the directory offers no {kind:?} challenge for {name}"))?;
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => answering.alpn(name, alpn_certificate(name, key_authorization.digest())?),
                _ => {
                    // Any node of a fleet may be asked: the token goes in the store too.
                    let key = token_key(&challenge.token);
                    if let Err(e) =
                        self.ports.kv.set(&key, key_authorization.as_str().as_bytes(), Some(CLAIM_TTL)).await
                    {
                        tracing::warn!(name, error = %e, "the HTTP-01 token is not in the store: only this node answers it");
                    }
                    answering.http(challenge.token.clone(), key_authorization.as_str().to_string());
                }
            }
            challenge.set_ready().await.context("challenge")?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_DEADLINE);
        let status = order.poll_ready(&retries).await.context("validation")?;
        drop(answering);
        if status != OrderStatus::Ready {
            let mut why: Vec<String> = order.state().error.iter().map(ToString::to_string).collect();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authorization)) = authorizations.next().await {
                if let Ok(state) = authorization.refresh().await {
                    why.extend(state.challenges.iter().filter_map(|c| c.error.as_ref().map(ToString::to_string)));
                }
            }
            bail!("the order for {name} is {status:?}: {}", why.join("; "));
        }
        let key_pem = order.finalize().await.context("finalize")?;
        let chain_pem = order.poll_certificate(&retries).await.context("certificate")?;
        let pem = format!("{}\n{key_pem}", chain_pem.trim_end());
        let (key, served) = tls::certified_pem(pem.as_bytes()).map_err(|e| anyhow!("the issued certificate: {e}"))?;
        write_private(&self.file(name), pem.as_bytes())?;
        self.share(name, &pem, served.not_after).await;
        Ok(Issued { key, served })
    }

    /// Puts a new certificate in the store for the fleet, until it expires.
    async fn share(&self, name: &str, pem: &str, not_after: i64) {
        let ttl = Duration::from_secs(u64::try_from(not_after).unwrap_or(0).saturating_sub(unix_now()).max(1));
        let record = serde_json::to_vec(&SharedCertificate { pem: pem.to_string(), not_after }).unwrap_or_default();
        if let Err(e) = self.ports.kv.set(&cert_key(name), &record, Some(ttl)).await {
            tracing::warn!(name, error = %e, "the certificate is not in the store: other nodes order their own");
        }
    }
}

/// The self-signed certificate TLS-ALPN-01 validates (RFC 8737): `name`,
/// and the key authorization's digest in the acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: impl AsRef<[u8]>) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Not checked against its key by parsing: webpki refuses the critical
    // acmeIdentifier extension, which only the validator reads.
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = tls::provider().key_provider.load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// Writes a file of the state folder whole, readable by the node alone.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    super::write_private(path, |out| out.write_all(bytes)).with_context(|| format!("acme.state: {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `kv-schema/acme.md`, by its tag, the `n`th of that tag.
    fn block(tag: &str, n: usize) -> &'static str {
        let doc = include_str!("../../kv-schema/acme.md");
        let fence = format!("```{tag}\n");
        let start = doc.match_indices(&fence).nth(n).map(|(at, _)| at + fence.len()).expect("block");
        let end = start + doc[start..].find("```").expect("closed block");
        doc[start..end].trim()
    }

    #[test]
    fn kv_schema_acme_matches_the_code() {
        let layout = |n: usize| block("text key", n).strip_suffix("{sha256-hex}").expect("layout").to_string();
        let digest = |text: &str| crate::shared::hex::hex(&Sha256::digest(text.as_bytes()));
        assert_eq!(cert_key("a.test"), format!("{}{}", layout(0), digest("a.test")));
        assert_eq!(claim_key("a.test"), format!("{}{}", layout(1), digest("a.test")));
        assert_eq!(token_key("tok"), format!("{}{}", layout(2), digest("tok")));
        let example = block("json value", 0).replace('…', "x");
        let record: SharedCertificate = serde_json::from_str(&example).expect("the example is a record");
        assert_eq!(serde_json::to_string(&record).unwrap(), example, "every field documented, none invented");
        let example = block("json value", 1);
        let claim: Claim = serde_json::from_str(example).expect("the example is a claim");
        assert_eq!(serde_json::to_string(&claim).unwrap(), example);
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        let served = Served { names: Vec::new(), not_before: 1_000, not_after: 1_000 + 90 * 86_400 };
        assert_eq!(renewal_due(&served), 1_000 + 60 * 86_400);
    }
}
