//! The circuit breaker of a service. Closed, it counts the outcomes of the
//! service's requests; when too many fail (a failure rate over a window of
//! at least `min_requests`, or failures in a row) it opens: requests are
//! answered 503 `circuit-open` at once, for `open_for`. Then it is
//! half-open: up to `probes` requests go through; if they all succeed it
//! closes, if one fails it opens again.
//!
//! An opening is written to the store (`kv-schema/circuit-breakers.md`), and
//! every instance reads that record at most every `sync` (on every request
//! where an instance serves one, WASI 0.2), so one instance's discovery
//! protects the fleet within about `sync`. Where an instance serves one
//! request (WASI 0.2), failures in a row are counted in the record too (its
//! own window would only ever hold one request), a record opened and not
//! yet closed makes each request a probe, and one successful probe closes.

use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::resilience::Breaker as Policy;
use crate::pipeline::log::micros;
use crate::ports::{Clock, KvStore, Ports, store_key};
use crate::shared::window::Window;

/// The failure-rate window: requests and failures per second, up to a minute.
type Outcomes = Window<(u32, u32), 60>;

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

struct State {
    phase: Phase,
    outcomes: Outcomes,
    in_a_row: u32,
    /// When the shared record was last read (monotonic).
    synced: Option<Duration>,
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

/// The shared record: open until (µs since the epoch), failures in a row.
fn parse(value: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (until, in_a_row) = text.split_once(' ')?;
    Some((until.parse().ok()?, in_a_row.parse().ok()?))
}

impl Breaker {
    pub(crate) fn new(service: &str) -> Self {
        let key = store_key(&["pc1:cb:"], &Sha256::digest(service.as_bytes()));
        let state = State { phase: Phase::Closed, outcomes: Outcomes::default(), in_a_row: 0, synced: None };
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
        let due = self.lock(|s| P::SHORT_LIVED || s.synced.is_none_or(|at| mono.saturating_sub(at) >= policy.sync));
        if due {
            // A store that cannot be read changes nothing: the local view stands.
            let record = ports.kv().get(&self.key).await.ok().flatten().and_then(|v| parse(&v));
            self.lock(|s| {
                s.synced = Some(mono);
                if let Some((until, in_a_row)) = record {
                    let until = Duration::from_micros(until);
                    if until > now && s.phase == Phase::Closed {
                        s.phase = Phase::Open(until);
                    } else if P::SHORT_LIVED && !until.is_zero() && s.phase == Phase::Closed {
                        // Opened and not closed since: this request may be a probe.
                        s.phase = Phase::HalfOpen { started: 0, succeeded: 0, since: until };
                    }
                    if P::SHORT_LIVED {
                        s.in_a_row = in_a_row;
                    }
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
            Phase::HalfOpen { since, .. } if now.saturating_sub(since) >= policy.open_for => {
                s.phase = Phase::HalfOpen { started: 1, succeeded: 0, since: now };
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
        let (now, second) = (ports.clock().now(), ports.clock().monotonic().as_secs());
        let (change, write) = self.lock(|s| {
            let before_in_a_row = s.in_a_row;
            s.in_a_row = if ok { 0 } else { s.in_a_row + 1 };
            let slot = s.outcomes.slot(second);
            slot.0 += 1;
            slot.1 += u32::from(!ok);
            let reopen = |s: &mut State, why: String| {
                s.phase = Phase::Open(now + policy.open_for);
                s.outcomes = Outcomes::default();
                s.in_a_row = 0;
                (Some(Change::Opened { open_for: policy.open_for, why }), Some(micros(now + policy.open_for)))
            };
            match (admission, s.phase) {
                (Admission::Probe, Phase::HalfOpen { .. }) if !ok => reopen(s, "a half-open probe failed".into()),
                (Admission::Probe, Phase::HalfOpen { started, succeeded, since }) => {
                    // An instance that lives one request cannot count several
                    // probes: there its one successful probe closes.
                    if P::SHORT_LIVED || succeeded + 1 >= policy.probes {
                        s.phase = Phase::Closed;
                        s.outcomes = Outcomes::default();
                        (Some(Change::Closed), Some(0))
                    } else {
                        s.phase = Phase::HalfOpen { started, succeeded: succeeded + 1, since };
                        (None, None)
                    }
                }
                (Admission::Closed, Phase::Closed) => {
                    let (requests, failures) =
                        s.outcomes.live(second, policy.window.as_secs()).fold((0, 0), |(q, f), o| (q + o.0, f + o.1));
                    let rate_tripped = policy.failure_rate.is_some_and(|rate| {
                        requests >= policy.min_requests
                            && u64::from(failures) * 100 >= u64::from(rate) * u64::from(requests)
                    });
                    let row_tripped = policy.consecutive_failures.is_some_and(|n| s.in_a_row >= n);
                    if rate_tripped {
                        reopen(s, format!("{failures} of {requests} requests failed"))
                    } else if row_tripped {
                        reopen(s, format!("{} requests failed in a row", s.in_a_row))
                    } else if P::SHORT_LIVED && (!ok || before_in_a_row > 0) {
                        // The count in a row lives in the record here.
                        (None, Some(0))
                    } else {
                        (None, None)
                    }
                }
                _ => (None, None),
            }
        });
        if let Some(until) = write {
            let in_a_row = self.lock(|s| s.in_a_row);
            let value = format!("{until} {in_a_row}");
            let ttl = policy.open_for + policy.sync + Duration::from_secs(60);
            // Best effort: the opening holds here either way.
            let _ = ports.kv().set(&self.key, value.as_bytes(), Some(ttl)).await;
        }
        change
    }

    fn lock<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
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

    /// Like the WASI 0.2 edge: state lives for one request.
    struct OneRequest<'a>(&'a FakePorts);

    impl Ports for OneRequest<'_> {
        const SHORT_LIVED: bool = true;
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
    fn an_opening_reaches_every_instance_sharing_the_store_within_sync() {
        let p = policy();
        let ports = FakePorts::new(FakeHttp::ok());
        let (a, other) = (Breaker::new("api"), Breaker::new("api"));
        assert_eq!(run(&other, &p, &ports, true), Ok(None), "read the record: closed");
        (0..5).for_each(|_| drop(run(&a, &p, &ports, false)));
        assert_eq!(run(&other, &p, &ports, true), Ok(None), "within sync, its last read stands");
        ports.clock.advance(Duration::from_secs(1));
        assert_eq!(run(&other, &p, &ports, true), Err(Duration::from_secs(29)), "after sync, open too");
        // One-request instances count failures in a row through the record.
        let fresh = FakePorts::new(FakeHttp::ok());
        for i in 0..4 {
            assert_eq!(run(&Breaker::new("api"), &p, &OneRequest(&fresh), false), Ok(None), "{i}");
        }
        let fifth = run(&Breaker::new("api"), &p, &OneRequest(&fresh), false);
        assert!(matches!(fifth, Ok(Some(Change::Opened { .. }))), "{fifth:?}");
        assert!(run(&Breaker::new("api"), &p, &OneRequest(&fresh), true).is_err(), "and every new one sees it");
        fresh.clock.advance(Duration::from_secs(30));
        let probe = run(&Breaker::new("api"), &p, &OneRequest(&fresh), false);
        assert!(matches!(probe, Ok(Some(Change::Opened { .. }))), "a failed probe reopens: {probe:?}");
        fresh.clock.advance(Duration::from_secs(30));
        assert_eq!(run(&Breaker::new("api"), &p, &OneRequest(&fresh), true), Ok(Some(Change::Closed)));
        assert_eq!(run(&Breaker::new("api"), &p, &OneRequest(&fresh), true), Ok(None), "closed for the fleet");
    }

    #[test]
    fn kv_schema_circuit_breakers_matches_the_code() {
        let doc = include_str!("../../../kv-schema/circuit-breakers.md");
        let block = |tag: &str| {
            let start = doc.find(&format!("```{tag}\n")).expect("block") + tag.len() + 4;
            doc[start..start + doc[start..].find("```").expect("closed")].trim().to_string()
        };
        let prefix = block("text key").strip_suffix("{sha256-hex}").expect("layout").to_string();
        let key = Breaker::new("api").key;
        let hex = key.strip_prefix(&prefix).expect("prefix");
        assert_eq!(
            hex, "14c2529eb4498c5d1ffd6915d05bf58a91bdda796af59f41d480d11c099d0479",
            "SHA-256 of the service name, lower-case hex"
        );
        assert_eq!(parse(block("text value").as_bytes()), Some((1_767_225_630_000_000, 0)));
    }
}
