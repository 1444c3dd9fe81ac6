//! Who the caller is, by a [`CallerKey`]: what a rate limit counts and what
//! a sticky choice of target hashes.

use http::HeaderMap;

use super::Ctx;
use crate::config::Config;
use crate::config::caller_key::CallerKey;
use crate::shared::headers;
use crate::shared::ip_text::IpText;

/// The caller as `kind:value` text (`kv-schema/rate-limits.md`), in the
/// pieces `f` is handed: borrowed from the request and its identity, so
/// nothing is joined or copied to hash or key it. A request without the
/// value the key asks for (no identity of that kind, no such header or
/// cookie) is its client IP, `ip:ADDR`.
pub(crate) fn with_value<R>(
    config: &Config,
    key: &CallerKey,
    ctx: &Ctx,
    headers: &HeaderMap,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    let identity_of = |consumers: bool| {
        let id = ctx.identity.as_deref()?;
        let provider = config.auth.providers.iter().find(|p| *p.name == *id.provider)?;
        (provider.kind.names_consumers() == consumers).then_some(id)
    };
    match key {
        CallerKey::ClientIp => {}
        CallerKey::Consumer => {
            if let Some(id) = identity_of(true) {
                return f(&[b"consumer:", id.provider.as_bytes(), b":", id.subject.as_bytes()]);
            }
        }
        CallerKey::Subject => {
            if let Some(id) = identity_of(false) {
                return f(&[b"subject:", id.provider.as_bytes(), b":", id.subject.as_bytes()]);
            }
        }
        CallerKey::Header(name) => {
            if let Some(v) = headers.get(name) {
                return f(&[b"header:", String::from_utf8_lossy(v.as_bytes()).as_bytes()]);
            }
        }
        CallerKey::Cookie(name) => {
            if let Some(v) = headers::cookie(headers, name).filter(|v| !v.is_empty()) {
                return f(&[b"cookie:", v.as_bytes()]);
            }
        }
    }
    f(&[b"ip:", IpText::new(ctx.client_ip).as_bytes()])
}

/// [`with_value`]'s pieces joined.
pub(crate) fn value(config: &Config, key: &CallerKey, ctx: &Ctx, headers: &HeaderMap) -> Vec<u8> {
    with_value(config, key, ctx, headers, |pieces| pieces.concat())
}
