//! A breaker on the shared store: after repeated failures the node stops
//! calling it for a short, growing period, so a hung Redis costs requests
//! nothing (each one applies its policy's `on_store_error` at once) instead
//! of a store timeout each. Then one call probes; success closes the
//! breaker. Failures are logged on stderr at most once a second, and each
//! opening and closing once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive failures that open the breaker.
const THRESHOLD: u32 = 3;
/// The first open period; each failed probe doubles it, up to `MAX_OPEN`.
const FIRST_OPEN: Duration = Duration::from_millis(250);
const MAX_OPEN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// While open: until when, and for how long it opened last.
    open_until: Option<Instant>,
    open_for: Option<Duration>,
    /// A probe is under way (the breaker is half-open).
    probing: bool,
    /// Failures not yet logged, and when the log last spoke.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// May the store be called now? `Probe` when this call decides whether the
/// breaker closes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    Call,
    Probe,
    /// Open: fail at once, for about this long still.
    Refused(Duration),
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn permit(&self) -> Permit {
        let mut s = self.state();
        let Some(until) = s.open_until else {
            return Permit::Call;
        };
        let now = Instant::now();
        if now < until || s.probing {
            return Permit::Refused(until.saturating_duration_since(now));
        }
        s.probing = true;
        Permit::Probe
    }

    pub(crate) fn succeeded(&self, permit: &Permit) {
        let mut s = self.state();
        s.failures = 0;
        if *permit == Permit::Probe {
            s.probing = false;
            s.open_until = None;
            s.open_for = None;
            tracing::info!("store reachable again: breaker closed");
        }
    }

    pub(crate) fn failed(&self, permit: &Permit, error: &str) {
        let mut s = self.state();
        let now = Instant::now();
        s.failures += 1;
        s.unlogged += 1;
        if s.logged_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            tracing::warn!(error, failures = s.unlogged, "store call failed");
            s.unlogged = 0;
            s.logged_at = Some(now);
        }
        let reopen = *permit == Permit::Probe;
        if reopen || (s.open_until.is_none() && s.failures >= THRESHOLD) {
            let open_for = s.open_for.map_or(FIRST_OPEN, |d| (d * 2).min(MAX_OPEN));
            s.open_for = Some(open_for);
            s.open_until = Some(now + open_for);
            s.probing = false;
            tracing::warn!(open_for = ?open_for, failures = s.failures, "store failing: breaker open, not calling it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn opens_after_repeated_failures_probes_and_closes() {
        let b = Breaker::default();
        for _ in 0..THRESHOLD {
            let p = b.permit();
            assert_eq!(p, Permit::Call);
            b.failed(&p, "timed out");
        }
        assert!(matches!(b.permit(), Permit::Refused(_)), "open");
        tokio::time::sleep(FIRST_OPEN).await;
        let probe = b.permit();
        assert_eq!(probe, Permit::Probe);
        assert!(matches!(b.permit(), Permit::Refused(_)), "one probe at a time");
        b.failed(&probe, "timed out");
        let Permit::Refused(left) = b.permit() else { panic!("reopened") };
        assert!(left > FIRST_OPEN, "the period grows: {left:?}");
        tokio::time::sleep(left).await;
        let probe = b.permit();
        b.succeeded(&probe);
        assert_eq!(b.permit(), Permit::Call, "closed");
    }
}
