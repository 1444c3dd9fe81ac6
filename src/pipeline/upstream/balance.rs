//! Which of a service's targets serves a request (`balance` in the config).
//!
//! A [`Balancer`] keeps what the policies need and lives as long as the
//! gateway value: the process on the node, an instance at the edge. A WASI
//! 0.2 instance serves one request, so there round robin starts at a random
//! point of its cycle and least-request sees no other request: both are
//! weighted random. Consistent hashing is the same in every home.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::config::Service;
use crate::config::balance::Balance;

/// Sizes of the consistent-hash table: primes, the first at least 100
/// entries per target and 10 per unit of (reduced) weight, else the last.
const TABLE_SIZES: [u64; 4] = [1031, 4099, 16411, 65537];

pub(crate) struct Balancer {
    /// Cumulative weights: target `i` owns the points `ends[i-1]..ends[i]`.
    ends: Box<[u64]>,
    /// Coprime with the total weight and near its golden section, so that
    /// counting in steps of it visits every point once per cycle with
    /// consecutive counts far apart: a weighted cycle in a smooth order.
    stride: u64,
    /// Requests this balancer has placed in its cycle (round robin).
    count: AtomicU64,
    /// Where this balancer's cycle starts: random, so that short-lived
    /// instances do not all begin with the first target.
    start: OnceLock<u64>,
    /// Requests sent and awaiting their response head, per target.
    in_flight: Box<[AtomicU32]>,
    /// The consistent-hash table, built on first use.
    table: OnceLock<Box<[u32]>>,
}

/// A chosen target; the target counts as busy until this is dropped.
pub(crate) struct Pick<'a> {
    pub(crate) index: usize,
    busy: &'a AtomicU32,
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub(crate) fn new(service: &Service) -> Self {
        let weights: Vec<u64> = service.targets.iter().map(|t| u64::from(t.weight)).collect();
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let ends: Box<[u64]> = weights
            .iter()
            .scan(0, |sum, w| {
                *sum += w / divisor;
                Some(*sum)
            })
            .collect();
        let total = ends.last().copied().unwrap_or(0).max(1);
        let mut stride = ((total as f64) * 0.618_034).round().max(1.0) as u64;
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Self {
            ends,
            stride,
            count: AtomicU64::new(0),
            start: OnceLock::new(),
            in_flight: weights.iter().map(|_| AtomicU32::new(0)).collect(),
            table: OnceLock::new(),
        }
    }

    /// The target for a request among those `usable` says may serve it
    /// (`None`: none may). `caller` is what a consistent hash keys on
    /// (ignored by the other policies); `random` a uniform draw. When the
    /// policy's choice may not serve, a consistent hash takes the next
    /// usable slot of its table (so a caller's second choice is stable too),
    /// the others walk their weighted cycle from a random point.
    pub(crate) fn pick(
        &self,
        service: &Service,
        caller: Option<&[u8]>,
        random: u64,
        usable: impl Fn(usize) -> bool,
    ) -> Option<Pick<'_>> {
        let index = match (&service.balance, caller) {
            (Balance::RoundRobin, _) => {
                let start = *self.start.get_or_init(|| random);
                let n = self.count.fetch_add(1, Ordering::Relaxed).wrapping_add(start);
                Some(self.in_cycle(n)).filter(|&i| usable(i))
            }
            (Balance::LeastRequest, _) => {
                let (a, b) = (self.weighted(random), self.weighted(mix(random)));
                let load = |i: usize| u64::from(self.in_flight[i].load(Ordering::Relaxed));
                let weight = |i: usize| u64::from(service.targets[i].weight);
                match (usable(a), usable(b)) {
                    (true, true) => Some(if load(b) * weight(a) < load(a) * weight(b) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                }
            }
            (Balance::ConsistentHash(_), Some(caller)) => {
                let table = self.table.get_or_init(|| self.maglev(service));
                let slot = (hash(caller) % table.len() as u64) as usize;
                let walk = table[slot..].iter().chain(&table[..slot]);
                return walk.map(|&t| t as usize).find(|&i| usable(i)).map(|i| self.take(i));
            }
            (Balance::Random | Balance::ConsistentHash(_), _) => Some(self.weighted(random)).filter(|&i| usable(i)),
        };
        let index =
            index.or_else(|| (0..self.total()).map(|n| self.in_cycle(random.wrapping_add(n))).find(|&i| usable(i)))?;
        Some(self.take(index))
    }

    fn take(&self, index: usize) -> Pick<'_> {
        let busy = &self.in_flight[index];
        busy.fetch_add(1, Ordering::Relaxed);
        Pick { index, busy }
    }

    fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0).max(1)
    }

    /// The target owning a point of the weight line.
    fn owner(&self, point: u64) -> usize {
        self.ends.partition_point(|&end| end <= point).min(self.ends.len().saturating_sub(1))
    }

    fn weighted(&self, random: u64) -> usize {
        self.owner(random % self.total())
    }

    /// The `n`th step of the smooth weighted cycle.
    fn in_cycle(&self, n: u64) -> usize {
        let total = self.total();
        self.owner(((u128::from(n % total) * u128::from(self.stride)) % u128::from(total)) as u64)
    }

    /// A Maglev lookup table (Eisenbud et al., NSDI 2016): each target
    /// walks its own permutation of the slots, derived from its URL, and
    /// takes the next free one on its turn; turns follow the weighted
    /// cycle, so targets hold slots in proportion to their weight and a
    /// change of one of N targets moves about 1/N of the callers.
    fn maglev(&self, service: &Service) -> Box<[u32]> {
        let total = self.total();
        let size = TABLE_SIZES
            .into_iter()
            .find(|&m| m >= 100 * self.ends.len() as u64 && m >= 10 * total)
            .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1]);
        let walks: Vec<(u64, u64)> = service
            .targets
            .iter()
            .map(|t| {
                let digest = Sha256::digest(format!("{}{}", t.origin, t.base_path));
                let word = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().unwrap_or_default());
                (word(0) % size, word(8) % (size - 1) + 1)
            })
            .collect();
        let mut steps = vec![0u64; walks.len()];
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0;
        let mut turn = 0;
        while filled < size {
            let t = self.in_cycle(turn);
            turn += 1;
            let (offset, skip) = walks[t];
            loop {
                let slot = ((offset + steps[t] * skip) % size) as usize;
                steps[t] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = t as u32;
                    filled += 1;
                    break;
                }
            }
        }
        table.into_boxed_slice()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A second, independent-looking draw from the first (SplitMix64's finaliser).
pub(crate) fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A caller's place on the table: the same in every home and build.
fn hash(caller: &[u8]) -> u64 {
    let digest = Sha256::digest(caller);
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests;
