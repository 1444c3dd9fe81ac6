//! The rate-limit phase: after authorization (limits can count by who is
//! calling), before anything reaches the origin. Every policy that applies
//! to the route and the caller is checked in one store step, so either all
//! admit the request or none is charged.
//!
//! Answers follow draft-ietf-httpapi-ratelimit-headers:
//! `RateLimit-Policy: "per-ip";q=20;w=12` and `RateLimit: "per-ip";r=19;t=1`
//! on every response of a limited route, `Retry-After` with 429.
//!
//! A policy with `max_delay` admits a request over its rate if it waits
//! for its turn (GCRA gives the exact wait, `gcra::decide_within`) while
//! it has a place among the policy's waiting requests (`max_waiting`, per
//! node or instance); the request then waits here and goes on.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use sha2::{Digest, Sha256};
use smallvec::smallvec;
use thiserror::Error;

use super::leases::{self, Local};
use super::log::{Failure, LimitOutcome, PerPolicy};
use super::trace::{SpanKind, SpanRecord};
use super::{Ctx, Flow, Gateway, caller};
use crate::config::rate_limits::{Metering, RateLimit};
use crate::config::{Config, Route};
use crate::ports::{Body, Clock, KvStore, Lifetime, LimitStep, Meter, Ports};
use crate::shared::gcra::{Decision, Rate};
use crate::shared::hex::push_hex;
use crate::shared::lease::{self, Taken};
use crate::shared::problem::{Answer, Problem, Source};
use crate::shared::quota::{self, Window};

pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum LimitError {
    #[error("rate limit exceeded")]
    Exceeded {
        /// Seconds until the request would pass; `None`: never (it costs more than a burst).
        retry_after: Option<u64>,
        headers: Headers,
        /// A quota refused it (not only a rate).
        quota: bool,
    },
    #[error("the rate-limit store is unavailable: {0}")]
    StoreDown(String),
}

impl Answer for LimitError {
    fn problem(&self) -> Problem {
        match self {
            Self::Exceeded { retry_after, headers, quota } => {
                let detail: std::borrow::Cow<'static, str> = match (retry_after, quota) {
                    (Some(s), false) => format!("too many requests; retry after {s} seconds").into(),
                    (Some(s), true) => format!("the quota for this period is spent; it renews in {s} seconds").into(),
                    (None, _) => "this request costs more than the limit ever allows".into(),
                };
                let slug = if *quota { "quota-exceeded" } else { "rate-limited" };
                let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, slug, detail, Source::Client);
                p.headers.extend(headers.iter().cloned());
                if let Some(s) = retry_after {
                    p = p.header(http::header::RETRY_AFTER, HeaderValue::from(*s));
                }
                p
            }
            Self::StoreDown(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate-limit-unavailable",
                "rate limits cannot be checked right now",
                Source::Store,
            ),
        }
    }
}

/// What a passed check adds to the answer.
#[derive(Debug, Default)]
pub(crate) struct Applied<'g> {
    pub(crate) headers: Headers,
    /// A store failure the policies chose to ignore (fail open), for the log.
    pub(crate) store_error: Option<String>,
    /// How long the request waits for its turn, and the places it holds
    /// among the waiting meanwhile.
    delay: Duration,
    places: Vec<Place<'g>>,
}

/// Per policy, the requests waiting out a delay now (in this gateway
/// value: a node's config, an instance's).
pub(crate) struct Waiting(Box<[AtomicU32]>);

impl Waiting {
    pub(crate) fn new(config: &Config) -> Self {
        Self(config.rate_limits.iter().map(|_| AtomicU32::new(0)).collect())
    }

    /// A place among policy `i`'s waiting requests, if one of `max` is free.
    fn take(&self, i: usize, max: u32) -> Option<Place<'_>> {
        let count = self.0.get(i)?;
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Place(count))
    }
}

/// A place among a policy's waiting requests, given back when dropped.
#[derive(Debug)]
struct Place<'g>(&'g AtomicU32);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The store key for a policy and what it counts (`kv-schema/rate-limits.md`):
/// `counted` is the `kind:value` text in pieces, hashed without joining them.
pub(crate) fn key(policy: &str, counted: &[&[u8]]) -> String {
    counted_key(&["pc1:rl:", policy, ":"], counted)
}

/// The store key for a quota's window and what it counts (`kv-schema/quotas.md`).
pub(crate) fn quota_key(policy: &str, window: &str, counted: &[&[u8]]) -> String {
    counted_key(&["pc1:q:", policy, ":", window, ":"], counted)
}

/// `prefix` then the SHA-256 of what is counted, its pieces hashed as
/// one, between braces: a Redis Cluster hash tag, so every limit and
/// quota of one caller lives on one slot (one atomic step).
fn counted_key(prefix: &[&str], counted: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    counted.iter().for_each(|part| hasher.update(part));
    // Written into one string of the right size: joining the prefix, then
    // growing for the `}`, were two more allocations a limited request.
    let mut key = String::with_capacity(prefix.iter().map(|p| p.len()).sum::<usize>() + 2 + 64);
    prefix.iter().for_each(|p| key.push_str(p));
    key.push('{');
    push_hex(&mut key, &hasher.finalize());
    key.push('}');
    key
}

/// What a caller has used of a quota in its current window.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct QuotaUsage {
    pub(crate) policy: String,
    /// `2026-12` or `2026-12-06`, in the quota's time zone.
    pub(crate) window: String,
    pub(crate) used: u64,
    pub(crate) limit: u64,
    /// Seconds until the window renews.
    pub(crate) renews_in_s: u64,
}

/// What the caller counted as `counted` (`consumer:<provider>:<id>`,
/// `subject:<provider>:<sub>`, `header:<value>`, `ip:<address>`, …, as
/// `kv-schema/quotas.md` says) has used of every quota of the config now.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn quota_usage(
    config: &Config,
    kv: &impl KvStore,
    counted: &str,
    now_us: u64,
) -> Result<Vec<QuotaUsage>, crate::ports::KvError> {
    let mut usage = Vec::new();
    for limit in &config.rate_limits {
        let Metering::Quota(q) = &limit.meter else { continue };
        let window = quota::window(now_us, q.period, &q.zone);
        let stored = kv.get(&quota_key(&limit.name, &window.id, &[counted.as_bytes()])).await?;
        usage.push(QuotaUsage {
            policy: limit.name.to_string(),
            used: crate::shared::gcra::decode(stored.as_deref()).unwrap_or(0),
            limit: q.limit,
            renews_in_s: seconds(window.ends_us.saturating_sub(now_us)),
            window: window.id,
        });
    }
    Ok(usage)
}

/// The key and meter of a policy for this request (see [`caller::value`]),
/// and a quota's window.
fn step_for(
    config: &Config,
    limit: &RateLimit,
    ctx: &Ctx,
    headers: &http::HeaderMap,
    now_us: u64,
) -> (String, Meter, Option<Window>) {
    caller::with_value(config, &limit.key, ctx, headers, |counted| match &limit.meter {
        Metering::Rate { rate, .. } => (key(&limit.name, counted), Meter::Rate { rate: *rate, max_delay_us: 0 }, None),
        Metering::Quota(q) => {
            let window = quota::window(now_us, q.period, &q.zone);
            let meter = Meter::Quota { limit: q.limit, ends_us: window.ends_us };
            (quota_key(&limit.name, &window.id, counted), meter, Some(window))
        }
    })
}

/// The rate-limit phase: the route's policies that apply to this caller,
/// checked in one store step; their state goes on every answer.
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, LimitError> {
    let headers = req.headers();
    let Some(route) = gateway.route(ctx).filter(|r| !r.rate_limits.is_empty()) else {
        return Ok(Flow::Continue);
    };
    // Timed only for a sampled trace's span: no clock read otherwise.
    let started = ctx.spans.is_some().then(|| ports.clock().monotonic());
    let mut outcomes = PerPolicy::new();
    let result = check(gateway, route, ctx, headers, ports, &mut outcomes).await;
    if let (Some(spans), Some(started)) = (&mut ctx.spans, started) {
        let outcome = outcomes.first().map_or("none", |(_, o): &(usize, LimitOutcome)| o.name());
        let span = SpanRecord::new(
            "portcullis.rate_limit",
            SpanKind::Internal,
            &ctx.trace.span_id,
            started,
            ports.clock().monotonic(),
        )
        .attr("portcullis.limit.outcome", outcome)
        .failed(result.as_ref().err().map(ToString::to_string));
        spans.push(span);
    }
    ctx.limits = outcomes;
    let applied = result?;
    ctx.limit_headers = applied.headers;
    if let Some(detail) = applied.store_error {
        ctx.failure = Some(Failure { problem: None, source: Source::Store, detail });
    }
    if !applied.delay.is_zero() {
        ports.clock().sleep(applied.delay).await;
        ctx.limit_delay = Some(applied.delay);
    }
    drop(applied.places);
    Ok(Flow::Continue)
}

async fn check<'g, P: Ports>(
    gateway: &'g Gateway,
    route: &Route,
    ctx: &Ctx,
    headers: &http::HeaderMap,
    ports: &P,
    outcomes: &mut PerPolicy<(usize, LimitOutcome)>,
) -> Result<Applied<'g>, LimitError> {
    let config = &gateway.config;
    let groups: &[String] = ctx.identity.as_ref().map_or(&[], |id| &id.groups);
    // Sized up front: `unzip` after a filter grew both a push at a time.
    let n = route.rate_limits.len();
    let (mut indexes, mut policies): (PerPolicy<usize>, PerPolicy<&RateLimit>) =
        (PerPolicy::with_capacity(n), PerPolicy::with_capacity(n));
    for &i in &route.rate_limits {
        let l = &config.rate_limits[i];
        if l.groups.is_empty() || l.groups.iter().any(|g| groups.contains(g)) {
            indexes.push(i);
            policies.push(l);
        }
    }
    if policies.is_empty() {
        return Ok(Applied::default());
    }
    let now_us = u64::try_from(ports.clock().now().as_micros()).unwrap_or(u64::MAX);
    let metered: PerPolicy<(String, Meter, Option<Window>)> =
        policies.iter().map(|l| step_for(config, l, ctx, headers, now_us)).collect();
    // A policy that smooths lets the request wait while it has a place for it.
    let mut places = Vec::new();
    let steps: PerPolicy<LimitStep<'_>> = policies
        .iter()
        .zip(&indexes)
        .zip(&metered)
        .map(|((l, &i), (k, meter, _))| {
            let waits = l.smoothing().and_then(|s| Some((s.max_delay, gateway.waiting.take(i, s.max_waiting)?)));
            let meter = match (*meter, waits) {
                (Meter::Rate { rate, .. }, Some((delay, place))) => {
                    places.push(place);
                    Meter::Rate { rate, max_delay_us: u64::try_from(delay.as_micros()).unwrap_or(u64::MAX) }
                }
                (meter, _) => meter,
            };
            LimitStep { key: k, meter, cost: l.cost, exact: l.exact }
        })
        .collect();
    // A holder that outlives its request decides hot keys under leases.
    let mut local: PerPolicy<Option<(Decision, Taken)>> = smallvec![None; steps.len()];
    let mut asked: PerPolicy<LimitStep<'_>> = PerPolicy::with_capacity(steps.len());
    for (step, local) in steps.iter().zip(local.iter_mut()) {
        match leasable::<P>(step).map(|rate| (rate, gateway.leases.admit(step.key, rate, step.cost, now_us))) {
            Some((_, Local::Admitted(d, taken))) => *local = Some((d, taken)),
            Some((rate, Local::Ask(Some(want)))) => {
                asked.push(LimitStep { meter: Meter::Lease { rate, want }, ..*step })
            }
            _ => asked.push(*step),
        }
    }
    let untake = |local: &[Option<(Decision, Taken)>]| {
        for (step, l) in steps.iter().zip(local) {
            if let Some((_, taken)) = l {
                gateway.leases.untake(step.key, *taken);
            }
        }
    };
    let all = |outcome| indexes.iter().map(move |&i| (i, outcome));
    let (stored, store_now) = match asked.is_empty() {
        true => (Vec::new(), now_us),
        false => match ports.kv().limit(&asked, now_us).await {
            Ok(decided) => decided,
            Err(e) if policies.iter().all(|l| l.fail_open) => {
                outcomes.extend(all(LimitOutcome::StoreErrorAllowed));
                return Ok(Applied {
                    store_error: Some(format!("rate-limit store failed, request allowed: {e}")),
                    ..Applied::default()
                });
            }
            Err(e) => {
                untake(&local);
                outcomes.extend(all(LimitOutcome::StoreErrorDenied));
                return Err(LimitError::StoreDown(e.to_string()));
            }
        },
    };
    let mut from_store = stored.iter();
    let mut decisions: PerPolicy<Decision> = PerPolicy::with_capacity(steps.len());
    outcomes.reserve(indexes.len());
    for (&i, l) in indexes.iter().zip(&local) {
        let (decision, outcome) = match (l, l.is_none().then(|| from_store.next())) {
            (Some((d, _)), _) => (*d, LimitOutcome::Leased),
            (None, Some(Some(d))) => (*d, store_outcome(d)),
            _ => {
                untake(&local);
                return Err(LimitError::StoreDown("the store left a step undecided".into()));
            }
        };
        outcomes.push((i, outcome));
        decisions.push(decision);
    }
    // A lone store step refused, on a key this holder leases: a range a
    // concurrent request brought back meanwhile may have a stretch for it.
    if let [step] = asked.as_slice()
        && leasable::<P>(step).is_some()
        && let Some(j) = local.iter().position(Option::is_none)
        && !decisions[j].allowed
        && let Some((d, taken)) = gateway.leases.take_again(step.key, step.cost, now_us)
    {
        let base = outcomes.len() - decisions.len();
        (decisions[j], local[j], outcomes[base + j].1) = (d, Some((d, taken)), LimitOutcome::Leased);
    }
    if decisions.iter().all(|d| d.allowed) {
        for (step, d) in asked.iter().zip(&stored) {
            if let Meter::Lease { rate, .. } = step.meter {
                gateway.leases.keep(step.key, d, rate, store_now, now_us);
            }
        }
        let delay = Duration::from_micros(decisions.iter().map(|d| d.delay_us).max().unwrap_or(0));
        let places = if delay.is_zero() { Vec::new() } else { places };
        let mut headers = answer_headers(&policies, &decisions, &metered);
        headers.extend(quota_warning(&policies, &decisions));
        return Ok(Applied { headers, store_error: None, delay, places });
    }
    // Refused: nothing was charged (stretches taken here go back), so a
    // policy that would have admitted the request still has what it had.
    untake(&local);
    let unspent: PerPolicy<Decision> = policies
        .iter()
        .zip(&decisions)
        .map(|(l, d)| match (d.allowed, &l.meter) {
            (true, Metering::Rate { rate, .. }) => Decision {
                remaining: d.remaining + l.cost,
                reset_after_us: d.reset_after_us.saturating_sub((l.cost + d.leased).saturating_mul(rate.interval_us)),
                ..*d
            },
            (true, Metering::Quota(_)) => Decision { remaining: d.remaining + l.cost, ..*d },
            (false, _) => *d,
        })
        .collect();
    let headers = answer_headers(&policies, &unspent, &metered);
    let denied = || policies.iter().zip(&decisions).filter(|(_, d)| !d.allowed);
    let quota = denied().any(|(l, _)| matches!(l.meter, Metering::Quota(_)));
    let retry_after = denied()
        .map(|(_, d)| d.retry_after_us.map(seconds))
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max());
    Err(LimitError::Exceeded { retry_after, headers, quota })
}

/// The rate of a step this home may decide under a lease: an exact rate
/// without a delay allowance whose burst can be shared, where the gateway
/// outlives its request.
fn leasable<P: Ports>(step: &LimitStep<'_>) -> Option<Rate> {
    let rate = match step.meter {
        Meter::Rate { rate, max_delay_us: 0 } | Meter::Lease { rate, .. } => rate,
        _ => return None,
    };
    (step.exact && P::LIFETIME != Lifetime::Request && lease::shareable(rate, step.cost)).then_some(rate)
}

/// Gives back to the store the unused rest of the ranges this holder
/// leased on keys idle here (on every key with `all`: the holder is going
/// away, a node reloading or stopping), so the fleet can admit those units
/// before they pass. A range others leased past, or a store that fails,
/// stays out of use until it passes, as it would have without this.
/// Returns the ranges that went back.
#[cfg_attr(feature = "edge-p2", allow(dead_code))] // WASI 0.2 instances hold no ranges
pub(crate) async fn give_back<P: Ports>(gateway: &Gateway, ports: &P, all: bool) -> usize {
    let now_us = u64::try_from(ports.clock().now().as_micros()).unwrap_or(u64::MAX);
    let mut back = 0;
    for unused in gateway.leases.unused(now_us, all) {
        // Newest first: each range that goes back may let the one before it go.
        for (from_us, end_us) in unused.ranges {
            match ports.kv().give_back(&unused.key, from_us, end_us, now_us).await {
                Ok(true) => back += 1,
                _ => break,
            }
        }
    }
    back
}

/// Looks over the holder's ranges twice per idle time while it holds
/// any, giving back those of keys gone idle: for a WASI 0.3 instance,
/// whose only tasks are its requests' (Spin keeps the instance while this
/// runs, then drops it once idle; what it still held would be lost).
#[cfg_attr(not(feature = "edge-p3"), allow(dead_code))] // a WASI 0.3 instance's
pub(crate) async fn watch_leases<P: Ports>(gateway: &Gateway, ports: &P) {
    loop {
        ports.clock().sleep(Duration::from_micros(leases::IDLE_US / 2)).await;
        give_back(gateway, ports, false).await;
        if gateway.leases.watch_ends() {
            return;
        }
    }
}

/// What the store's decision of one step was, for the log and metrics.
fn store_outcome(d: &Decision) -> LimitOutcome {
    match (d.allowed, d.delay_us, d.leased) {
        (true, 0, 0) if d.pooled => LimitOutcome::Pooled,
        (true, 0, 0) => LimitOutcome::Admitted,
        (true, 0, _) => LimitOutcome::LeaseTaken,
        (true, _, _) => LimitOutcome::Delayed,
        (false, _, _) => LimitOutcome::Limited,
    }
}

/// `Quota-Warning` for each quota past one of its `warn_at` shares: the
/// highest share passed, what is used of what, and when it renews.
fn quota_warning(policies: &[&RateLimit], decisions: &[Decision]) -> Option<(HeaderName, HeaderValue)> {
    let mut text = String::new();
    for (l, d) in policies.iter().zip(decisions) {
        let Metering::Quota(q) = &l.meter else { continue };
        let used = q.limit.saturating_sub(d.remaining);
        let passed = q.warn_at.iter().rev().find(|&&share| used.saturating_mul(100) >= u64::from(share) * q.limit);
        if let Some(share) = passed {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let reset = seconds(d.reset_after_us);
            let _ = write!(text, "\"{}\";threshold={share};used={used};q={};t={reset}", l.name, q.limit);
        }
    }
    let value = HeaderValue::from_str(&text).ok().filter(|_| !text.is_empty())?;
    Some((HeaderName::from_static("quota-warning"), value))
}

/// Whole seconds, rounded up (a client that waits this long is admitted).
fn seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Built at compile time: `from_static` at run time looks the name up among
/// the standard ones, ~200 instructions a header of every limited answer.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `metered`: each policy's key, meter and (a quota's) window, as `step_for` made them.
fn answer_headers(
    policies: &[&RateLimit],
    decisions: &[Decision],
    metered: &[(String, Meter, Option<Window>)],
) -> Headers {
    // One rate policy's `RateLimit-Policy` is its item, shared from the config.
    let policy = match policies {
        [RateLimit { meter: Metering::Rate { policy_item, .. }, .. }] => policy_item.clone(),
        _ => joined_policy(policies, metered),
    };
    // Sized exactly: a string without spare room becomes the value's bytes
    // as it is (spare room would cost the value another allocation).
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let exact = policies
        .iter()
        .zip(decisions)
        .map(|(l, d)| r#""";r=;t="#.len() + l.name.len() + digits(d.remaining) + digits(seconds(d.reset_after_us)));
    let mut state = String::with_capacity(exact.sum::<usize>() + 2 * policies.len().saturating_sub(1));
    for (i, (l, d)) in policies.iter().zip(decisions).enumerate() {
        if i > 0 {
            state.push_str(", ");
        }
        // Pushed, not `write!`: this header is every limited answer's.
        let mut n = itoa::Buffer::new();
        for piece in ["\"", &l.name[..], "\";r=", n.format(d.remaining), ";t="] {
            state.push_str(piece);
        }
        state.push_str(n.format(seconds(d.reset_after_us)));
    }
    // Room for the two, and a quota's warning.
    let mut out = Vec::with_capacity(3);
    out.extend(policy.map(|v| (RATELIMIT_POLICY, v)));
    out.extend(HeaderValue::from_maybe_shared(Bytes::from(state)).ok().map(|v| (RATELIMIT, v)));
    let mut push = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            out.push((name, v));
        }
    };
    // Legacy headers describe the policy closest to refusing.
    if policies.iter().any(|l| l.legacy_headers)
        && let Some((l, d)) = policies.iter().zip(decisions).min_by_key(|(_, d)| d.remaining)
    {
        let limit = match &l.meter {
            Metering::Rate { rate, .. } => rate.burst,
            Metering::Quota(q) => q.limit,
        };
        push(HeaderName::from_static("x-ratelimit-limit"), limit.to_string());
        push(HeaderName::from_static("x-ratelimit-remaining"), d.remaining.to_string());
        push(HeaderName::from_static("x-ratelimit-reset"), seconds(d.reset_after_us).to_string());
    }
    out
}

/// `RateLimit-Policy` for several policies: their items joined; none if
/// a name cannot be in a header.
fn joined_policy(policies: &[&RateLimit], metered: &[(String, Meter, Option<Window>)]) -> Option<HeaderValue> {
    let mut policy = Vec::with_capacity(policies.len() * 32);
    for (i, (l, (_, _, window))) in policies.iter().zip(metered).enumerate() {
        if i > 0 {
            policy.extend_from_slice(b", ");
        }
        match (&l.meter, window) {
            (Metering::Rate { policy_item, .. }, _) => policy.extend_from_slice(policy_item.as_ref()?.as_bytes()),
            (Metering::Quota(q), Some(w)) => {
                let _ = write!(policy, "\"{}\";q={};w={}", l.name, q.limit, w.length_s);
            }
            (Metering::Quota(q), None) => {
                let _ = write!(policy, "\"{}\";q={}", l.name, q.limit);
            }
        }
    }
    HeaderValue::from_maybe_shared(Bytes::from(policy)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::gcra;

    #[test]
    fn kv_schema_rate_limits_matches_the_code() {
        let doc = include_str!("../../kv-schema/rate-limits.md");
        let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
        let layout = block("text key");
        let prefix = layout.strip_suffix("{policy}:{{sha256-hex}}").expect("layout");
        let k = key("per_ip", &[b"ip:203.0.113.9"]);
        let rest = k.strip_prefix(prefix).expect("prefix");
        let (policy, tagged) = rest.split_once(':').expect("policy:hash");
        let hex = tagged.strip_prefix('{').and_then(|t| t.strip_suffix('}')).expect("a hash tag");
        assert_eq!(policy, "per_ip");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // SHA-256 of the whole `kind:value`, however it is split into pieces.
        assert_eq!(hex, "c22db0284eb367261a5817173dc93d13d025906eea0d5268877045392e124049");
        assert_eq!(key("per_ip", &[b"ip:", b"203.0.113.9"]), k);
        let example = block("text value");
        let tat = gcra::decode(Some(example.as_bytes())).expect("the example value decodes");
        assert_eq!(gcra::encode(tat), example);
    }

    #[test]
    fn kv_schema_quotas_matches_the_code() {
        let doc = include_str!("../../kv-schema/quotas.md");
        let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
        let layout = block("text key");
        let prefix = layout.strip_suffix("{policy}:{window}:{{sha256-hex}}").expect("layout");
        let k = quota_key("monthly", "2026-12", &[b"consumer:", b"partners:acme"]);
        let rest = k.strip_prefix(prefix).expect("prefix");
        let parts: Vec<&str> = rest.split(':').collect();
        assert_eq!(parts[..2], ["monthly", "2026-12"]);
        let hex = parts[2].strip_prefix('{').and_then(|t| t.strip_suffix('}')).expect("a hash tag");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let rate = key("per_consumer", &[b"consumer:partners:acme"]);
        assert!(rate.ends_with(parts[2]), "a caller's rate and quota share a hash tag: {rate}");
        assert_eq!(quota_key("monthly", "2026-12", &[b"consumer:partners:acme"]), k);
        let example = block("text value");
        assert!(gcra::decode(Some(example.as_bytes())).is_some(), "the example count decodes");
    }
}
