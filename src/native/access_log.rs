//! Access-log output. Requests append finished lines to a shared buffer and
//! never wait on I/O or wake anyone; a writer thread drains the buffer to
//! stdout every [`INTERVAL`] (a wake-up per line cost a context switch per
//! request, a large share of the node's throughput). If stdout stalls
//! and the buffer passes [`MAX_BUFFERED`], lines are dropped and counted
//! rather than held without bound.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::pipeline::log::{AccessLog, Stamp};

const INTERVAL: Duration = Duration::from_millis(20);
const MAX_BUFFERED: usize = 16 << 20;

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Signalled by [`AccessLogSink::flush`], and by the writer after each drain.
    drained: Condvar,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// The time of the lines' last second, as text.
    stamp: Stamp,
    dropped: u64,
    /// Incremented by every drain, so a flush can wait for the next one.
    generation: u64,
    flush_requested: bool,
}

/// Where finished access-log lines go. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessLogSink(Arc<Shared>);

fn lock(m: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AccessLogSink {
    /// Starts the writer thread.
    pub(crate) fn stdout() -> Self {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        if let Err(e) = std::thread::Builder::new().name("access-log".into()).spawn(move || write_loop(&writer)) {
            eprintln!("access log disabled: cannot start its thread: {e}");
        }
        Self(shared)
    }

    /// Appends the request's line, written in place under the lock (no copy).
    pub(crate) fn write(&self, log: &AccessLog) {
        let mut buf = lock(&self.0.buffer);
        let buf = &mut *buf;
        let before = buf.bytes.len();
        log.write_to(&mut buf.bytes, &mut buf.stamp);
        if buf.bytes.len() > MAX_BUFFERED {
            buf.bytes.truncate(before);
            buf.dropped += 1;
        }
    }

    /// Waits (at most `timeout`) until every line appended so far is written.
    pub(crate) fn flush(&self, timeout: Duration) {
        let mut buf = lock(&self.0.buffer);
        let target = buf.generation + 1;
        buf.flush_requested = true;
        self.0.drained.notify_all();
        while buf.generation < target {
            let (next, waited) = self.0.drained.wait_timeout(buf, timeout).unwrap_or_else(|p| p.into_inner());
            buf = next;
            if waited.timed_out() {
                break;
            }
        }
    }
}

fn write_loop(shared: &Shared) {
    let mut out = std::io::stdout().lock();
    let mut pending = Vec::new();
    loop {
        let dropped = {
            let mut buf = lock(&shared.buffer);
            if !buf.flush_requested {
                buf = shared.drained.wait_timeout(buf, INTERVAL).unwrap_or_else(|p| p.into_inner()).0;
            }
            buf.flush_requested = false;
            std::mem::swap(&mut buf.bytes, &mut pending);
            std::mem::take(&mut buf.dropped)
        };
        if dropped > 0 {
            eprintln!("access log: {dropped} lines dropped (stdout is not keeping up)");
        }
        if !pending.is_empty() {
            let _ = out.write_all(&pending);
            let _ = out.flush();
            pending.clear();
        }
        let mut buf = lock(&shared.buffer);
        buf.generation += 1;
        shared.drained.notify_all();
    }
}
