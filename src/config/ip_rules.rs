//! `ip_allow` and `ip_deny` compiled: the client addresses (resolved
//! through `trusted_proxies`) a service's routes, a route or a consumer
//! take (`shared/networks.rs`).

use std::sync::Arc;

use ipnet::IpNet;
use toml::Spanned;

use super::{Compiler, parse_cidr};
use crate::shared::networks::{IpRules, Ranges};

/// Where a set of rules was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpLevel {
    Service,
    Route,
    Consumer,
}

impl IpLevel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Route => "route",
            Self::Consumer => "consumer",
        }
    }
}

impl Compiler<'_> {
    /// `KEY.ip_allow` and `KEY.ip_deny`; `None` when neither is given.
    pub(super) fn ip_rules(
        &mut self,
        key: &str,
        allow: Option<&Spanned<Vec<Spanned<String>>>>,
        deny: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Arc<IpRules>> {
        if allow.is_none() && deny.is_none() {
            return None;
        }
        if let Some(list) = allow.filter(|l| l.get_ref().is_empty()) {
            let message = "an empty allow list would refuse every address: leave `ip_allow` out to allow any";
            self.error(list.span(), format!("{key}.ip_allow"), message);
        }
        let allow = allow.map(|list| Ranges::new(&self.networks(&format!("{key}.ip_allow"), list.get_ref())));
        let deny = deny.map(|list| Ranges::new(&self.networks(&format!("{key}.ip_deny"), list.get_ref())));
        Some(Arc::new(IpRules { allow, deny: deny.unwrap_or_default() }))
    }

    fn networks(&mut self, key: &str, list: &[Spanned<String>]) -> Vec<IpNet> {
        let parsed = list.iter().enumerate().filter_map(|(i, net)| {
            let k = format!("{key}[{i}]");
            let text = self.value(net, &k)?;
            self.check(net.span(), &k, parse_cidr(&text))
        });
        parsed.collect()
    }
}

/// A registry consumer's `ip_allow` and `ip_deny` (`kv-schema/registry.md`),
/// by the config's rules for the same keys.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the node keeps the registry
pub(crate) fn consumer_networks(
    allow: Option<&[String]>,
    deny: Option<&[String]>,
) -> Result<Option<Arc<IpRules>>, String> {
    if allow.is_none() && deny.is_none() {
        return Ok(None);
    }
    let nets = |key: &str, list: &[String]| -> Result<Vec<IpNet>, String> {
        list.iter().map(|n| parse_cidr(n).map_err(|e| format!("{key}: `{n}`: {e}"))).collect()
    };
    if allow.is_some_and(<[String]>::is_empty) {
        return Err("ip_allow: an empty allow list would refuse every address: leave it out to allow any".into());
    }
    let allow = allow.map(|l| nets("ip_allow", l)).transpose()?.map(|n| Ranges::new(&n));
    let deny = deny.map(|l| nets("ip_deny", l)).transpose()?.map(|n| Ranges::new(&n));
    Ok(Some(Arc::new(IpRules { allow, deny: deny.unwrap_or_default() })))
}
