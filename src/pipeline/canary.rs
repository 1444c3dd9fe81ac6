//! The canary phase: which service — the route's (stable) or its canary's —
//! serves this request, and, once it answered, whether the canary should
//! be rolled back or promoted.
//!
//! A caller's variant: a `header` of `canary` or `stable` forces it; a
//! rolled-back canary gets nobody else; a caller in one of `groups` gets
//! the canary; everyone else by a hash of `sticky_on` (the same caller, the
//! same variant; a larger share keeps the callers it had). Each instance
//! compares the two variants' error rates (and p95 latencies) over the
//! rollback window; a rollback or a promotion is written to the store
//! (`kv-schema/canaries.md`) and every instance follows within `sync`.

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Ctx, Flow, Gateway, Outcome, caller, log, upstream};
use crate::config::canary::Canary;
use crate::config::{Config, Route};
use crate::ports::{Body, Clock, KvStore, Lifetime, Ports, store_key};
use crate::shared::window::Window;

const SLOTS: usize = 60;
/// Latency buckets: half-octaves of microseconds (bucket b holds up to
/// 2^(b/2) µs), enough for an hour.
const BUCKETS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    Stable,
    Canary,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
        }
    }
}

/// A slot of one variant's rollback window.
#[derive(Clone, Default)]
struct Slot {
    requests: u32,
    errors: u32,
    latency: Option<Box<[u32; BUCKETS]>>,
}

/// One variant's outcomes over the rollback window: `SLOTS` slots of
/// `window / SLOTS` (at least a second) each.
type Outcomes = Window<Slot, SLOTS>;

struct Totals {
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

fn add(window: &mut Outcomes, index: u64, ok: bool, latency: Option<Duration>) {
    let slot = window.slot(index);
    slot.requests += 1;
    slot.errors += u32::from(!ok);
    if let Some(l) = latency {
        let micros = log::micros(l).max(1);
        // 2 × log2, rounded up: the half-octave bucket.
        let bucket = ((micros as f64).log2() * 2.0).ceil().clamp(0.0, (BUCKETS - 1) as f64) as usize;
        slot.latency.get_or_insert_with(|| Box::new([0; BUCKETS]))[bucket] += 1;
    }
}

fn totals(window: &Outcomes, now: u64) -> Totals {
    let mut t = Totals { requests: 0, errors: 0, latency: [0; BUCKETS] };
    for slot in window.live(now, SLOTS as u64) {
        t.requests += slot.requests;
        t.errors += slot.errors;
        if let Some(l) = &slot.latency {
            t.latency.iter_mut().zip(l.iter()).for_each(|(a, b)| *a += b);
        }
    }
    t
}

impl Totals {
    /// Errors per hundred requests.
    fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { f64::from(self.errors) * 100.0 / f64::from(self.requests) }
    }

    /// The 95th percentile's bucket bound.
    fn p95(&self) -> Option<Duration> {
        let total: u64 = self.latency.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 95).div_ceil(100);
        let mut seen = 0;
        let bucket = self.latency.iter().position(|&c| {
            seen += u64::from(c);
            seen >= rank
        })?;
        Some(Duration::from_micros(2f64.powf(bucket as f64 / 2.0).round() as u64))
    }
}

struct State {
    rolled_back: bool,
    step: usize,
    /// When the current step began (wall clock); `None` until first used.
    since: Option<Duration>,
    windows: [Outcomes; 2],
    synced: Option<Duration>,
}

/// A canary route's state, as long as the gateway value lives.
pub(crate) struct CanaryState {
    key: String,
    state: Mutex<State>,
}

/// What changed, for the operational log.
enum Change {
    RolledBack(String),
    Promoted(u32),
}

impl CanaryState {
    pub(crate) fn new(route: &Route) -> Self {
        let key = store_key(&["pc1:cy:"], &Sha256::digest(route.name.as_bytes()));
        let state = State { rolled_back: false, step: 0, since: None, windows: Default::default(), synced: None };
        Self { key, state: Mutex::new(state) }
    }

    /// The store key of a route's canary record.
    #[cfg(any(test, not(target_arch = "wasm32")))]
    pub(crate) fn key_for(route: &Route) -> String {
        Self::new(route).key
    }

    fn lock<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Reads the fleet's record if it is time to.
    async fn sync<P: Ports>(&self, canary: &Canary, ports: &P) {
        let (now, mono) = (ports.clock().now(), ports.clock().monotonic());
        let due = self.lock(|s| {
            P::LIFETIME == Lifetime::Request
                || s.synced.is_none_or(|at| mono.saturating_sub(at) >= canary.rollback.sync)
        });
        if !due {
            return;
        }
        let record = ports.kv().get(&self.key).await.ok().flatten();
        let parsed = record.as_deref().and_then(|v| Record::parse(v, &canary.fingerprint));
        self.lock(|s| {
            s.synced = Some(mono);
            // The record rules: a reset (no record) clears a rollback here
            // too, and the outcomes that led to it.
            let rolled_back = parsed.as_ref().is_some_and(|r| r.rolled_back);
            if s.rolled_back && !rolled_back {
                s.windows = Default::default();
            }
            s.rolled_back = rolled_back;
            match parsed {
                Some(r) if r.step != s.step || s.since.is_none() => {
                    s.step = r.step.min(canary.steps.len().saturating_sub(1));
                    s.since = Some(Duration::from_micros(r.since_us));
                }
                // Promoted before, and the record is gone: reset.
                None if s.step > 0 => {
                    s.step = 0;
                    s.since = Some(now);
                }
                _ => {}
            }
            s.since.get_or_insert(now);
        });
    }

    async fn write<P: Ports>(&self, canary: &Canary, ports: &P) {
        let record = self.lock(|s| Record {
            fingerprint: canary.fingerprint.clone(),
            rolled_back: s.rolled_back,
            step: s.step,
            since_us: log::micros(s.since.unwrap_or_default()),
        });
        let Ok(value) = serde_json::to_vec(&record) else { return };
        // A week: a rollback outlives any soak; a reload or a reset clears it sooner.
        let _ = ports.kv().set(&self.key, &value, Some(Duration::from_secs(7 * 86_400))).await;
    }
}

/// The shared record (`kv-schema/canaries.md`).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The canary's settings it was written for.
    fingerprint: String,
    rolled_back: bool,
    /// The promotion step (0 without `promote`).
    step: usize,
    /// When that step began (µs since the epoch).
    since_us: u64,
}

impl Record {
    /// The record, if it was written for these settings (one of an earlier
    /// rollout reads as absent).
    fn parse(value: &[u8], fingerprint: &str) -> Option<Self> {
        serde_json::from_slice::<Self>(value).ok().filter(|r| r.fingerprint == fingerprint)
    }
}

/// The canary phase: the service for this request (`ctx.service`), the
/// route's or, for a route with a canary, its canary's.
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, Infallible> {
    let Some((index, route)) = ctx.route.zip(gateway.route(ctx)) else {
        return Ok(Flow::Continue);
    };
    ctx.service = Some(route.service);
    let (Some(canary), Some(state)) = (&route.canary, gateway.canaries[index].as_ref()) else {
        return Ok(Flow::Continue);
    };
    state.sync(canary, ports).await;
    let variant = choose(&gateway.config, route, canary, state, ctx, req.headers());
    ctx.variant = Some(variant);
    if variant == Variant::Canary {
        ctx.service = Some(canary.service);
    }
    Ok(Flow::Continue)
}

/// The canary's response phase: how the request went counts for its
/// variant (which may roll the canary back or promote it), and the answer
/// names the variant where the route asks.
pub(crate) async fn response_phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    let Some(index) = ctx.route else { return };
    // An answer from the cache says nothing of the variant's origin.
    if !ctx.cache.as_ref().is_some_and(|c| c.answered()) {
        record(gateway, ports, index, ctx, upstream::answered_well(outcome, ctx)).await;
    }
    if let (Ok(resp), Some((name, value))) = (outcome, variant_header(&gateway.config.routes[index], ctx)) {
        resp.headers_mut().insert(name, value);
    }
}

fn choose(
    config: &Config,
    route: &Route,
    canary: &Canary,
    state: &CanaryState,
    ctx: &Ctx,
    headers: &HeaderMap,
) -> Variant {
    let forced = canary.header.as_ref().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
    match forced.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("canary") => return Variant::Canary,
        Some(v) if v.eq_ignore_ascii_case("stable") => return Variant::Stable,
        _ => {}
    }
    let (rolled_back, share) = state.lock(|s| (s.rolled_back, canary.steps.get(s.step).copied().unwrap_or(0)));
    if rolled_back {
        return Variant::Stable;
    }
    let in_group = ctx.identity.as_ref().is_some_and(|id| id.groups.iter().any(|g| canary.groups.contains(g)));
    if in_group {
        return Variant::Canary;
    }
    let mut hash = Sha256::new();
    hash.update(route.name.as_bytes());
    hash.update(b"\n");
    caller::with_value(config, &canary.sticky_on, ctx, headers, |pieces| pieces.iter().for_each(|p| hash.update(p)));
    let digest = hash.finalize();
    let bucket = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default()) % 10_000;
    if bucket < u64::from(share) { Variant::Canary } else { Variant::Stable }
}

/// Counts how the request went for its variant, then rolls back or
/// promotes the canary if its window says so. `ok`: an answer below 500.
async fn record<P: Ports>(gateway: &Gateway, ports: &P, route_index: usize, ctx: &Ctx, ok: bool) {
    let route = &gateway.config.routes[route_index];
    let (Some(canary), Some(state), Some(variant)) =
        (&route.canary, gateway.canaries[route_index].as_ref(), ctx.variant)
    else {
        return;
    };
    let r = &canary.rollback;
    let (now, mono) = (ports.clock().now(), ports.clock().monotonic());
    let width = (r.window.as_secs() / SLOTS as u64).max(1);
    let index = mono.as_secs() / width;
    let latency = r.max_p95_increase.and(ctx.upstream_latency);
    let change = state.lock(|s| {
        add(&mut s.windows[variant as usize], index, ok, latency);
        if s.rolled_back {
            return None;
        }
        let (stable, canary_t) = (totals(&s.windows[0], index), totals(&s.windows[1], index));
        if canary_t.requests < r.min_requests {
            return None;
        }
        let increase = canary_t.error_rate() - stable.error_rate();
        let slower = match (r.max_p95_increase, canary_t.p95(), stable.p95()) {
            (Some(max), Some(c), Some(st)) if stable.requests >= r.min_requests && c > st + max => Some((c, st)),
            _ => None,
        };
        if increase > f64::from(r.max_error_rate_increase) || slower.is_some() {
            s.rolled_back = true;
            let why = match slower {
                Some((c, st)) if increase <= f64::from(r.max_error_rate_increase) => {
                    format!("p95 {c:?} against the stable {st:?}")
                }
                _ => format!(
                    "5xx {:.1}% of {} against the stable {:.1}% of {}",
                    canary_t.error_rate(),
                    canary_t.requests,
                    stable.error_rate(),
                    stable.requests
                ),
            };
            return Some(Change::RolledBack(why));
        }
        let soaked = s.since.is_some_and(|since| now.saturating_sub(since) >= canary.soak);
        if soaked && s.step + 1 < canary.steps.len() {
            s.step += 1;
            s.since = Some(now);
            s.windows = Default::default();
            return Some(Change::Promoted(canary.steps[s.step]));
        }
        None
    });
    let Some(change) = change else { return };
    state.write(canary, ports).await;
    let line = match change {
        Change::RolledBack(why) => {
            format!("canary rolled back: route {} ({why}); every caller now gets the stable service", route.name)
        }
        Change::Promoted(points) => {
            format!(
                "canary promoted: route {} now sends {}.{:02}% of callers to the canary",
                route.name,
                points / 100,
                points % 100
            )
        }
    };
    ports.event(&line);
}

/// The response header naming the variant, where the route asks for one.
fn variant_header(route: &Route, ctx: &Ctx) -> Option<(http::HeaderName, HeaderValue)> {
    let name = route.canary.as_ref()?.variant_header.clone()?;
    Some((name, HeaderValue::from_static(ctx.variant?.name())))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bytes::Bytes;
    use http::{Request, Response};

    use super::*;
    use crate::config::Config;
    use crate::pipeline::tests::run_with;
    use crate::pipeline::{Downstream, Exchange, Scheme};
    use crate::ports::UpstreamError;
    use crate::ports::testing::{FakeHttp, FakePorts, block_on};

    const CONFIG: &str = r#"
[services.v1]
url = "http://v1.internal"
[services.v2]
url = "http://v2.internal"
[services.v2.retry]
attempts = 1

[[routes]]
name = "split"
path = "/split"
service = "v1"
[routes.canary]
service = "v2"
share = "25%"
sticky_on = "header:x-user"
header = "x-canary"
variant_header = "x-variant"
[routes.canary.rollback]
min_requests = 10
max_error_rate_increase = "10%"
window = "60s"

[[routes]]
name = "slow"
path = "/slow"
service = "v1"
[routes.canary]
service = "v2"
share = "50%"
sticky_on = "header:x-user"
[routes.canary.rollback]
min_requests = 10
max_p95_increase = "100ms"

[[routes]]
name = "stepped"
path = "/stepped"
service = "v1"
[routes.canary]
service = "v2"
sticky_on = "header:x-user"
[routes.canary.promote]
steps = ["10%", "50%", "100%"]
soak = "5m"
[routes.canary.rollback]
min_requests = 20
"#;

    fn gateway() -> Gateway {
        Gateway::new(Config::parse(CONFIG, "t.toml", &Default::default()).unwrap())
    }

    /// v1 answers 200; v2 answers with `v2`'s status.
    fn ports(v2: u16) -> FakePorts {
        FakePorts::new(FakeHttp::new(move |req| {
            let status = if req.uri().host() == Some("v2.internal") { v2 } else { 200 };
            Ok::<_, UpstreamError>(Response::builder().status(status).body(Bytes::new()).unwrap())
        }))
    }

    fn get(gw: &Gateway, ports: &FakePorts, path: &str, headers: &[(&str, &str)]) -> Exchange<Bytes> {
        let mut req = Request::get(path).header("host", "gw.test");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Bytes::new()).unwrap();
        run_with(gw, ports, req, Downstream::plain(IpAddr::from([192, 0, 2, 1]), Scheme::Http))
    }

    fn variant(ex: &Exchange<Bytes>) -> &'static str {
        ex.log.variant.unwrap_or("none")
    }

    #[test]
    fn a_share_of_callers_sticks_to_the_canary_and_a_header_forces_either() {
        let (gw, p) = (gateway(), ports(200));
        let users: Vec<String> = (0..2000).map(|u| format!("user-{u}")).collect();
        let first: Vec<&str> = users.iter().map(|u| variant(&get(&gw, &p, "/split", &[("x-user", u)]))).collect();
        let again: Vec<&str> = users.iter().map(|u| variant(&get(&gw, &p, "/split", &[("x-user", u)]))).collect();
        assert_eq!(first, again, "each caller keeps its variant");
        let share = first.iter().filter(|v| **v == "canary").count() as f64 / 2000.0;
        assert!((share - 0.25).abs() < 0.03, "{share}");
        let forced = get(&gw, &p, "/split", &[("x-user", "user-1"), ("x-canary", "Canary")]);
        assert_eq!(variant(&forced), "canary");
        assert_eq!(forced.response.headers()["x-variant"], "canary");
        assert_eq!(p.http.last().unwrap().uri().host(), Some("v2.internal"));
        let stable = get(&gw, &p, "/split", &[("x-user", "user-1"), ("x-canary", "stable")]);
        assert_eq!((variant(&stable), stable.response.headers()["x-variant"].to_str().unwrap()), ("stable", "stable"));
        assert!(stable.log.to_line().contains(r#""variant":"stable""#));
    }

    #[test]
    fn a_failing_canary_is_rolled_back_for_everyone_and_a_reset_restarts_it() {
        let (gw, p) = (gateway(), ports(500));
        let mut canary_failures = 0;
        for u in 0..400 {
            let ex = get(&gw, &p, "/split", &[("x-user", &format!("u{u}"))]);
            if variant(&ex) == "canary" {
                canary_failures += 1;
            }
        }
        assert_eq!(canary_failures, 10, "rolled back at min_requests, then nobody gets the canary");
        let events = p.events.lock().unwrap().clone();
        assert!(
            events[0].contains("canary rolled back: route split (5xx 100.0% of 10 against the stable 0.0%"),
            "{events:?}"
        );
        // Another instance sharing the store follows at its next read.
        let other = gateway();
        let ex = get(&other, &p, "/split", &[("x-canary", "canary")]);
        assert_eq!(variant(&ex), "canary", "the header still forces it");
        let all: Vec<&str> =
            (0..200).map(|u| variant(&get(&other, &p, "/split", &[("x-user", &format!("w{u}"))]))).collect();
        assert!(all.iter().all(|v| *v == "stable"), "rolled back fleet-wide");
        // A reset (the record deleted) restarts it once instances re-read.
        block_on(p.kv().delete(&CanaryState::key_for(&gw.config.routes[0]))).unwrap();
        p.clock.advance(Duration::from_secs(1));
        let after: Vec<&str> =
            (0..200).map(|u| variant(&get(&other, &p, "/split", &[("x-user", &format!("w{u}"))]))).collect();
        assert!(after.contains(&"canary"), "the canary serves again after a reset");
    }

    #[test]
    fn a_slower_canary_is_rolled_back_by_its_p95() {
        let mut p = ports(200);
        let clock = p.clock.clone();
        p.http = FakeHttp::new(move |req| {
            if req.uri().host() == Some("v2.internal") {
                clock.advance(Duration::from_millis(300));
            }
            Ok::<_, UpstreamError>(Response::new(Bytes::new()))
        });
        let gw = gateway();
        let served: Vec<&str> =
            (0..200).map(|u| variant(&get(&gw, &p, "/slow", &[("x-user", &format!("u{u}"))]))).collect();
        let canaries = served.iter().filter(|v| **v == "canary").count();
        assert!((10..40).contains(&canaries), "rolled back once both variants had 10 requests: {canaries}");
        assert!(served[150..].iter().all(|v| *v == "stable"), "then nobody gets it");
        let events = p.events.lock().unwrap().clone();
        assert!(events.iter().any(|e| e.contains("canary rolled back: route slow (p95")), "{events:?}");
    }

    #[test]
    fn a_healthy_canary_is_promoted_step_by_step_after_each_soak() {
        let (gw, p) = (gateway(), ports(200));
        let share = |gw: &Gateway| {
            let n = (0..1000)
                .filter(|u| variant(&get(gw, &p, "/stepped", &[("x-user", &format!("s{u}"))])) == "canary")
                .count();
            n as f64 / 1000.0
        };
        assert!((share(&gw) - 0.10).abs() < 0.03);
        // After the soak, the next requests (once the canary has served
        // `min_requests` of them in the window) pass the test: next step.
        p.clock.advance(Duration::from_secs(301));
        share(&gw);
        assert!((share(&gw) - 0.50).abs() < 0.05, "second step");
        assert!(p.events.lock().unwrap().iter().any(|e| e.contains("canary promoted: route stepped now sends 50.00%")));
        let other = gateway();
        assert!((share(&other) - 0.50).abs() < 0.05, "another instance follows the record");
        p.clock.advance(Duration::from_secs(301));
        share(&gw);
        assert_eq!(share(&gw), 1.0, "last step: everyone");
    }

    #[test]
    fn kv_schema_canaries_matches_the_code() {
        let doc = include_str!("../../kv-schema/canaries.md");
        let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
        let gw = gateway();
        let key = CanaryState::key_for(&gw.config.routes[0]);
        let prefix = block("text key").strip_suffix("{sha256-hex}").expect("layout").to_string();
        let hex = key.strip_prefix(&prefix).expect("prefix");
        assert_eq!(
            hex, "ad1a64057f9ab34fecfe3f4ee78660bb0316dbda9370581ffbeb1e8bddf3d598",
            "SHA-256 of the route name"
        );
        let example = block("json value");
        let want = Record {
            fingerprint: "3f9a0c1d2e4b5a69".into(),
            rolled_back: true,
            step: 0,
            since_us: 1_767_225_600_123_456,
        };
        assert_eq!(Record::parse(example.as_bytes(), &want.fingerprint), Some(want));
        assert_eq!(Record::parse(example.as_bytes(), "another"), None, "another rollout's record is ignored");
        let own = &gw.config.routes[0].canary.as_ref().unwrap().fingerprint;
        assert!(own.len() == 16 && own.bytes().all(|b| b.is_ascii_hexdigit()), "{own}");
    }
}
