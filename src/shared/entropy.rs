//! Random bytes for ids and choices: a request id, a trace and span id, a
//! write id, a choice of target.

/// Entropy for one request: a request id, a trace id, a span id and a choice.
pub(crate) struct Entropy([u8; 48]);

thread_local! {
    /// xoshiro256++ state, seeded once per thread from the platform
    /// (`getrandom`: the OS on the node, `wasi:random` at the edge). Ids
    /// must be unique, not secret, so a fast generator replaces a syscall
    /// per request.
    static RNG: std::cell::Cell<Option<[u64; 4]>> = const { std::cell::Cell::new(None) };
}

impl Entropy {
    /// Fresh random bytes. `fallback` (e.g. the clock) seeds the generator
    /// if the platform's randomness ever fails, so ids still differ.
    pub(crate) fn draw(fallback: u128) -> Self {
        let mut state = RNG.with(|r| r.get()).unwrap_or_else(|| seed(fallback));
        let mut bytes = [0u8; 48];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&next(&mut state).to_le_bytes());
        }
        RNG.with(|r| r.set(Some(state)));
        Self(bytes)
    }

    /// Eight more random bytes (a span id), drawn on demand.
    pub(crate) fn more(fallback: u128) -> [u8; 8] {
        let mut state = RNG.with(|r| r.get()).unwrap_or_else(|| seed(fallback));
        let out = next(&mut state).to_le_bytes();
        RNG.with(|r| r.set(Some(state)));
        out
    }

    /// The 48 random bytes.
    pub(crate) fn bytes(&self) -> &[u8; 48] {
        &self.0
    }

    /// A uniform random number for choices such as the upstream target.
    pub(crate) fn choice(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[40..48]);
        u64::from_le_bytes(b)
    }
}

fn seed(fallback: u128) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(&fallback.to_le_bytes());
        bytes[16..].copy_from_slice(&fallback.rotate_left(64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    }
    let mut state = [0u64; 4];
    for (i, s) in state.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *s = u64::from_le_bytes(w);
    }
    if state == [0; 4] {
        state[0] = 1;
    }
    state
}

/// One step of xoshiro256++ (Blackman and Vigna).
fn next(s: &mut [u64; 4]) -> u64 {
    let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    out
}
