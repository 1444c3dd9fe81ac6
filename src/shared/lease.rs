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
            pooled: false,
        }
    }
}

/// A range leased to every instance at once, for homes whose instances
/// live one request (WASI 0.2): the store's record names it, and a counter
/// in the store hands its stretches out, one per increment, so concurrent
/// instances never race for it. Stretch `n` (from 1) is the `n`-th
/// `unit_us` of the range; a request may hold it under the same condition
/// as under any lease: it starts no earlier than now and ends within a
/// burst window of now (the bound in the module docs holds unchanged).
#[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub start_us: u64,
    pub end_us: u64,
    /// When the store granted it: how fast it is spent tells the key's rate.
    pub granted_us: u64,
}

/// What stretch `n` of a pool is to a request arriving now.
#[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    /// Its own stretch: admitted.
    Held(Decision),
    /// Stretch `n` has passed; the first one that has not is this many on.
    Passed(u64),
    /// The range has no stretch left for it.
    Spent,
}

#[cfg(any(test, feature = "edge-p2", feature = "edge-p3"))]
impl Pool {
    /// The range a grant leased, in whole stretches of `unit_us`.
    pub fn granted(d: &Decision, rate: Rate, unit_us: u64, now_us: u64) -> Option<Pool> {
        let lease = Lease::granted(d, rate)?;
        let units = (lease.end_us - lease.next_us) / unit_us.max(1);
        (units > 0).then(|| Pool {
            start_us: lease.next_us,
            end_us: lease.next_us + units * unit_us,
            granted_us: now_us,
        })
    }

    /// Whole stretches of `unit_us` in the range.
    pub fn units(&self, unit_us: u64) -> u64 {
        self.end_us.saturating_sub(self.start_us) / unit_us.max(1)
    }

    /// Stretch `n` (from 1) for a request arriving at `now_us`.
    pub fn stretch(&self, n: u64, unit_us: u64, rate: Rate, now_us: u64) -> Stretch {
        let start = n.checked_sub(1).and_then(|i| i.checked_mul(unit_us)).and_then(|o| self.start_us.checked_add(o));
        let Some((start_us, end_us)) = start.and_then(|s| Some((s, s.checked_add(unit_us)?))) else {
            return Stretch::Spent;
        };
        if end_us > self.end_us || end_us > now_us.saturating_add(rate.window_us()) {
            return Stretch::Spent;
        }
        if start_us < now_us {
            return Stretch::Passed((now_us - start_us).div_ceil(unit_us.max(1)));
        }
        let left = Lease { next_us: end_us, end_us: self.end_us, rate };
        Stretch::Held(Decision { pooled: true, ..left.decision(Taken { start_us, end_us }, now_us) })
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

    /// One arrival: which holder (0–3 hold leases, 4 has none, 5 is a
    /// WASI 0.2 instance taking from the key's pool), how long after the
    /// previous arrival, its cost (pool takers: always 2, a policy's cost).
    fn arrivals() -> impl Strategy<Value = Vec<(usize, u64, u64)>> {
        proptest::collection::vec((0usize..6, 0u64..4_000, 1u64..3), 1..400)
    }

    #[test]
    fn a_pool_hands_out_its_stretches_in_turn_and_skips_what_has_passed() {
        let rate = Rate::new(100, SEC, 100).unwrap(); // I = 10 ms
        let d = grant(None, T0, rate, 2, 20);
        let pool = Pool::granted(&d, rate, 20_000, T0).unwrap();
        assert_eq!((pool.start_us, pool.end_us, pool.units(20_000)), (T0 + 20_000, T0 + 200_000, 9));
        let Stretch::Held(first) = pool.stretch(1, 20_000, rate, T0) else { panic!("held") };
        assert_eq!((first.tat_us, first.remaining, first.pooled), (T0 + 40_000, 16, true));
        assert_eq!(pool.stretch(9, 20_000, rate, T0 + 5_000), Stretch::Held(pool_decision(&pool, 9, T0 + 5_000)));
        assert_eq!(pool.stretch(10, 20_000, rate, T0), Stretch::Spent, "nine stretches");
        assert_eq!(pool.stretch(0, 20_000, rate, T0), Stretch::Spent, "counters start at 1");
        // At T0 + 65 ms stretch 2 (40–60 ms) has passed: stretch 4 (80–100 ms) is the first that has not.
        assert_eq!(pool.stretch(2, 20_000, rate, T0 + 65_000), Stretch::Passed(2));
        assert!(matches!(pool.stretch(4, 20_000, rate, T0 + 65_000), Stretch::Held(_)));
    }

    fn pool_decision(pool: &Pool, n: u64, now: u64) -> Decision {
        match pool.stretch(n, 20_000, Rate::new(100, SEC, 100).unwrap(), now) {
            Stretch::Held(d) => d,
            other => panic!("{other:?}"),
        }
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
            // The key's pool and its counter, as the store keeps them.
            let mut pool: Option<(Pool, u64)> = None;
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (holder, gap, cost) in events {
                now += gap;
                let cost = if holder == 5 { 2 } else { cost };
                let local = (holder < 4).then(|| leases[holder].as_mut().and_then(|l| l.take(now, cost))).flatten();
                if local.is_some() {
                    admitted.push((now, cost));
                    continue;
                }
                if holder == 5 && let Some((p, counter)) = pool.as_mut() {
                    *counter += 1;
                    let mut stretch = p.stretch(*counter, cost * interval, rate, now);
                    if let Stretch::Passed(skip) = stretch {
                        *counter += skip;
                        stretch = p.stretch(*counter, cost * interval, rate, now);
                    }
                    if let Stretch::Held(_) = stretch {
                        admitted.push((now, cost));
                        continue;
                    }
                }
                let want = if holder != 4 { wants[holder.min(4)] } else { 0 };
                let d = grant(tat, now, rate, cost, want);
                if d.allowed {
                    tat = Some(d.tat_us);
                    admitted.push((now, cost));
                    if holder < 4 {
                        leases[holder] = Lease::granted(&d, rate);
                    }
                    if holder == 5 {
                        pool = Pool::granted(&d, rate, cost * interval, now).map(|p| (p, 0));
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
