//! The retry budget: retries may be at most a share of the service's
//! requests over the last ten seconds, plus a few a second, so that an
//! outage never multiplies the load on the service.

use std::sync::Mutex;
use std::time::Duration;

const SLOTS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Slot {
    second: u64,
    requests: u64,
    retries: u64,
}

#[derive(Default)]
pub(crate) struct RetryBudget(Mutex<[Slot; SLOTS]>);

impl RetryBudget {
    pub(crate) fn request(&self, now: Duration) {
        self.with_slot(now, |slot| slot.requests += 1);
    }

    /// Takes a retry from the budget if there is one left.
    pub(crate) fn try_retry(&self, now: Duration, percent: u32, per_second: u32) -> bool {
        let Ok(mut slots) = self.0.lock() else { return false };
        let second = now.as_secs();
        let live = slots.iter().filter(|s| s.second + SLOTS as u64 > second);
        let (requests, retries) = live.fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries));
        let allowed = requests * u64::from(percent) / 100 + u64::from(per_second) * SLOTS as u64;
        if retries >= allowed {
            return false;
        }
        slot(&mut slots, second).retries += 1;
        true
    }

    fn with_slot(&self, now: Duration, f: impl FnOnce(&mut Slot)) {
        if let Ok(mut slots) = self.0.lock() {
            f(slot(&mut slots, now.as_secs()));
        }
    }
}

/// The slot for `second`, cleared if it last counted an older one.
fn slot(slots: &mut [Slot; SLOTS], second: u64) -> &mut Slot {
    let slot = &mut slots[(second % SLOTS as u64) as usize];
    if slot.second != second {
        *slot = Slot { second, ..Slot::default() };
    }
    slot
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
