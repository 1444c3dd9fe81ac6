//! The cache phase (request and response): a route's answers kept and
//! served by the gateway (RFC 9111's shared cache, in part).
//!
//! Two levels: records in memory (`memory`, per process or instance) and
//! in the store the fleet shares (`kv-schema/cache.md`), where the route
//! says `shared` (the default). A record read from memory is used without
//! asking the store for a second ([`MEMORY_CHECK`]); then the store is
//! read again, with the purge marks, so a purge anywhere reaches every
//! copy within that second.
//!
//! The request phase, after authorization and limits, answers from a
//! fresh entry (or a stale one while another request revalidates it,
//! `stale-while-revalidate`), lets one request fetch a missing or stale
//! entry while the others for it wait (collapsed forwarding), and moves a
//! client's own validators aside so the origin's full answer can be kept.
//! The response phase keeps what may be kept, turns a `304` from a
//! revalidation into the refreshed entry, serves a stale entry when the
//! origin failed (`stale-if-error`, before a route's static `fallback`),
//! and answers `304` when the client's validators match. `POST`, `PUT`,
//! `PATCH` and `DELETE` answered below 400 purge their URL.

pub(crate) mod entry;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;

use super::error::GatewayError;
use super::log::Failure;
use super::{Ctx, Flow, Gateway, Outcome};
use crate::config::cache::{LONGEST_TTL, RouteCache};
use crate::ports::{Body, Clock, HttpClient, KvStore, Lifetime, Ports, UpstreamError};
use crate::shared::headers::is_hop_by_hop;
use crate::shared::http_cache::{self, CacheControl};
use crate::shared::problem::{Answer, Source};
use entry::{Entry, Purge, Record, VaryMarker};
pub(crate) use memory::Memory;

/// How long a record in memory is used without asking the store.
const MEMORY_CHECK: Duration = Duration::from_secs(1);
/// How often a request waiting for another's fetch looks again.
const POLL: Duration = Duration::from_millis(5);
/// The longest a request waits for another's fetch.
const MAX_WAIT: Duration = Duration::from_secs(10);
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// The client's validators, moved aside while the cache asks the origin.
const VALIDATORS: [HeaderName; 2] = [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];

/// What the cache did for a request (the access log's `cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheResult {
    /// A fresh entry answered.
    Hit,
    /// A fresh entry another request fetched while this one waited.
    Collapsed,
    /// A stale entry answered (while revalidating, or the origin failed).
    Stale,
    /// Nothing stored: the origin answered.
    Miss,
    /// A stale entry was refetched.
    Expired,
    /// A stale entry was confirmed by the origin (`304`).
    Revalidated,
    /// Not looked up (method, credentials, `no-store`, protocol).
    Bypass,
    /// A write that purged its URL.
    Invalidated,
}

impl CacheResult {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Collapsed => "collapsed",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Expired => "expired",
            Self::Revalidated => "revalidated",
            Self::Bypass => "bypass",
            Self::Invalidated => "invalidated",
        }
    }
}

/// What the cache did, for `Cache-Status` (RFC 9211) and the log.
pub(crate) struct CacheNote {
    pub(crate) result: CacheResult,
    /// Why the request went to the origin (`fwd`), if it did.
    fwd: Option<&'static str>,
    fwd_status: Option<u16>,
    stored: bool,
    /// Seconds of freshness left (negative: stale for that long).
    ttl: Option<i64>,
    detail: Option<&'static str>,
    work: Work,
}

/// What the response phase still has to do.
enum Work {
    Nothing,
    Invalidate([u8; 32]),
    Fetch(Box<Fetch>),
}

/// A request that went to the origin for an entry.
struct Fetch {
    url: [u8; 32],
    primary: [u8; 32],
    /// The entry's key: the variant's once a marker is known, else the primary.
    digest: [u8; 32],
    marker: Option<Arc<VaryMarker>>,
    /// The stale entry it replaces (revalidated, or served if the origin fails).
    stale: Option<Arc<Entry>>,
    /// The request's headers, for the entry's variant key and the client's validators.
    request: HeaderMap,
    /// The entry's validators went to the origin.
    revalidating: bool,
    /// This request holds the claim to fetch.
    claimed: bool,
}

impl CacheNote {
    fn new(result: CacheResult, fwd: Option<&'static str>, detail: Option<&'static str>) -> Box<Self> {
        Box::new(Self { result, fwd, fwd_status: None, stored: false, ttl: None, detail, work: Work::Nothing })
    }

    /// An answer from the cache, not the origin (its outcome says nothing of the origin).
    pub(crate) fn answered(&self) -> bool {
        matches!(self.result, CacheResult::Hit | CacheResult::Collapsed)
            || (self.result == CacheResult::Stale && self.fwd.is_none())
    }

    /// A stale entry stood in for an origin that failed.
    pub(crate) fn covered_failure(&self) -> bool {
        self.result == CacheResult::Stale && self.fwd.is_some()
    }

    /// `Cache-Status` (RFC 9211) for this answer.
    fn header(&self) -> HeaderValue {
        use std::fmt::Write as _;
        let mut text = String::from("portcullis");
        if self.fwd.is_none() && !matches!(self.result, CacheResult::Bypass | CacheResult::Invalidated) {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(text, "; fwd={fwd}");
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={status}");
        }
        if self.stored {
            text.push_str("; stored");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            let _ = write!(text, "; detail={detail}");
        }
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("portcullis"))
    }
}

/// `Cache-Status` on every answer of a route with a cache: what the cache
/// did, or `fwd=bypass` when the request was answered before it looked.
pub(crate) fn finish(note: Option<&CacheNote>, headers: &mut HeaderMap) {
    let value = note.map_or(HeaderValue::from_static("portcullis; fwd=bypass"), CacheNote::header);
    headers.insert(CACHE_STATUS, value);
}

fn now_us(clock: &impl Clock) -> u64 {
    u64::try_from(clock.now().as_micros()).unwrap_or(u64::MAX)
}

fn seconds_left(until: u64, now: u64) -> i64 {
    let left = i128::from(until) - i128::from(now);
    i64::try_from(left.div_euclid(1_000_000)).unwrap_or(0)
}

/// The cache phase (request): answers from what is kept, or marks what the
/// response phase does with the origin's answer.
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, GatewayError> {
    let Some(route) = gateway.route(ctx) else { return Ok(Flow::Continue) };
    let Some(policy) = &route.cache else { return Ok(Flow::Continue) };
    let bypass = |ctx: &mut Ctx, fwd, detail| {
        ctx.cache = Some(CacheNote::new(CacheResult::Bypass, Some(fwd), Some(detail)));
        Ok(Flow::Continue)
    };
    if ctx.grpc || ctx.grpc_web.is_some() || ctx.tunnel.is_some() {
        return bypass(ctx, "bypass", "protocol");
    }
    let url = entry::url_digest(&ctx.host, &ctx.path, req.uri().query());
    match *req.method() {
        Method::GET => {}
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            let mut note = CacheNote::new(CacheResult::Invalidated, Some("method"), None);
            note.work = Work::Invalidate(url);
            ctx.cache = Some(note);
            return Ok(Flow::Continue);
        }
        _ => return bypass(ctx, "method", "method"),
    }
    let cc = CacheControl::of(req.headers());
    if cc.no_store {
        return bypass(ctx, "request", "no-store");
    }
    let consumer = match (&ctx.identity, policy.by_consumer) {
        (Some(id), true) => format!("{}\n{}", id.provider, id.subject),
        (Some(_), false) => return bypass(ctx, "bypass", "authenticated"),
        (None, _) if req.headers().contains_key(header::AUTHORIZATION) => {
            return bypass(ctx, "bypass", "authenticated");
        }
        (None, _) => String::new(),
    };
    let primary = entry::primary_digest(&url, &consumer);
    let service = ctx.service.unwrap_or(route.service);
    let wait = gateway.config.services[service].request_timeout.min(MAX_WAIT);
    let forced = http_cache::request_wants_origin(&cc, req.headers());
    let (mut found, mut marker) = look(gateway, ports, policy, &primary, req.headers()).await;
    let now = now_us(ports.clock());
    if let Some(e) = found.as_ref().filter(|e| !forced && now < e.fresh_until) {
        return Ok(Flow::Respond(hit(e, CacheResult::Hit, None, req.headers(), ctx, ports)));
    }
    let mut digest = variant(&primary, marker.as_deref(), req.headers());
    let mut claimed = false;
    if !forced {
        claimed = claim(gateway, ports, policy, &digest, wait).await;
        if let Some(e) = found.as_ref().filter(|e| now < e.swr_until && !claimed) {
            return Ok(Flow::Respond(hit(
                e,
                CacheResult::Stale,
                Some("stale-while-revalidate"),
                req.headers(),
                ctx,
                ports,
            )));
        }
        if !claimed {
            if let Some(e) = wait_for(gateway, ports, policy, &primary, &digest, req.headers(), wait).await {
                return Ok(Flow::Respond(hit(
                    &e,
                    CacheResult::Collapsed,
                    Some("collapsed"),
                    req.headers(),
                    ctx,
                    ports,
                )));
            }
            // Its fetcher gave up or kept nothing: ask the origin, with what is stored now.
            (found, marker) = look(gateway, ports, policy, &primary, req.headers()).await;
            digest = variant(&primary, marker.as_deref(), req.headers());
        }
    }
    let (result, fwd) = match (&found, forced) {
        (_, true) => (if found.is_some() { CacheResult::Expired } else { CacheResult::Miss }, "request"),
        (Some(_), false) => (CacheResult::Expired, "stale"),
        (None, false) if marker.is_some() => (CacheResult::Miss, "vary-miss"),
        (None, false) => (CacheResult::Miss, "uri-miss"),
    };
    let request = req.headers().clone();
    let headers = req.headers_mut();
    VALIDATORS.iter().for_each(|name| drop(headers.remove(name)));
    let mut revalidating = false;
    if let Some(e) = &found {
        if let Some(etag) = e.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
            revalidating = true;
        }
        if let Some(modified) = e.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            revalidating = true;
        }
    }
    let mut note = CacheNote::new(result, Some(fwd), None);
    note.work =
        Work::Fetch(Box::new(Fetch { url, primary, digest, marker, stale: found, request, revalidating, claimed }));
    ctx.cache = Some(note);
    Ok(Flow::Continue)
}

/// The cache phase (response): keeps the origin's answer, or stands in for
/// it; then lets go of the claim to fetch.
pub(crate) async fn response_phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    let Some(policy) = gateway.route(ctx).and_then(|r| r.cache.as_ref()) else { return };
    let Some(note) = ctx.cache.as_mut() else { return };
    match std::mem::replace(&mut note.work, Work::Nothing) {
        Work::Nothing => {}
        Work::Invalidate(url) => {
            if matches!(outcome, Ok(resp) if resp.status().as_u16() < 400) {
                let _ = purge(&gateway.cache_memory, ports.kv(), ports.clock(), &Purge::Url(url)).await;
            }
        }
        Work::Fetch(fetch) => {
            let failure = settle(gateway, ports, policy, outcome, ctx, &fetch).await;
            if let Some(failure) = failure {
                ctx.failure = Some(failure);
            }
            if fetch.claimed {
                release(gateway, ports, policy, &fetch.digest).await;
            }
        }
    }
}

/// What the origin's answer becomes; a failure a stale entry covered is
/// returned for the log.
async fn settle<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    policy: &RouteCache,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
    fetch: &Fetch,
) -> Option<Failure> {
    let now = now_us(ports.clock());
    let note = ctx.cache.as_mut()?;
    let failed = match &*outcome {
        Ok(resp) => matches!(resp.status().as_u16(), 500 | 502 | 503 | 504),
        Err(err) => err.problem().source == Source::Upstream,
    };
    if failed {
        let stale = fetch.stale.as_ref().filter(|e| now < e.sie_until)?;
        note.result = CacheResult::Stale;
        note.detail = Some("stale-if-error");
        note.ttl = Some(seconds_left(stale.fresh_until, now));
        let failure = match std::mem::replace(outcome, Ok(answer(stale, &fetch.request, now, true))) {
            Ok(resp) => {
                note.fwd_status = Some(resp.status().as_u16());
                Failure {
                    problem: None,
                    source: Source::Upstream,
                    detail: format!("stale served: the origin answered {}", resp.status()),
                }
            }
            Err(err) => {
                let problem = err.problem();
                Failure { problem: Some(problem.slug), source: problem.source, detail: format!("stale served: {err}") }
            }
        };
        return Some(failure);
    }
    let Ok(resp) = outcome else { return None };
    note.fwd_status = Some(resp.status().as_u16());
    if resp.status() == StatusCode::NOT_MODIFIED && fetch.revalidating {
        let stale = fetch.stale.as_ref()?;
        let refreshed = refresh(stale, resp.headers(), policy, now);
        let served = refreshed.as_ref().unwrap_or(stale);
        if let Some(e) = &refreshed {
            keep(gateway, ports, policy, fetch, e.clone(), now).await;
            note.stored = true;
            note.ttl = Some(seconds_left(e.fresh_until, now));
        }
        note.result = CacheResult::Revalidated;
        *outcome = Ok(answer(served, &fetch.request, now, false));
        return None;
    }
    let lifetime =
        match http_cache::lifetime(resp.status().as_u16(), resp.headers(), &policy.allowance, ports.clock().now()) {
            Ok(lifetime) => lifetime,
            Err(why) => {
                note.detail = Some(why.detail());
                return None;
            }
        };
    let declared = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > policy.max_entry_size) {
        note.detail = Some("too-large");
        return None;
    }
    let Ok(resp) = std::mem::replace(outcome, Err(GatewayError::Upstream(UpstreamError::Protocol(String::new()))))
    else {
        return None;
    };
    let (parts, body) = resp.into_parts();
    let limit = usize::try_from(policy.max_entry_size).unwrap_or(usize::MAX);
    let body = match read_up_to::<P::Http>(body, limit).await {
        Read::Whole(bytes) => bytes,
        Read::TooLarge(body) => {
            note.detail = Some("too-large");
            *outcome = Ok(Response::from_parts(parts, body));
            return None;
        }
        Read::Failed(e) => {
            *outcome = Err(UpstreamError::Protocol(format!("the response body could not be read: {e}")).into());
            return None;
        }
    };
    let route = gateway.route(ctx).map_or_else(|| Arc::from(""), |r| r.name.clone());
    let [fresh_until, swr_until, sie_until] = until(&lifetime, now);
    let e = Arc::new(Entry {
        stored_at: now,
        fresh_until,
        swr_until,
        sie_until,
        age: lifetime.age.as_secs(),
        status: parts.status,
        tags: entry::tags(&parts.headers, &policy.tags_header),
        headers: stored_headers(&parts.headers),
        body,
        url: fetch.url,
        route,
    });
    keep(gateway, ports, policy, fetch, e.clone(), now).await;
    let note = ctx.cache.as_mut()?;
    note.stored = true;
    note.ttl = Some(seconds_left(e.fresh_until, now));
    *outcome = Ok(answer(&e, &fetch.request, now, false));
    None
}

/// Until when an entry stored `now` is fresh, may be served while it is
/// revalidated, and may stand in for a failing origin (µs since the epoch).
fn until(lifetime: &http_cache::Lifetime, now: u64) -> [u64; 3] {
    let fresh_until = now.saturating_add(micros(lifetime.fresh));
    [
        fresh_until,
        fresh_until.saturating_add(micros(lifetime.stale_while_revalidate)),
        fresh_until.saturating_add(micros(lifetime.stale_if_error)),
    ]
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An entry as an answer: its status, headers and body with its `Age`
/// (on one just fetched, only the age it came with), or `304` when the
/// client's own validators match it.
fn answer<B: From<Bytes>>(e: &Entry, request: &HeaderMap, now: u64, from_cache: bool) -> Response<B> {
    let age = e.age.saturating_add(now.saturating_sub(e.stored_at) / 1_000_000);
    let mut resp = if http_cache::not_modified(request, &e.headers) {
        let mut resp = Response::new(B::from(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::LAST_MODIFIED,
            header::VARY,
        ] {
            for v in e.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp
    } else {
        let mut resp = Response::new(B::from(e.body.clone()));
        *resp.status_mut() = e.status;
        *resp.headers_mut() = e.headers.clone();
        // Its length, so no home frames it chunked (a chunked end after the
        // body can wait out a client's delayed ACK: 40 ms under Spin).
        if !matches!(e.status.as_u16(), 204 | 304) {
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(e.body.len()));
        }
        resp
    };
    if from_cache || age > 0 {
        resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
    }
    resp
}

/// A hit: the note and the answer.
fn hit<P: Ports>(
    e: &Entry,
    result: CacheResult,
    detail: Option<&'static str>,
    request: &HeaderMap,
    ctx: &mut Ctx,
    ports: &P,
) -> Response<Body<P>> {
    let now = now_us(ports.clock());
    let mut note = CacheNote::new(result, None, detail);
    note.ttl = Some(seconds_left(e.fresh_until, now));
    ctx.cache = Some(note);
    answer(e, request, now, true)
}

/// The headers an entry keeps: the origin's, without those of one
/// connection, its framing and `Age` (each answer gets its own).
fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter().filter(|(name, _)| stored(name)) {
        kept.append(name.clone(), value.clone());
    }
    kept
}

/// Whether an entry keeps a header of this name.
fn stored(name: &HeaderName) -> bool {
    !is_hop_by_hop(name) && *name != header::CONTENT_LENGTH && *name != header::AGE
}

/// A stale entry refreshed by a `304` (RFC 9111 §4.3.4): the `304`'s
/// headers replace the stored ones of the same name; `None` if the
/// refreshed answer may no longer be kept.
fn refresh(stale: &Entry, update: &HeaderMap, policy: &RouteCache, now: u64) -> Option<Arc<Entry>> {
    let mut headers = stale.headers.clone();
    for name in update.keys() {
        if !stored(name) {
            continue;
        }
        headers.remove(name);
        for v in update.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let lifetime =
        http_cache::lifetime(stale.status.as_u16(), &headers, &policy.allowance, Duration::from_micros(now)).ok()?;
    let [fresh_until, swr_until, sie_until] = until(&lifetime, now);
    Some(Arc::new(Entry {
        stored_at: now,
        fresh_until,
        swr_until,
        sie_until,
        age: lifetime.age.as_secs(),
        headers,
        ..stale.clone()
    }))
}

/// The key an entry for this request is under: its variant's when the URL
/// has a Vary marker.
fn variant(primary: &[u8; 32], marker: Option<&VaryMarker>, request: &HeaderMap) -> [u8; 32] {
    marker.map_or(*primary, |m| entry::variant_digest(primary, m, request))
}

/// The entry for a request, if one is kept and not purged, and the URL's
/// Vary marker if it has one.
async fn look<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    policy: &RouteCache,
    primary: &[u8; 32],
    request: &HeaderMap,
) -> (Option<Arc<Entry>>, Option<Arc<VaryMarker>>) {
    match read(gateway, ports, policy, primary).await {
        Some(Record::Entry(e)) => (Some(e), None),
        Some(Record::Vary(marker)) => {
            let digest = entry::variant_digest(primary, &marker, request);
            let found = match read(gateway, ports, policy, &digest).await {
                Some(Record::Entry(e)) => Some(e),
                _ => None,
            };
            (found, Some(marker))
        }
        None => (None, None),
    }
}

/// A record from memory (while checked) or the store, unless purged.
async fn read<P: Ports>(gateway: &Gateway, ports: &P, policy: &RouteCache, digest: &[u8; 32]) -> Option<Record> {
    let memory = &gateway.cache_memory;
    let in_memory = P::LIFETIME != Lifetime::Request;
    let now = ports.clock().now();
    let now_us = micros(now);
    if in_memory
        && let Some(held) = memory.get(digest, now_us)
        && (!policy.shared || now_us < held.checked_until)
    {
        return match &held.record {
            Record::Entry(e) if purged_here(memory, e, now) => {
                memory.remove(digest);
                None
            }
            _ => Some(held.record),
        };
    }
    if !policy.shared {
        return None;
    }
    let raw = ports.kv().get(&entry::record_key(digest)).await.ok()??;
    let record = Record::decode(&raw)?;
    let keep_until = match &record {
        Record::Entry(e) => {
            if purged_in_store(memory, ports, e).await || purged_here(memory, e, now) {
                memory.remove(digest);
                return None;
            }
            e.keep_until()
        }
        Record::Vary(_) => now_us.saturating_add(micros(LONGEST_TTL)),
    };
    if in_memory {
        let checked_until = now_us.saturating_add(micros(MEMORY_CHECK));
        memory.insert(*digest, memory::Held { record: record.clone(), checked_until, keep_until });
    }
    Some(record)
}

fn purged_here(memory: &Memory, e: &Entry, now: Duration) -> bool {
    memory.purged(e.stored_at, || Purge::of(e).map(|p| p.mark_key()), now)
}

/// Whether a purge mark in the store drops the entry; marks seen are
/// remembered here too.
async fn purged_in_store<P: Ports>(memory: &Memory, ports: &P, e: &Entry) -> bool {
    let now = ports.clock().now();
    for purge in Purge::of(e) {
        let key = purge.mark_key();
        let Ok(Some(raw)) = ports.kv().get(&key).await else { continue };
        let Some(at) = std::str::from_utf8(&raw).ok().and_then(|t| t.parse::<u64>().ok()) else { continue };
        memory.mark(key, at, now.saturating_add(LONGEST_TTL), now);
        if at >= e.stored_at {
            return true;
        }
    }
    false
}

/// Keeps an entry in memory and (where the route shares) the store, with
/// the URL's Vary marker when the answer varies.
async fn keep<P: Ports>(gateway: &Gateway, ports: &P, policy: &RouteCache, fetch: &Fetch, e: Arc<Entry>, now: u64) {
    let mut names: Vec<HeaderName> = e
        .headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let keep_until = e.keep_until();
    let digest = if names.is_empty() {
        fetch.primary
    } else {
        let marker = match &fetch.marker {
            Some(m) if m.names == names => m.clone(),
            _ => Arc::new(VaryMarker {
                stamp: now ^ u64::from_be_bytes(fetch.digest[..8].try_into().unwrap_or_default()),
                names,
            }),
        };
        let marker_until = now.saturating_add(micros(LONGEST_TTL));
        put(gateway, ports, policy, &fetch.primary, Record::Vary(marker.clone()), marker_until, now).await;
        entry::variant_digest(&fetch.primary, &marker, &fetch.request)
    };
    put(gateway, ports, policy, &digest, Record::Entry(e), keep_until, now).await;
}

async fn put<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    policy: &RouteCache,
    digest: &[u8; 32],
    record: Record,
    keep_until: u64,
    now: u64,
) {
    if P::LIFETIME != Lifetime::Request {
        let checked_until = if policy.shared { now.saturating_add(micros(MEMORY_CHECK)) } else { keep_until };
        gateway.cache_memory.insert(*digest, memory::Held { record: record.clone(), checked_until, keep_until });
    }
    if policy.shared {
        let ttl = Duration::from_micros(keep_until.saturating_sub(now).max(1));
        // A store that is down costs the fleet its copy, not the request its answer.
        let _ = ports.kv().set(&entry::record_key(digest), &record.encode(), Some(ttl)).await;
    }
}

/// The right to fetch an entry now, if no one else is: a marker in
/// memory, and where instances do not share memory (Spin's), a claim in
/// the store too.
async fn claim<P: Ports>(gateway: &Gateway, ports: &P, policy: &RouteCache, digest: &[u8; 32], wait: Duration) -> bool {
    let now = ports.clock().now();
    let local = P::LIFETIME != Lifetime::Request;
    if local && !gateway.cache_memory.fetching.compare_and_swap(*digest, None, (), Some(now.saturating_add(wait)), now)
    {
        return false;
    }
    if claims_in_store::<P>(policy) {
        let won = ports.kv().compare_and_swap(&entry::claim_key(digest), None, b"fetching", Some(wait)).await;
        // A store that cannot be asked must not stop the request.
        if won == Ok(false) {
            gateway.cache_memory.fetching.remove(digest);
            return false;
        }
    }
    true
}

fn claims_in_store<P: Ports>(policy: &RouteCache) -> bool {
    P::LIFETIME != Lifetime::Process && policy.shared
}

async fn release<P: Ports>(gateway: &Gateway, ports: &P, policy: &RouteCache, digest: &[u8; 32]) {
    gateway.cache_memory.fetching.remove(digest);
    if claims_in_store::<P>(policy) {
        let _ = ports.kv().delete(&entry::claim_key(digest)).await;
    }
}

/// Waits for another request's fetch: its fresh entry, or `None` once it
/// let go without keeping one (or the wait is over).
async fn wait_for<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    policy: &RouteCache,
    primary: &[u8; 32],
    digest: &[u8; 32],
    request: &HeaderMap,
    wait: Duration,
) -> Option<Arc<Entry>> {
    let deadline = ports.clock().monotonic().saturating_add(wait);
    while ports.clock().monotonic() < deadline {
        ports.clock().sleep(POLL).await;
        let held = gateway.cache_memory.fetching.get(digest, ports.clock().now()).is_some()
            || (claims_in_store::<P>(policy) && matches!(ports.kv().get(&entry::claim_key(digest)).await, Ok(Some(_))));
        let (found, _) = look(gateway, ports, policy, primary, request).await;
        if let Some(e) = found.filter(|e| now_us(ports.clock()) < e.fresh_until) {
            return Some(e);
        }
        if !held {
            return None;
        }
    }
    None
}

/// Leaves a purge mark here and in the store: every entry stored before it
/// that the purge names is dropped where it is next read.
pub(crate) async fn purge(
    memory: &Memory,
    kv: &impl KvStore,
    clock: &impl Clock,
    purge: &Purge,
) -> Result<u64, crate::ports::KvError> {
    let now = clock.now();
    let at = micros(now);
    let key = purge.mark_key();
    memory.mark(key.clone(), at, now.saturating_add(LONGEST_TTL), now);
    kv.set(&key, at.to_string().as_bytes(), Some(LONGEST_TTL)).await?;
    Ok(at)
}

/// What an operator's purge names, checked against the config: a route
/// with a cache, a tag, or a URL (`http://host/path?query`, the path
/// normalised as requests' are).
#[cfg(any(test, not(target_arch = "wasm32")))]
pub(crate) fn purge_target(
    config: &crate::config::Config,
    route: Option<&str>,
    tag: Option<&str>,
    url: Option<&str>,
) -> Result<Purge, String> {
    match (route, tag, url) {
        (Some(name), None, None) => match config.routes.iter().find(|r| &*r.name == name) {
            Some(r) if r.cache.is_some() => Ok(Purge::Route(name.to_string())),
            Some(_) => Err(format!("route `{name}` has no cache")),
            None => {
                let cached: Vec<&str> = config.routes.iter().filter(|r| r.cache.is_some()).map(|r| &*r.name).collect();
                let names = if cached.is_empty() { "none".to_string() } else { cached.join(", ") };
                Err(format!("no route named `{name}` (routes with a cache: {names})"))
            }
        },
        (None, Some(tag), None) if !tag.trim().is_empty() => Ok(Purge::Tag(tag.trim().to_string())),
        (None, None, Some(url)) => {
            let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
            let host = uri.host().filter(|_| uri.scheme().is_some()).ok_or_else(|| {
                format!("`{url}`: give the whole URL a client calls, e.g. https://api.example.com/v1/items?page=2")
            })?;
            let host = crate::pipeline::accept::bare_host(host);
            let path = crate::shared::path::normalize_path(uri.path(), config.gateway.path_parameters)
                .map_err(|e| format!("`{url}`: {e}"))?;
            Ok(Purge::Url(entry::url_digest(&host, &path, uri.query())))
        }
        _ => Err("name one of: a route, a tag or a URL".to_string()),
    }
}

enum Read<B> {
    Whole(Bytes),
    /// Longer than the limit: the body, whole again.
    TooLarge(B),
    Failed(String),
}

/// Reads a body up to `limit` bytes; a longer one is given back whole.
/// Trailers are not kept.
async fn read_up_to<C: HttpClient>(mut body: C::Body, limit: usize) -> Read<C::Body> {
    let mut buf = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Read::Whole(buf.freeze()),
            Some(Err(e)) => return Read::Failed(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Read::TooLarge(C::prefixed(buf.freeze(), body));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
