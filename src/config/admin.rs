//! `[admin]`: the bearer tokens (by SHA-256) the node's admin API accepts
//! from callers beyond loopback. Without one, a node refuses to put its
//! admin listener on a non-loopback address.

use toml::Spanned;

use super::Compiler;
use super::auth::parse_sha256;
use super::raw::RawAdmin;

impl Compiler<'_> {
    pub(super) fn admin(&mut self, raw: &Option<Spanned<RawAdmin>>) -> Vec<[u8; 32]> {
        let Some(raw) = raw.as_ref() else { return Vec::new() };
        let raw = raw.get_ref();
        raw.token_sha256
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let key = format!("admin.token_sha256[{i}]");
                let value = self.value(t, &key)?;
                self.check(t.span(), &key, parse_sha256(&value))
            })
            .collect()
    }
}
