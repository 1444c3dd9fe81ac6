//! `[limits.NAME]`: rate-limit policies, compiled into GCRA rates. A route
//! lists the policies that apply to it; a policy with `groups` is a tier and
//! applies only to callers in one of those groups.

use std::collections::BTreeMap;

use toml::Spanned;

use super::caller_key::CallerKey;
use super::raw::RawLimit;
use super::{Compiler, Known};
use crate::shared::gcra::Rate;

/// A compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) rate: Rate,
    pub(crate) key: CallerKey,
    /// Cost of one request. Default: 1.
    pub(crate) cost: u64,
    /// Tier: only callers in one of these groups. Default: everyone.
    pub(crate) groups: Vec<String>,
    /// On a store failure: admit (true, the default) or refuse with 503.
    pub(crate) fail_open: bool,
    /// Commit with compare-and-swap (true, the default) or, where the
    /// store has no atomics (`consistency = "best_effort"`), a plain set.
    pub(crate) exact: bool,
    /// Also send `X-RateLimit-Limit/Remaining/Reset`. Default: false.
    pub(crate) legacy_headers: bool,
    /// This policy's item in `RateLimit-Policy` (`"name";q=burst;w=window`).
    pub(crate) policy_item: String,
    /// Delay a request over the rate until it conforms instead of refusing
    /// it. Default: none (refuse).
    pub(crate) smoothing: Option<Smoothing>,
}

/// `max_delay` and `max_waiting`: how long a request over the rate may
/// wait for its turn, and how many may wait at once (per node or instance;
/// beyond, requests are decided as without a delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Smoothing {
    pub(crate) max_delay: std::time::Duration,
    pub(crate) max_waiting: u32,
}

/// Requests that may wait on one policy at once, unless it says. Default: 100.
const DEFAULT_MAX_WAITING: u32 = 100;
/// The longest `max_delay`: a delay is a held connection and request.
const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

const PERIODS: &[(&str, u64)] = &[
    ("s", 1),
    ("sec", 1),
    ("second", 1),
    ("m", 60),
    ("min", 60),
    ("minute", 60),
    ("h", 3600),
    ("hour", 3600),
    ("d", 86_400),
    ("day", 86_400),
];

/// `100/minute`, `10/s`, `5000/day`, or a count per duration: `5/10s`.
pub(super) fn parse_rate(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("`{text}` is not a rate: write e.g. \"10/s\", \"100/minute\", \"10000/day\" or \"5/10s\"");
    let (count, period) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let secs = match PERIODS.iter().find(|(name, _)| *name == period) {
        Some((_, secs)) => *secs * 1_000_000,
        None => {
            let d = humantime::parse_duration(period).map_err(|_| bad())?;
            u64::try_from(d.as_micros()).map_err(|_| bad())?
        }
    };
    if count == 0 || secs == 0 {
        return Err(format!("`{text}`: the count and the period must be more than 0"));
    }
    Ok((count, secs))
}

impl Compiler<'_> {
    pub(super) fn limits(&mut self, raw: &BTreeMap<String, Spanned<RawLimit>>) -> Vec<RateLimit> {
        raw.iter().filter_map(|(name, spanned)| self.limit(name, spanned)).collect()
    }

    /// One `[limits.NAME]` policy; `None` (with its errors recorded) if invalid.
    fn limit(&mut self, name: &str, spanned: &Spanned<RawLimit>) -> Option<RateLimit> {
        let key = format!("limits.{name}");
        let r = spanned.get_ref();
        let before = self.errors.len();
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            self.error(
                spanned.span(),
                key.clone(),
                "policy names are letters, digits, `_` and `-` (they go into store keys)",
            );
        }
        let parsed = self.check(r.rate.span(), &format!("{key}.rate"), parse_rate(r.rate.get_ref()));
        let burst = r.burst.as_ref().map(|b| *b.get_ref());
        if let Some(b) = &r.burst
            && *b.get_ref() == 0
        {
            self.error(b.span(), format!("{key}.burst"), "must be at least 1");
        }
        let limit_key = self.limit_key(&key, spanned);
        let cost = r.cost.as_ref().map_or(1, |c| *c.get_ref());
        let fail_open = self.either(
            r.on_store_error.as_ref(),
            spanned.span(),
            format!("{key}.on_store_error"),
            ("allow", "fail open"),
            ("deny", "fail closed"),
        );
        let exact = self.either(
            r.consistency.as_ref(),
            spanned.span(),
            format!("{key}.consistency"),
            ("exact", "compare-and-swap"),
            ("best_effort", "stores without atomics"),
        );
        let smoothing = self.smoothing(&key, r);
        if self.errors.len() != before {
            return None;
        }
        let ((count, period_us), limit_key) = (parsed?, limit_key?);
        let rate = Rate::new(count, period_us, burst.unwrap_or(count))?;
        let window = rate.window_us().div_ceil(1_000_000).max(1);
        Some(RateLimit {
            policy_item: format!("\"{name}\";q={};w={window}", rate.burst),
            name: name.into(),
            rate,
            key: limit_key,
            cost,
            groups: r.groups.clone(),
            fail_open,
            exact,
            legacy_headers: r.legacy_headers,
            smoothing,
        })
    }

    /// `max_delay` (up to 30 s) and `max_waiting` (at least 1; needs `max_delay`).
    fn smoothing(&mut self, key: &str, r: &RawLimit) -> Option<Smoothing> {
        if let Some(w) = r.max_waiting.as_ref() {
            if r.max_delay.is_none() {
                self.error(w.span(), format!("{key}.max_waiting"), "bounds requests waiting for `max_delay`: set it");
            } else if *w.get_ref() == 0 {
                self.error(
                    w.span(),
                    format!("{key}.max_waiting"),
                    "must be at least 1 (leave `max_delay` out to never wait)",
                );
            }
        }
        let d = r.max_delay.as_ref()?;
        let k = format!("{key}.max_delay");
        let max_delay = self.duration(&r.max_delay, &k, MAX_DELAY);
        if max_delay > MAX_DELAY {
            self.error(d.span(), k, "at most 30s: a waiting request holds its connection");
        }
        let max_waiting = r.max_waiting.as_ref().map_or(DEFAULT_MAX_WAITING, |w| *w.get_ref());
        Some(Smoothing { max_delay, max_waiting })
    }

    /// What a policy counts by (default: client_ip).
    fn limit_key(&mut self, key: &str, spanned: &Spanned<RawLimit>) -> Option<CallerKey> {
        match spanned.get_ref().key.as_ref() {
            None => Some(CallerKey::ClientIp),
            Some(k) => self.check(k.span(), &format!("{key}.key"), CallerKey::parse(k.get_ref())),
        }
    }

    /// A route's `limits = ["name", ...]`, as indexes into the policies.
    pub(super) fn route_limits(&mut self, names: &[Spanned<String>], key: &str, known: &Known<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let policies = known.rate_limits.iter().map(|l| &*l.name);
            match self.resolve(name, format!("{key}[{i}]"), "policy", policies, &known.broken.limits) {
                Some(p) if out.contains(&p) => self.error(name.span(), format!("{key}[{i}]"), "listed twice"),
                Some(p) => out.push(p),
                None => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/s"), Ok((10, 1_000_000)));
        assert_eq!(parse_rate("100/minute"), Ok((100, 60_000_000)));
        assert_eq!(parse_rate("10000/day"), Ok((10_000, 86_400_000_000)));
        assert_eq!(parse_rate("5/10s"), Ok((5, 10_000_000)));
        assert_eq!(parse_rate("5/250ms"), Ok((5, 250_000)));
        assert!(parse_rate("0/s").unwrap_err().contains("more than 0"));
        assert!(parse_rate("ten/s").unwrap_err().contains("not a rate"));
        assert!(parse_rate("10").unwrap_err().contains("not a rate"));
        assert!(parse_rate("10/fortnight").unwrap_err().contains("not a rate"));
    }
}
