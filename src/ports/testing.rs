//! In-memory ports for unit tests: the pipeline runs without a socket or a
//! runtime, on the host and on wasm32-wasip2 alike.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::memory::MemoryKv;
use super::{
    Clock, GcraStep, HttpClient, KvError, KvStore, Ports, UpstreamError, UpstreamOptions, gcra_by_compare_and_swap,
    read_body,
};
use crate::pipeline::gcra::Decision;

/// Drives a future whose ports never wait (everything here answers at once).
pub fn block_on<F: Future>(future: F) -> F::Output {
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
pub struct FakeClock(Arc<AtomicU64>);

impl Default for FakeClock {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(1_767_225_600_000_000)))
    }
}

impl FakeClock {
    pub fn advance(&self, by: Duration) {
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
pub struct FakeHttp {
    respond: Responder,
    pub sent: Mutex<Vec<(Request<Bytes>, UpstreamOptions)>>,
}

impl FakeHttp {
    pub fn new(
        respond: impl Fn(&Request<Bytes>) -> Result<Response<Bytes>, UpstreamError> + Send + Sync + 'static,
    ) -> Self {
        Self { respond: Box::new(respond), sent: Mutex::new(Vec::new()) }
    }

    /// An origin that answers 200 with body `ok`.
    pub fn ok() -> Self {
        Self::new(|_| Ok(Response::new(Bytes::from_static(b"ok"))))
    }

    /// The last request the origin received.
    pub fn last(&self) -> Option<Request<Bytes>> {
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

/// The memory store, with switches: every call fails (a store outage);
/// rate limits go through compare-and-swap as on Spin's stores; there is
/// no compare-and-swap (a store without atomics).
pub struct TestKv {
    pub inner: MemoryKv<FakeClock>,
    pub down: AtomicBool,
    pub cas_only: AtomicBool,
    pub no_atomics: AtomicBool,
}

impl TestKv {
    fn check(&self) -> Result<(), KvError> {
        if self.down.load(Ordering::SeqCst) { Err(KvError("connection refused".into())) } else { Ok(()) }
    }
}

impl KvStore for TestKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.check()?;
        self.inner.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.check()?;
        if self.no_atomics.load(Ordering::SeqCst) {
            return Err(KvError("this store has no atomic operations".into()));
        }
        self.inner.compare_and_swap(key, current, new, ttl).await
    }
    async fn gcra(&self, steps: &[GcraStep<'_>], now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        self.check()?;
        if self.cas_only.load(Ordering::SeqCst) {
            return gcra_by_compare_and_swap(self, steps, now_us).await;
        }
        self.inner.gcra(steps, now_us).await
    }
}

/// Fake ports bundled for the pipeline.
pub struct FakePorts {
    pub kv: TestKv,
    pub http: FakeHttp,
    pub clock: FakeClock,
}

impl FakePorts {
    pub fn new(http: FakeHttp) -> Self {
        let clock = FakeClock::default();
        Self {
            kv: TestKv {
                inner: MemoryKv::new(clock.clone(), 10_000),
                down: AtomicBool::new(false),
                cas_only: AtomicBool::new(false),
                no_atomics: AtomicBool::new(false),
            },
            http,
            clock,
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
}
