//! Client connections, kept within bounds: how many are open at once (in
//! all, and per client IP), and how long one may sit without a request —
//! from accept to its first complete request head, whatever the protocol
//! (a silent socket, one byte, part of the HTTP/2 preface), and between
//! requests once kept alive. A connection past its time is shut down
//! gracefully (HTTP/2: GOAWAY), then dropped if it does not go.
//!
//! Under pressure the node stays open to new clients, as Envoy's overload
//! manager does: past half full, both deadlines shrink with the share of
//! connections open (to a tenth at full, never below a second), and a full
//! node closes the connection that has waited longest without beginning a
//! request to take a new one — so silent sockets from many addresses (the
//! per-IP share does not help there) cannot hold a new client in the
//! kernel's queue for whole deadlines.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Bounds on client connections (`portcullis serve` flags).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open at once; past it the node stops accepting until one closes.
    pub max_connections: usize,
    /// Open at once from one client IP; past it a new one is closed at once.
    pub max_per_ip: usize,
    /// From accept to the first complete request head.
    pub first_request_timeout: Duration,
    /// Without a request in flight, once a request was served.
    pub idle_timeout: Duration,
    /// HTTP/2 pings, to notice peers that went away.
    pub h2_keepalive: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_streams: u32,
}

impl ConnectionLimits {
    /// Defaults from the process's file-descriptor limit: two descriptors
    /// per connection (client and origin) after a reserve, and an eighth of
    /// that per client IP.
    pub fn from_fd_limit(fds: Option<u64>) -> Self {
        let fds = usize::try_from(fds.unwrap_or(4096)).unwrap_or(usize::MAX);
        let max_connections = (fds.saturating_sub(64) / 2).clamp(16, 100_000);
        Self {
            max_connections,
            max_per_ip: (max_connections / 8).max(16).min(max_connections),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            h2_keepalive: Duration::from_secs(20),
            h2_max_streams: 128,
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
pub fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Who holds a connection slot, in all and per IP, and which connections
/// have not begun a request (oldest first).
pub(crate) struct Gate {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    freed: Notify,
    /// By accept order; entries of connections that have since begun a
    /// request are skipped (and dropped) when the oldest is looked for.
    silent: Mutex<BTreeMap<u64, Weak<Activity>>>,
    accepted: AtomicU64,
    /// Tenths of `max_connections` open: deadlines follow it.
    level: watch::Sender<u32>,
}

/// A slot, given back when dropped.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
    seq: u64,
}

impl Gate {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            freed: Notify::new(),
            silent: Mutex::default(),
            accepted: AtomicU64::new(0),
            level: watch::Sender::new(0),
        })
    }

    /// Whether a connection that began no request is open (one may be
    /// closed to take a new client).
    pub(crate) fn has_silent(&self) -> bool {
        let mut silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of connections that began a request since are dropped on
        // the way, each once.
        while let Some(oldest) = silent.first_entry() {
            if oldest.get().upgrade().is_some_and(|a| !a.served.load(Ordering::Acquire)) {
                return true;
            }
            oldest.remove();
        }
        false
    }

    /// Closes the connection that has waited longest without beginning a
    /// request; false if there is none.
    pub(crate) fn close_oldest_silent(&self) -> bool {
        let mut silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, activity)) = silent.pop_first() {
            if let Some(a) = activity.upgrade()
                && !a.served.load(Ordering::Acquire)
            {
                a.evict.notify_one();
                return true;
            }
        }
        false
    }

    /// How long a connection may take to its first request, and between
    /// requests, with this many open: the configured deadlines up to half
    /// full, then less, down to a tenth at full (never below a second, nor
    /// above the configured value).
    pub(crate) fn deadlines(&self) -> (Duration, Duration) {
        let level = *self.level.borrow();
        let scale = |d: Duration| {
            let tenths = match level {
                0..=5 => 10,
                l => 10u32.saturating_sub((l - 5) * 9 / 5).max(1),
            };
            (d * tenths / 10).max(d.min(Duration::from_secs(1)))
        };
        (scale(self.limits.first_request_timeout), scale(self.limits.idle_timeout))
    }

    fn count(&self, delta: isize) {
        let open = if delta > 0 {
            self.open.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.open.fetch_sub(1, Ordering::AcqRel) - 1
        };
        let level = u32::try_from(open * 10 / self.limits.max_connections.max(1)).unwrap_or(u32::MAX).min(10);
        self.level.send_if_modified(|l| std::mem::replace(l, level) != level);
    }

    pub(crate) fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until fewer than `limit` are open.
    pub(crate) async fn below(&self, limit: usize) {
        loop {
            let freed = self.freed.notified();
            if self.open() < limit {
                return;
            }
            freed.await;
        }
    }

    /// Waits until every connection has closed.
    pub(crate) async fn empty(&self) {
        loop {
            let freed = self.freed.notified();
            if self.open() == 0 {
                return;
            }
            freed.await;
        }
    }

    /// A slot for a connection from `ip`, or `None` if `ip` holds its share.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let held = per_ip.entry(ip).or_insert(0);
        if *held >= self.limits.max_per_ip {
            return None;
        }
        *held += 1;
        drop(per_ip);
        self.count(1);
        Some(Slot { gate: self.clone(), ip, seq: self.accepted.fetch_add(1, Ordering::Relaxed) })
    }
}

impl Slot {
    /// Lists the connection as silent until it begins a request.
    pub(crate) fn watch(&self, activity: &Arc<Activity>) {
        let mut silent = self.gate.silent.lock().unwrap_or_else(|p| p.into_inner());
        silent.insert(self.seq, Arc::downgrade(activity));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.silent.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.seq);
        let mut per_ip = self.gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        self.gate.count(-1);
        self.gate.freed.notify_waiters();
    }
}

/// What a connection is doing: requests in flight, whether one was ever
/// served, and when it last went quiet.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    quiet_since_ms: AtomicU64,
    /// Requests begun, and those the client cancelled before their answer
    /// (an HTTP/2 stream reset, a connection closed mid-request).
    begun: AtomicU64,
    cancelled: AtomicU64,
    /// Told when the node closes it: to take a new client, or for resetting
    /// most of its requests.
    evict: Notify,
}

/// A connection that has cancelled at least this many requests before
/// their answers, and more than half of all it began, is closed: the
/// rapid-reset pattern (CVE-2023-44487), in which a client makes the server
/// start work it never waits for. Clients that cancel now and then (a
/// deadline, a page left) never come near it.
const CANCELLED_AT_MOST: u64 = 100;

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            quiet_since_ms: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            evict: Notify::new(),
        })
    }

    /// Resolves when the node closes the connection to take a new client.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// A request head arrived; the guard marks its end (when its response
    /// body is done or dropped).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::Relaxed);
        InFlight { activity: self.clone(), answered: false }
    }

    /// A request was cancelled before its answer; one cancel too many closes the connection.
    fn cancelled(&self) {
        let cancelled = self.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if cancelled >= CANCELLED_AT_MOST && cancelled * 2 > self.begun.load(Ordering::Relaxed) {
            if cancelled == CANCELLED_AT_MOST {
                let begun = self.begun.load(Ordering::Relaxed);
                tracing::warn!(
                    cancelled,
                    begun,
                    "closing a connection that cancels most of its requests (rapid reset)"
                );
            }
            self.evict.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes, or `None`
    /// while a request is in flight, with the deadlines (first request,
    /// idle) as they are now.
    fn deadline(&self, (first, idle): (Duration, Duration)) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let quiet = self.base + Duration::from_millis(self.quiet_since_ms.load(Ordering::Acquire));
        Some(quiet + if self.served.load(Ordering::Acquire) { idle } else { first })
    }
}

/// One request in flight on a connection.
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    answered: bool,
}

impl InFlight {
    /// The request has its answer (what follows is the body).
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if !self.answered {
            a.cancelled();
        }
        let now = u64::try_from(a.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.quiet_since_ms.store(now, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is
/// done (sent in full, failed, or dropped).
pub(crate) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection that can be asked to finish what it began and close.
pub(crate) trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// Serves `conn` until it ends. Past its deadline (which shrinks as the
/// node fills), when the node closes it to take a new client, or when the
/// node drains, a connection that never began a request is dropped; one
/// that did is shut down gracefully (HTTP/2: GOAWAY) and dropped if it has
/// not closed within `grace`. The caller holds the connection (pinned where
/// it lives, so its future is stored once) and drops it after.
pub(crate) async fn supervise<C: Graceful>(
    mut conn: Pin<&mut C>,
    activity: &Activity,
    gate: &Gate,
    mut drain: watch::Receiver<bool>,
    grace: Duration,
) -> Option<C::Output> {
    let mut level = gate.level.subscribe();
    loop {
        let deadlines = gate.deadlines();
        let wake = activity.deadline(deadlines).unwrap_or_else(|| Instant::now() + deadlines.1);
        let watchers = std::pin::pin!(async {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => Watch::Deadline,
                // The node filled or emptied: the deadlines moved.
                Ok(()) = level.changed() => Watch::Level,
                () = activity.evict.notified() => Watch::Evicted,
                _ = drain.wait_for(|d| *d) => Watch::Draining,
            }
        });
        match Watched::new(conn.as_mut(), watchers).await {
            Ok(out) => return Some(out),
            Err(Watch::Deadline) => {
                if activity.deadline(gate.deadlines()).is_some_and(|d| d <= Instant::now()) {
                    break;
                }
            }
            Err(Watch::Level) => {}
            Err(Watch::Evicted | Watch::Draining) => break,
        }
    }
    if !activity.served.load(Ordering::Acquire) {
        return None; // no request begun: nothing to finish, and part of a head may never end
    }
    conn.as_mut().graceful_shutdown();
    tokio::time::timeout(grace, conn).await.ok()
}

/// What ended a connection's watch.
enum Watch {
    Deadline,
    Level,
    Evicted,
    Draining,
}

/// A connection and what watches it: the connection is polled on every
/// wake, the watchers (timers and signals that fire a few times in a
/// connection's life) only when one of them woke the task. Polled together
/// by `select!`, all five were polled on every wake, two or three a
/// request (~1.3k instructions a request).
struct Watched<'a, C: Future, W: Future> {
    conn: Pin<&'a mut C>,
    watchers: Pin<&'a mut W>,
    flag: Arc<WatchFlag>,
    /// Wakes through `flag`: the waker the watchers are polled with.
    waker: std::task::Waker,
    first: bool,
}

/// Set when a watcher wakes the task, so the next poll polls them.
#[derive(Default)]
struct WatchFlag {
    fired: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WatchFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, C: Future, W: Future> Watched<'a, C, W> {
    fn new(conn: Pin<&'a mut C>, watchers: Pin<&'a mut W>) -> Self {
        let flag = Arc::new(WatchFlag::default());
        Self { conn, watchers, waker: flag.clone().into(), flag, first: true }
    }
}

impl<C: Future, W: Future> Future for Watched<'_, C, W> {
    type Output = Result<C::Output, W::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // Registered before the flag is read: a watcher that fires after
        // the read wakes this task again.
        let this = &mut *self;
        this.flag.task.register(cx.waker());
        if (std::mem::take(&mut this.first) || this.flag.fired.swap(false, Ordering::AcqRel))
            && let Poll::Ready(why) = this.watchers.as_mut().poll(&mut Context::from_waker(&this.waker))
        {
            return Poll::Ready(Err(why));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_are_polled_only_when_they_woke_the_task() {
        let (conn_polls, watcher_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let conn = std::pin::pin!(std::future::poll_fn(|cx| {
            if conn_polls.fetch_add(1, Ordering::Relaxed) == 100 {
                return Poll::Ready("served");
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        let watchers = std::pin::pin!(std::future::poll_fn(|_| {
            watcher_polls.fetch_add(1, Ordering::Relaxed);
            Poll::<()>::Pending
        }));
        assert_eq!(Watched::new(conn, watchers).await, Ok("served"));
        assert_eq!(conn_polls.load(Ordering::Relaxed), 101);
        assert_eq!(watcher_polls.load(Ordering::Relaxed), 1, "polled once, to register");
    }

    #[tokio::test]
    async fn a_watcher_that_fires_ends_the_watch() {
        let evict = Arc::new(Notify::new());
        let conn = std::pin::pin!(std::future::pending::<()>());
        let watchers = std::pin::pin!(async {
            evict.notified().await;
            "evicted"
        });
        let later = evict.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            later.notify_waiters();
        });
        let watched = tokio::time::timeout(Duration::from_secs(5), Watched::new(conn, watchers)).await;
        assert_eq!(watched, Ok(Err("evicted")));
    }

    #[test]
    fn defaults_follow_the_descriptor_limit() {
        let small = ConnectionLimits::from_fd_limit(Some(256));
        assert_eq!((small.max_connections, small.max_per_ip), (96, 16));
        let large = ConnectionLimits::from_fd_limit(Some(1 << 20));
        assert_eq!((large.max_connections, large.max_per_ip), (100_000, 12_500));
    }

    #[tokio::test]
    async fn slots_are_counted_in_all_and_per_ip() {
        let gate = Gate::new(ConnectionLimits { max_per_ip: 2, ..ConnectionLimits::from_fd_limit(Some(256)) });
        let a: IpAddr = [10, 0, 0, 1].into();
        let (one, two) = (gate.admit(a).unwrap(), gate.admit(a).unwrap());
        assert!(gate.admit(a).is_none(), "a's share is taken");
        let b = gate.admit([10, 0, 0, 2].into()).unwrap();
        assert_eq!(gate.open(), 3);
        drop((one, two, b));
        assert_eq!(gate.open(), 0);
        assert!(gate.admit(a).is_some(), "slots come back");
    }

    #[tokio::test]
    async fn a_quiet_connection_gets_its_deadline() {
        let limits = ConnectionLimits::from_fd_limit(Some(256));
        let deadlines = (limits.first_request_timeout, limits.idle_timeout);
        let activity = Activity::new();
        assert_eq!(activity.deadline(deadlines), Some(activity.base + limits.first_request_timeout));
        let request = activity.begin();
        assert_eq!(activity.deadline(deadlines), None, "busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(request);
        let quiet = activity.deadline(deadlines).unwrap() - limits.idle_timeout - activity.base;
        assert!(quiet >= Duration::from_millis(50) && quiet < Duration::from_secs(1), "{quiet:?}");
    }

    #[tokio::test]
    async fn deadlines_shrink_as_the_node_fills() {
        let limits = ConnectionLimits { max_connections: 20, max_per_ip: 20, ..ConnectionLimits::from_fd_limit(None) };
        let gate = Gate::new(limits.clone());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut slots = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..20 {
            slots.push(gate.admit(ip).unwrap());
            seen.push(gate.deadlines().0.as_secs());
        }
        assert_eq!(&seen[..10], [10; 10], "up to half full: as configured");
        assert_eq!(seen[19], 1, "full: a tenth (10 s → 1 s)");
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert_eq!(gate.deadlines().1, Duration::from_secs(6), "the idle deadline too (60 s → 6 s)");
        slots.clear();
        assert_eq!(gate.deadlines(), (limits.first_request_timeout, limits.idle_timeout), "and back");
    }

    #[tokio::test]
    async fn the_oldest_connection_without_a_request_is_closed_first() {
        let gate = Gate::new(ConnectionLimits::from_fd_limit(Some(256)));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let conns: Vec<(Slot, Arc<Activity>)> = (0..3)
            .map(|_| {
                let (slot, activity) = (gate.admit(ip).unwrap(), Activity::new());
                slot.watch(&activity);
                (slot, activity)
            })
            .collect();
        let _request = conns[0].1.begin();
        assert!(gate.has_silent());
        assert!(gate.close_oldest_silent(), "the second: the first began a request");
        async fn told(a: &Activity) -> bool {
            tokio::time::timeout(Duration::from_millis(10), a.evict.notified()).await.is_ok()
        }
        assert!(told(&conns[1].1).await);
        assert!(!told(&conns[2].1).await, "not the third");
        assert!(gate.close_oldest_silent());
        assert!(!gate.has_silent() && !gate.close_oldest_silent(), "none left");
    }
}
