//! The circuit breaker of a service. Closed, it counts the outcomes of the
//! service's requests; when too many fail (a failure rate over a window of
//! at least `min_requests`, or failures in a row) it opens: requests are
//! answered 503 `circuit-open` at once, for `open_for`. Then it is
//! half-open: `probes` requests go through; if they all succeed it closes,
//! if one fails it opens again.
//!
//! Where the counting happens depends on what one copy of the breaker sees
//! ([`Lifetime`]):
//! - **a process** (the node) sees every request it serves: it counts in
//!   memory and decides alone; only an opening or closing is written to the
//!   store (`kv-schema/circuit-breakers.md`), which every node reads at most
//!   every `sync`, so one node's discovery protects the fleet within `sync`;
//! - **instances that each see part of the requests** (Spin's pool of WASI
//!   0.3 instances, and WASI 0.2's one-request instances) count in the
//!   store's record, which every request reads: failures in a row, probes
//!   that succeeded, and the failure-rate window. A failure, a success that
//!   ends a row and a probe write it at once (compare-and-swap); other
//!   successes are added to the window by a pooled instance at most every
//!   `sync`, by a one-request instance at once (only while `failure_rate`
//!   is on). So `consecutive_failures` and `probes` hold however many
//!   instances serve, and the window lags by at most `sync`.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::resilience::Breaker as Policy;
use crate::pipeline::log::micros;
use crate::ports::{Clock, KvStore, Lifetime, Ports, store_key};
use crate::shared::window::Window;

/// The failure-rate window: requests and failures per second, up to a minute.
type Outcomes = Window<(u32, u32), 60>;

/// Compare-and-swap rounds for one update of the shared record; an update
/// that loses them all is dropped (one outcome, counted on no side).
const SHARED_ATTEMPTS: u32 = 4;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Closed,
    /// Open until this wall-clock time.
    Open(Duration),
    /// Probes let through, probes that succeeded, since when (wall clock).
    HalfOpen {
        started: u32,
        succeeded: u32,
        since: Duration,
    },
}

/// The shared record (`kv-schema/circuit-breakers.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// Open until this time (µs since the epoch); 0: closed; a time past:
    /// half-open.
    open_until_us: u64,
    /// Failures in a row (counted here by instances that see part of the
    /// requests; 0 from the node).
    in_a_row: u32,
    /// Probes that succeeded since the circuit went half-open (likewise).
    probes_ok: u32,
    /// `[second, requests, failures]` per wall-clock second, oldest first,
    /// within the window (likewise).
    window: Vec<[u64; 3]>,
}

impl Record {
    fn parse(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }

    fn phase(&self, now: Duration) -> Phase {
        match Duration::from_micros(self.open_until_us) {
            until if until.is_zero() => Phase::Closed,
            until if until > now => Phase::Open(until),
            until => Phase::HalfOpen { started: 0, succeeded: self.probes_ok, since: until },
        }
    }

    /// Adds counts to the window, dropping seconds that left it.
    fn count(&mut self, second: u64, requests: u64, failures: u64, window: u64) {
        self.window.retain(|[s, ..]| s + window > second);
        match self.window.iter_mut().find(|[s, ..]| *s == second) {
            Some(slot) => {
                slot[1] += requests;
                slot[2] += failures;
            }
            None => {
                let at = self.window.partition_point(|[s, ..]| *s < second);
                self.window.insert(at, [second, requests, failures]);
            }
        }
    }

    /// Requests and failures within the window at `second`.
    fn totals(&self, second: u64, window: u64) -> (u64, u64) {
        let live = self.window.iter().filter(|[s, ..]| *s <= second && s + window > second);
        live.fold((0, 0), |(q, f), [_, r, x]| (q + r, f + x))
    }
}

/// A state over this instance's requests only.
struct State {
    phase: Phase,
    /// Outcomes and failures in a row, where one copy sees every request.
    outcomes: Outcomes,
    in_a_row: u32,
    /// When the shared record was last read (monotonic).
    synced: Option<Duration>,
    /// Whether the record last read had failures in a row (so a success
    /// must end the row there).
    row: bool,
    /// Successes (wall-clock second, count) not yet added to the shared
    /// window, and when they were last added (monotonic).
    pending: Vec<(u64, u64)>,
    flushed: Option<Duration>,
}

pub(crate) struct Breaker {
    key: String,
    state: Mutex<State>,
}

/// What the breaker let through: a normal request or a half-open probe.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Admission {
    Closed,
    Probe,
}

/// A change worth the operational log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Opened { open_for: Duration, why: String },
    Closed,
}

/// What a count decided.
enum Verdict {
    Open(String),
    Close,
}

/// Whether one copy of the breaker sees every request (and counts in memory).
fn sees_all<P: Ports>() -> bool {
    P::LIFETIME == Lifetime::Process
}

impl Breaker {
    pub(crate) fn new(service: &str) -> Self {
        let key = store_key(&["pc1:cb:"], &Sha256::digest(service.as_bytes()));
        let state = State {
            phase: Phase::Closed,
            outcomes: Outcomes::default(),
            in_a_row: 0,
            synced: None,
            row: false,
            pending: Vec::new(),
            flushed: None,
        };
        Self { key, state: Mutex::new(state) }
    }

    /// `closed`, `open` or `half_open` at `now` (wall clock), as this
    /// instance sees it (an open circuit past its time lets a probe through).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn state(&self, now: Duration) -> &'static str {
        self.lock(|s| match s.phase {
            Phase::Closed => "closed",
            Phase::Open(until) if now < until => "open",
            Phase::Open(_) | Phase::HalfOpen { .. } => "half_open",
        })
    }

    /// Lets a request through, or says for how long the circuit stays open.
    pub(crate) async fn admit<P: Ports>(&self, policy: &Policy, ports: &P) -> Result<Admission, Duration> {
        let (now, mono) = (ports.clock().now(), ports.clock().monotonic());
        let due = self.lock(|s| !sees_all::<P>() || s.synced.is_none_or(|at| mono.saturating_sub(at) >= policy.sync));
        if due {
            // A store that cannot be read changes nothing: the local view stands.
            let record = ports.kv().get(&self.key).await.ok().map(|v| v.and_then(|v| Record::parse(&v)));
            self.lock(|s| {
                s.synced = Some(mono);
                match record {
                    Some(record) if !sees_all::<P>() => s.follow(&record.unwrap_or_default(), now),
                    Some(Some(record)) => {
                        if let (Phase::Open(until), Phase::Closed) = (record.phase(now), s.phase) {
                            s.phase = Phase::Open(until);
                        }
                    }
                    _ => {}
                }
            });
        }
        self.lock(|s| match s.phase {
            Phase::Closed => Ok(Admission::Closed),
            Phase::Open(until) if now < until => Err(until - now),
            Phase::Open(_) => {
                s.phase = Phase::HalfOpen { started: 1, succeeded: 0, since: now };
                Ok(Admission::Probe)
            }
            // Probes that never reported (their requests were cancelled)
            // free their places after `open_for`.
            Phase::HalfOpen { since, succeeded, .. } if now.saturating_sub(since) >= policy.open_for => {
                s.phase = Phase::HalfOpen { started: 1, succeeded, since: now };
                Ok(Admission::Probe)
            }
            Phase::HalfOpen { started, succeeded, since } if started < policy.probes => {
                s.phase = Phase::HalfOpen { started: started + 1, succeeded, since };
                Ok(Admission::Probe)
            }
            Phase::HalfOpen { .. } => Err(Duration::from_secs(1)),
        })
    }

    /// Counts how an admitted request ended (`ok`: an answer below 500).
    pub(crate) async fn record<P: Ports>(
        &self,
        policy: &Policy,
        ports: &P,
        admission: Admission,
        ok: bool,
    ) -> Option<Change> {
        let ended = (admission, ok);
        if sees_all::<P>() {
            self.record_here(policy, ports, ended).await
        } else {
            self.record_shared(policy, ports, ended).await
        }
    }

    /// One copy sees every request: counted in memory; an opening or a
    /// closing is written for the fleet.
    async fn record_here<P: Ports>(
        &self,
        policy: &Policy,
        ports: &P,
        (admission, ok): (Admission, bool),
    ) -> Option<Change> {
        let (now, second) = (ports.clock().now(), ports.clock().monotonic().as_secs());
        let change = self.lock(|s| {
            s.in_a_row = if ok { 0 } else { s.in_a_row + 1 };
            let slot = s.outcomes.slot(second);
            slot.0 += 1;
            slot.1 += u32::from(!ok);
            let verdict = match (admission, s.phase) {
                (Admission::Probe, Phase::HalfOpen { .. }) if !ok => {
                    Some(Verdict::Open("a half-open probe failed".into()))
                }
                (Admission::Probe, Phase::HalfOpen { started, succeeded, since }) => {
                    if succeeded + 1 >= policy.probes {
                        Some(Verdict::Close)
                    } else {
                        s.phase = Phase::HalfOpen { started, succeeded: succeeded + 1, since };
                        None
                    }
                }
                (Admission::Closed, Phase::Closed) => {
                    let (requests, failures) = s
                        .outcomes
                        .live(second, policy.window.as_secs())
                        .fold((0, 0), |(q, f), o| (q + u64::from(o.0), f + u64::from(o.1)));
                    trips(policy, s.in_a_row, requests, failures).map(Verdict::Open)
                }
                _ => None,
            };
            Some(match verdict? {
                Verdict::Open(why) => {
                    s.phase = Phase::Open(now + policy.open_for);
                    s.outcomes = Outcomes::default();
                    s.in_a_row = 0;
                    Change::Opened { open_for: policy.open_for, why }
                }
                Verdict::Close => {
                    s.phase = Phase::Closed;
                    s.outcomes = Outcomes::default();
                    Change::Closed
                }
            })
        })?;
        let open_until_us = match change {
            Change::Opened { .. } => micros(now + policy.open_for),
            Change::Closed => 0,
        };
        if let Ok(value) = serde_json::to_vec(&Record { open_until_us, ..Record::default() }) {
            // Best effort: the change holds here either way.
            let _ = ports.kv().set(&self.key, &value, Some(ttl(policy))).await;
        }
        Some(change)
    }

    /// Each copy sees part of the requests: counted in the store's record.
    async fn record_shared<P: Ports>(
        &self,
        policy: &Policy,
        ports: &P,
        (admission, ok): (Admission, bool),
    ) -> Option<Change> {
        let (now, mono) = (ports.clock().now(), ports.clock().monotonic());
        let counting_rate = policy.failure_rate.is_some();
        let update = self.lock(|s| {
            // A success that neither ends a row nor answers a probe only
            // adds to the window: a pooled instance adds it at most every
            // `sync`, a one-request instance at once.
            let quiet = ok && admission == Admission::Closed && !s.row;
            if quiet {
                if !counting_rate {
                    return None;
                }
                add(&mut s.pending, now.as_secs(), 1);
                let due = P::LIFETIME == Lifetime::Request
                    || s.flushed.is_none_or(|at| mono.saturating_sub(at) >= policy.sync);
                if !due {
                    return None;
                }
            }
            s.flushed = Some(mono);
            let outcome = (!quiet).then_some((admission, ok));
            Some(Update { outcome, pending: std::mem::take(&mut s.pending) })
        })?;
        let kv = ports.kv();
        for _ in 0..SHARED_ATTEMPTS {
            let Ok(current) = kv.get(&self.key).await else { break };
            let record = current.as_deref().and_then(Record::parse).unwrap_or_default();
            let (next, change) = update.apply(&record, policy, now);
            if next != record {
                let Ok(value) = serde_json::to_vec(&next) else { break };
                match kv.compare_and_swap(&self.key, current.as_deref(), &value, Some(ttl(policy))).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
            }
            self.lock(|s| s.follow(&next, now));
            return change;
        }
        // Not written: a pooled instance keeps its successes for next time.
        if P::LIFETIME == Lifetime::Pool {
            self.lock(|s| update.pending.iter().for_each(|&(at, n)| add(&mut s.pending, at, n)));
        }
        None
    }

    fn lock<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl State {
    /// Takes the fleet's phase and row from the record (counted in the
    /// store); a half-open circuit keeps this instance's count of the
    /// probes it let through.
    fn follow(&mut self, record: &Record, now: Duration) {
        self.row = record.in_a_row > 0;
        self.phase = match (record.phase(now), self.phase) {
            (Phase::HalfOpen { succeeded, since, .. }, Phase::HalfOpen { started, since: mine, .. })
                if mine >= since =>
            {
                Phase::HalfOpen { started, succeeded, since: mine }
            }
            (fleet, _) => fleet,
        };
    }
}

/// One request's outcome for the shared record, and the successes before
/// it that were not written yet.
struct Update {
    outcome: Option<(Admission, bool)>,
    pending: Vec<(u64, u64)>,
}

impl Update {
    /// The record with this update in it, and the change it makes.
    fn apply(&self, record: &Record, policy: &Policy, now: Duration) -> (Record, Option<Change>) {
        let (second, window) = (now.as_secs(), policy.window.as_secs());
        let mut next = record.clone();
        let phase = record.phase(now);
        if phase == Phase::Closed && policy.failure_rate.is_some() {
            self.pending.iter().for_each(|&(at, n)| next.count(at, n, 0, window));
        }
        let verdict = match (self.outcome, phase) {
            (Some((Admission::Probe, false)), Phase::HalfOpen { .. }) => {
                Some(Verdict::Open("a half-open probe failed".into()))
            }
            (Some((Admission::Probe, true)), Phase::HalfOpen { .. }) => {
                next.probes_ok += 1;
                (next.probes_ok >= policy.probes).then_some(Verdict::Close)
            }
            (Some((Admission::Closed, ok)), Phase::Closed) => {
                next.in_a_row = if ok { 0 } else { next.in_a_row + 1 };
                if policy.failure_rate.is_some() {
                    next.count(second, 1, u64::from(!ok), window);
                }
                let (requests, failures) = next.totals(second, window);
                if ok { None } else { trips(policy, next.in_a_row, requests, failures).map(Verdict::Open) }
            }
            (None, Phase::Closed) => {
                let (requests, failures) = next.totals(second, window);
                trips(policy, next.in_a_row, requests, failures).map(Verdict::Open)
            }
            // The fleet moved on (opened, or closed after the probes) while
            // this request was out: its outcome no longer counts.
            _ => None,
        };
        match verdict {
            None => (next, None),
            Some(Verdict::Open(why)) => {
                let open = Record { open_until_us: micros(now + policy.open_for), ..Record::default() };
                (open, Some(Change::Opened { open_for: policy.open_for, why }))
            }
            Some(Verdict::Close) => (Record::default(), Some(Change::Closed)),
        }
    }
}

/// Why the counts open the circuit, if they do.
fn trips(policy: &Policy, in_a_row: u32, requests: u64, failures: u64) -> Option<String> {
    let rate_tripped = policy
        .failure_rate
        .is_some_and(|rate| requests >= u64::from(policy.min_requests) && failures * 100 >= u64::from(rate) * requests);
    if rate_tripped {
        Some(format!("{failures} of {requests} requests failed"))
    } else if policy.consecutive_failures.is_some_and(|n| in_a_row >= n) {
        Some(format!("{in_a_row} requests failed in a row"))
    } else {
        None
    }
}

/// Adds `n` to the count of `second`.
fn add(counts: &mut Vec<(u64, u64)>, second: u64, n: u64) {
    match counts.iter_mut().find(|(at, _)| *at == second) {
        Some((_, count)) => *count += n,
        None => counts.push((second, n)),
    }
}

/// How long the record is worth keeping after its last write.
fn ttl(policy: &Policy) -> Duration {
    policy.open_for.max(policy.window) + policy.sync + Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::testing::{FakeHttp, FakePorts, block_on};

    fn policy() -> Policy {
        Policy {
            failure_rate: Some(50),
            min_requests: 10,
            window: Duration::from_secs(10),
            consecutive_failures: Some(5),
            open_for: Duration::from_secs(30),
            probes: 2,
            sync: Duration::from_secs(1),
        }
    }

    /// Ports whose in-memory state lives as `L` says (the fakes' own: a process).
    struct Living<'a, const L: u8>(&'a FakePorts);

    const POOL: u8 = 1;
    const REQUEST: u8 = 2;

    impl<const L: u8> Ports for Living<'_, L> {
        const LIFETIME: Lifetime = if L == POOL { Lifetime::Pool } else { Lifetime::Request };
        type Kv = <FakePorts as Ports>::Kv;
        type Http = FakeHttp;
        type Clock = <FakePorts as Ports>::Clock;
        fn kv(&self) -> &Self::Kv {
            self.0.kv()
        }
        fn http(&self) -> &FakeHttp {
            self.0.http()
        }
        fn clock(&self) -> &Self::Clock {
            self.0.clock()
        }
        fn event(&self, line: &str) {
            self.0.event(line);
        }
    }

    fn run<P: Ports>(b: &Breaker, p: &Policy, ports: &P, ok: bool) -> Result<Option<Change>, Duration> {
        block_on(async {
            let admission = b.admit(p, ports).await?;
            Ok(b.record(p, ports, admission, ok).await)
        })
    }

    fn opened(r: &Result<Option<Change>, Duration>) -> bool {
        matches!(r, Ok(Some(Change::Opened { .. })))
    }

    #[test]
    fn failures_in_a_row_open_it_then_probes_close_it() {
        let (b, p, ports) = (Breaker::new("api"), policy(), FakePorts::new(FakeHttp::ok()));
        for _ in 0..4 {
            assert_eq!(run(&b, &p, &ports, false), Ok(None));
        }
        let opened = run(&b, &p, &ports, false);
        assert!(matches!(opened, Ok(Some(Change::Opened { .. }))), "{opened:?}");
        ports.clock.advance(Duration::from_secs(10));
        assert_eq!(run(&b, &p, &ports, true), Err(Duration::from_secs(20)), "open: refused with the time left");
        ports.clock.advance(Duration::from_secs(20));
        assert_eq!(run(&b, &p, &ports, true), Ok(None), "first probe");
        assert_eq!(run(&b, &p, &ports, true), Ok(Some(Change::Closed)), "second probe closes it");
        assert_eq!(run(&b, &p, &ports, false), Ok(None), "closed, counting afresh");
    }

    #[test]
    fn half_open_lets_only_the_probes_through_and_a_failed_probe_reopens() {
        let (b, p, ports) = (Breaker::new("api"), policy(), FakePorts::new(FakeHttp::ok()));
        (0..5).for_each(|_| drop(run(&b, &p, &ports, false)));
        ports.clock.advance(Duration::from_secs(30));
        let probes = block_on(async {
            let first = b.admit(&p, &ports).await;
            let second = b.admit(&p, &ports).await;
            let third = b.admit(&p, &ports).await;
            (first, second, third)
        });
        assert_eq!(probes, (Ok(Admission::Probe), Ok(Admission::Probe), Err(Duration::from_secs(1))));
        let reopened = block_on(b.record(&p, &ports, Admission::Probe, false));
        assert!(matches!(reopened, Some(Change::Opened { .. })), "{reopened:?}");
        assert!(run(&b, &p, &ports, true).is_err());
    }

    #[test]
    fn a_failure_rate_over_enough_requests_opens_it() {
        let p = Policy { consecutive_failures: None, ..policy() };
        let (b, ports) = (Breaker::new("api"), FakePorts::new(FakeHttp::ok()));
        for i in 0..9 {
            assert_eq!(run(&b, &p, &ports, i % 2 == 0), Ok(None), "fewer than min_requests: {i}");
        }
        assert!(
            matches!(run(&b, &p, &ports, false), Ok(Some(Change::Opened { why, .. })) if why == "5 of 10 requests failed")
        );
        // Old outcomes leave the window.
        let (b, ports) = (Breaker::new("api"), FakePorts::new(FakeHttp::ok()));
        (0..9).for_each(|_| drop(run(&b, &p, &ports, false)));
        ports.clock.advance(Duration::from_secs(11));
        assert_eq!(run(&b, &p, &ports, false), Ok(None), "the 9 failures left the 10 s window");
    }

    #[test]
    fn an_opening_reaches_every_process_sharing_the_store_within_sync() {
        let p = policy();
        let ports = FakePorts::new(FakeHttp::ok());
        let (a, other) = (Breaker::new("api"), Breaker::new("api"));
        assert_eq!(run(&other, &p, &ports, true), Ok(None), "read the record: closed");
        (0..5).for_each(|_| drop(run(&a, &p, &ports, false)));
        assert_eq!(run(&other, &p, &ports, true), Ok(None), "within sync, its last read stands");
        ports.clock.advance(Duration::from_secs(1));
        assert_eq!(run(&other, &p, &ports, true), Err(Duration::from_secs(29)), "after sync, open too");
    }

    /// Failures in a row spread over a pool of instances (Spin keeps 5 to
    /// 34 after a burst) open the circuit at exactly the threshold, and a
    /// success on any instance ends the row for all.
    #[test]
    fn a_pool_of_instances_counts_failures_in_a_row_together() {
        let p = Policy { failure_rate: None, ..policy() };
        let ports = FakePorts::new(FakeHttp::ok());
        let pool: Vec<Breaker> = (0..8).map(|_| Breaker::new("api")).collect();
        let pooled = Living::<POOL>(&ports);
        for (i, b) in pool.iter().take(3).enumerate() {
            assert_eq!(run(b, &p, &pooled, false), Ok(None), "failure {i}");
        }
        assert_eq!(run(&pool[3], &p, &pooled, true), Ok(None), "a success on another instance");
        for (i, b) in pool.iter().skip(3).take(4).enumerate() {
            assert_eq!(run(b, &p, &pooled, false), Ok(None), "failure {i} of a new row");
        }
        assert!(opened(&run(&pool[7], &p, &pooled, false)), "the fifth failure in a row, on the eighth instance");
        for b in &pool {
            assert_eq!(run(b, &p, &pooled, true), Err(Duration::from_secs(30)), "every instance sees it open");
        }
        // Half-open: `probes` successes across instances close it.
        ports.clock.advance(Duration::from_secs(30));
        assert_eq!(run(&pool[0], &p, &pooled, true), Ok(None), "one probe");
        assert_eq!(run(&pool[5], &p, &pooled, true), Ok(Some(Change::Closed)), "the second, elsewhere, closes it");
        assert_eq!(run(&pool[2], &p, &pooled, false), Ok(None), "closed for all, counting afresh");
    }

    /// The failure-rate window is the pool's: each instance adds its
    /// successes at most every `sync`, its failures at once.
    #[test]
    fn a_pool_of_instances_shares_its_failure_rate_window() {
        let p = Policy { consecutive_failures: None, min_requests: 20, ..policy() };
        let ports = FakePorts::new(FakeHttp::ok());
        let pooled = Living::<POOL>(&ports);
        let pool: Vec<Breaker> = (0..10).map(|_| Breaker::new("api")).collect();
        // 10 instances, each one success and one failure: no instance alone
        // reaches min_requests.
        for b in &pool[..9] {
            assert_eq!(run(b, &p, &pooled, true), Ok(None));
            assert_eq!(run(b, &p, &pooled, false), Ok(None));
        }
        assert_eq!(run(&pool[9], &p, &pooled, true), Ok(None));
        let last = run(&pool[9], &p, &pooled, false);
        assert!(matches!(&last, Ok(Some(Change::Opened { why, .. })) if why == "10 of 20 requests failed"), "{last:?}");
    }

    /// WASI 0.2: an instance per request, so every count is the store's.
    #[test]
    fn one_request_instances_count_in_the_store() {
        let p = policy();
        let fresh = FakePorts::new(FakeHttp::ok());
        let one = || (Breaker::new("api"), Living::<REQUEST>(&fresh));
        for i in 0..4 {
            let (b, ports) = one();
            assert_eq!(run(&b, &p, &ports, false), Ok(None), "{i}");
        }
        let (b, ports) = one();
        assert!(opened(&run(&b, &p, &ports, false)));
        let (b, ports) = one();
        assert!(run(&b, &p, &ports, true).is_err(), "and every new one sees it");
        fresh.clock.advance(Duration::from_secs(30));
        let (b, ports) = one();
        assert!(opened(&run(&b, &p, &ports, false)), "a failed probe reopens");
        fresh.clock.advance(Duration::from_secs(30));
        let (b, ports) = one();
        assert_eq!(run(&b, &p, &ports, true), Ok(None), "one of two probes");
        let (b, ports) = one();
        assert_eq!(run(&b, &p, &ports, true), Ok(Some(Change::Closed)));
        let (b, ports) = one();
        assert_eq!(run(&b, &p, &ports, true), Ok(None), "closed for the fleet");
        // The failure rate too: 10 requests, half failed, one per instance.
        let rate = Policy { consecutive_failures: None, ..policy() };
        let store = FakePorts::new(FakeHttp::ok());
        let ends: Vec<_> =
            (0..10).map(|i| run(&Breaker::new("api"), &rate, &Living::<REQUEST>(&store), i % 2 == 0)).collect();
        assert!(ends[..9].iter().all(|e| *e == Ok(None)), "{ends:?}");
        assert!(opened(&ends[9]), "{ends:?}");
    }

    #[test]
    fn kv_schema_circuit_breakers_matches_the_code() {
        let doc = include_str!("../../../kv-schema/circuit-breakers.md");
        let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
        let prefix = block("text key").strip_suffix("{sha256-hex}").expect("layout").to_string();
        let key = Breaker::new("api").key;
        let hex = key.strip_prefix(&prefix).expect("prefix");
        assert_eq!(
            hex, "14c2529eb4498c5d1ffd6915d05bf58a91bdda796af59f41d480d11c099d0479",
            "SHA-256 of the service name, lower-case hex"
        );
        let example = block("json value");
        let record = Record::parse(example.as_bytes()).expect("the example parses");
        assert_eq!(record.open_until_us, 0);
        assert_eq!((record.in_a_row, record.probes_ok, record.window.len()), (2, 0, 2));
        assert_eq!(serde_json::to_string(&record).unwrap(), example.split_whitespace().collect::<String>());
    }
}
