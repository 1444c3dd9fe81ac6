//! `routes[].cache` compiled: how long the route's answers may be kept and
//! served stale, how large they may be, and who shares them
//! (`pipeline/cache`); `gateway.cache_memory` bounds the in-memory level.

use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::raw::RawRouteCache;
use super::{Compiler, parse_header_name};
use crate::shared::http_cache::Allowance;

/// A route's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteCache {
    /// Freshness and stale windows the route allows (`ttl` default 0: only
    /// answers whose origin says how long they stay fresh are kept;
    /// `max_ttl` default 1 day; stale windows default 0).
    pub(crate) allowance: Allowance,
    /// Answers to an authenticated caller are kept per consumer (and
    /// shared with no one else). Default: such answers are not kept.
    pub(crate) by_consumer: bool,
    /// Larger answers are not kept. Default: 1 MiB.
    pub(crate) max_entry_size: u64,
    /// The response header whose comma- or space-separated words tag an
    /// entry for purging. Default: `cache-tag`.
    pub(crate) tags_header: HeaderName,
    /// Entries go to the store too (the fleet's second level). Default: true.
    pub(crate) shared: bool,
}

pub(crate) const DEFAULT_MAX_ENTRY_SIZE: u64 = 1 << 20;
/// Entries are values in the store: Spin's key-value stores take a few MiB at most.
const MAX_ENTRY_SIZE: u64 = 8 << 20;
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);
/// Purge marks outlive every entry by being kept this long (`kv-schema/cache.md`).
pub(crate) const LONGEST_TTL: Duration = Duration::from_secs(30 * 86_400);
pub(crate) const DEFAULT_CACHE_MEMORY: u64 = 64 << 20;

impl Compiler<'_> {
    /// `routes[i].cache`: the route must take GET (what is kept) and be no
    /// gRPC-Web or WebSocket route.
    pub(super) fn route_cache(
        &mut self,
        key: &str,
        raw: &Spanned<RawRouteCache>,
        methods: Option<&[Method]>,
        other_use: Option<&str>,
    ) -> Option<RouteCache> {
        let c = raw.get_ref();
        let errors_before = self.errors.len();
        let mut window = |value: &Option<Spanned<String>>, name: &str, default: Duration| {
            let d = self.duration(value, &format!("{key}.{name}"), default);
            if d > LONGEST_TTL {
                let span = value.as_ref().map_or(raw.span(), |v| v.span());
                self.error(span, format!("{key}.{name}"), "at most 30 days");
            }
            d
        };
        let allowance = Allowance {
            ttl: window(&c.ttl, "ttl", Duration::ZERO),
            max_ttl: window(&c.max_ttl, "max_ttl", DEFAULT_MAX_TTL),
            stale_while_revalidate: window(&c.stale_while_revalidate, "stale_while_revalidate", Duration::ZERO),
            stale_if_error: window(&c.stale_if_error, "stale_if_error", Duration::ZERO),
        };
        if allowance.ttl > allowance.max_ttl {
            let span = c.ttl.as_ref().map_or(raw.span(), |v| v.span());
            self.error(span, format!("{key}.ttl"), "longer than `max_ttl`");
        }
        let max_entry_size =
            self.size(c.max_entry_size.clone(), &format!("{key}.max_entry_size"), DEFAULT_MAX_ENTRY_SIZE);
        if max_entry_size > MAX_ENTRY_SIZE {
            let span = c.max_entry_size.as_ref().map_or(raw.span(), |v| v.span());
            self.error(span, format!("{key}.max_entry_size"), "at most 8 MiB (an entry is one value in the store)");
        }
        let tags_header = match &c.tags_header {
            Some(name) => {
                let parsed = parse_header_name(&name.get_ref().to_ascii_lowercase());
                self.check(name.span(), &format!("{key}.tags_header"), parsed)
            }
            None => Some(HeaderName::from_static("cache-tag")),
        };
        if methods.is_some_and(|m| !m.contains(&Method::GET)) {
            self.error(raw.span(), key.to_string(), "keeps answers to GET: add \"GET\" to the route's `methods`");
        }
        if let Some(other) = other_use {
            self.error(raw.span(), key.to_string(), format!("a {other} route's answers are not cached"));
        }
        (self.errors.len() == errors_before).then(|| RouteCache {
            allowance,
            by_consumer: c.by_consumer.unwrap_or(false),
            max_entry_size,
            tags_header: tags_header.unwrap_or_else(|| HeaderName::from_static("cache-tag")),
            shared: c.shared.unwrap_or(true),
        })
    }
}
