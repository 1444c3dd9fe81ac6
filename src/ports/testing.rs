//! In-memory ports for unit tests: the pipeline runs without a socket or a
//! runtime, on the host and on wasm32-wasip2 alike.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::enveloped::{Enveloped, RawStore, Swap};
use super::memory::MemoryKv;
use super::{
    Clock, HttpClient, KvError, KvStore, LimitStep, Ports, SweepReport, UpstreamError, UpstreamOptions, read_body,
};
use crate::shared::gcra::Decision;

/// The fenced block tagged `tag` (` ```text key `, say) of a kv-schema
/// document, trimmed: what the documents' tests hold against the code.
pub(crate) fn doc_block(doc: &str, tag: &str) -> String {
    let start = doc.find(&format!("```{tag}\n")).unwrap_or_else(|| panic!("no {tag} block")) + tag.len() + 4;
    let end = start + doc[start..].find("```").expect("closed block");
    doc[start..end].trim().to_string()
}

/// Whether `text` is a SHA-256 in lower-case hex.
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Drives a future whose ports never wait (everything here answers at once).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A clock that only moves when told to; starts at 2026-01-01T00:00:00Z.
#[derive(Clone)]
pub(crate) struct FakeClock(Arc<AtomicU64>);

impl Default for FakeClock {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(1_767_225_600_000_000)))
    }
}

impl FakeClock {
    pub(crate) fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::SeqCst))
    }
    fn monotonic(&self) -> Duration {
        self.now()
    }

    /// Time passes at once: tests never wait.
    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

type Responder = Box<dyn Fn(&Request<Bytes>) -> Result<Response<Bytes>, UpstreamError> + Send + Sync>;

/// An origin that answers with a closure and records what it was sent.
pub(crate) struct FakeHttp {
    respond: Responder,
    pub(crate) sent: Mutex<Vec<(Request<Bytes>, UpstreamOptions)>>,
}

impl FakeHttp {
    pub(crate) fn new(
        respond: impl Fn(&Request<Bytes>) -> Result<Response<Bytes>, UpstreamError> + Send + Sync + 'static,
    ) -> Self {
        Self { respond: Box::new(respond), sent: Mutex::new(Vec::new()) }
    }

    /// An origin that answers 200 with body `ok`.
    pub(crate) fn ok() -> Self {
        Self::new(|_| Ok(Response::new(Bytes::from_static(b"ok"))))
    }

    /// The last request the origin received.
    pub(crate) fn last(&self) -> Option<Request<Bytes>> {
        let sent = self.sent.lock().ok()?;
        let (req, _) = sent.last()?;
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }
}

impl HttpClient for FakeHttp {
    type Body = Full<Bytes>;
    const CARRIES_GRPC: bool = true;
    const UPGRADES: bool = true;

    fn upgrade_slot(&self) -> Result<super::UpgradeSlot, usize> {
        Ok(super::UpgradeSlot(Arc::new(())))
    }

    /// A `Full` body is one frame: what was read of it was all of it.
    fn prefixed(prefix: Bytes, _: Full<Bytes>) -> Full<Bytes> {
        Full::new(prefix)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        options: &UpstreamOptions,
    ) -> Result<Response<Full<Bytes>>, UpstreamError> {
        let (parts, body) = request.into_parts();
        let body = read_body(body, usize::MAX).await.map_err(|e| UpstreamError::ClientBody(e.to_string()))?;
        let request = Request::from_parts(parts, body);
        let answer = (self.respond)(&request);
        if let Ok(mut sent) = self.sent.lock() {
            sent.push((request, options.clone()));
        }
        answer.map(|r| r.map(Full::new))
    }
}

type AfterSwap = Box<dyn FnOnce(&FakeRawStore) + Send>;
type EachWatch = Box<dyn Fn(&FakeRawStore) + Send>;

/// A store like Spin's key-value: no expiry, a versioned compare-and-swap,
/// and switches for a backend without atomics, for one that reports a swap
/// as failed after committing it (Spin's Redis backend) and for one whose
/// swap on an absent key is a blind upsert (Spin's SQLite backend).
#[derive(Default)]
pub(crate) struct FakeRawStore {
    data: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    version: AtomicU64,
    no_atomics: AtomicBool,
    lying: AtomicBool,
    upserts: AtomicBool,
    swaps: AtomicUsize,
    /// Every call, a letter each: `g`et, `s`et, `d`elete, `k`eys, `w`atch,
    /// s`w`ap as `W`, `i`ncrement.
    ops: Mutex<String>,
    after_swap: Mutex<Option<AfterSwap>>,
    after_watch: Mutex<Option<AfterSwap>>,
    after_each_watch: Mutex<Option<EachWatch>>,
}

impl FakeRawStore {
    pub(crate) fn set_no_atomics(&self, on: bool) {
        self.no_atomics.store(on, Ordering::SeqCst);
    }

    pub(crate) fn set_lying(&self, on: bool) {
        self.lying.store(on, Ordering::SeqCst);
    }

    pub(crate) fn set_upserts(&self, on: bool) {
        self.upserts.store(on, Ordering::SeqCst);
    }

    /// Runs `f` once, right after the next watch (another writer getting in).
    pub(crate) fn after_watch(&self, f: impl FnOnce(&FakeRawStore) + Send + 'static) {
        *self.after_watch.lock().unwrap() = Some(Box::new(f));
    }

    /// Runs `f` right after every watch from now on (writers that keep getting in).
    pub(crate) fn after_each_watch(&self, f: impl Fn(&FakeRawStore) + Send + 'static) {
        *self.after_each_watch.lock().unwrap() = Some(Box::new(f));
    }

    /// Runs `f` once, right after the next committed swap and before it is reported.
    pub(crate) fn after_swap(&self, f: impl FnOnce(&FakeRawStore) + Send + 'static) {
        *self.after_swap.lock().unwrap() = Some(Box::new(f));
    }

    /// The calls made since the last time this was asked (see `ops`).
    pub(crate) fn take_ops(&self) -> String {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    fn op(&self, letter: char) {
        self.ops.lock().unwrap().push(letter);
    }

    /// Swaps that committed.
    pub(crate) fn swaps(&self) -> usize {
        self.swaps.load(Ordering::SeqCst)
    }

    pub(crate) fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.data.lock().unwrap().get(key).map(|(v, _)| v.clone())
    }

    pub(crate) fn put(&self, key: &str, value: Vec<u8>) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.data.lock().unwrap().insert(key.to_string(), (value, version));
    }

    pub(crate) fn key_count(&self) -> usize {
        self.data.lock().unwrap().len()
    }

    fn versioned(&self, key: &str) -> (Option<u64>, Option<Vec<u8>>) {
        match self.data.lock().unwrap().get(key) {
            Some((v, version)) => (Some(*version), Some(v.clone())),
            None => (None, None),
        }
    }
}

impl RawStore for FakeRawStore {
    type Watch = (String, Option<u64>);

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.op('g');
        Ok(self.raw(key))
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.op('s');
        self.put(key, value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.op('d');
        self.data.lock().unwrap().remove(key);
        Ok(())
    }
    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.op('k');
        Ok(self.data.lock().unwrap().keys().cloned().collect())
    }
    async fn watch(&self, key: &str) -> Result<(Self::Watch, Option<Vec<u8>>), KvError> {
        self.op('w');
        if self.no_atomics.load(Ordering::SeqCst) {
            return Err(KvError("this store has no atomic operations".into()));
        }
        let (version, value) = self.versioned(key);
        if let Some(f) = self.after_watch.lock().unwrap().take() {
            f(self);
        }
        if let Some(f) = &*self.after_each_watch.lock().unwrap() {
            f(self);
        }
        Ok(((key.to_string(), version), value))
    }
    async fn swap(&self, (key, seen): Self::Watch, value: &[u8]) -> Result<Swap, KvError> {
        self.op('W');
        let upsert = seen.is_none() && self.upserts.load(Ordering::SeqCst);
        if self.versioned(&key).0 != seen && !upsert {
            return Ok(Swap::Refused { now: self.raw(&key) });
        }
        self.put(&key, value.to_vec());
        self.swaps.fetch_add(1, Ordering::SeqCst);
        if let Some(f) = self.after_swap.lock().unwrap().take() {
            f(self);
        }
        Ok(match self.lying.load(Ordering::SeqCst) {
            true => Swap::Refused { now: self.raw(&key) },
            false => Swap::Done,
        })
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.op('i');
        let mut data = self.data.lock().unwrap();
        let current = match data.get(key) {
            Some((v, _)) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| KvError("not a counter".into()))?),
            None => 0,
        };
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        data.insert(key.to_string(), ((current + delta).to_le_bytes().to_vec(), version));
        Ok(current + delta)
    }
}

/// The memory store, with switches: every call fails (a store outage);
/// `spin_like` sends everything to a Spin-like store instead (see
/// [`FakeRawStore`] for its own switches).
pub(crate) struct TestKv {
    pub(crate) inner: MemoryKv<FakeClock>,
    pub(crate) spin: Enveloped<FakeRawStore, FakeClock>,
    pub(crate) down: AtomicBool,
    pub(crate) spin_like: AtomicBool,
}

impl TestKv {
    fn check(&self) -> Result<(), KvError> {
        if self.down.load(Ordering::SeqCst) { Err(KvError("connection refused".into())) } else { Ok(()) }
    }

    fn spin_like(&self) -> bool {
        self.spin_like.load(Ordering::SeqCst)
    }
}

impl KvStore for TestKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check()?;
        if self.spin_like() { self.spin.get(key).await } else { self.inner.get(key).await }
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.check()?;
        if self.spin_like() { self.spin.set(key, value, ttl).await } else { self.inner.set(key, value, ttl).await }
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check()?;
        if self.spin_like() { self.spin.delete(key).await } else { self.inner.delete(key).await }
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.check()?;
        match self.spin_like() {
            true => self.spin.compare_and_swap(key, current, new, ttl).await,
            false => self.inner.compare_and_swap(key, current, new, ttl).await,
        }
    }
    async fn limit(&self, steps: &[LimitStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        self.check()?;
        if self.spin_like() { self.spin.limit(steps, now_us).await } else { self.inner.limit(steps, now_us).await }
    }
    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, now_us: u64) -> Result<bool, KvError> {
        self.check()?;
        match self.spin_like() {
            true => self.spin.give_back(key, from_us, end_us, now_us).await,
            false => self.inner.give_back(key, from_us, end_us, now_us).await,
        }
    }
    async fn sweep(&self, after: Option<&str>, limit: usize) -> Result<SweepReport, KvError> {
        self.check()?;
        match self.spin_like() {
            true => KvStore::sweep(&self.spin, after, limit).await,
            false => self.inner.sweep(after, limit).await,
        }
    }
}

/// Fake ports bundled for the pipeline.
pub(crate) struct FakePorts {
    pub(crate) kv: TestKv,
    pub(crate) http: FakeHttp,
    pub(crate) clock: FakeClock,
    /// Lines written to the operational log.
    pub(crate) events: Mutex<Vec<String>>,
}

impl FakePorts {
    pub(crate) fn new(http: FakeHttp) -> Self {
        let clock = FakeClock::default();
        Self {
            kv: TestKv {
                inner: MemoryKv::new(clock.clone(), 10_000),
                spin: Enveloped { store: FakeRawStore::default(), clock: clock.clone(), pools: true },
                down: AtomicBool::new(false),
                spin_like: AtomicBool::new(false),
            },
            http,
            clock,
            events: Mutex::new(Vec::new()),
        }
    }
}

impl Ports for FakePorts {
    type Kv = TestKv;
    type Http = FakeHttp;
    type Clock = FakeClock;
    fn kv(&self) -> &Self::Kv {
        &self.kv
    }
    fn http(&self) -> &Self::Http {
        &self.http
    }
    fn clock(&self) -> &Self::Clock {
        &self.clock
    }
    fn event(&self, line: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.push(line.to_string());
        }
    }
}
