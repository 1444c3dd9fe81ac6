//! Access-log output: requests hand finished lines to a channel; one thread
//! writes them to stdout in batches, so a slow terminal or pipe never sits
//! on the request path.

use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::Duration;

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// Where finished access-log lines go. Cheap to clone.
#[derive(Clone)]
pub struct AccessLogSink(Sender<Msg>);

impl AccessLogSink {
    /// Starts the writer thread.
    pub fn stdout() -> Self {
        let (tx, rx) = channel();
        if let Err(e) = std::thread::Builder::new().name("access-log".into()).spawn(move || write_lines(rx)) {
            eprintln!("access log disabled: cannot start its thread: {e}");
        }
        Self(tx)
    }

    pub fn write(&self, line: String) {
        // A send only fails if the writer thread is gone; the line is lost, the request is not.
        let _ = self.0.send(Msg::Line(line));
    }

    /// Waits (at most `timeout`) until every line sent so far is written.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = sync_channel(1);
        if self.0.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }
}

fn write_lines(rx: Receiver<Msg>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        // Take whatever else is queued, then flush once.
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Msg::Flush(done) => waiting.push(done),
            }
        }
        let _ = out.flush();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
