//! The leases a long-lived holder (a node's process, a WASI 0.3 instance)
//! keeps for the rate-limit phase: per rate key it has seen lately, how
//! busy the key is here and the range of its timeline this holder hands out
//! (`shared/lease.rs` has the arithmetic and why it stays exact).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::shared::gcra::{Decision, Rate};
use crate::shared::lease::{self, Lease, Taken};

/// Keys tracked at once; past it, keys idle for two seconds are dropped
/// (at most once a second), and a new key while all are busy goes to the
/// store as a cold one. Only keys whose burst can be shared are tracked.
const MAX_KEYS: usize = 4096;
/// Ranges held per key: concurrent requests that found the last one spent
/// each came back with one, and none is thrown away while it has stretches.
const MAX_RANGES: usize = 16;
const SEC_US: u64 = 1_000_000;
/// The shortest stretch of time a rate is estimated over.
const MIN_SAMPLE_US: u64 = 100_000;

/// Per key: its leased ranges, oldest first, and the requests seen here by second.
#[derive(Debug)]
struct Held {
    leases: Vec<Lease>,
    /// The store's clock less this holder's, when the lease was granted
    /// (Redis decides on its own clock).
    skew_us: i64,
    /// The second (this holder's clock) being counted, and the requests
    /// in it and in the one before.
    second: u64,
    this: u64,
    last: u64,
    /// When this holder first saw the key: a new instance's first second
    /// is counted from here, not from its start.
    since_us: u64,
}

impl Held {
    fn count(&mut self, now_us: u64) {
        let second = now_us / SEC_US;
        match second.checked_sub(self.second) {
            Some(0) => self.this += 1,
            Some(1) => (self.last, self.this, self.second) = (self.this, 1, second),
            _ => (self.last, self.this, self.second) = (0, 1, second),
        }
    }

    /// Requests a second on the key here: the last full second's, or this
    /// one's so far scaled up (counted over at least [`MIN_SAMPLE_US`]), so a
    /// new instance leases after its first few requests and asks for more
    /// as they come.
    fn per_second(&self, now_us: u64) -> u64 {
        let counted_us = now_us.saturating_sub((self.second * SEC_US).max(self.since_us)).max(MIN_SAMPLE_US);
        self.last.max(self.this.saturating_mul(SEC_US) / counted_us)
    }

    /// A stretch of the first range that has one for `cost` at `now_us`
    /// (this holder's clock); spent and passed ranges are dropped.
    fn take(&mut self, cost: u64, now_us: u64) -> Option<(Decision, Taken)> {
        let store_now = now_us.saturating_add_signed(self.skew_us);
        self.leases.retain(|l| l.left(store_now) > 0);
        for l in &mut self.leases {
            if let Some(taken) = l.take(store_now, cost) {
                return Some((l.decision(taken, store_now), taken));
            }
        }
        None
    }
}

/// What the holder can do for one policy's step.
#[derive(Debug)]
pub(crate) enum Local {
    /// Admitted under this holder's lease: no store call.
    Admitted(Decision, Taken),
    /// Ask the store, leasing this many units in all if `Some`.
    Ask(Option<u64>),
}

/// One holder's leases, by rate key.
#[derive(Debug, Default)]
pub(crate) struct Leases(Mutex<Table>);

#[derive(Debug, Default)]
struct Table {
    held: HashMap<String, Held>,
    /// The second in which a full table was last swept of idle keys: at
    /// most one sweep a second, however many new keys arrive.
    swept: u64,
}

impl Leases {
    /// Counts a request on `key` and admits it under the key's lease if the
    /// lease has a stretch for it; else says what to ask the store for.
    pub(crate) fn admit(&self, key: &str, rate: Rate, cost: u64, now_us: u64) -> Local {
        let Ok(mut table) = self.0.lock() else { return Local::Ask(None) };
        let Table { held, swept } = &mut *table;
        if !held.contains_key(key) {
            let second = now_us / SEC_US;
            if held.len() >= MAX_KEYS && *swept != second {
                *swept = second;
                held.retain(|_, h| h.second + 1 >= second);
            }
            if held.len() >= MAX_KEYS {
                return Local::Ask(None);
            }
            let fresh = Held { leases: Vec::new(), skew_us: 0, second, this: 0, last: 0, since_us: now_us };
            held.insert(key.to_string(), fresh);
        }
        let Some(h) = held.get_mut(key) else { return Local::Ask(None) };
        h.count(now_us);
        match h.take(cost, now_us) {
            Some((d, taken)) => Local::Admitted(d, taken),
            None => Local::Ask(lease::want(rate, cost, h.per_second(now_us))),
        }
    }

    /// A stretch for a request the store just refused, from a range a
    /// concurrent request brought back meanwhile.
    pub(crate) fn take_again(&self, key: &str, cost: u64, now_us: u64) -> Option<(Decision, Taken)> {
        self.0.lock().ok()?.held.get_mut(key)?.take(cost, now_us)
    }

    /// Gives back a stretch taken for a request another policy refused.
    pub(crate) fn untake(&self, key: &str, taken: Taken) {
        if let Ok(mut table) = self.0.lock()
            && let Some(h) = table.held.get_mut(key)
        {
            h.leases.iter_mut().for_each(|l| l.untake(taken));
        }
    }

    /// Keeps what a store step leased (`decision` made at `store_now_us`
    /// on the store's clock, asked at `now_us` on this holder's).
    pub(crate) fn keep(&self, key: &str, decision: &Decision, rate: Rate, store_now_us: u64, now_us: u64) {
        let Some(lease) = Lease::granted(decision, rate) else { return };
        if let Ok(mut table) = self.0.lock()
            && let Some(h) = table.held.get_mut(key)
        {
            if h.leases.len() >= MAX_RANGES {
                h.leases.remove(0);
            }
            h.leases.push(lease);
            h.skew_us = i64::try_from(i128::from(store_now_us) - i128::from(now_us)).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new holder (a fresh instance) leases from its second request on a
    /// busy key, and asks for more as its requests keep coming.
    #[test]
    fn a_new_holder_leases_early_and_asks_for_more_as_traffic_shows() {
        let leases = Leases::default();
        let rate = Rate::new(100_000_000, SEC_US, 100_000_000).unwrap();
        let t0 = 1_767_225_600 * SEC_US + 300_000;
        let ask = |n: u64| match leases.admit("k", rate, 1, t0 + n * 1_000) {
            Local::Ask(want) => want,
            Local::Admitted(..) => panic!("no lease was kept"),
        };
        assert_eq!(ask(0), None, "one request says nothing");
        assert_eq!(ask(1), Some(2));
        let wants: Vec<_> = (2..50).map(ask).collect();
        assert_eq!(wants.last(), Some(&Some(50)), "50 requests in 50 ms: 500 a second, 50 in 100 ms");
        // A full second later, the last second's count stands.
        let Local::Ask(want) = leases.admit("k", rate, 1, t0 + 1_200_000) else { panic!("no lease was kept") };
        assert_eq!(want, Some(5), "the last second's 50 requests");
    }
}
