//! The callers refused most by rate limits and quotas over the last
//! minutes (the admin API's `GET /refusals`), in bounded memory: one
//! Space-Saving summary (Metwally et al.) per minute, each holding at most
//! [`CAPACITY`] callers, merged when read. A caller's count is exact while
//! its minute's summary has room; past that, it may be over-counted by at
//! most the `error` reported with it, and never under-counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Callers each minute's summary tracks.
const CAPACITY: usize = 256;
/// Minutes kept.
pub(crate) const MINUTES: u64 = 5;

/// The refused callers of the last [`MINUTES`] minutes.
#[derive(Default)]
pub(crate) struct TopRefused(Mutex<VecDeque<(u64, Summary)>>);

/// One minute's Space-Saving summary: caller → (count, over-count bound).
#[derive(Default)]
struct Summary(HashMap<String, (u64, u64)>);

/// One caller in the answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Refused {
    pub(crate) caller: String,
    pub(crate) refusals: u64,
    /// At most this many of `refusals` may belong to other callers.
    pub(crate) error: u64,
}

impl TopRefused {
    /// Counts a refusal of `caller` in `minute` (minutes since the epoch).
    pub(crate) fn record(&self, caller: &str, minute: u64) {
        let Ok(mut minutes) = self.0.lock() else { return };
        if minutes.back().is_none_or(|(m, _)| *m < minute) {
            minutes.push_back((minute, Summary::default()));
        }
        while minutes.front().is_some_and(|(m, _)| *m + MINUTES <= minute) {
            minutes.pop_front();
        }
        if let Some((_, summary)) = minutes.iter_mut().rev().find(|(m, _)| *m == minute) {
            summary.add(caller);
        }
    }

    /// The `n` callers refused most in the minutes up to `minute`.
    pub(crate) fn top(&self, n: usize, minute: u64) -> Vec<Refused> {
        let Ok(minutes) = self.0.lock() else { return Vec::new() };
        let mut merged: HashMap<&str, (u64, u64)> = HashMap::new();
        for (_, summary) in minutes.iter().filter(|(m, _)| *m + MINUTES > minute) {
            for (caller, &(count, error)) in &summary.0 {
                let entry = merged.entry(caller).or_default();
                entry.0 += count;
                entry.1 += error;
            }
        }
        let mut top: Vec<Refused> = merged
            .into_iter()
            .map(|(caller, (refusals, error))| Refused { caller: caller.to_string(), refusals, error })
            .collect();
        top.sort_by(|a, b| b.refusals.cmp(&a.refusals).then_with(|| a.caller.cmp(&b.caller)));
        top.truncate(n);
        top
    }
}

impl Summary {
    fn add(&mut self, caller: &str) {
        if let Some(entry) = self.0.get_mut(caller) {
            entry.0 += 1;
            return;
        }
        if self.0.len() < CAPACITY {
            self.0.insert(caller.to_string(), (1, 0));
            return;
        }
        // Full: the newcomer takes the least counted caller's place and
        // count (which bounds how much of it is not its own).
        let Some((least, &(count, _))) = self.0.iter().min_by_key(|(_, (c, _))| *c) else { return };
        let least = least.clone();
        self.0.remove(&least);
        self.0.insert(caller.to_string(), (count + 1, count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_with_room_and_minutes_age_out() {
        let top = TopRefused::default();
        for _ in 0..5 {
            top.record("consumer:p:acme", 100);
        }
        top.record("ip:203.0.113.9", 100);
        for _ in 0..3 {
            top.record("ip:203.0.113.9", 102);
        }
        let seen = top.top(10, 102);
        assert_eq!(seen[0], Refused { caller: "consumer:p:acme".into(), refusals: 5, error: 0 });
        assert_eq!(seen[1], Refused { caller: "ip:203.0.113.9".into(), refusals: 4, error: 0 });
        assert_eq!(top.top(1, 102).len(), 1);
        // Minute 100 is past the five kept at 105.
        assert_eq!(top.top(10, 105), vec![Refused { caller: "ip:203.0.113.9".into(), refusals: 3, error: 0 }]);
    }

    #[test]
    fn a_heavy_caller_is_found_among_more_callers_than_fit_and_memory_stays_bounded() {
        let top = TopRefused::default();
        for i in 0..10_000u32 {
            top.record(&format!("ip:10.0.{}.{}", i / 256, i % 256), 7);
            if i % 10 == 0 {
                top.record("consumer:p:abuser", 7);
            }
        }
        let seen = top.top(3, 7);
        assert_eq!(seen[0].caller, "consumer:p:abuser");
        assert!(seen[0].refusals >= 1000 && seen[0].refusals - seen[0].error <= 1000, "{:?}", seen[0]);
        let minutes = top.0.lock().unwrap();
        assert!(minutes.iter().all(|(_, s)| s.0.len() <= CAPACITY));
    }
}
