//! Passive health: what the answers of a service's targets say about them.
//! A target that fails `failures` times in a row is ejected (passed over by
//! the balancer) for `eject_for`, doubled with each ejection in a row up to
//! `max_eject_for`, while no more than `max_ejected` of the targets are out;
//! its first success after an ejection clears its record. The state lives
//! as long as the gateway value (a process, an edge instance).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::resilience::Health;
#[cfg(not(target_arch = "wasm32"))]
use crate::config::resilience::Probe;
use crate::pipeline::log;

#[derive(Default)]
struct Target {
    failures: AtomicU32,
    /// Ejections in a row (no success in between).
    ejections: AtomicU32,
    /// Monotonic microseconds until which the target is out (0: never was).
    out_until: AtomicU64,
    /// Active checks (the node): down, and probes in a row that disagreed.
    probed_down: AtomicBool,
    #[cfg(not(target_arch = "wasm32"))]
    probes_against: AtomicU32,
}

pub(crate) struct Targets(Box<[Target]>);

/// What a report changed, for the operational log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Ejected { failures: u32, ejections: u32, duration: Duration },
    Recovered { ejections: u32 },
}

impl Targets {
    pub(crate) fn new(count: usize) -> Self {
        Self((0..count).map(|_| Target::default()).collect())
    }

    /// Whether the target may serve at `now` (monotonic): not ejected,
    /// not down by its probes.
    pub(crate) fn is_in(&self, index: usize, now: Duration) -> bool {
        let target = &self.0[index];
        target.out_until.load(Ordering::Relaxed) <= micros(now) && !target.probed_down.load(Ordering::Relaxed)
    }

    /// Records a probe. `first`: the first round, which decides at once.
    /// Returns the new state when it changed (`true`: up).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn probed(&self, index: usize, passed: bool, first: bool, probe: &Probe) -> Option<bool> {
        let target = &self.0[index];
        let down = target.probed_down.load(Ordering::Relaxed);
        if first || passed == down {
            let against = target.probes_against.fetch_add(1, Ordering::Relaxed) + 1;
            let needed = if passed { probe.healthy } else { probe.unhealthy };
            if first || against >= needed {
                target.probes_against.store(0, Ordering::Relaxed);
                target.probed_down.store(!passed, Ordering::Relaxed);
                return (!first || !passed).then_some(passed);
            }
        } else {
            target.probes_against.store(0, Ordering::Relaxed);
        }
        None
    }

    /// Records how a try went: `ok` is an answer below 500.
    pub(crate) fn report(&self, index: usize, ok: bool, now: Duration, policy: &Health) -> Option<Change> {
        let target = &self.0[index];
        if ok {
            target.failures.store(0, Ordering::Relaxed);
            let ejections = target.ejections.swap(0, Ordering::Relaxed);
            return (ejections > 0).then_some(Change::Recovered { ejections });
        }
        let failures = target.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.failures == 0 || failures < policy.failures || !self.is_in(index, now) {
            return None;
        }
        let out = self.0.iter().enumerate().filter(|(i, _)| !self.is_in(*i, now)).count();
        let allowed = self.0.len() * policy.max_ejected_percent as usize / 100;
        if out >= allowed {
            return None;
        }
        let ejections = target.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let grown = policy.eject_for.saturating_mul(1 << (ejections - 1).min(16));
        let duration = grown.min(policy.max_eject_for);
        target.out_until.store(micros(now + duration), Ordering::Relaxed);
        target.failures.store(0, Ordering::Relaxed);
        Some(Change::Ejected { failures, ejections, duration })
    }
}

/// Microseconds, 0 kept for "never ejected".
fn micros(d: Duration) -> u64 {
    log::micros(d).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Health {
        Health {
            failures: 3,
            eject_for: Duration::from_secs(10),
            max_eject_for: Duration::from_secs(25),
            max_ejected_percent: 50,
            try_when_all_down: true,
            probe: None,
        }
    }

    #[test]
    fn failures_in_a_row_eject_for_a_time_that_grows_then_success_clears() {
        let (t, p, s) = (Targets::new(4), policy(), Duration::from_secs);
        assert_eq!(t.report(0, false, s(1), &p), None);
        assert_eq!(t.report(0, true, s(1), &p), None, "a success breaks the row");
        assert_eq!(t.report(0, false, s(1), &p), None);
        assert_eq!(t.report(0, false, s(1), &p), None);
        let first = t.report(0, false, s(1), &p);
        assert_eq!(first, Some(Change::Ejected { failures: 3, ejections: 1, duration: s(10) }));
        assert!(!t.is_in(0, s(10)) && t.is_in(0, s(11)), "out for 10 s");
        for _ in 0..3 {
            t.report(0, false, s(12), &p);
        }
        assert!(!t.is_in(0, s(31)) && t.is_in(0, s(32)), "then 20 s");
        let third = (0..3).filter_map(|_| t.report(0, false, s(40), &p)).next();
        assert_eq!(third, Some(Change::Ejected { failures: 3, ejections: 3, duration: s(25) }), "capped");
        assert_eq!(t.report(0, true, s(70), &p), Some(Change::Recovered { ejections: 3 }));
        let again = (0..3).filter_map(|_| t.report(0, false, s(71), &p)).next();
        assert_eq!(again, Some(Change::Ejected { failures: 3, ejections: 1, duration: s(10) }), "the row restarts");
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))] // active checks run on the node only
    fn probes_in_a_row_take_a_target_down_and_up() {
        let probe = Probe {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            statuses: vec![http::StatusCode::OK],
            healthy: 2,
            unhealthy: 3,
        };
        let (t, now) = (Targets::new(2), Duration::from_secs(1));
        assert_eq!(t.probed(0, false, true, &probe), Some(false), "the first round decides at once");
        assert_eq!(t.probed(1, true, true, &probe), None, "up from the start: nothing to log");
        assert!(!t.is_in(0, now) && t.is_in(1, now));
        assert_eq!(t.probed(0, true, false, &probe), None);
        assert_eq!(t.probed(0, false, false, &probe), None, "a failure breaks the row");
        assert_eq!(t.probed(0, true, false, &probe), None);
        assert_eq!(t.probed(0, true, false, &probe), Some(true), "two passed in a row");
        assert!(t.is_in(0, now));
        for _ in 0..2 {
            assert_eq!(t.probed(1, false, false, &probe), None);
        }
        assert_eq!(t.probed(1, false, false, &probe), Some(false), "three failed in a row");
        assert!(!t.is_in(1, now));
    }

    #[test]
    fn no_more_than_the_allowed_share_is_out() {
        let (t, p, s) = (Targets::new(4), policy(), Duration::from_secs);
        for target in 0..4 {
            for _ in 0..3 {
                t.report(target, false, s(1), &p);
            }
        }
        let out: Vec<usize> = (0..4).filter(|&i| !t.is_in(i, s(2))).collect();
        assert_eq!(out, [0, 1], "half of 4");
        let never = Health { failures: 0, ..policy() };
        let t = Targets::new(2);
        assert!((0..100).all(|_| t.report(0, false, s(1), &never).is_none()));
        assert!(t.is_in(0, s(1)), "failures = 0 never ejects");
    }
}
