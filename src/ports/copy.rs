//! A copy of a request body kept as it streams to an origin, so another
//! try can send it again (linkerd2-proxy's replayable body): kept while it
//! stays within its limit, usable once the client has sent it all.

use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};

/// Filled by the body as it streams; read by the retry.
#[derive(Debug)]
pub struct BodyCopy {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    /// The client sent its last byte.
    done: bool,
    /// Past the limit, a trailer or a failure: no copy to send again.
    spoiled: bool,
}

impl BodyCopy {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn new(limit: u64) -> Self {
        let state = State { chunks: Vec::new(), size: 0, limit, done: false, spoiled: false };
        Self { state: Mutex::new(state) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A chunk has passed to the origin.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn push(&self, chunk: &Bytes) {
        self.with(|s| {
            s.size += chunk.len() as u64;
            if s.size > s.limit {
                s.spoiled = true;
                s.chunks = Vec::new();
            } else if !s.spoiled {
                s.chunks.push(chunk.clone());
            }
        });
    }

    /// The body ended (`true`), or failed or carried trailers (`false`).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn end(&self, whole: bool) {
        self.with(|s| {
            s.done = true;
            s.spoiled |= !whole;
        });
    }

    /// The whole body, if the client sent it all within the limit.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        self.with(|s| {
            if !s.done || s.spoiled {
                return None;
            }
            Some(match s.chunks.as_slice() {
                [] => Bytes::new(),
                [one] => one.clone(),
                many => many
                    .iter()
                    .fold(BytesMut::new(), |mut all, c| {
                        all.extend_from_slice(c);
                        all
                    })
                    .freeze(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_whole_only_once_ended_within_its_limit() {
        let copy = BodyCopy::new(10);
        copy.push(&Bytes::from_static(b"hello "));
        assert_eq!(copy.whole(), None, "not ended yet");
        copy.push(&Bytes::from_static(b"you"));
        copy.end(true);
        assert_eq!(copy.whole().as_deref(), Some(&b"hello you"[..]));

        let over = BodyCopy::new(4);
        over.push(&Bytes::from_static(b"hello"));
        over.end(true);
        assert_eq!(over.whole(), None, "past its limit");

        let failed = BodyCopy::new(10);
        failed.push(&Bytes::from_static(b"hi"));
        failed.end(false);
        assert_eq!(failed.whole(), None, "failed or with trailers");

        let empty = BodyCopy::new(0);
        empty.end(true);
        assert_eq!(empty.whole().as_deref(), Some(&b""[..]));
    }
}
