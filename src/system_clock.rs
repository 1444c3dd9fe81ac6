//! The platform clock, shared by both adapters (std reads the OS clock on
//! the node and `wasi:clocks` at the edge). Outside the core on purpose: the
//! core only sees the [`Clock`] port, so tests can move time by hand. Each
//! home brings its own way to wait ([`Sleep`]): tokio, or its Spin SDK.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the one place the clocks are read

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ports::Clock;

/// How a home waits without blocking its other requests.
#[allow(async_fn_in_trait)]
pub(crate) trait Sleep {
    async fn sleep(&self, duration: Duration);
}

/// The system clock, waiting with `S`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock<S>(pub S);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A monotonic reading with an arbitrary origin.
pub(crate) fn monotonic() -> Duration {
    origin().elapsed()
}

impl<S: Sleep> Clock for SystemClock<S> {
    fn now(&self) -> Duration {
        // A clock set before 1970 reads as the epoch rather than failing.
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    fn monotonic(&self) -> Duration {
        monotonic()
    }

    async fn sleep(&self, duration: Duration) {
        self.0.sleep(duration).await;
    }
}
