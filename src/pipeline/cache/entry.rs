//! What the response cache keeps, and how it is written in the store
//! (`kv-schema/cache.md`): an entry (an answer with its times, route and
//! tags) or a Vary marker (the request headers that pick an entry), and
//! the keys both live under.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::ports::store_key;

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// When it was stored (µs since the epoch): purges before it drop it.
    pub(crate) stored_at: u64,
    /// Until when it is fresh, then may be served while revalidating, or
    /// when the origin fails (µs since the epoch).
    pub(crate) fresh_until: u64,
    pub(crate) swr_until: u64,
    pub(crate) sie_until: u64,
    /// The age it had when stored (s).
    pub(crate) age: u64,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The URL's digest ([`url_digest`]): a purge by URL names it.
    pub(crate) url: [u8; 32],
    pub(crate) route: Arc<str>,
    pub(crate) tags: Vec<String>,
}

/// The request headers (by name, lower case) whose values pick one of a
/// URL's entries, and a stamp that is part of every such entry's key: a
/// new marker (other names) orphans the entries of the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaryMarker {
    pub(crate) stamp: u64,
    pub(crate) names: Vec<HeaderName>,
}

/// One record under a cache key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Entry(Arc<Entry>),
    Vary(Arc<VaryMarker>),
}

impl Entry {
    /// The record's size in memory, roughly: what the in-memory level counts.
    pub(crate) fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 16).sum();
        self.body.len() + headers + self.route.len() + self.tags.iter().map(|t| t.len() + 8).sum::<usize>() + 160
    }

    /// Until when it is worth keeping: its last stale window, or (with
    /// validators, which make a revalidation cheap) a while longer.
    pub(crate) fn keep_until(&self) -> u64 {
        let last = self.fresh_until.max(self.swr_until).max(self.sie_until);
        let validators =
            self.headers.contains_key(http::header::ETAG) || self.headers.contains_key(http::header::LAST_MODIFIED);
        if validators { last.max(self.fresh_until.saturating_add(REVALIDATION_GRACE_US)) } else { last }
    }
}

/// How long an entry with validators outlives its freshness, to be
/// revalidated instead of fetched again.
const REVALIDATION_GRACE_US: u64 = 600_000_000;

const ENTRY: u8 = b'E';
const VARY: u8 = b'V';
const VERSION: u8 = 1;

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Self::Vary(m) => {
                w.0.extend_from_slice(&[VARY, VERSION]);
                w.u64(m.stamp);
                w.u32(m.names.len() as u32);
                m.names.iter().for_each(|n| w.bytes(n.as_str().as_bytes()));
            }
            Self::Entry(e) => {
                w.0.reserve(e.body.len() + 512);
                w.0.extend_from_slice(&[ENTRY, VERSION]);
                [e.stored_at, e.fresh_until, e.swr_until, e.sie_until, e.age].into_iter().for_each(|n| w.u64(n));
                w.u32(u32::from(e.status.as_u16()));
                w.0.extend_from_slice(&e.url);
                w.bytes(e.route.as_bytes());
                w.u32(e.tags.len() as u32);
                e.tags.iter().for_each(|t| w.bytes(t.as_bytes()));
                w.u32(e.headers.len() as u32);
                for (name, value) in &e.headers {
                    w.bytes(name.as_str().as_bytes());
                    w.bytes(value.as_bytes());
                }
                w.bytes(&e.body);
            }
        }
        w.0
    }

    /// `None` for anything this version did not write.
    pub(crate) fn decode(raw: &[u8]) -> Option<Self> {
        let mut r = Reader(raw);
        let kind = r.take(2)?;
        match (kind[0], kind[1]) {
            (VARY, VERSION) => {
                let stamp = r.u64()?;
                let names =
                    (0..r.u32()?).map(|_| HeaderName::from_bytes(r.bytes()?).ok()).collect::<Option<Vec<_>>>()?;
                r.0.is_empty().then(|| Self::Vary(Arc::new(VaryMarker { stamp, names })))
            }
            (ENTRY, VERSION) => {
                let [stored_at, fresh_until, swr_until, sie_until, age] =
                    [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
                let status = StatusCode::from_u16(u16::try_from(r.u32()?).ok()?).ok()?;
                let url: [u8; 32] = r.take(32)?.try_into().ok()?;
                let route: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).ok()?);
                let tags = (0..r.u32()?)
                    .map(|_| std::str::from_utf8(r.bytes()?).ok().map(str::to_string))
                    .collect::<Option<Vec<_>>>()?;
                let count = r.u32()?;
                let mut headers = HeaderMap::with_capacity(count.min(256) as usize);
                for _ in 0..count {
                    let name = HeaderName::from_bytes(r.bytes()?).ok()?;
                    headers.append(name, HeaderValue::from_bytes(r.bytes()?).ok()?);
                }
                let body = Bytes::copy_from_slice(r.bytes()?);
                r.0.is_empty().then(|| {
                    Self::Entry(Arc::new(Entry {
                        stored_at,
                        fresh_until,
                        swr_until,
                        sie_until,
                        age,
                        status,
                        headers,
                        body,
                        url,
                        route,
                        tags,
                    }))
                })
            }
            _ => None,
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// The digest a URL's entries and its purge mark are found by: host
/// (lower case, no port) and the path (normalised) with its query
/// (`path?query`, hashed in pieces).
pub(crate) fn url_digest(host: &str, path: &str, query: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"url\n");
    h.update(host.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    if let Some(query) = query {
        h.update(b"?");
        h.update(query.as_bytes());
    }
    h.finalize().into()
}

/// The primary key's digest: the URL, and the consumer where the route
/// keys answers by consumer (empty otherwise).
pub(crate) fn primary_digest(url: &[u8; 32], consumer: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(url);
    h.update(b"\n");
    h.update(consumer.as_bytes());
    h.finalize().into()
}

/// A variant's digest: the primary's, the marker's stamp, and the values
/// of the request headers it names (each header's lines joined by `,`).
pub(crate) fn variant_digest(primary: &[u8; 32], marker: &VaryMarker, request: &HeaderMap) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(primary);
    h.update(marker.stamp.to_be_bytes());
    for name in &marker.names {
        h.update(name.as_str().as_bytes());
        h.update(b":");
        for (i, v) in request.get_all(name).iter().enumerate() {
            if i > 0 {
                h.update(b",");
            }
            h.update(v.as_bytes().trim_ascii());
        }
        h.update(b"\n");
    }
    h.finalize().into()
}

/// The store key of a record.
pub(crate) fn record_key(digest: &[u8; 32]) -> String {
    store_key(&["pc1:c:"], digest)
}

/// The store key of the claim a request holds while it fetches an entry.
pub(crate) fn claim_key(digest: &[u8; 32]) -> String {
    store_key(&["pc1:cf:"], digest)
}

/// What a purge names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purge {
    Route(String),
    Tag(String),
    /// A URL's digest ([`url_digest`]).
    Url([u8; 32]),
}

impl Purge {
    /// The store key of its mark (`kv-schema/cache.md`).
    pub(crate) fn mark_key(&self) -> String {
        match self {
            Self::Route(name) => store_key(&["pc1:cp:r:"], &Sha256::digest(name.as_bytes())),
            Self::Tag(tag) => store_key(&["pc1:cp:t:"], &Sha256::digest(tag.as_bytes())),
            Self::Url(digest) => store_key(&["pc1:cp:u:"], digest),
        }
    }

    /// What it names, for an operator.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Route(name) => format!("route {name}"),
            Self::Tag(tag) => format!("tag {tag}"),
            Self::Url(digest) => format!("url {}", crate::shared::hex::hex(digest)),
        }
    }

    /// The purges that can drop an entry: its route's, its URL's, its tags'.
    pub(crate) fn of(entry: &Entry) -> impl Iterator<Item = Purge> + '_ {
        [Self::Route(entry.route.to_string()), Self::Url(entry.url)]
            .into_iter()
            .chain(entry.tags.iter().map(|t| Self::Tag(t.clone())))
    }
}

/// The tags a response header gives: words separated by commas or spaces,
/// at most [`MAX_TAGS`] of at most 128 bytes each.
pub(crate) fn tags(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut tags: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ' ']))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .map(str::to_string)
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags.truncate(MAX_TAGS);
    tags
}

/// Tags kept per entry: each is a store read when the entry is read from the store.
pub(crate) const MAX_TAGS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            stored_at: 1,
            fresh_until: 2,
            swr_until: 3,
            sie_until: 4,
            age: 5,
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"{\"x\":1}"),
            url: url_digest("example.com", "/a", Some("b=1")),
            route: Arc::from("items"),
            tags: vec!["t1".into(), "t2".into()],
        }
    }

    #[test]
    fn records_round_trip_and_anything_else_is_no_record() {
        let e = Record::Entry(Arc::new(entry()));
        assert_eq!(Record::decode(&e.encode()), Some(e.clone()));
        let v = Record::Vary(Arc::new(VaryMarker { stamp: 7, names: vec![HeaderName::from_static("accept")] }));
        assert_eq!(Record::decode(&v.encode()), Some(v));
        let raw = e.encode();
        for cut in [0, 1, 2, 10, raw.len() - 1] {
            assert_eq!(Record::decode(&raw[..cut]), None, "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), None);
        let mut other_version = raw;
        other_version[1] = 2;
        assert_eq!(Record::decode(&other_version), None);
    }

    #[test]
    fn variants_differ_by_the_named_headers_values_and_the_markers_stamp() {
        let primary = primary_digest(&url_digest("h", "/p", None), "");
        let marker = VaryMarker { stamp: 1, names: vec![HeaderName::from_static("accept-language")] };
        let mut de = HeaderMap::new();
        de.insert("accept-language", HeaderValue::from_static("de"));
        de.insert("accept", HeaderValue::from_static("text/html"));
        let mut fr = de.clone();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        let mut de_other_accept = de.clone();
        de_other_accept.insert("accept", HeaderValue::from_static("*/*"));
        let d = variant_digest(&primary, &marker, &de);
        assert_ne!(d, variant_digest(&primary, &marker, &fr));
        assert_eq!(d, variant_digest(&primary, &marker, &de_other_accept), "an unnamed header does not matter");
        let restamped = VaryMarker { stamp: 2, ..marker };
        assert_ne!(d, variant_digest(&primary, &restamped, &de));
    }

    #[test]
    fn consumers_and_urls_get_their_own_keys() {
        let url = url_digest("h", "/p", Some("x=1"));
        assert_ne!(url, url_digest("h", "/p", Some("x=2")));
        assert_ne!(url, url_digest("g", "/p", Some("x=1")));
        assert_ne!(primary_digest(&url, ""), primary_digest(&url, "keys:alice"));
        assert!(record_key(&url).starts_with("pc1:c:"));
        assert_eq!(record_key(&url).len(), "pc1:c:".len() + 64);
    }

    #[test]
    fn tags_are_split_deduplicated_and_bounded() {
        let mut h = HeaderMap::new();
        h.append("cache-tag", HeaderValue::from_static("b, a  c"));
        h.append("cache-tag", HeaderValue::from_static("a,d,e,f,g,h,i,j"));
        let name = HeaderName::from_static("cache-tag");
        assert_eq!(tags(&h, &name), ["a", "b", "c", "d", "e", "f", "g", "h"]);
    }
}
