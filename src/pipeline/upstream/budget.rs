//! The retry budget: retries may be at most a share of the service's
//! requests over the last ten seconds, plus a few a second, so that an
//! outage never multiplies the load on the service.

use std::sync::Mutex;
use std::time::Duration;

use crate::shared::window::Window;

const SECONDS: u64 = 10;

/// Requests and retries per second.
#[derive(Default)]
pub(crate) struct RetryBudget(Mutex<Window<(u64, u64), { SECONDS as usize }>>);

impl RetryBudget {
    pub(crate) fn request(&self, now: Duration) {
        if let Ok(mut w) = self.0.lock() {
            w.slot(now.as_secs()).0 += 1;
        }
    }

    /// Takes a retry from the budget if there is one left.
    pub(crate) fn try_retry(&self, now: Duration, percent: u32, per_second: u32) -> bool {
        let Ok(mut w) = self.0.lock() else { return false };
        let second = now.as_secs();
        let (requests, retries) = w.live(second, SECONDS).fold((0, 0), |(q, r), s| (q + s.0, r + s.1));
        let allowed = requests * u64::from(percent) / 100 + u64::from(per_second) * SECONDS;
        if retries >= allowed {
            return false;
        }
        w.slot(second).1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_recent_requests_plus_a_floor() {
        let b = RetryBudget::default();
        let s = Duration::from_secs;
        // No requests yet: the floor (1 a second over 10 s = 10).
        assert_eq!((0..50).filter(|_| b.try_retry(s(100), 20, 1)).count(), 10);
        (0..1000).for_each(|_| b.request(s(101)));
        assert_eq!((0..500).filter(|_| b.try_retry(s(101), 20, 1)).count(), 200, "20% of 1000, floor already spent");
        // Ten seconds on, the old slots no longer count.
        assert_eq!((0..50).filter(|_| b.try_retry(s(112), 20, 1)).count(), 10);
    }
}
