//! The key-value port over a store that keeps everything forever and may
//! misreport compare-and-swap: Spin's key-value (`kv-schema/README.md`,
//! "Stores without expiry"). Every value is sealed in an envelope that
//! carries its expiry and the ids of the last writes that made it:
//!
//! - a record past its expiry reads as absent; reads delete the expired
//!   records they find, and [`Enveloped::sweep`] deletes the ones nobody
//!   reads again, in bounded batches;
//! - a compare-and-swap the store reports as failed is read back: if the
//!   record carries this write's id, the write landed (Spin's Redis backend
//!   commits and then reports `CasFailed`), so nothing is done twice;
//! - a key is created by one writer only: Spin's SQLite backend turns a
//!   compare-and-swap on an absent key into a blind upsert, so writers that
//!   find a key absent first take its creation ticket (an atomic
//!   increment); the one holding ticket 1 creates the record, the others
//!   wait for it and replace it by compare-and-swap.
//!
//! Rate-limit steps never delete on a read: they watch each key, decide
//! and replace the record, so a read-time deletion can never erase a
//! charge. What a deletion can race with is a write that only saves work
//! (a verified token, a key-set record): the cost is doing it again.
//!
//! A request with one exact rate step on a busy key is admitted from the
//! key's pool (`lease::Pool`): a range of its timeline that the record
//! names and a counter hands out, one stretch per increment, so instances
//! that live one request (WASI 0.2) neither race on the record nor write
//! it per request (`kv-schema/rate-limits.md`, "Pools").

use std::time::Duration;

use super::{Clock, KvError, KvStore, LimitStep, Meter, SweepReport};
use crate::shared::entropy::Entropy;
use crate::shared::gcra::{self, Decision, Rate};
use crate::shared::lease::{self, Pool, Stretch};

/// What the platform's store offers: no expiry, and a compare-and-swap
/// whose failure report cannot be trusted (it is read back).
pub(crate) trait RawStore {
    /// A compare-and-swap in progress: the key as it was watched.
    type Watch;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Every key in the store (Spin lists them all at once).
    async fn keys(&self) -> Result<Vec<String>, KvError>;
    /// Starts a compare-and-swap on `key`: the handle and the value now.
    /// Fails on a store without atomics.
    async fn watch(&self, key: &str) -> Result<(Self::Watch, Option<Vec<u8>>), KvError>;
    /// Writes `value` if `key` is unchanged since it was watched.
    async fn swap(&self, watch: Self::Watch, value: &[u8]) -> Result<Swap, KvError>;
    /// Adds `delta` to the counter at `key` (0 if absent), atomically.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
}

/// What the store said about a swap.
pub(crate) enum Swap {
    Done,
    /// Reported as failed, with the value read afterwards (which may be
    /// this very write: see the module docs).
    Refused {
        now: Option<Vec<u8>>,
    },
}

/// Every key the gateway writes starts with this (`kv-schema/README.md`).
const KEY_PREFIX: &str = "pc1:";
/// How long a rate-limit update keeps retrying a compare-and-swap that
/// other writers keep winning before it gives up: then the step fails as
/// the store failing would (the policy's `on_store_error` decides), never
/// as a refusal the limit did not make.
const CONTENTION_DEADLINE: Duration = Duration::from_secs(2);
/// The longest backoff between two rounds (full jitter below 1, 2, 4 …
/// 32 ms): writers racing on one key spread out, none waits long.
const MAX_BACKOFF_US: u64 = 32_000;
/// The magic that starts every envelope (`kv-schema/README.md`).
const MAGIC: &[u8] = b"pc1e ";
/// Write ids a record remembers: its own and its predecessors', so a
/// writer recognises its write even after a few others replaced it.
const REMEMBERED_WRITES: usize = 8;
/// Appended to a key for its creation ticket.
const TICKET_SUFFIX: &str = "~new";
/// How long a writer waits for the holder of a creation ticket to create
/// the key, looking every `CREATE_POLL` (a plain read: on Spin's Redis
/// backend a watch opens a connection).
const CREATE_WAIT: Duration = Duration::from_secs(1);
const CREATE_POLL: Duration = Duration::from_millis(5);
/// How long after its range ends a pool's counter is kept before the
/// sweep deletes it: an instance that read the pool before it ended and
/// counts after the deletion gets a stretch that has long passed.
const POOL_KEPT_MS: u64 = 60_000;

/// A record as stored: payload plus expiry and write ids.
#[derive(Debug, PartialEq, Eq)]
struct Envelope<'a> {
    /// Milliseconds since the epoch at which the record is gone.
    expires_at_ms: Option<u64>,
    /// The newest first.
    writes: Vec<u64>,
    payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// `pc1e <expires_at_ms|-> <id>[,<id>…]\n<payload>`; `None` for anything else.
    fn open(raw: &'a [u8]) -> Option<Self> {
        let rest = raw.strip_prefix(MAGIC)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&rest[..end]).ok()?;
        let (expiry, ids) = head.split_once(' ')?;
        let expires_at_ms = match expiry {
            "-" => None,
            ms => Some(ms.parse().ok()?),
        };
        let writes = ids.split(',').map(|id| u64::from_str_radix(id, 16).ok()).collect::<Option<Vec<u64>>>()?;
        Some(Self { expires_at_ms, writes, payload: &rest[end + 1..] })
    }

    fn seal(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut head = String::from_utf8_lossy(MAGIC).into_owned();
        match self.expires_at_ms {
            Some(ms) => {
                let _ = write!(head, "{ms} ");
            }
            None => head.push_str("- "),
        }
        for (i, id) in self.writes.iter().enumerate() {
            let _ = write!(head, "{}{id:016x}", if i == 0 { "" } else { "," });
        }
        head.push('\n');
        let mut out = head.into_bytes();
        out.extend_from_slice(self.payload);
        out
    }

    fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// The payload of a raw value if it is a live record.
fn live(raw: Option<&[u8]>, now_ms: u64) -> Option<&[u8]> {
    Envelope::open(raw?).filter(|e| e.live(now_ms)).map(|e| e.payload)
}

/// Whether a raw value is a record this write made (or one made after it).
fn carries(raw: Option<&[u8]>, write: u64) -> bool {
    raw.and_then(Envelope::open).is_some_and(|e| e.writes.contains(&write))
}

/// A record gone from a reader's view: expired, or not an envelope at all
/// (a value from before envelopes, or garbage).
fn dead(raw: &[u8], now_ms: u64) -> bool {
    Envelope::open(raw).is_none_or(|e| !e.live(now_ms))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A rate record's payload on a Spin store: `<tat> <written_us>` and, while
/// the key has one, ` <start_us>-<end_us>@<granted_us>`, its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RateRecord {
    tat_us: Option<u64>,
    /// When a request was last decided on the record (its rate, for a key
    /// with no pool spent yet).
    written_us: Option<u64>,
    pool: Option<Pool>,
}

impl RateRecord {
    fn read(payload: Option<&[u8]>) -> Self {
        let mut words = payload.and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("").split(' ').skip(1);
        let written_us = words.next().and_then(|w| w.parse().ok());
        let pool = words.next().and_then(|w| {
            let (range, granted) = w.split_once('@')?;
            let (start, end) = range.split_once('-')?;
            let pool =
                Pool { start_us: start.parse().ok()?, end_us: end.parse().ok()?, granted_us: granted.parse().ok()? };
            (pool.start_us < pool.end_us).then_some(pool)
        });
        Self { tat_us: gcra::decode(payload), written_us, pool }
    }

    fn encode(&self) -> String {
        let mut out = gcra::encode(self.tat_us.unwrap_or(0));
        if let Some(written) = self.written_us {
            out.push_str(&format!(" {written}"));
            if let Some(p) = self.pool {
                out.push_str(&format!(" {}-{}@{}", p.start_us, p.end_us, p.granted_us));
            }
        }
        out
    }
}

/// The counter that hands out a pool's stretches: the key, `~`, its range.
fn counter_key(key: &str, pool: &Pool) -> String {
    format!("{key}~{}-{}", pool.start_us, pool.end_us)
}

/// Where a pool counter's range ends, if `key` names one.
fn counter_end_us(key: &str) -> Option<u64> {
    let (_, range) = key.rsplit_once('~')?;
    let (start, end) = range.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(start) && digits(end)).then(|| end.parse().ok()).flatten()
}

/// The requests per second a key sees, as an instance that lives one
/// request can tell: from how many stretches its last pool handed out
/// since it was granted, else from the time since the record was last
/// decided on.
fn per_second(record: &RateRecord, spent: Option<&(Pool, u64)>, now_us: u64) -> u64 {
    let per = |n: u64, since: u64| n.saturating_mul(1_000_000) / now_us.saturating_sub(since).max(1);
    match spent {
        Some((pool, used)) => per(*used, pool.granted_us),
        None => record.written_us.map_or(0, |w| per(1, w)),
    }
}

/// What a step that admitted a request writes over `raw`: a quota its
/// count; a rate its TAT, with the key's pool kept while it lasts (a
/// request with several steps does not take from pools, but others on
/// the key may still).
fn successor(step: &LimitStep<'_>, decision: &Decision, raw: Option<&[u8]>, now_ms: u64, now_us: u64) -> String {
    match step.meter {
        Meter::Quota { .. } => gcra::encode(decision.tat_us),
        Meter::Rate { .. } | Meter::Lease { .. } => {
            let pool = RateRecord::read(live(raw, now_ms)).pool.filter(|p| p.end_us > now_us);
            RateRecord { tat_us: Some(decision.tat_us), written_us: Some(now_us), pool }.encode()
        }
    }
}

/// A key watched for an exact write, with the creation ticket taken for it.
struct Watched<W> {
    watch: W,
    raw: Option<Vec<u8>>,
    ticket: Option<String>,
}

/// A step that found no decision in time: its key kept changing under it,
/// or its creator never showed up.
fn contention(key: &str, why: &str) -> KvError {
    KvError(format!("no rate-limit decision within {CONTENTION_DEADLINE:?} on `{key}`: {why}"))
}

/// A step's key as read: watched (exact steps) or not, and its raw value.
type Seen<W> = (Option<Watched<W>>, Option<Vec<u8>>);

/// The key-value port over a [`RawStore`]; `clock` decides expiry.
pub(crate) struct Enveloped<S, C> {
    pub(crate) store: S,
    pub(crate) clock: C,
    /// Whether busy keys are decided from pools: for instances that live
    /// one request (WASI 0.2). Instances that outlive theirs (WASI 0.3)
    /// hold leases of their own (`pipeline/leases.rs`).
    pub(crate) pools: bool,
}

impl<S: RawStore, C: Clock> Enveloped<S, C> {
    fn now_ms(&self) -> u64 {
        ms(self.clock.now())
    }

    /// A new record for `payload`, replacing `previous` (whose write ids it remembers).
    fn record(&self, payload: &[u8], ttl: Option<Duration>, previous: Option<&[u8]>) -> (Vec<u8>, u64) {
        let now = self.clock.now();
        let write = Entropy::draw(now.as_nanos()).choice();
        let mut writes = vec![write];
        if let Some(prev) = previous.and_then(Envelope::open) {
            writes.extend(prev.writes.iter().take(REMEMBERED_WRITES - 1));
        }
        let expires_at_ms = ttl.map(|t| ms(now.saturating_add(t)));
        (Envelope { expires_at_ms, writes, payload }.seal(), write)
    }

    /// Swaps in `record` (write id `write`); a refusal is read back.
    async fn swap(&self, watch: S::Watch, record: &[u8], write: u64) -> Result<bool, KvError> {
        Ok(match self.store.swap(watch, record).await? {
            Swap::Done => true,
            Swap::Refused { now } => carries(now.as_deref(), write),
        })
    }

    /// Watches `key` to write it exactly, until `deadline` (monotonic). An
    /// absent key goes through its creation ticket first (see the module
    /// docs): a writer that finds the ticket taken waits for its holder to
    /// create the key; after [`CREATE_WAIT`] it takes the ticket as stale
    /// (its holder died) and tries again. `None` if the deadline passed.
    async fn watch_to_write(&self, key: &str, deadline: Duration) -> Result<Option<Watched<S::Watch>>, KvError> {
        let ticket = format!("{key}{TICKET_SUFFIX}");
        loop {
            let (watch, raw) = self.store.watch(key).await?;
            if raw.is_some() {
                return Ok(Some(Watched { watch, raw, ticket: None }));
            }
            drop(watch);
            if self.store.increment(&ticket, 1).await? == 1 {
                // Watched again after taking the ticket: a creator that came
                // before and already released its ticket has left its record.
                let (watch, raw) = self.store.watch(key).await?;
                return Ok(Some(Watched { watch, raw, ticket: Some(ticket) }));
            }
            let stale_at = self.clock.monotonic().saturating_add(CREATE_WAIT).min(deadline);
            while self.clock.monotonic() < stale_at {
                self.clock.sleep(CREATE_POLL).await;
                if self.store.get(key).await?.is_some() {
                    let (watch, raw) = self.store.watch(key).await?;
                    if raw.is_some() {
                        return Ok(Some(Watched { watch, raw, ticket: None }));
                    }
                }
            }
            let _ = self.store.delete(&ticket).await;
            if self.clock.monotonic() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Writes `payload` over what `watched` saw; releases its ticket.
    async fn write(&self, watched: Watched<S::Watch>, payload: &[u8], ttl: Option<Duration>) -> Result<bool, KvError> {
        let (record, write) = self.record(payload, ttl, watched.raw.as_deref());
        let swapped = self.swap(watched.watch, &record, write).await;
        self.release(watched.ticket).await;
        swapped
    }

    /// Gives a creation ticket back (if one is held), so the key can be created again.
    async fn release(&self, ticket: Option<String>) {
        if let Some(ticket) = ticket {
            // A ticket left behind only makes the next creator wait.
            let _ = self.store.delete(&ticket).await;
        }
    }

    /// One exact GCRA step's commit: write, and while another writer wins,
    /// back off, watch, decide and write again, until `deadline`
    /// (monotonic). Each round decides at the time it reads, so a request
    /// that waited is charged as arriving when it is decided.
    async fn commit_exact(
        &self,
        step: &LimitStep<'_>,
        mut watched: Watched<S::Watch>,
        mut decision: Decision,
        mut now_us: u64,
        deadline: Duration,
    ) -> Result<Decision, KvError> {
        for attempt in 0u32.. {
            let ttl = Some(gcra::ttl(decision, now_us));
            let payload = successor(step, &decision, watched.raw.as_deref(), self.now_ms(), now_us);
            if self.write(watched, payload.as_bytes(), ttl).await? {
                return Ok(decision);
            }
            if self.clock.monotonic() >= deadline {
                break;
            }
            self.back_off(attempt).await;
            let Some(again) = self.watch_to_write(step.key, deadline).await? else { break };
            now_us = now_us.max(self.now_us());
            decision = step.decide(gcra::decode(live(again.raw.as_deref(), self.now_ms())), now_us);
            if !decision.allowed {
                self.release(again.ticket).await;
                return Ok(decision);
            }
            watched = again;
        }
        Err(contention(step.key, "other writers kept changing it"))
    }

    /// One exact rate step (no delay allowance, a burst wide enough to
    /// share) for a request that has no other: from the key's pool when
    /// it has one with a stretch for the request (a read and an increment,
    /// nothing to race for), else on the record by compare-and-swap, which
    /// grants the fleet a new pool when the key is busy. Each round decides
    /// at the time it reads, as in [`Self::commit_exact`].
    async fn limit_pooled(&self, step: &LimitStep<'_>, rate: Rate, now_us: u64) -> Result<Decision, KvError> {
        let deadline = self.clock.monotonic().saturating_add(CONTENTION_DEADLINE);
        let unit_us = step.cost.saturating_mul(rate.interval_us).max(1);
        // The pool this request found with no stretch left for it, and how
        // many it had handed out.
        let mut spent: Option<(Pool, u64)> = None;
        for attempt in 0u32.. {
            if attempt > 0 && self.clock.monotonic() >= deadline {
                break;
            }
            let now_us = now_us.max(self.now_us());
            let read = RateRecord::read(live(self.store.get(step.key).await?.as_deref(), self.now_ms()));
            if let Some(pool) = read.pool.filter(|p| spent.is_none_or(|(s, _)| s != *p)) {
                match self.take_from_pool(step.key, &pool, unit_us, rate).await? {
                    Ok(d) => return Ok(d),
                    Err(used) => spent = Some((pool, used)),
                }
            }
            let Some(watched) = self.watch_to_write(step.key, deadline).await? else {
                return Err(contention(step.key, "it could not be watched (its creator never wrote it)"));
            };
            let record = RateRecord::read(live(watched.raw.as_deref(), self.now_ms()));
            if record.pool.is_some_and(|p| spent.is_none_or(|(s, _)| s != p)) && record.pool != read.pool {
                // Another instance granted a pool since the read: take from it.
                self.release(watched.ticket).await;
                continue;
            }
            let want = lease::want(rate, step.cost, per_second(&record, spent.as_ref(), now_us));
            let decision = match want {
                Some(want) => lease::grant(record.tat_us, now_us, rate, step.cost, want),
                None => gcra::decide(record.tat_us, now_us, rate, step.cost),
            };
            if !decision.allowed {
                self.release(watched.ticket).await;
                return Ok(decision);
            }
            let pool = Pool::granted(&decision, rate, unit_us, now_us);
            let payload = RateRecord { tat_us: Some(decision.tat_us), written_us: Some(now_us), pool }.encode();
            if self.write(watched, payload.as_bytes(), Some(gcra::ttl(decision, now_us))).await? {
                return Ok(decision);
            }
            self.back_off(attempt).await;
        }
        Err(contention(step.key, "other writers kept changing it"))
    }

    /// The next stretch of `pool` for a request arriving now (a stretch
    /// that has passed is skipped over, once); else how many stretches the
    /// pool had handed out before this request asked.
    async fn take_from_pool(
        &self,
        key: &str,
        pool: &Pool,
        unit_us: u64,
        rate: Rate,
    ) -> Result<Result<Decision, u64>, KvError> {
        let counter = counter_key(key, pool);
        let n = u64::try_from(self.store.increment(&counter, 1).await?).unwrap_or(0);
        let used = n.saturating_sub(1).min(pool.units(unit_us));
        let now_us = self.now_us();
        let skip = match pool.stretch(n, unit_us, rate, now_us) {
            Stretch::Held(d) => return Ok(Ok(d)),
            Stretch::Passed(skip) if pool.end_us > now_us => skip,
            _ => return Ok(Err(used)),
        };
        let n =
            u64::try_from(self.store.increment(&counter, i64::try_from(skip).unwrap_or(i64::MAX)).await?).unwrap_or(0);
        Ok(match pool.stretch(n, unit_us, rate, self.now_us()) {
            Stretch::Held(d) => Ok(d),
            _ => Err(used),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// Waits a random while after losing a race (full jitter below 1, 2,
    /// 4 … 32 ms), so that writers racing on one key spread out.
    async fn back_off(&self, attempt: u32) {
        let cap_us = (1_000u64 << attempt.min(5)).min(MAX_BACKOFF_US);
        let jitter = Entropy::draw(self.clock.now().as_nanos()).choice() % cap_us;
        self.clock.sleep(Duration::from_micros(jitter)).await;
    }

    /// Deletes dead records among the keys after `after` (in key order),
    /// examining at most `limit`: see [`SweepReport`].
    pub(crate) async fn sweep(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<SweepReport, KvError> {
        let mut keys: Vec<String> = self.store.keys().await?.into_iter().filter(|k| k.starts_with(prefix)).collect();
        keys.sort_unstable();
        let start = after.map_or(0, |a| keys.partition_point(|k| k.as_str() <= a));
        let batch = &keys[start..keys.len().min(start.saturating_add(limit))];
        let now_ms = self.now_ms();
        let mut deleted = 0;
        for key in batch {
            let gone = match counter_end_us(key) {
                Some(end_us) => (end_us / 1_000).saturating_add(POOL_KEPT_MS) < now_ms,
                None => self.store.get(key).await?.is_some_and(|raw| dead(&raw, now_ms)),
            };
            if gone {
                self.store.delete(key).await?;
                deleted += 1;
            }
        }
        let done = start + batch.len() >= keys.len();
        Ok(SweepReport {
            keys: Some(keys.len()),
            examined: batch.len(),
            deleted,
            next: if done { None } else { batch.last().cloned() },
        })
    }
}

impl<S: RawStore, C: Clock> KvStore for Enveloped<S, C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let Some(raw) = self.store.get(key).await? else {
            return Ok(None);
        };
        let now_ms = self.now_ms();
        if dead(&raw, now_ms) {
            // Worth keeping the store small; not worth failing a read for.
            let _ = self.store.delete(key).await;
            return Ok(None);
        }
        Ok(live(Some(&raw), now_ms).map(<[u8]>::to_vec))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.store.set(key, &self.record(value, ttl, None).0).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.delete(key).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let watched = match current {
            None => match self.watch_to_write(key, self.clock.monotonic().saturating_add(CONTENTION_DEADLINE)).await? {
                Some(watched) => watched,
                None => return Ok(false),
            },
            Some(_) => {
                let (watch, raw) = self.store.watch(key).await?;
                Watched { watch, raw, ticket: None }
            }
        };
        if live(watched.raw.as_deref(), self.now_ms()) != current {
            self.release(watched.ticket).await;
            return Ok(false);
        }
        self.write(watched, new, ttl).await
    }

    /// Reads each key (watching those of exact steps), decides, then
    /// commits: exact steps by compare-and-swap (exact per key; when a
    /// later key of several loses a race after earlier ones were
    /// committed, those stay consumed), best-effort steps with a plain set
    /// (no atomics needed; racing requests may each be admitted on the
    /// same read).
    async fn limit(&self, steps: &[LimitStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        if let [step] = steps
            && self.pools
            && let Meter::Rate { rate, max_delay_us: 0 } = step.meter
            && step.exact
            && lease::shareable(rate, step.cost)
        {
            return Ok((vec![self.limit_pooled(step, rate, now_us).await?], now_us));
        }
        let now_ms = self.now_ms();
        let deadline = self.clock.monotonic().saturating_add(CONTENTION_DEADLINE);
        let mut watched: Vec<Seen<S::Watch>> = Vec::with_capacity(steps.len());
        let mut decisions = Vec::with_capacity(steps.len());
        for step in steps {
            let (raw, watch) = match step.exact {
                true => match self.watch_to_write(step.key, deadline).await? {
                    Some(w) => (w.raw.clone(), Some(w)),
                    None => {
                        for (watch, _) in watched {
                            self.release(watch.and_then(|w| w.ticket)).await;
                        }
                        return Err(contention(step.key, "it could not be watched (its creator never wrote it)"));
                    }
                },
                false => (self.store.get(step.key).await?, None),
            };
            decisions.push(step.decide(gcra::decode(live(raw.as_deref(), now_ms)), now_us));
            watched.push((watch, raw));
        }
        if decisions.iter().any(|d| !d.allowed) {
            for (watch, _) in watched {
                self.release(watch.and_then(|w| w.ticket)).await;
            }
            return Ok((decisions, now_us));
        }
        let mut refused = false;
        for ((step, (watch, raw)), decision) in steps.iter().zip(watched).zip(decisions.iter_mut()) {
            match watch {
                Some(w) if refused => self.release(w.ticket).await,
                Some(w) => {
                    *decision = self.commit_exact(step, w, *decision, now_us, deadline).await?;
                    refused = !decision.allowed;
                }
                None if refused => {}
                None => {
                    let ttl = Some(gcra::ttl(*decision, now_us));
                    let payload = successor(step, decision, raw.as_deref(), now_ms, now_us);
                    let (record, _) = self.record(payload.as_bytes(), ttl, raw.as_deref());
                    self.store.set(step.key, &record).await?;
                }
            }
        }
        Ok((decisions, now_us))
    }

    /// A watch and a swap; the record keeps its pool and when it was last
    /// decided on. A lost race leaves the range where it is.
    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, now_us: u64) -> Result<bool, KvError> {
        let (watch, raw) = self.store.watch(key).await?;
        let record = RateRecord::read(live(raw.as_deref(), self.now_ms()));
        if record.tat_us != Some(end_us) || from_us >= end_us {
            return Ok(false);
        }
        let payload = RateRecord { tat_us: Some(from_us), ..record }.encode();
        let ttl = Duration::from_micros(from_us.saturating_sub(now_us)) + Duration::from_secs(1);
        self.write(Watched { watch, raw, ticket: None }, payload.as_bytes(), Some(ttl)).await
    }

    async fn sweep(&self, after: Option<&str>, limit: usize) -> Result<SweepReport, KvError> {
        Enveloped::sweep(self, KEY_PREFIX, after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::testing::{FakeClock, FakeRawStore, block_on};
    use crate::shared::gcra::Rate;

    fn store() -> (Enveloped<FakeRawStore, FakeClock>, FakeClock) {
        let clock = FakeClock::default();
        (Enveloped { store: FakeRawStore::default(), clock: clock.clone(), pools: true }, clock)
    }

    #[test]
    fn a_record_sealed_outside_the_core_reads_back_and_is_never_swept() {
        let raw = crate::ports::sealed(b"{\"id\":\"a\"}");
        let e = Envelope::open(&raw).expect("an envelope");
        assert_eq!((e.expires_at_ms, e.payload), (None, &b"{\"id\":\"a\"}"[..]));
        assert_eq!(e.seal(), raw);
        assert!(!dead(&raw, u64::MAX));
    }

    #[test]
    fn envelopes_round_trip_and_refuse_anything_else() {
        let e = Envelope { expires_at_ms: Some(1_767_225_601_000), writes: vec![0x9f3a, u64::MAX], payload: b"x\ny" };
        let sealed = e.seal();
        assert!(sealed.starts_with(b"pc1e 1767225601000 0000000000009f3a,ffffffffffffffff\n"));
        assert_eq!(Envelope::open(&sealed), Some(e));
        let forever = Envelope { expires_at_ms: None, writes: vec![1], payload: b"" };
        assert_eq!(Envelope::open(&forever.seal()), Some(forever));
        for junk in [&b"1767225600123456"[..], b"pc1e 12 zz\nx", b"pc1e - 01", b"pc1e x 01\n", b""] {
            assert_eq!(Envelope::open(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn kv_schema_envelope_matches_the_code() {
        let doc = include_str!("../../kv-schema/README.md");
        let start = doc.find("```text envelope\n").expect("envelope block") + "```text envelope\n".len();
        let block = doc[start..start + doc[start..].find("```").expect("closed")].trim_end_matches('\n');
        let e = Envelope::open(block.as_bytes()).expect("the example is an envelope");
        assert_eq!(e.seal(), block.as_bytes());
        assert_eq!(
            (e.expires_at_ms, e.writes.len(), e.payload),
            (Some(1_767_225_601_100), 2, &b"1767225600123456"[..])
        );
    }

    #[test]
    fn records_expire_and_reads_delete_what_expired() {
        let (kv, clock) = store();
        block_on(async {
            kv.set("pc1:a", b"1", Some(Duration::from_secs(10))).await.unwrap();
            kv.set("pc1:b", b"2", None).await.unwrap();
            assert_eq!(kv.get("pc1:a").await.unwrap().as_deref(), Some(&b"1"[..]));
            clock.advance(Duration::from_secs(10));
            assert_eq!(kv.get("pc1:a").await.unwrap(), None, "gone at exactly its TTL");
            assert_eq!(kv.store.raw("pc1:a"), None, "and deleted by the read that found it");
            assert_eq!(kv.get("pc1:b").await.unwrap().as_deref(), Some(&b"2"[..]));
        });
    }

    #[test]
    fn a_swap_reported_as_failed_after_it_landed_counts_as_done() {
        let (kv, _) = store();
        kv.store.set_lying(true);
        block_on(async {
            assert!(kv.compare_and_swap("pc1:k", None, b"1", None).await.unwrap(), "landed, reported failed");
            assert!(!kv.compare_and_swap("pc1:k", None, b"2", None).await.unwrap(), "not absent any more");
            assert!(kv.compare_and_swap("pc1:k", Some(b"1"), b"2", None).await.unwrap());
            assert_eq!(kv.get("pc1:k").await.unwrap().as_deref(), Some(&b"2"[..]));
        });
    }

    #[test]
    fn a_swap_that_lost_a_race_is_not_mistaken_for_ours() {
        let (kv, _) = store();
        kv.store.set_lying(true);
        block_on(async {
            let (watch, _) = kv.store.watch("pc1:k").await.unwrap();
            // Another writer gets in between.
            assert!(kv.compare_and_swap("pc1:k", None, b"theirs", None).await.unwrap());
            let (record, write) = kv.record(b"ours", None, None);
            assert!(!kv.swap(watch, &record, write).await.unwrap());
            assert_eq!(kv.get("pc1:k").await.unwrap().as_deref(), Some(&b"theirs"[..]));
        });
    }

    #[test]
    fn a_write_overwritten_before_the_read_back_is_still_recognised() {
        let (kv, _) = store();
        kv.store.set_lying(true);
        // Two later writers replace ours before the store reports back.
        kv.store.after_swap(|store| {
            for n in 0..2 {
                let raw = store.raw("pc1:k");
                let e = Envelope::open(raw.as_deref().unwrap()).unwrap();
                let mut writes = vec![1000 + n];
                writes.extend(e.writes);
                store.put("pc1:k", Envelope { expires_at_ms: None, writes, payload: b"later" }.seal());
            }
        });
        block_on(async {
            assert!(kv.compare_and_swap("pc1:k", None, b"ours", None).await.unwrap());
        });
    }

    #[test]
    fn a_lying_store_charges_each_request_once() {
        let (kv, clock) = store();
        kv.store.set_lying(true);
        let rate = Rate::new(10, 1_000_000, 3).unwrap();
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        block_on(async {
            let now = u64::try_from(clock.now().as_micros()).unwrap();
            let admitted: Vec<bool> = {
                let mut out = Vec::new();
                for _ in 0..4 {
                    out.push(kv.limit(&step, now).await.unwrap().0[0].allowed);
                }
                out
            };
            assert_eq!(admitted, [true, true, true, false], "the burst, each request charged once");
            assert_eq!(kv.store.swaps(), 3, "one write per admitted request");
        });
    }

    #[test]
    fn a_key_found_absent_is_created_once_on_a_store_that_upserts() {
        let (kv, clock) = store();
        kv.store.set_upserts(true);
        let rate = Rate::new(10, 1_000_000, 3).unwrap();
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        let now = u64::try_from(clock.now().as_micros()).unwrap();
        // Right after this writer finds the key absent, another instance creates it with one charge.
        let tat = gcra::encode(now + 100_000);
        let sealed = Envelope { expires_at_ms: None, writes: vec![7], payload: tat.as_bytes() }.seal();
        kv.store.after_watch(move |s| s.put("pc1:rl:p:k", sealed));
        block_on(async {
            let d = kv.limit(&step, now).await.unwrap().0[0];
            assert!(d.allowed);
            assert_eq!(d.remaining, 1, "both charges count (burst 3): the record was not overwritten blindly");
            let stored = kv.get("pc1:rl:p:k").await.unwrap();
            assert_eq!(gcra::decode(stored.as_deref()), Some(now + 200_000));
        });
        assert_eq!(kv.store.raw("pc1:rl:p:k~new"), None, "the creation ticket was given back");
    }

    #[test]
    fn a_creator_that_never_comes_costs_its_waiter_a_second_then_the_waiter_creates_the_key() {
        let (kv, clock) = store();
        kv.store.set_upserts(true);
        let rate = Rate::new(10, 1_000_000, 3).unwrap();
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        // Another instance took the ticket and died before creating the key.
        kv.store.put("pc1:rl:p:k~new", 1i64.to_le_bytes().to_vec());
        block_on(async {
            let (start, now) = (clock.monotonic(), u64::try_from(clock.now().as_micros()).unwrap());
            let d = kv.limit(&step, now).await.unwrap().0[0];
            assert!(d.allowed, "waited for the creator, then took its place");
            assert!(clock.monotonic() - start >= CREATE_WAIT, "{:?}", clock.monotonic() - start);
            assert_eq!(kv.store.raw("pc1:rl:p:k~new"), None, "the ticket is given back");
            assert!(kv.get("pc1:rl:p:k").await.unwrap().is_some(), "the key exists");
        });
    }

    #[test]
    fn a_write_that_keeps_losing_races_is_retried_until_it_lands_then_until_the_deadline() {
        let (kv, clock) = store();
        let rate = Rate::new(1_000_000, 1_000_000, 1_000_000).unwrap();
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        let now = u64::try_from(clock.now().as_micros()).unwrap();
        block_on(async { kv.limit(&step, now).await.unwrap() });
        // Another writer changes the key after each of the next 20 watches:
        // more rounds than the 8 that used to refuse the request.
        use std::sync::atomic::Ordering::SeqCst;
        let left = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(20));
        let racing = left.clone();
        kv.store.after_each_watch(move |s| {
            if racing.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                let raw = s.raw("pc1:rl:p:k").unwrap();
                let e = Envelope::open(&raw).unwrap();
                let writes = [vec![0xbad], e.writes].concat();
                s.put("pc1:rl:p:k", Envelope { expires_at_ms: e.expires_at_ms, writes, payload: e.payload }.seal());
            }
        });
        let start = clock.monotonic();
        let d = block_on(async { kv.limit(&step, now).await.unwrap().0[0] });
        assert!(d.allowed, "admitted after 21 rounds");
        assert_eq!(left.load(SeqCst), 0, "every race was lost first");
        assert!(clock.monotonic() - start < CONTENTION_DEADLINE, "{:?}", clock.monotonic() - start);
        // A key that never stops changing: the deadline, then a store error.
        left.store(u32::MAX, SeqCst);
        let start = clock.monotonic();
        let e = block_on(async { kv.limit(&step, now).await.unwrap_err() });
        assert!(e.0.contains("other writers kept changing it"), "{e}");
        assert!(clock.monotonic() - start >= CONTENTION_DEADLINE, "{:?}", clock.monotonic() - start);
    }

    /// The store calls of one decision, on both of Spin's backends: its
    /// default (SQLite: a swap on an absent key upserts) and Redis (every
    /// swap reported as failed, then read back, which `swap` includes).
    #[test]
    fn a_cold_key_costs_a_read_a_watch_and_a_swap_and_a_busy_one_a_read_and_an_increment() {
        for redis in [false, true] {
            let (kv, clock) = store();
            kv.store.set_upserts(!redis);
            kv.store.set_lying(redis);
            let rate = Rate::new(1_000, 1_000_000, 1_000).unwrap();
            let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
            let decide = |gap_us: u64| {
                clock.advance(Duration::from_micros(gap_us));
                let now = u64::try_from(clock.now().as_micros()).unwrap();
                let d = block_on(kv.limit(&step, now)).unwrap().0[0];
                assert!(d.allowed);
                (kv.store.take_ops(), d)
            };
            // A new key: its creation ticket taken and given back.
            assert_eq!(decide(0).0, "gwiwWd", "redis: {redis}");
            // A second later: cold, one step on the record.
            let (ops, d) = decide(1_000_000);
            assert_eq!((ops.as_str(), d.leased, d.pooled), ("gwW", 0, false));
            // A millisecond later: busy (1 000/s), so the step grants the fleet
            // a pool of what 100 ms of that traffic takes.
            let (ops, d) = decide(1_000);
            assert_eq!((ops.as_str(), d.leased, d.pooled), ("gwW", 99, false));
            let record = RateRecord::read(block_on(kv.get("pc1:rl:p:k")).unwrap().as_deref());
            let pool = record.pool.expect("a pool");
            assert_eq!(pool.units(1_000), 99);
            kv.store.take_ops();
            // Its 99 stretches: a read and an increment each, nothing to race for.
            for _ in 0..99 {
                let (ops, d) = decide(1_000);
                assert_eq!((ops.as_str(), d.pooled), ("gi", true));
            }
            // Spent: the next request steps on the record and grants another.
            let (ops, d) = decide(1_000);
            assert_eq!((ops.as_str(), d.pooled, d.leased > 0), ("giwW", false, true));
            assert_eq!(kv.store.swaps(), 4, "one write per hundred requests");
        }
    }

    #[test]
    fn a_pool_never_admits_more_than_the_limit_and_strands_at_most_a_quarter_of_the_burst() {
        let (kv, clock) = store();
        let rate = Rate::new(100, 1_000_000, 100).unwrap(); // I = 10 ms
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        let mut admitted = 0;
        // 10 000 requests a second for a second: the limit admits the burst
        // and then 100 more.
        for _ in 0..10_000 {
            clock.advance(Duration::from_micros(100));
            let now = u64::try_from(clock.now().as_micros()).unwrap();
            admitted += u64::from(block_on(kv.limit(&step, now)).unwrap().0[0].allowed);
        }
        assert!(admitted <= 200, "{admitted}");
        assert!(admitted >= 200 - 25, "{admitted}");
    }

    #[test]
    fn a_request_with_two_steps_keeps_the_pool_of_a_key_it_shares() {
        let (kv, clock) = store();
        let rate = Rate::new(1_000, 1_000_000, 1_000).unwrap();
        let now = || {
            clock.advance(Duration::from_millis(1));
            u64::try_from(clock.now().as_micros()).unwrap()
        };
        for _ in 0..2 {
            block_on(kv.limit(&[LimitStep::rate("pc1:rl:p:k", rate, 1)], now())).unwrap();
        }
        let pool = RateRecord::read(block_on(kv.get("pc1:rl:p:k")).unwrap().as_deref()).pool.expect("a pool");
        let both = [LimitStep::rate("pc1:rl:p:k", rate, 1), LimitStep::rate("pc1:rl:q:k", rate, 1)];
        assert!(block_on(kv.limit(&both, now())).unwrap().0.iter().all(|d| d.allowed));
        let after = RateRecord::read(block_on(kv.get("pc1:rl:p:k")).unwrap().as_deref());
        assert_eq!(after.pool, Some(pool), "still there for the requests with one step");
        assert!(block_on(kv.limit(&[LimitStep::rate("pc1:rl:p:k", rate, 1)], now())).unwrap().0[0].pooled);
    }

    #[test]
    fn the_sweep_keeps_a_pool_counter_until_a_minute_after_its_range() {
        let (kv, clock) = store();
        let rate = Rate::new(1_000, 1_000_000, 1_000).unwrap();
        let step = [LimitStep::rate("pc1:rl:p:k", rate, 1)];
        for _ in 0..3 {
            clock.advance(Duration::from_millis(1));
            let now = u64::try_from(clock.now().as_micros()).unwrap();
            block_on(kv.limit(&step, now)).unwrap();
        }
        let pool = RateRecord::read(block_on(kv.get("pc1:rl:p:k")).unwrap().as_deref()).pool.expect("a pool");
        let counter = counter_key("pc1:rl:p:k", &pool);
        assert_eq!(counter_end_us(&counter), Some(pool.end_us));
        assert!(kv.store.raw(&counter).is_some(), "the third request took from it");
        clock.advance(Duration::from_secs(30));
        let report = block_on(kv.sweep("pc1:", None, 10)).unwrap();
        assert_eq!(report.deleted, 1, "the record, expired");
        assert!(kv.store.raw(&counter).is_some(), "kept while an instance may still count on it");
        clock.advance(Duration::from_secs(31));
        let report = block_on(kv.sweep("pc1:", None, 10)).unwrap();
        assert_eq!(report.deleted, 1, "the counter");
        assert_eq!(kv.store.key_count(), 0);
    }

    #[test]
    fn a_rate_record_reads_what_it_writes_and_its_tat_alone_as_before() {
        let pool = Pool { start_us: 10, end_us: 20, granted_us: 5 };
        let full = RateRecord { tat_us: Some(30), written_us: Some(7), pool: Some(pool) };
        assert_eq!(full.encode(), "30 7 10-20@5");
        assert_eq!(RateRecord::read(Some(b"30 7 10-20@5")), full);
        assert_eq!(gcra::decode(Some(b"30 7 10-20@5")), Some(30), "any step reads the TAT");
        assert_eq!(RateRecord::read(Some(b"1767225600123456")).tat_us, Some(1_767_225_600_123_456));
        assert_eq!(RateRecord::read(Some(b"30 7 20-10@5")).pool, None, "an empty range is none");
        assert_eq!(counter_end_us("pc1:rl:p:k~new"), None);
    }

    #[test]
    fn kv_schema_pool_records_match_the_code() {
        use crate::ports::testing::doc_block;
        let doc = include_str!("../../kv-schema/rate-limits.md");
        let value = doc_block(doc, "text pooled value");
        let record = RateRecord::read(Some(value.as_bytes()));
        assert_eq!(record.encode(), value);
        let pool = record.pool.expect("the example names a pool");
        assert_eq!((pool.end_us, record.tat_us), (1_767_225_600_223_456, Some(1_767_225_600_223_456)));
        let key = doc_block(doc, "text pool counter key");
        let (base, _) = key.split_once('~').expect("a counter key");
        assert_eq!(counter_key(base, &pool), key);
        assert_eq!(counter_end_us(&key), Some(pool.end_us));
    }

    #[test]
    fn gcra_state_expires_and_the_sweep_removes_it_in_batches() {
        let (kv, clock) = store();
        let rate = Rate::new(10, 1_000_000, 3).unwrap();
        block_on(async {
            let now = u64::try_from(clock.now().as_micros()).unwrap();
            for i in 0..25 {
                let key = format!("pc1:rl:p:{i:02}");
                let step = [LimitStep::rate(&key, rate, 1)];
                assert!(kv.limit(&step, now).await.unwrap().0[0].allowed);
            }
            kv.store.put("other-app:key", b"not ours".to_vec());
            kv.store.put("pc1:legacy", b"1767225600123456".to_vec());
            kv.set("pc1:forever", b"x", None).await.unwrap();
            let report = kv.sweep("pc1:", None, 10).await.unwrap();
            assert_eq!((report.keys, report.examined, report.deleted), (Some(27), 10, 1), "{report:?}");
            // A TAT 0.1 s ahead expires a second after it.
            clock.advance(Duration::from_millis(1100));
            let mut after = report.next;
            let mut deleted = report.deleted;
            while let Some(cursor) = after {
                let r = kv.sweep("pc1:", Some(&cursor), 10).await.unwrap();
                deleted += r.deleted;
                after = r.next;
            }
            assert_eq!(deleted, 1 + 17, "the legacy value, then what expired after the first batch");
            let last = kv.sweep("pc1:", None, 100).await.unwrap();
            assert_eq!((last.keys, last.deleted, last.next), (Some(9), 8, None));
            assert_eq!(kv.store.key_count(), 2, "what remains: a record without expiry and another app's key");
        });
    }
}
