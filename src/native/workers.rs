//! The runtimes that serve client connections (`--workers N`).
//!
//! With one worker, connections are served on the runtime `serve` runs on.
//! With more, each worker is a thread with a current-thread runtime of its
//! own (no work stealing) and a socket of its own on every listener
//! (`SO_REUSEPORT`: the kernel spreads new connections over them); a
//! connection lives and dies on the worker that accepted it, and so do its
//! connections to origins (the client keeps a pool per worker). The config,
//! the store, caches, metrics and the access log are shared.

use std::cell::Cell;

use tokio::runtime::Handle;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which runtime this thread runs: 0 for the one `serve` runs on (with one
/// worker, the worker; else the control plane: probes, admin, reloads),
/// 1 to N for the workers.
pub(crate) fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The worker runtimes; none with one worker.
#[derive(Default)]
pub(crate) struct Workers(Vec<Handle>);

impl Workers {
    /// Starts `n` worker threads, each on its own runtime (none for one).
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        if n <= 1 {
            return Ok(Self::default());
        }
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new().name(format!("worker-{index}")).spawn(move || {
                INDEX.with(|i| i.set(index + 1));
                // Runs its connections' tasks until the process ends.
                runtime.block_on(std::future::pending::<()>());
            })?;
        }
        Ok(Self(handles))
    }

    /// The worker runtimes, by index; empty with one worker.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.0
    }

    /// How many: at least one.
    pub(crate) fn count(&self) -> usize {
        self.0.len().max(1)
    }

    /// How many runtimes there are in all: the workers and, beside more
    /// than one, the one `serve` runs on.
    pub(crate) fn runtimes(&self) -> usize {
        if self.0.is_empty() { 1 } else { self.0.len() + 1 }
    }
}
