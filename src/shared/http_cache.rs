//! The parts of HTTP caching (RFC 9111, RFC 5861, RFC 9110 §13) the
//! response cache decides by: `Cache-Control` directives, a response's
//! freshness, and whether a client's own validators match what is stored.
//! Pure functions over headers and times the caller passes in.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};

/// The directives of a `Cache-Control` header (all of its lines), those
/// the cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    /// Any `no-cache` (a field-qualified one too: the cache stores no
    /// field selectively, so it revalidates every time).
    pub(crate) no_cache: bool,
    /// Any `private` (qualified too): a shared cache does not store it.
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub(crate) must_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl CacheControl {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for directive in line.split(',') {
                let (name, value) = match directive.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                // A malformed number is treated as 0 (RFC 9111 §4.2.1: stale).
                let seconds = || Some(value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "max-age" => cc.max_age = cc.max_age.or_else(seconds),
                    "s-maxage" => cc.s_maxage = cc.s_maxage.or_else(seconds),
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "stale-while-revalidate" => cc.stale_while_revalidate = cc.stale_while_revalidate.or_else(seconds),
                    "stale-if-error" => cc.stale_if_error = cc.stale_if_error.or_else(seconds),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// An HTTP date (RFC 9110 §5.6.7) as time since the Unix epoch.
pub(crate) fn date(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()
}

/// Time since the Unix epoch as an HTTP date.
#[cfg(test)]
pub(crate) fn http_date(at: Duration) -> HeaderValue {
    let text = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(at.as_secs()));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// How long a stored response stays fresh, and may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// Freshness lifetime minus the age it already had when it arrived.
    pub(crate) fresh: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) must_revalidate: bool,
    /// The age it had when it arrived (RFC 9111 §4.2.3, without the
    /// transit time, which the gateway does not measure).
    pub(crate) age: Duration,
}

/// What the route allows the cache (`routes[].cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowance {
    /// Freshness for a response that gives none (0: such responses are not stored).
    pub(crate) ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// Statuses a shared cache may store without explicit freshness
/// (RFC 9110 §15.1, "heuristically cacheable"), the only ones the route's
/// `ttl` applies to.
const HEURISTIC: [u16; 10] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 501];

/// Statuses stored at all: the heuristic ones and the redirects and
/// errors an origin marks fresh on purpose.
fn understood(status: u16) -> bool {
    HEURISTIC.contains(&status) || matches!(status, 302 | 303 | 307 | 403 | 414)
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    NoStore,
    Private,
    Status,
    SetCookie,
    VaryAny,
    /// Nothing says how long it stays fresh and it has no validators.
    NoFreshness,
}

impl NotStored {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Status => "status",
            Self::SetCookie => "set-cookie",
            Self::VaryAny => "vary-any",
            Self::NoFreshness => "no-freshness",
        }
    }
}

/// Whether a response to a GET may be stored by a shared cache, and for
/// how long it is then fresh (RFC 9111 §3, §4.2.1): `s-maxage` over
/// `max-age` over `Expires − Date`, else the route's `ttl` for a
/// heuristically cacheable status; capped at `max_ttl`. A response that
/// sets a cookie is never stored (it is one caller's).
pub(crate) fn lifetime(
    status: u16,
    headers: &HeaderMap,
    allowance: &Allowance,
    now: Duration,
) -> Result<Lifetime, NotStored> {
    let cc = CacheControl::of(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if !understood(status) {
        return Err(NotStored::Status);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if headers.get_all(header::VARY).iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|n| n.trim() == "*"))) {
        return Err(NotStored::VaryAny);
    }
    let served = date(headers.get(header::DATE)).unwrap_or(now);
    let explicit = match (cc.s_maxage.or(cc.max_age), headers.get(header::EXPIRES)) {
        (Some(seconds), _) => Some(Duration::from_secs(seconds)),
        // An invalid `Expires` means already expired.
        (None, Some(expires)) => Some(date(Some(expires)).map_or(Duration::ZERO, |at| at.saturating_sub(served))),
        (None, None) => None,
    };
    let validators = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let freshness = match explicit {
        Some(d) => d,
        None if HEURISTIC.contains(&status) && !allowance.ttl.is_zero() => allowance.ttl,
        None if validators => Duration::ZERO,
        None => return Err(NotStored::NoFreshness),
    };
    let freshness = if cc.no_cache { Duration::ZERO } else { freshness.min(allowance.max_ttl) };
    let age_header = headers.get(header::AGE).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    // In whole seconds, as `Date` and `Age` are.
    let age = Duration::from_secs(age_header.unwrap_or(0).max(now.saturating_sub(served).as_secs()));
    let window = |own: Option<u64>, route: Duration| {
        if cc.must_revalidate {
            Duration::ZERO
        } else {
            own.map_or(route, Duration::from_secs).max(route).min(allowance.max_ttl)
        }
    };
    let lifetime = Lifetime {
        fresh: freshness.saturating_sub(age),
        stale_while_revalidate: window(cc.stale_while_revalidate, allowance.stale_while_revalidate),
        stale_if_error: window(cc.stale_if_error, allowance.stale_if_error),
        must_revalidate: cc.must_revalidate,
        age,
    };
    let useful = !lifetime.fresh.is_zero()
        || validators
        || !lifetime.stale_while_revalidate.is_zero()
        || !lifetime.stale_if_error.is_zero();
    if useful { Ok(lifetime) } else { Err(NotStored::NoFreshness) }
}

/// Whether the client's own validators match the stored response, so it
/// gets 304 (RFC 9110 §13.2.2): `If-None-Match` (weak comparison, `*`)
/// decides when present, else `If-Modified-Since` against `Last-Modified`.
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok()).map(weak);
    let mut asked = request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).peekable();
    if asked.peek().is_some() {
        let Some(etag) = etag else { return false };
        return asked.flat_map(|line| line.split(',')).any(|tag| {
            let tag = tag.trim();
            tag == "*" || weak(tag) == etag
        });
    }
    match (date(request.get(header::IF_MODIFIED_SINCE)), date(stored.get(header::LAST_MODIFIED))) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// An entity tag without its weakness mark, for the weak comparison.
fn weak(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Whether a request's own `Cache-Control` (or `Pragma: no-cache`) asks
/// the cache not to answer from what it holds without asking the origin.
pub(crate) fn request_wants_origin(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.no_cache
        || cc.max_age == Some(0)
        || (!headers.contains_key(header::CACHE_CONTROL)
            && headers.get(header::PRAGMA).and_then(|v| v.to_str().ok()).is_some_and(|p| p.contains("no-cache")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn allowance(ttl: u64) -> Allowance {
        Allowance {
            ttl: Duration::from_secs(ttl),
            max_ttl: Duration::from_secs(3600),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    fn life(status: u16, pairs: &[(&str, &str)], ttl: u64) -> Result<Lifetime, NotStored> {
        lifetime(status, &headers(pairs), &allowance(ttl), NOW)
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_max_age_over_expires() {
        let expires = http_date(NOW + Duration::from_secs(500));
        let expires = expires.to_str().unwrap();
        let both = [("cache-control", "max-age=10, s-maxage=20"), ("expires", expires)];
        assert_eq!(life(200, &both, 0).unwrap().fresh, Duration::from_secs(20));
        assert_eq!(life(200, &[("cache-control", "max-age=10"), ("expires", expires)], 0).unwrap().fresh.as_secs(), 10);
        assert_eq!(life(200, &[("expires", expires)], 0).unwrap().fresh.as_secs(), 500);
    }

    #[test]
    fn an_invalid_expires_is_already_expired_and_stored_only_with_validators() {
        assert_eq!(life(200, &[("expires", "0")], 60), Err(NotStored::NoFreshness));
        let with_etag = life(200, &[("expires", "0"), ("etag", "\"a\"")], 60).unwrap();
        assert_eq!(with_etag.fresh, Duration::ZERO);
    }

    #[test]
    fn the_routes_ttl_applies_only_without_explicit_freshness_and_to_heuristic_statuses() {
        assert_eq!(life(200, &[], 30).unwrap().fresh.as_secs(), 30);
        assert_eq!(life(200, &[], 0), Err(NotStored::NoFreshness));
        assert_eq!(life(302, &[], 30), Err(NotStored::NoFreshness));
        assert_eq!(life(302, &[("cache-control", "max-age=5")], 0).unwrap().fresh.as_secs(), 5);
        assert_eq!(life(500, &[("cache-control", "max-age=5")], 0), Err(NotStored::Status));
        assert_eq!(life(200, &[("cache-control", "max-age=99999")], 0).unwrap().fresh.as_secs(), 3600, "max_ttl caps");
    }

    #[test]
    fn no_store_private_set_cookie_and_vary_star_are_never_stored() {
        assert_eq!(life(200, &[("cache-control", "public, no-store")], 30), Err(NotStored::NoStore));
        assert_eq!(life(200, &[("cache-control", "private, max-age=60")], 30), Err(NotStored::Private));
        assert_eq!(life(200, &[("cache-control", "private=\"x-user\"")], 30), Err(NotStored::Private));
        assert_eq!(life(200, &[("set-cookie", "a=b"), ("cache-control", "max-age=60")], 0), Err(NotStored::SetCookie));
        assert_eq!(life(200, &[("vary", "accept, *"), ("cache-control", "max-age=60")], 0), Err(NotStored::VaryAny));
    }

    #[test]
    fn no_cache_is_stored_stale_and_age_counts_against_freshness() {
        let l = life(200, &[("cache-control", "no-cache, max-age=60"), ("etag", "\"v\"")], 0).unwrap();
        assert_eq!(l.fresh, Duration::ZERO);
        let aged = life(200, &[("cache-control", "max-age=60"), ("age", "45")], 0).unwrap();
        assert_eq!((aged.fresh.as_secs(), aged.age.as_secs()), (15, 45));
        let old_date = http_date(NOW - Duration::from_secs(50));
        let dated = life(200, &[("cache-control", "max-age=60"), ("date", old_date.to_str().unwrap())], 0).unwrap();
        assert_eq!(dated.fresh.as_secs(), 10, "a Date 50 s ago is an age of 50 s");
        let bad = life(200, &[("cache-control", "max-age=abc")], 30);
        assert_eq!(bad, Err(NotStored::NoFreshness), "a malformed max-age is 0, not the route's ttl");
    }

    #[test]
    fn stale_windows_take_the_longer_of_origin_and_route_unless_it_must_revalidate() {
        let mut a = allowance(0);
        a.stale_if_error = Duration::from_secs(100);
        let h = headers(&[("cache-control", "max-age=0, stale-if-error=300, stale-while-revalidate=7")]);
        let l = lifetime(200, &h, &a, NOW).unwrap();
        assert_eq!((l.stale_if_error.as_secs(), l.stale_while_revalidate.as_secs()), (300, 7));
        let strict = headers(&[("cache-control", "max-age=5, must-revalidate, stale-if-error=300")]);
        let l = lifetime(200, &strict, &a, NOW).unwrap();
        assert_eq!((l.stale_if_error, l.must_revalidate), (Duration::ZERO, true));
    }

    #[test]
    fn if_none_match_decides_weakly_and_before_if_modified_since() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")]);
        assert!(not_modified(&headers(&[("if-none-match", "\"x\", \"v1\"")]), &stored));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        let later = "Wed, 02 Dec 2026 10:00:00 GMT";
        assert!(!not_modified(&headers(&[("if-none-match", "\"v2\""), ("if-modified-since", later)]), &stored));
        assert!(not_modified(&headers(&[("if-modified-since", later)]), &stored));
        assert!(!not_modified(&headers(&[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")]), &stored));
        assert!(!not_modified(&headers(&[("if-modified-since", "yesterday")]), &stored));
        assert!(!not_modified(&headers(&[("if-none-match", "\"v1\"")]), &HeaderMap::new()));
    }

    fn request_wants_origin(headers: &HeaderMap) -> bool {
        super::request_wants_origin(&CacheControl::of(headers), headers)
    }

    #[test]
    fn a_client_asks_for_the_origin_with_no_cache_max_age_0_or_pragma() {
        assert!(request_wants_origin(&headers(&[("cache-control", "no-cache")])));
        assert!(request_wants_origin(&headers(&[("cache-control", "max-age=0")])));
        assert!(request_wants_origin(&headers(&[("pragma", "no-cache")])));
        assert!(!request_wants_origin(&headers(&[("cache-control", "max-age=60"), ("pragma", "no-cache")])));
        assert!(!request_wants_origin(&headers(&[])));
    }
}
