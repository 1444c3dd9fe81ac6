//! Who the caller is, by a [`CallerKey`]: what a rate limit counts and what
//! a sticky choice of target hashes.

use http::HeaderMap;

use super::Ctx;
use crate::config::Config;
use crate::config::caller_key::CallerKey;
use crate::shared::headers;
use crate::shared::identity::Identity;

/// The caller as `kind:value` text (`kv-schema/rate-limits.md`); a request
/// without the value the key asks for (no identity of that kind, no such
/// header or cookie) is its client IP, `ip:ADDR`.
pub(crate) fn value(config: &Config, key: &CallerKey, ctx: &Ctx, headers: &HeaderMap) -> Vec<u8> {
    let identity_of = |consumers: bool| {
        let id = ctx.identity.as_deref()?;
        let provider = config.auth.providers.iter().find(|p| *p.name == *id.provider)?;
        (provider.kind.names_consumers() == consumers).then_some(id)
    };
    let by_identity =
        |kind: &str, id: &Identity| [kind.as_bytes(), id.provider.as_bytes(), b":", id.subject.as_bytes()].concat();
    let found = match key {
        CallerKey::ClientIp => None,
        CallerKey::Consumer => identity_of(true).map(|id| by_identity("consumer:", id)),
        CallerKey::Subject => identity_of(false).map(|id| by_identity("subject:", id)),
        CallerKey::Header(name) => {
            headers.get(name).map(|v| [b"header:", String::from_utf8_lossy(v.as_bytes()).as_bytes()].concat())
        }
        CallerKey::Cookie(name) => headers::cookie(headers, name)
            .filter(|v| !v.is_empty())
            .map(|v| [b"cookie:".as_slice(), v.as_bytes()].concat()),
    };
    found.unwrap_or_else(|| [b"ip:".as_slice(), ctx.client_ip.to_string().as_bytes()].concat())
}
