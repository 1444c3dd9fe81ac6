//! The leases a long-lived holder (a node's process, a WASI 0.3 instance)
//! keeps for the rate-limit phase: per rate key it has seen lately, how
//! busy the key is here and the range of its timeline this holder hands out
//! (`shared/lease.rs` has the arithmetic and why it stays exact).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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
/// A key that has seen no request here for this long gives back what its
/// ranges still hold (a holder leases from 20 requests a second: five of
/// its mean gaps); the table is looked over at most twice in that time.
#[cfg_attr(feature = "edge-p2", allow(dead_code))] // WASI 0.2 instances hold no ranges
pub(crate) const IDLE_US: u64 = 250_000;

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
    /// When it last saw a request on the key.
    seen_us: u64,
}

impl Held {
    /// Counts a request and admits it under a lease if one has a stretch
    /// for it; else says what to ask the store for.
    fn admit(&mut self, rate: Rate, cost: u64, now_us: u64) -> Local {
        self.count(now_us);
        match self.take(cost, now_us) {
            Some((d, taken)) => Local::Admitted(d, taken),
            None => Local::Ask(lease::want(rate, cost, self.per_second(now_us))),
        }
    }

    fn count(&mut self, now_us: u64) {
        self.seen_us = now_us;
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

/// One holder's leases, by rate key; and whether a range was kept while no
/// task looks over the table (read per request without the lock).
#[derive(Debug, Default)]
pub(crate) struct Leases(Mutex<Table>, AtomicBool);

#[derive(Debug, Default)]
#[cfg_attr(feature = "edge-p2", allow(dead_code))] // WASI 0.2 instances hold no ranges
struct Table {
    /// By store key (a SHA-256 digest inside): foldhash, not SipHash.
    held: HashMap<String, Held, foldhash::fast::RandomState>,
    /// The second in which a full table was last swept of idle keys: at
    /// most one sweep a second, however many new keys arrive.
    swept: u64,
    /// Whether a task looks over the table while it holds ranges (a WASI
    /// 0.3 instance's, which has no task of its own otherwise).
    watched: bool,
}

/// What is left of one key's ranges, for the store to take back
/// (`KvStore::give_back`): `(from_us, end_us)` on the store's clock, the
/// newest range first (only a range that still ends at the key's TAT can
/// go back, and each one given back may let the one before it go too).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "edge-p2", allow(dead_code))] // WASI 0.2 instances hold no ranges
pub(crate) struct Unused {
    pub(crate) key: String,
    pub(crate) ranges: Vec<(u64, u64)>,
}

impl Leases {
    /// Counts a request on `key` and admits it under the key's lease if the
    /// lease has a stretch for it; else says what to ask the store for.
    pub(crate) fn admit(&self, key: &str, rate: Rate, cost: u64, now_us: u64) -> Local {
        let Ok(mut table) = self.0.lock() else { return Local::Ask(None) };
        let Table { held, swept, .. } = &mut *table;
        // A key seen before is hashed once, not looked up and then fetched.
        if let Some(h) = held.get_mut(key) {
            return h.admit(rate, cost, now_us);
        }
        let second = now_us / SEC_US;
        if held.len() >= MAX_KEYS && *swept != second {
            *swept = second;
            held.retain(|_, h| h.second + 1 >= second);
        }
        if held.len() >= MAX_KEYS {
            return Local::Ask(None);
        }
        let fresh =
            Held { leases: Vec::new(), skew_us: 0, second, this: 0, last: 0, since_us: now_us, seen_us: now_us };
        held.entry(key.to_string()).or_insert(fresh).admit(rate, cost, now_us)
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

    /// Takes from this holder the ranges of keys that have seen no request
    /// here for [`IDLE_US`] (of every key with `all`: the holder is going
    /// away), with what they still hold; nothing is handed out from them
    /// afterwards. Its callers look twice per [`IDLE_US`].
    #[cfg_attr(feature = "edge-p2", allow(dead_code))] // WASI 0.2 instances hold no ranges
    pub(crate) fn unused(&self, now_us: u64, all: bool) -> Vec<Unused> {
        let Ok(mut table) = self.0.lock() else { return Vec::new() };
        let mut unused = Vec::new();
        for (key, h) in &mut table.held {
            if h.leases.is_empty() || (!all && now_us.saturating_sub(h.seen_us) < IDLE_US) {
                continue;
            }
            let store_now = now_us.saturating_add_signed(h.skew_us);
            let ranges: Vec<(u64, u64)> = std::mem::take(&mut h.leases)
                .into_iter()
                .rev()
                .filter(|l| l.left(store_now) > 0)
                .map(|l| (l.next_us.max(store_now), l.end_us))
                .collect();
            if !ranges.is_empty() {
                unused.push(Unused { key: key.clone(), ranges });
            }
        }
        unused
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
            if !table.watched {
                self.1.store(true, Ordering::Release);
            }
        }
    }

    /// Whether a task should start looking over the table for ranges to
    /// give back: one was kept and no task looks (it then does).
    #[cfg_attr(not(feature = "edge-p3"), allow(dead_code))] // a WASI 0.3 instance's
    pub(crate) fn to_watch(&self) -> bool {
        if !self.1.swap(false, Ordering::AcqRel) {
            return false;
        }
        let Ok(mut table) = self.0.lock() else { return false };
        table.watched = true;
        true
    }

    /// Whether the looking task may stop: no key holds a range (then no
    /// task looks until one is kept again).
    #[cfg_attr(not(feature = "edge-p3"), allow(dead_code))] // a WASI 0.3 instance's
    pub(crate) fn watch_ends(&self) -> bool {
        let Ok(mut table) = self.0.lock() else { return true };
        let ends = table.held.values().all(|h| h.leases.is_empty());
        table.watched &= !ends;
        ends
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

    /// A key idle here for [`IDLE_US`] hands its ranges over to be given
    /// back (what each still holds, newest first) and admits no more from
    /// them; a busy key keeps its own. One task looks over the table while
    /// ranges are held, and stops when none are.
    #[test]
    fn an_idle_keys_ranges_are_handed_over_once_and_watched_while_held() {
        let leases = Leases::default();
        let rate = Rate::new(100, SEC_US, 1_000).unwrap(); // I = 10 ms
        let t0 = 1_767_225_600 * SEC_US;
        let grant = |key: &str, at: u64, want: u64| {
            let _ = leases.admit(key, rate, 1, at);
            let d = lease::grant(None, at, rate, 1, want);
            leases.keep(key, &d, rate, at, at);
            d
        };
        assert!(!leases.to_watch(), "nothing held");
        let quiet = grant("quiet", t0, 50);
        assert!(leases.to_watch(), "a range was kept: a task starts looking");
        assert!(!leases.to_watch(), "one task looks");
        let _ = grant("busy", t0 + IDLE_US - 1_000, 50);
        assert!(leases.unused(t0 + IDLE_US / 4, false).is_empty(), "nothing idle yet");
        assert!(leases.unused(t0 + IDLE_US / 2 - 1, false).is_empty(), "nothing idle at half the idle time");
        let Local::Admitted(..) = leases.admit("quiet", rate, 1, t0 + 10_000) else { panic!("the range admits") };
        // The range: 49 units after the request's own, to 500 ms; one taken
        // at 10 ms, the rest passing from now on.
        let at = t0 + 10_000 + IDLE_US;
        assert_eq!(quiet.tat_us, t0 + 500_000);
        assert_eq!(leases.unused(at, false), vec![Unused { key: "quiet".into(), ranges: vec![(at, quiet.tat_us)] }]);
        assert!(matches!(leases.admit("quiet", rate, 1, at), Local::Ask(_)), "nothing is handed out any more");
        assert!(!leases.watch_ends(), "busy still holds a range");
        assert_eq!(leases.unused(at + 1, true).len(), 1, "all of them: busy's too");
        assert!(leases.watch_ends());
        assert!(!leases.to_watch(), "nothing kept since");
    }
}
