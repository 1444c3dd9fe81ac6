//! `[sweep]`: the path an operator (or a scheduler) calls to remove expired
//! records from a key-value store that never expires anything itself
//! (Spin's; `kv-schema/README.md`). Off unless configured.

use toml::Spanned;

use super::Compiler;
use super::auth::parse_sha256;
use super::raw::RawSweep;

/// Records examined per call, by default and at most.
pub(crate) const DEFAULT_SWEEP_BATCH: usize = 1_000;
pub(crate) const MAX_SWEEP_BATCH: usize = 100_000;

/// A compiled `[sweep]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sweep {
    /// Answered before routing, for `POST` only.
    pub(crate) path: String,
    /// SHA-256 of the bearer token a caller must present.
    pub(crate) token_sha256: [u8; 32],
    /// Records examined per call.
    pub(crate) batch: usize,
}

impl Compiler<'_> {
    pub(super) fn sweep(&mut self, raw: &Option<Spanned<RawSweep>>) -> Option<Sweep> {
        let raw = raw.as_ref()?.get_ref();
        let path = raw.path.get_ref();
        let path_ok = path.starts_with('/')
            && crate::shared::path::normalize_path(path, Default::default()).as_deref() == Ok(path.as_str())
            && !path.contains(['{', '}', '?', '#']);
        if !path_ok {
            self.error(raw.path.span(), "sweep.path", "must be a plain path such as \"/_portcullis/sweep\"");
        }
        let token = self.value(&raw.token_sha256, "sweep.token_sha256");
        let token_sha256 =
            token.and_then(|t| self.check(raw.token_sha256.span(), "sweep.token_sha256", parse_sha256(&t)));
        let batch = match &raw.batch {
            None => DEFAULT_SWEEP_BATCH,
            Some(b) if (1..=MAX_SWEEP_BATCH as u64).contains(b.get_ref()) => *b.get_ref() as usize,
            Some(b) => {
                self.error(b.span(), "sweep.batch", format!("must be between 1 and {MAX_SWEEP_BATCH}"));
                DEFAULT_SWEEP_BATCH
            }
        };
        Some(Sweep { path: path.clone(), token_sha256: token_sha256?, batch }).filter(|_| path_ok)
    }
}
