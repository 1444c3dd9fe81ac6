//! `services.NAME.balance` and `hash_on`: how a request picks one of the
//! service's targets (the choice itself is `pipeline::upstream::balance`).

use super::auth::{AuthConfig, RouteAuth};
use super::caller_key::{CallerKey, route_has_provider};
use super::raw::RawService;
use super::{Compiler, Service};

/// The most a target's weight may be: weights are relative, and a
/// round-robin cycle is as long as their sum.
pub(crate) const MAX_WEIGHT: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Balance {
    /// Weighted, in a smooth order (the default).
    RoundRobin,
    /// The less busy (in flight ÷ weight) of two weighted random picks.
    LeastRequest,
    /// Weighted random.
    Random,
    /// The same caller to the same target (a weighted Maglev table).
    ConsistentHash(CallerKey),
}

impl Compiler<'_> {
    pub(super) fn balance(&mut self, key: &str, raw: &RawService) -> Balance {
        let policy = raw.balance.as_ref().map(|p| (p.get_ref().as_str(), p.span()));
        let consistent = matches!(policy, Some(("consistent_hash", _)));
        let hash_on = raw.hash_on.as_ref().and_then(|h| {
            if !consistent {
                self.error(h.span(), format!("{key}.hash_on"), "only for balance = \"consistent_hash\"");
                return None;
            }
            self.check(h.span(), &format!("{key}.hash_on"), CallerKey::parse(h.get_ref()))
        });
        match policy {
            None | Some(("round_robin", _)) => Balance::RoundRobin,
            Some(("least_request", _)) => Balance::LeastRequest,
            Some(("random", _)) => Balance::Random,
            Some(("consistent_hash", span)) => hash_on.map(Balance::ConsistentHash).unwrap_or_else(|| {
                if raw.hash_on.is_none() {
                    let message =
                        "say what to hash in `hash_on`: client_ip, consumer, subject, header:<name> or cookie:<name>";
                    self.error(span, format!("{key}.balance"), message);
                }
                Balance::RoundRobin
            }),
            Some((other, span)) => {
                let message = format!("`{other}`: use round_robin, least_request, random or consistent_hash");
                self.error(span, format!("{key}.balance"), message);
                Balance::RoundRobin
            }
        }
    }

    /// A route whose service hashes on an identity the route can never
    /// have (no provider of that kind) is a contradiction.
    pub(super) fn route_balance(
        &mut self,
        span: std::ops::Range<usize>,
        key: &str,
        service: &Service,
        auth: Option<&RouteAuth>,
        providers: &AuthConfig,
    ) {
        let Balance::ConsistentHash(caller) = &service.balance else { return };
        let Some((api_key, needed)) = caller.needs_provider() else { return };
        if !route_has_provider(auth, providers, api_key) {
            let message = format!(
                "service `{}` hashes on the caller's {}, which this route never has: give it `auth` with {needed}",
                service.name,
                if api_key { "consumer" } else { "subject" },
            );
            self.error(span, key, message);
        }
    }
}
