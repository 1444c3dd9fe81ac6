//! Leases of a rate limit's capacity: a holder that lives across requests
//! (a node, a WASI 0.3 instance) takes a slice of a hot key's timeline from
//! the shared record in the same store step that decides its request
//! ([`grant`]), then admits requests from it locally ([`Lease::take`]) until
//! it is spent or has passed, with no store call.
//!
//! Why the fleet never admits more than the limit: GCRA admits a request
//! arriving at `t` exactly when it can be given its own stretch `[s, e)` of
//! the key's timeline, `cost · I` long, with `t ≤ s` and `e ≤ t + B·I`
//! (`I` the interval, `B` the burst); the stored TAT is where the next
//! free stretch starts, never before now. A grant advances the TAT past the
//! request's stretch and then past a range of `leased` intervals that only
//! the holder hands out (placed, if need be, a little later, so it does not
//! pass before the holder can use it; what it skips is never handed out).
//! The holder gives a request a stretch of its range that starts no earlier
//! than now ([`Lease::take`]) — a stretch that
//! has passed is lost, as idle time is in GCRA — and ends within `B·I` of
//! now (true of the whole range when it was granted, so of every later
//! moment too). So every admitted request, decided by the store or under a
//! lease, holds a stretch of one timeline, disjoint from all others, that
//! satisfies GCRA's condition at its arrival: the admitted requests of the
//! whole fleet are a schedule GCRA itself would admit. For any interval
//! `[a, b]`, their stretches lie in `[a, b + B·I)`: at most
//! `B + (b − a) / I` units, the limit exactly.
//!
//! What it may under-admit: the parts of a range its holder does not use
//! before they pass (at most `leased` units per grant; a holder asks for
//! what it used in the last [`SPAN`] of its own traffic), and a range held
//! while others are refused by the store. A refusal is always the store's,
//! exact for the fleet, with its `Retry-After`.

use super::gcra::{self, Decision, Rate};

/// A holder leases about this much of its own recent traffic at a time.
pub const SPAN_US: u64 = 100_000;
/// The rate (requests per second on one key, seen by one holder) from
/// which a holder leases.
pub const MIN_RATE: u64 = 20;
/// The most of a burst one grant may take: several holders can hold
/// ranges at once, and the store keeps capacity for the rest.
pub const MAX_SHARE_OF_BURST: u64 = 4;
/// Ranges are leased only from the part of a key above this share of its
/// burst: a key near its limit is decided by the store alone, request by
/// request, so capacity is not stranded in ranges while others are refused.
pub const RESERVE_OF_BURST: u64 = 2;

/// One GCRA step that, when it admits the request, also leases up to
/// `want` units in all (the request's `cost` included): `Decision::leased`
/// is the number beyond `cost`, a range of the key's timeline for the
/// holder. The range ends no sooner than [`SPAN_US`] from now (at most a
/// quarter of the burst window), so a holder has that long to use it even
/// where the limit is far above the traffic (stretches that pass are lost;
/// what the range skips on the way is simply never handed out), and ends
/// where at least half the burst is left. Refusals are [`gcra::decide`]'s.
pub fn grant(stored: Option<u64>, now_us: u64, rate: Rate, cost: u64, want: u64) -> Decision {
    let d = gcra::decide(stored, now_us, rate, cost);
    let extra = want.saturating_sub(cost);
    if !d.allowed || extra == 0 {
        return d;
    }
    let interval = rate.interval_us;
    let span = SPAN_US.min(rate.window_us() / 4);
    let start = d.tat_us.max((now_us + span).saturating_sub(extra.saturating_mul(interval)));
    let reserve = (rate.burst / RESERVE_OF_BURST).saturating_mul(interval);
    let last_end = (now_us + rate.window_us()).saturating_sub(reserve);
    let leased = extra.min(last_end.saturating_sub(start) / interval);
    if leased == 0 {
        return d;
    }
    let tat_us = start + leased * interval;
    Decision { tat_us, reset_after_us: tat_us - now_us, keep_until_us: tat_us, leased, ..d }
}

/// How many units a holder asks for, from the requests it saw on the key
/// in its last second; `None` when the key is cold here or its burst too
/// small to share.
pub fn want(rate: Rate, cost: u64, per_second: u64) -> Option<u64> {
    if per_second < MIN_RATE || !shareable(rate, cost) {
        return None;
    }
    let share = rate.burst / MAX_SHARE_OF_BURST;
    let span = per_second.saturating_mul(cost).saturating_mul(SPAN_US) / 1_000_000;
    Some(span.clamp(2 * cost.max(1), share))
}

/// Whether a key's burst is wide enough to lease from: a grant's share
/// must hold two requests.
pub fn shareable(rate: Rate, cost: u64) -> bool {
    rate.burst / MAX_SHARE_OF_BURST >= 2 * cost.max(1)
}

/// A range of a key's timeline that one holder hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Where the next stretch may start (microseconds, on the store's clock).
    pub next_us: u64,
    /// Where the range ends.
    pub end_us: u64,
    rate: Rate,
}

/// A stretch a request was given, for [`Lease::untake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    start_us: u64,
    end_us: u64,
}

impl Lease {
    /// The range a grant leased, if it leased any.
    pub fn granted(d: &Decision, rate: Rate) -> Option<Lease> {
        // The range ends at the TAT; it may start after the request's stretch.
        (d.allowed && d.leased > 0).then(|| Lease {
            next_us: d.tat_us - d.leased * rate.interval_us,
            end_us: d.tat_us,
            rate,
        })
    }

    /// A stretch for `cost` units at `now_us` (store clock), if the range
    /// still has one that starts no earlier than now.
    pub fn take(&mut self, now_us: u64, cost: u64) -> Option<Taken> {
        let start_us = self.next_us.max(now_us);
        let end_us = start_us.checked_add(cost.checked_mul(self.rate.interval_us)?)?;
        if end_us > self.end_us || end_us > now_us.saturating_add(self.rate.window_us()) {
            return None;
        }
        self.next_us = end_us;
        Some(Taken { start_us, end_us })
    }

    /// Gives a stretch back (its request was refused by another policy):
    /// possible while nothing was taken after it; otherwise it is lost.
    pub fn untake(&mut self, taken: Taken) {
        if self.next_us == taken.end_us {
            self.next_us = taken.start_us;
        }
    }

    /// Whole units left that can still be taken at `now_us`.
    pub fn left(&self, now_us: u64) -> u64 {
        self.end_us.saturating_sub(self.next_us.max(now_us)) / self.rate.interval_us
    }

    /// The decision a request admitted under the lease reports: what the
    /// lease has left (the fleet may have more), and the range's end as
    /// the key's reset (it may be later).
    pub fn decision(&self, taken: Taken, now_us: u64) -> Decision {
        Decision {
            allowed: true,
            tat_us: taken.end_us,
            remaining: self.left(now_us),
            reset_after_us: self.end_us.saturating_sub(now_us),
            retry_after_us: None,
            delay_us: 0,
            keep_until_us: self.end_us,
            leased: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1_000_000;
    const T0: u64 = 1_767_225_600 * SEC;

    #[test]
    fn a_grant_leases_what_is_left_up_to_what_was_asked() {
        let rate = Rate::new(100, SEC, 100).unwrap(); // 100/s, burst 100: I = 10 ms
        let d = grant(None, T0, rate, 1, 10);
        assert!(d.allowed);
        assert_eq!((d.leased, d.tat_us, d.remaining), (9, T0 + 100_000, 99));
        let mut lease = Lease::granted(&d, rate).unwrap();
        assert_eq!((lease.next_us, lease.end_us, lease.left(T0)), (T0 + 10_000, T0 + 100_000, 9));
        // Half spent: a grant takes only what is left above the reserve.
        let half = grant(Some(T0 + 450_000), T0, rate, 1, 10);
        assert_eq!((half.allowed, half.leased, half.tat_us), (true, 4, T0 + 500_000));
        let near = grant(Some(T0 + 990_000), T0, rate, 1, 10);
        assert_eq!((near.allowed, near.leased, near.tat_us), (true, 0, T0 + 1_000_000));
        let refused = grant(Some(T0 + 1_000_000), T0, rate, 1, 10);
        assert_eq!((refused.allowed, refused.leased, refused.retry_after_us), (false, 0, Some(10_000)));
        // Stretches start no earlier than now: the passed part of a range is lost.
        let taken = lease.take(T0 + 50_000, 1).unwrap();
        assert_eq!(lease.next_us, T0 + 60_000);
        assert_eq!(lease.left(T0 + 50_000), 4);
        lease.untake(taken);
        assert_eq!(lease.next_us, T0 + 50_000);
        assert!(lease.take(T0 + 95_000, 1).is_none(), "the range ends at T0 + 100 ms");
    }

    #[test]
    fn a_holder_leases_a_span_of_its_own_traffic_when_the_key_is_hot_and_the_burst_wide() {
        let rate = Rate::new(1_000, SEC, 1_000).unwrap();
        assert_eq!(want(rate, 1, 10), None, "cold here");
        assert_eq!(want(rate, 1, 500), Some(50));
        assert_eq!(want(rate, 1, 100_000), Some(250), "a quarter of the burst at most");
        assert_eq!(want(rate, 1, 20), Some(2));
        assert_eq!(want(Rate::new(10, SEC, 7).unwrap(), 1, 1_000), None, "a burst too small to share");
    }

    /// One arrival: which holder (the last one has no lease: a WASI 0.2
    /// instance, say), how long after the previous arrival, its cost.
    fn arrivals() -> impl Strategy<Value = Vec<(usize, u64, u64)>> {
        proptest::collection::vec((0usize..5, 0u64..4_000, 1u64..3), 1..400)
    }

    proptest! {
        /// Many holders leasing from one record, interleaved at random
        /// with requests decided by the store alone: every window of the
        /// admitted requests holds at most `B + (b − a) / I` units, the
        /// bound GCRA gives.
        #[test]
        fn the_fleet_never_admits_more_than_the_limit(
            events in arrivals(),
            burst in 1u64..40,
            interval in 1_000u64..20_000,
            wants in proptest::collection::vec(0u64..30, 5),
        ) {
            let rate = Rate { interval_us: interval, burst };
            let mut tat: Option<u64> = None;
            let mut leases: Vec<Option<Lease>> = vec![None; 5];
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (holder, gap, cost) in events {
                now += gap;
                let local = (holder < 4).then(|| leases[holder].as_mut().and_then(|l| l.take(now, cost))).flatten();
                if local.is_some() {
                    admitted.push((now, cost));
                    continue;
                }
                let want = if holder < 4 { wants[holder] } else { 0 };
                let d = grant(tat, now, rate, cost, want);
                if d.allowed {
                    tat = Some(d.tat_us);
                    admitted.push((now, cost));
                    if holder < 4 {
                        leases[holder] = Lease::granted(&d, rate);
                    }
                }
            }
            for i in 0..admitted.len() {
                let mut units = 0;
                for j in i..admitted.len() {
                    units += admitted[j].1;
                    let span = admitted[j].0 - admitted[i].0;
                    prop_assert!(
                        units * interval <= burst * interval + span,
                        "{} units in {} µs: burst {}, interval {}", units, span, burst, interval
                    );
                }
            }
        }
    }
}
