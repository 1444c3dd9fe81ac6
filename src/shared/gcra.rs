//! The Generic Cell Rate Algorithm, as one pure step: from the stored
//! theoretical arrival time (TAT), the time now and the limit, to the
//! decision and the new TAT. Every store runs exactly this arithmetic (the
//! Redis script only makes the read-decide-write atomic), so every home
//! gives the same answer.
//!
//! Time is integer microseconds since the Unix epoch: exact, no float drift,
//! and below 2^53 so Redis' Lua numbers hold it exactly. The emission
//! interval (time per unit of cost) is rounded *up*, so over any interval
//! `t` the admitted cost never exceeds `burst + rate·t`.

/// A rate: `count` per `period_us`, with room for `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds per unit of cost (rounded up).
    pub interval_us: u64,
    /// Cost that may arrive at once on an idle key.
    pub burst: u64,
}

impl Rate {
    /// `count` per `period_us`; `None` if `count` or `period_us` is 0.
    pub fn new(count: u64, period_us: u64, burst: u64) -> Option<Rate> {
        if count == 0 || period_us == 0 || burst == 0 {
            return None;
        }
        Some(Rate { interval_us: period_us.div_ceil(count), burst })
    }

    /// Time for an idle key to go from empty to full: `burst` intervals.
    pub fn window_us(&self) -> u64 {
        self.interval_us.saturating_mul(self.burst)
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The value to store if the request is admitted (unchanged if
    /// refused): the TAT, or a quota's count.
    pub tat_us: u64,
    /// Whole units of cost still admissible right now (after this request).
    pub remaining: u64,
    /// Until the key is back to a full burst.
    pub reset_after_us: u64,
    /// When refused: how long until the same request would be admitted;
    /// `None` if it never would (cost above the burst).
    pub retry_after_us: Option<u64>,
    /// When admitted within a delay allowance: how long the request must
    /// wait before it goes on (0: at once).
    pub delay_us: u64,
    /// Until when a store must keep the record (it reads as fresh after).
    pub keep_until_us: u64,
    /// Units beyond the request's cost that the step leased to its holder
    /// (`lease::grant`; 0 for every other step).
    pub leased: u64,
    /// Admitted from a range every instance shares (`lease::Pool`), not
    /// by a step on the record.
    pub pooled: bool,
}

/// One GCRA step. `stored` is the key's TAT, if any.
pub fn decide(stored: Option<u64>, now_us: u64, rate: Rate, cost: u64) -> Decision {
    decide_within(stored, now_us, rate, cost, 0)
}

/// One GCRA step that may admit a request over the rate if it waits: up to
/// `max_delay_us`, until the moment it conforms (`Decision::delay_us`).
/// Requests that go on when their delay ends conform to the rate and
/// burst as if they had arrived then; what a refusal charges is nothing.
pub fn decide_within(stored: Option<u64>, now_us: u64, rate: Rate, cost: u64, max_delay_us: u64) -> Decision {
    let tat = stored.unwrap_or(now_us).max(now_us);
    let window = rate.window_us();
    let new_tat = tat.saturating_add(cost.saturating_mul(rate.interval_us));
    // Admit if the new TAT is no further ahead of now than a full burst.
    let allow_at = new_tat.saturating_sub(window);
    let remaining = |tat: u64| now_us.saturating_add(window).saturating_sub(tat) / rate.interval_us;
    if cost > rate.burst {
        return Decision {
            allowed: false,
            tat_us: tat,
            remaining: remaining(tat),
            reset_after_us: tat - now_us,
            retry_after_us: None,
            delay_us: 0,
            keep_until_us: tat,
            leased: 0,
            pooled: false,
        };
    }
    let latest = now_us.saturating_add(max_delay_us);
    if allow_at > latest {
        return Decision {
            allowed: false,
            tat_us: tat,
            remaining: remaining(tat),
            reset_after_us: tat - now_us,
            retry_after_us: Some(allow_at - latest),
            delay_us: 0,
            keep_until_us: tat,
            leased: 0,
            pooled: false,
        };
    }
    Decision {
        allowed: true,
        tat_us: new_tat,
        remaining: remaining(new_tat),
        reset_after_us: new_tat - now_us,
        retry_after_us: None,
        delay_us: allow_at.saturating_sub(now_us),
        keep_until_us: new_tat,
        leased: 0,
        pooled: false,
    }
}

/// A stored TAT: ASCII decimal microseconds (`kv-schema/rate-limits.md`).
pub fn encode(tat_us: u64) -> String {
    tat_us.to_string()
}

/// `None` for an absent or unreadable value (an unreadable one counts as
/// idle). What follows the first space is a store's own (`kv-schema/rate-limits.md`).
pub fn decode(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.split(' ').next()?.trim().parse().ok()
}

/// How long a store should keep a key: until its TAT passes (then it reads
/// as idle anyway) or its quota window ends, plus a second for clock skew
/// between gateways.
pub fn ttl(d: Decision, now_us: u64) -> std::time::Duration {
    std::time::Duration::from_micros(d.keep_until_us.saturating_sub(now_us)) + std::time::Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000;
    const T0: u64 = 1_767_225_600 * SEC;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate::new(10, SEC, 3).unwrap(); // 10/s, burst 3
        assert_eq!(rate.interval_us, 100_000);
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let d = decide(tat, T0, rate, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(d.tat_us);
        }
        let d = decide(tat, T0, rate, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, Some(100_000));
        assert_eq!(d.reset_after_us, 300_000);
        assert_eq!(d.tat_us, tat.unwrap(), "a refusal changes nothing");
        // Waiting exactly retry_after admits it.
        assert!(decide(tat, T0 + 100_000, rate, 1).allowed);
        assert!(!decide(tat, T0 + 99_999, rate, 1).allowed);
    }

    #[test]
    fn over_the_rate_waits_up_to_the_allowance() {
        let rate = Rate::new(10, SEC, 1).unwrap(); // one every 100 ms
        let first = decide_within(None, T0, rate, 1, 250_000);
        assert!(first.allowed && first.delay_us == 0);
        let second = decide_within(Some(first.tat_us), T0, rate, 1, 250_000);
        assert!(second.allowed);
        assert_eq!(second.delay_us, 100_000, "it conforms 100 ms later");
        let third = decide_within(Some(second.tat_us), T0, rate, 1, 250_000);
        assert_eq!(third.delay_us, 200_000);
        let fourth = decide_within(Some(third.tat_us), T0, rate, 1, 250_000);
        assert!(!fourth.allowed, "300 ms is past the allowance");
        assert_eq!(fourth.retry_after_us, Some(50_000), "then it would wait 250 ms");
        assert_eq!(fourth.tat_us, third.tat_us);
        assert!(!decide(Some(first.tat_us), T0, rate, 1).allowed, "no allowance, no wait");
    }

    #[test]
    fn cost_beyond_the_burst_is_never_admitted() {
        let rate = Rate::new(1, SEC, 5).unwrap();
        let d = decide(None, T0, rate, 6);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, None);
        assert!(decide(None, T0, rate, 5).allowed);
    }

    #[test]
    fn odd_rates_round_the_interval_up() {
        let rate = Rate::new(3, SEC, 1).unwrap();
        assert_eq!(rate.interval_us, 333_334);
        assert_eq!(Rate::new(0, SEC, 1), None);
        assert_eq!(Rate::new(10_000, 86_400 * SEC, 10_000).unwrap().interval_us, 8_640_000);
    }

    proptest! {
        /// Over any run of arrivals, what is admitted within any interval
        /// [a, b] is at most burst + rate·(b - a).
        #[test]
        fn admitted_never_exceeds_burst_plus_rate(
            count in 1u64..50,
            period_ms in 1u64..5_000,
            burst in 1u64..20,
            gaps in prop::collection::vec(0u64..200_000, 1..200),
            costs in prop::collection::vec(1u64..5, 200),
        ) {
            let rate = Rate::new(count, period_ms * 1000, burst).unwrap();
            let mut tat = None;
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                let d = decide(tat, now, rate, costs[i]);
                if d.allowed {
                    tat = Some(d.tat_us);
                    admitted.push((now, costs[i]));
                }
            }
            for (i, &(a, _)) in admitted.iter().enumerate() {
                let mut total = 0;
                for &(t, c) in &admitted[i..] {
                    total += c;
                    // cost admitted in [a, t] ≤ burst + (t - a) / interval
                    prop_assert!(total <= burst + (t - a) / rate.interval_us, "{total} in {}µs", t - a);
                }
            }
        }

        /// With a delay allowance, every admitted request waits at most
        /// that long, and the requests as they go on (arrival + delay)
        /// conform to burst + rate·(b - a) over any interval; a refused one
        /// that waits retry_after is admitted.
        #[test]
        fn delayed_requests_conform_when_they_go_on(
            count in 1u64..50,
            period_ms in 1u64..5_000,
            burst in 1u64..20,
            max_delay in 0u64..2_000_000,
            gaps in prop::collection::vec(0u64..200_000, 1..200),
            costs in prop::collection::vec(1u64..5, 200),
        ) {
            let rate = Rate::new(count, period_ms * 1000, burst).unwrap();
            let mut tat = None;
            let mut now = T0;
            let mut released: Vec<(u64, u64)> = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                let d = decide_within(tat, now, rate, costs[i], max_delay);
                if d.allowed {
                    prop_assert!(d.delay_us <= max_delay);
                    tat = Some(d.tat_us);
                    released.push((now + d.delay_us, costs[i]));
                } else if let Some(wait) = d.retry_after_us {
                    prop_assert!(decide_within(tat, now + wait, rate, costs[i], max_delay).allowed);
                }
            }
            released.sort_unstable();
            for (i, &(a, _)) in released.iter().enumerate() {
                let mut total = 0;
                for &(t, c) in &released[i..] {
                    total += c;
                    prop_assert!(total <= burst + (t - a) / rate.interval_us, "{total} in {}µs", t - a);
                }
            }
        }

        /// A client that waits retry_after is admitted.
        #[test]
        fn waiting_retry_after_is_enough(
            count in 1u64..100,
            burst in 1u64..10,
            cost in 1u64..10,
            spent in 0u64..30,
        ) {
            let rate = Rate::new(count, SEC, burst).unwrap();
            let mut tat = None;
            let mut now = T0;
            for _ in 0..spent {
                let d = decide(tat, now, rate, 1);
                if d.allowed { tat = Some(d.tat_us); }
                now += 1_000;
            }
            let d = decide(tat, now, rate, cost);
            match (d.allowed, d.retry_after_us) {
                (true, _) => {}
                (false, Some(wait)) => prop_assert!(decide(tat, now + wait, rate, cost).allowed),
                (false, None) => prop_assert!(cost > burst),
            }
        }

        /// Costs above the burst are always refused, whatever the state.
        #[test]
        fn oversized_costs_always_refused(burst in 1u64..50, extra in 1u64..50, idle in 0u64..10_000_000) {
            let rate = Rate::new(10, SEC, burst).unwrap();
            let d = decide(Some(T0), T0 + idle, rate, burst + extra);
            prop_assert!(!d.allowed);
            prop_assert_eq!(d.retry_after_us, None);
        }
    }
}
