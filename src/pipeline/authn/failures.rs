//! Failed authentication, limited per provider and client IP: a flood of
//! bad credentials (or of well-formed tokens with bad signatures, each a
//! full signature check) stops at the provider's `failure_limit`. A caller
//! over it is answered 429 before any signature is checked; tokens already
//! verified (cached) still pass. The count is a GCRA bucket in the same
//! store as rate limits (`pc1:af:`, `kv-schema/auth-failures.md`), so a
//! fleet shares it; a store that fails does not stop authentication.

use std::net::IpAddr;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::config::auth::Provider;
use crate::ports::{Clock, KvStore, LimitStep, Ports, store_key};
use crate::shared::gcra::{self, Rate};

/// One provider's failure count for one client. Its store key is made
/// when the store is first asked (a token not cached, or a failure), once:
/// a cached token needs none, and the key (the address as text, a SHA-256
/// and its hex) cost ~2.6k instructions a request.
pub(crate) struct FailureLimit<'a> {
    provider: &'a str,
    client: IpAddr,
    rate: Rate,
    key: OnceLock<String>,
}

/// The store key: provider, then the SHA-256 of the client IP as text.
pub(crate) fn key(provider: &str, client: IpAddr) -> String {
    store_key(&["pc1:af:", provider, ":"], &Sha256::digest(client.to_string().as_bytes()))
}

impl<'a> FailureLimit<'a> {
    /// None when the provider has no `failure_limit`.
    pub(crate) fn new(provider: &'a Provider, client: IpAddr) -> Option<Self> {
        Some(Self { provider: &provider.name, client, rate: provider.failure_limit?, key: OnceLock::new() })
    }

    fn key(&self) -> &str {
        self.key.get_or_init(|| key(self.provider, self.client))
    }

    /// Seconds until this client may fail again, if it is over the limit now.
    pub(crate) async fn over<P: Ports>(&self, ports: &P) -> Option<u64> {
        let stored = ports.kv().get(self.key()).await.ok()?;
        let d = gcra::decide(gcra::decode(stored.as_deref()), now_us(ports), self.rate, 1);
        (!d.allowed).then(|| seconds(d.retry_after_us))
    }

    /// Counts one failure; the seconds to wait if it was one too many.
    pub(crate) async fn charge<P: Ports>(&self, ports: &P) -> Option<u64> {
        let step = LimitStep::rate(self.key(), self.rate, 1);
        let (decisions, _) = ports.kv().limit(&[step], now_us(ports)).await.ok()?;
        decisions.first().filter(|d| !d.allowed).map(|d| seconds(d.retry_after_us))
    }
}

fn now_us<P: Ports>(ports: &P) -> u64 {
    u64::try_from(ports.clock().now().as_micros()).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded up (at least 1).
fn seconds(us: Option<u64>) -> u64 {
    us.map_or(1, |us| us.div_ceil(1_000_000).max(1))
}
