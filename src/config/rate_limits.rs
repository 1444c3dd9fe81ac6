//! `[limits.NAME]`: limit policies, compiled into GCRA rates (`rate`) or
//! calendar quotas (`quota`). A route lists the policies that apply to it;
//! a policy with `groups` is a tier and applies only to callers in one of
//! those groups.

use std::collections::BTreeMap;

use jiff::tz::{Offset, TimeZone};
use toml::Spanned;

use super::caller_key::CallerKey;
use super::raw::RawLimit;
use super::{Compiler, Known};
use crate::shared::gcra::Rate;
use crate::shared::quota::Period;

/// A compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) meter: Metering,
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
}

/// What a policy meters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Metering {
    Rate {
        rate: Rate,
        /// This policy's item in `RateLimit-Policy` (`"name";q=burst;w=window`),
        /// the header's whole value when it alone limits a request (shared,
        /// not built each time); none if the name cannot be in a header
        /// (nor is the header sent).
        policy_item: Option<http::HeaderValue>,
        /// Delay a request over the rate until it conforms instead of
        /// refusing it. Default: none (refuse).
        smoothing: Option<Smoothing>,
    },
    Quota(Quota),
}

/// `quota = "N/day"` or `"N/month"`: a cap per calendar window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) limit: u64,
    pub(crate) period: Period,
    /// The windows' time zone. Default: UTC.
    pub(crate) zone: TimeZone,
    /// Shares used (percent, rising) past which answers warn. Default: none.
    pub(crate) warn_at: Vec<u8>,
}

impl RateLimit {
    pub(crate) fn smoothing(&self) -> Option<Smoothing> {
        match &self.meter {
            Metering::Rate { smoothing, .. } => *smoothing,
            Metering::Quota(_) => None,
        }
    }
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

/// What a policy's `rate` or `quota` says.
enum Metered {
    Rate(u64, u64),
    Quota(Quota),
}

/// `10000/month` or `500/day`.
fn parse_quota(text: &str) -> Result<(u64, Period), String> {
    let bad = || format!("`{text}` is not a quota: write e.g. \"10000/month\" or \"500/day\"");
    let (count, period) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("a quota of 0 refuses everything: leave the policy off the route instead".into());
    }
    match period.trim() {
        "day" | "d" => Ok((count, Period::Day)),
        "month" => Ok((count, Period::Month)),
        _ => Err(bad()),
    }
}

/// `UTC`, a fixed offset east of it (`+01:00`, `-05:00`, `+05:30`), or
/// an IANA zone from the bundled tz database (`Europe/Berlin`).
fn parse_time_zone(text: &str) -> Result<TimeZone, String> {
    let bad = || {
        format!(
            "`{text}` is not a time zone the gateway knows: write \"UTC\", an IANA name such as \"Europe/Berlin\", or a fixed offset such as \"+01:00\", \"-05:00\""
        )
    };
    if text == "UTC" || text == "Z" {
        return Ok(TimeZone::UTC);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return TimeZone::get(text).map_err(|_| bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h.to_string().len() > 2 || h > 14 || !(0..60).contains(&m) || rest.len() != 5 {
        return Err(bad());
    }
    let offset = Offset::from_seconds(sign * (h * 3600 + m * 60)).map_err(|_| bad())?;
    Ok(TimeZone::fixed(offset))
}

/// `80%`: a share from 1 to 100 percent.
fn parse_share(text: &str) -> Result<u8, String> {
    let percent = text.strip_suffix('%').and_then(|n| n.trim().parse::<u8>().ok());
    percent.filter(|p| (1..=100).contains(p)).ok_or_else(|| format!("`{text}` is not a share: write e.g. \"80%\""))
}

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
        let metered = self.metered(&key, spanned);
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
        let meter = match metered? {
            Metered::Rate(count, period_us) => {
                let rate = Rate::new(count, period_us, burst.unwrap_or(count))?;
                let window = rate.window_us().div_ceil(1_000_000).max(1);
                let policy_item = http::HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", rate.burst)).ok();
                Metering::Rate { rate, policy_item, smoothing }
            }
            Metered::Quota(quota) => Metering::Quota(quota),
        };
        Some(RateLimit {
            name: name.into(),
            meter,
            key: limit_key?,
            cost,
            groups: r.groups.clone(),
            fail_open,
            exact,
            legacy_headers: r.legacy_headers,
        })
    }

    /// `rate` (with `burst`, `max_delay`) or `quota` (with `time_zone`,
    /// `warn_at`): exactly one.
    fn metered(&mut self, key: &str, spanned: &Spanned<RawLimit>) -> Option<Metered> {
        let r = spanned.get_ref();
        match (&r.rate, &r.quota) {
            (Some(rate), None) => {
                for (name, span) in [("time_zone", r.time_zone.as_ref().map(Spanned::span))]
                    .into_iter()
                    .chain([("warn_at", r.warn_at.as_ref().and_then(|w| w.first()).map(Spanned::span))])
                {
                    if let Some(span) = span {
                        self.error(span, format!("{key}.{name}"), "belongs to a `quota`, not a `rate`");
                    }
                }
                let (count, period_us) = self.check(rate.span(), &format!("{key}.rate"), parse_rate(rate.get_ref()))?;
                Some(Metered::Rate(count, period_us))
            }
            (None, Some(quota)) => {
                for (name, span) in [
                    ("burst", r.burst.as_ref().map(Spanned::span)),
                    ("max_delay", r.max_delay.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        self.error(span, format!("{key}.{name}"), "belongs to a `rate`, not a `quota`");
                    }
                }
                let parsed = parse_quota(quota.get_ref());
                let parsed = self.check(quota.span(), &format!("{key}.quota"), parsed);
                let zone = match &r.time_zone {
                    None => Some(TimeZone::UTC),
                    Some(tz) => self.check(tz.span(), &format!("{key}.time_zone"), parse_time_zone(tz.get_ref())),
                };
                let mut warn_at = Vec::new();
                for (i, w) in r.warn_at.iter().flatten().enumerate() {
                    let share = parse_share(w.get_ref());
                    let Some(percent) = self.check(w.span(), &format!("{key}.warn_at[{i}]"), share) else { continue };
                    if warn_at.last().is_some_and(|last| *last >= percent) {
                        self.error(
                            w.span(),
                            format!("{key}.warn_at[{i}]"),
                            "list rising shares, e.g. [\"80%\", \"90%\"]",
                        );
                    }
                    warn_at.push(percent);
                }
                let ((limit, period), zone) = (parsed?, zone?);
                Some(Metered::Quota(Quota { limit, period, zone, warn_at }))
            }
            (Some(rate), Some(_)) => {
                let message = "give either `rate` (per second to per day, smoothed) or `quota` (per calendar day or month), not both";
                self.error(rate.span(), format!("{key}.rate"), message);
                None
            }
            (None, None) => {
                let message = "a policy needs `rate` (e.g. \"100/minute\") or `quota` (e.g. \"10000/month\")";
                self.error(spanned.span(), key.to_string(), message);
                None
            }
        }
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
