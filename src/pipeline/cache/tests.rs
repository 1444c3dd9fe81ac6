//! The cache phase through the whole pipeline, with in-memory ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::super::tests::run_with;
use super::super::{Downstream, Exchange, Gateway, Scheme};
use crate::config::Config;
use crate::ports::testing::{FakeHttp, FakePorts};
use crate::ports::{Clock, UpstreamError};

const CONFIG: &str = r#"
[services.api]
url = "http://api.internal"

[[routes]]
name = "items"
path = "/items/{*rest}"
service = "api"
cache = { ttl = "30s", stale_if_error = "1h" }

[[routes]]
name = "mine"
path = "/mine"
service = "api"
auth = { any_of = ["keys"] }
cache = { by_consumer = true, max_entry_size = "16B" }
fallback = { status = 200, body = "static" }

[[routes]]
name = "local"
path = "/local"
service = "api"
cache = { shared = false, ttl = "1m" }

[auth.api_key.keys]
strip_credential = false
consumers = [
  { id = "alice", key_sha256 = "72ee9d4355ccb9d3a4c9dbf37382e38e75c1b1a225b5bd1f729ee91bbda30c20" },
  { id = "bob", key_sha256 = "9b94dc1a51a38769f135edf04033ad7f2f487b6c25929be7a861cfc1ab10cf98" },
]
"#;

fn gateway() -> Gateway {
    Gateway::new(Config::parse(CONFIG, "test.toml", &Default::default()).unwrap())
}

fn from() -> Downstream {
    Downstream::plain("198.51.100.7".parse().unwrap(), Scheme::Http)
}

/// An origin that counts its calls and answers with `respond`.
fn origin(
    respond: impl Fn(&Request<Bytes>, usize) -> Result<Response<Bytes>, UpstreamError> + Send + Sync + 'static,
) -> (FakePorts, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let ports = FakePorts::new(FakeHttp::new(move |req| respond(req, counted.fetch_add(1, Ordering::SeqCst) + 1)));
    (ports, calls)
}

fn answer(cc: &str, body: &str) -> Response<Bytes> {
    let mut resp = Response::builder().header("content-type", "text/plain");
    if !cc.is_empty() {
        resp = resp.header("cache-control", cc);
    }
    resp.body(Bytes::from(body.to_string())).unwrap()
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
    let mut req = Request::get(path).header("host", "gw.example.com");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.body(Bytes::new()).unwrap()
}

fn send(g: &Gateway, ports: &FakePorts, req: Request<Bytes>) -> Exchange<Bytes> {
    run_with(g, ports, req, from())
}

fn status_of(ex: &Exchange<Bytes>) -> String {
    ex.response.headers().get("cache-status").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[test]
fn a_miss_is_stored_then_hits_until_it_is_stale_with_its_age() {
    let (ports, calls) = origin(|_, n| Ok(answer("max-age=60", &format!("v{n}"))));
    let g = gateway();
    let first = send(&g, &ports, get("/items/a?x=1", &[]));
    assert_eq!(status_of(&first), "portcullis; fwd=uri-miss; fwd-status=200; stored; ttl=60");
    assert_eq!(first.response.body(), "v1");
    assert_eq!(first.log.cache, Some(super::CacheResult::Miss));
    ports.clock.advance(Duration::from_secs(20));
    let hit = send(&g, &ports, get("/items/a?x=1", &[]));
    assert_eq!((hit.response.body().as_ref(), calls.load(Ordering::SeqCst)), (b"v1".as_ref(), 1));
    assert_eq!(status_of(&hit), "portcullis; hit; ttl=40");
    assert_eq!(hit.response.headers()["age"], "20");
    assert_eq!(hit.response.headers()["content-length"], "2", "framed by its length");
    assert_eq!(hit.log.cache, Some(super::CacheResult::Hit));
    assert_eq!(hit.log.upstream, None, "no origin was asked");
    let other_query = send(&g, &ports, get("/items/a?x=2", &[]));
    assert_eq!(other_query.response.body(), "v2");
    ports.clock.advance(Duration::from_secs(41));
    let expired = send(&g, &ports, get("/items/a?x=1", &[]));
    assert_eq!(expired.response.body(), "v3");
    assert_eq!(status_of(&expired), "portcullis; fwd=stale; fwd-status=200; stored; ttl=60");
}

#[test]
fn a_stale_entry_is_revalidated_with_its_validators_and_a_304_refreshes_it() {
    let (ports, calls) = origin(|req, n| {
        if n > 1 {
            assert_eq!(req.headers()["if-none-match"], "\"v1\"", "the entry's validator, not the client's");
            let mut resp = Response::new(Bytes::new());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().insert("cache-control", "max-age=100".parse().unwrap());
            return Ok(resp);
        }
        let mut resp = answer("max-age=10", "body-1");
        resp.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
        Ok(resp)
    });
    let g = gateway();
    send(&g, &ports, get("/items/r", &[]));
    ports.clock.advance(Duration::from_secs(11));
    let revalidated = send(&g, &ports, get("/items/r", &[("if-none-match", "\"other\"")]));
    assert_eq!(revalidated.response.status(), 200);
    assert_eq!(revalidated.response.body(), "body-1");
    assert_eq!(revalidated.response.headers()["cache-control"], "max-age=100", "the 304's headers win");
    assert_eq!(status_of(&revalidated), "portcullis; fwd=stale; fwd-status=304; stored; ttl=100");
    ports.clock.advance(Duration::from_secs(50));
    let hit = send(&g, &ports, get("/items/r", &[]));
    assert_eq!((status_of(&hit).as_str(), calls.load(Ordering::SeqCst)), ("portcullis; hit; ttl=50", 2));
}

#[test]
fn a_client_whose_validators_match_gets_304_from_the_cache() {
    let (ports, _) = origin(|_, _| {
        let mut resp = answer("max-age=60", "body");
        resp.headers_mut().insert("etag", "W/\"e1\"".parse().unwrap());
        resp.headers_mut().insert("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT".parse().unwrap());
        Ok(resp)
    });
    let g = gateway();
    let first = send(&g, &ports, get("/items/c", &[("if-none-match", "\"e1\"")]));
    assert_eq!(first.response.status(), 304, "stored whole, then answered by the client's validators");
    let o = ports.http.last().unwrap();
    assert!(o.headers().get("if-none-match").is_none(), "the client's validators stayed with the gateway");
    let hit = send(&g, &ports, get("/items/c", &[("if-none-match", "\"e1\"")]));
    assert_eq!((hit.response.status(), hit.response.body().len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(hit.response.headers()["etag"], "W/\"e1\"");
    assert!(hit.response.headers().get("content-type").is_none());
    let since = send(&g, &ports, get("/items/c", &[("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")]));
    assert_eq!(since.response.status(), 304);
    let changed = send(&g, &ports, get("/items/c", &[("if-none-match", "\"e0\"")]));
    assert_eq!((changed.response.status(), changed.response.body().as_ref()), (StatusCode::OK, b"body".as_ref()));
}

#[test]
fn answers_vary_by_the_headers_the_origin_names() {
    let (ports, calls) = origin(|req, _| {
        let lang = req.headers().get("accept-language").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let mut resp = answer("max-age=60", &format!("lang={lang}"));
        resp.headers_mut().insert("vary", "Accept-Language".parse().unwrap());
        Ok(resp)
    });
    let g = gateway();
    for lang in ["de", "fr", "de", "fr"] {
        let ex = send(&g, &ports, get("/items/v", &[("accept-language", lang)]));
        assert_eq!(ex.response.body(), format!("lang={lang}").as_str());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let third = send(&g, &ports, get("/items/v", &[("accept-language", "it")]));
    assert!(status_of(&third).contains("fwd=vary-miss"), "{}", status_of(&third));
}

#[test]
fn what_may_not_be_shared_is_not_stored_or_not_looked_up() {
    let (ports, calls) = origin(|req, n| {
        let cc = match req.uri().path() {
            "/items/private" => "private, max-age=60",
            "/items/no-store" => "no-store",
            _ => "max-age=60",
        };
        let mut resp = answer(cc, &format!("v{n}"));
        if req.uri().path() == "/items/cookie" {
            resp.headers_mut().insert("set-cookie", "s=1".parse().unwrap());
        }
        Ok(resp)
    });
    let g = gateway();
    for (path, detail) in
        [("/items/private", "private"), ("/items/no-store", "no-store"), ("/items/cookie", "set-cookie")]
    {
        let before = calls.load(Ordering::SeqCst);
        send(&g, &ports, get(path, &[]));
        let again = send(&g, &ports, get(path, &[]));
        assert_eq!(calls.load(Ordering::SeqCst), before + 2, "{path}");
        assert!(status_of(&again).ends_with(&format!("detail={detail}")), "{}", status_of(&again));
    }
    send(&g, &ports, get("/items/shared", &[]));
    let credentialed = send(&g, &ports, get("/items/shared", &[("authorization", "Bearer x")]));
    assert_eq!(status_of(&credentialed), "portcullis; fwd=bypass; detail=authenticated");
    assert_eq!(credentialed.log.cache, Some(super::CacheResult::Bypass));
    let no_store = send(&g, &ports, get("/items/shared", &[("cache-control", "no-store")]));
    assert_eq!(status_of(&no_store), "portcullis; fwd=request; detail=no-store");
    let head =
        send(&g, &ports, Request::head("/items/shared").header("host", "gw.example.com").body(Bytes::new()).unwrap());
    assert_eq!(status_of(&head), "portcullis; fwd=method; detail=method");
    let forced = send(&g, &ports, get("/items/shared", &[("cache-control", "no-cache")]));
    assert!(
        status_of(&forced).starts_with("portcullis; fwd=request; fwd-status=200; stored"),
        "{}",
        status_of(&forced)
    );
}

#[test]
fn answers_to_consumers_are_kept_for_each_and_shared_with_no_one() {
    let (ports, calls) = origin(|req, _| {
        let who = req.headers().get("x-api-key").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Ok(answer("max-age=60", &who))
    });
    let g = gateway();
    let alice = [("x-api-key", "alice-key")];
    let bob = [("x-api-key", "bob-key")];
    assert_eq!(send(&g, &ports, get("/mine", &alice)).response.body(), "alice-key");
    assert_eq!(send(&g, &ports, get("/mine", &bob)).response.body(), "bob-key");
    assert_eq!(send(&g, &ports, get("/mine", &alice)).response.body(), "alice-key");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let anonymous = send(&g, &ports, get("/mine", &[]));
    assert_eq!(anonymous.response.status(), 401);
    assert_eq!(status_of(&anonymous), "portcullis; fwd=bypass", "answered before the cache looked");
}

#[test]
fn an_entry_larger_than_the_limit_is_served_whole_and_not_kept() {
    let (ports, calls) = origin(|_, _| Ok(answer("max-age=60", "0123456789abcdefXYZ")));
    let g = gateway();
    let key = [("x-api-key", "alice-key")];
    for _ in 0..2 {
        let ex = send(&g, &ports, get("/mine", &key));
        assert_eq!(ex.response.body(), "0123456789abcdefXYZ");
        assert!(status_of(&ex).ends_with("detail=too-large"), "{}", status_of(&ex));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_write_purges_its_url_and_a_failed_one_does_not() {
    let (ports, calls) = origin(|req, n| {
        if req.method() == "DELETE" && req.uri().path() == "/items/fails" {
            let mut resp = answer("", "no");
            *resp.status_mut() = StatusCode::CONFLICT;
            return Ok(resp);
        }
        Ok(answer("max-age=60", &format!("v{n}")))
    });
    let g = gateway();
    for path in ["/items/w", "/items/fails"] {
        send(&g, &ports, get(path, &[]));
        let delete = Request::delete(path).header("host", "gw.example.com").body(Bytes::new()).unwrap();
        let ex = send(&g, &ports, delete);
        assert_eq!(ex.log.cache, Some(super::CacheResult::Invalidated));
    }
    ports.clock.advance(Duration::from_micros(1));
    let before = calls.load(Ordering::SeqCst);
    let after_delete = send(&g, &ports, get("/items/w", &[]));
    assert!(status_of(&after_delete).contains("fwd=uri-miss"), "{}", status_of(&after_delete));
    let kept = send(&g, &ports, get("/items/fails", &[]));
    assert_eq!(status_of(&kept), "portcullis; hit; ttl=59", "59.999999 s left");
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
}

#[test]
fn a_stale_entry_stands_in_for_a_failing_origin_before_the_fallback() {
    let fail = Arc::new(AtomicUsize::new(0));
    let failing = fail.clone();
    let (ports, _) = origin(move |_, _| match failing.load(Ordering::SeqCst) {
        0 => Ok(answer("max-age=5", "good")),
        1 => {
            let mut resp = answer("", "down");
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok(resp)
        }
        _ => Err(UpstreamError::Connect("refused".into())),
    });
    let g = gateway();
    send(&g, &ports, get("/items/s", &[]));
    ports.clock.advance(Duration::from_secs(10));
    fail.store(1, Ordering::SeqCst);
    let on_503 = send(&g, &ports, get("/items/s", &[]));
    assert_eq!((on_503.response.status(), on_503.response.body().as_ref()), (StatusCode::OK, b"good".as_ref()));
    assert_eq!(status_of(&on_503), "portcullis; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error");
    assert_eq!(on_503.log.cache, Some(super::CacheResult::Stale));
    assert!(on_503.log.error.as_deref().unwrap().contains("503"), "{:?}", on_503.log.error);
    fail.store(2, Ordering::SeqCst);
    let unreachable = send(&g, &ports, get("/items/s", &[]));
    assert_eq!(unreachable.response.body(), "good");
    assert_eq!(unreachable.log.problem, Some("upstream-unavailable"));
    assert!(!unreachable.log.fallback);
    // Nothing stored: the route's fallback answers.
    let key = [("x-api-key", "alice-key")];
    let fallback = send(&g, &ports, get("/mine", &key));
    assert_eq!((fallback.response.body().as_ref(), fallback.log.fallback), (b"static".as_ref(), true));
}

#[test]
fn a_tag_purge_in_the_store_reaches_another_node_within_a_second() {
    let (ports, calls) = origin(|req, n| {
        let mut resp = answer("max-age=600", &format!("v{n}"));
        let tag = if req.uri().path() == "/items/t1" { "red blue" } else { "green" };
        resp.headers_mut().insert("cache-tag", tag.parse().unwrap());
        Ok(resp)
    });
    let (a, b) = (gateway(), gateway());
    send(&a, &ports, get("/items/t1", &[]));
    send(&a, &ports, get("/items/t2", &[]));
    let from_store = send(&b, &ports, get("/items/t1", &[]));
    assert_eq!((status_of(&from_store).as_str(), calls.load(Ordering::SeqCst)), ("portcullis; hit; ttl=600", 2));
    ports.clock.advance(Duration::from_millis(10));
    let purge = super::entry::Purge::Tag("blue".into());
    crate::ports::testing::block_on(super::purge(&a.cache_memory, &ports.kv, &ports.clock, &purge)).unwrap();
    ports.clock.advance(Duration::from_millis(1));
    assert!(status_of(&send(&a, &ports, get("/items/t1", &[]))).contains("fwd=uri-miss"), "at once where purged");
    assert!(status_of(&send(&b, &ports, get("/items/t1", &[]))).contains("hit"), "b's copy is checked within a second");
    ports.clock.advance(Duration::from_secs(1));
    let b_after = send(&b, &ports, get("/items/t1", &[]));
    assert_eq!(b_after.response.body(), "v3", "b reads a's refetched entry: {}", status_of(&b_after));
    assert!(status_of(&send(&b, &ports, get("/items/t2", &[]))).contains("hit"), "another tag stays");
}

#[test]
fn a_route_that_does_not_share_keeps_entries_in_memory_only() {
    let (ports, calls) = origin(|_, n| Ok(answer("", &format!("v{n}"))));
    let (a, b) = (gateway(), gateway());
    send(&a, &ports, get("/local", &[]));
    ports.clock.advance(Duration::from_secs(5));
    assert_eq!(send(&a, &ports, get("/local", &[])).response.body(), "v1", "the route's ttl: 1 minute");
    assert_eq!(send(&b, &ports, get("/local", &[])).response.body(), "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn purge_targets_are_checked_against_the_config() {
    let config = gateway().config;
    let target = |r: Option<&str>, t: Option<&str>, u: Option<&str>| super::purge_target(&config, r, t, u);
    assert_eq!(target(Some("items"), None, None), Ok(super::entry::Purge::Route("items".into())));
    assert!(target(Some("nope"), None, None).unwrap_err().contains("routes with a cache: items, mine, local"));
    let url = target(None, None, Some("https://GW.example.com:8443/items/./a?x=1")).unwrap();
    assert_eq!(url, super::entry::Purge::Url(super::entry::url_digest("gw.example.com", "/items/a", Some("x=1"))));
    assert!(target(None, None, Some("/items/a")).unwrap_err().contains("whole URL"));
    assert!(target(None, None, None).is_err());
    assert!(target(Some("items"), Some("t"), None).is_err());
}

#[test]
fn kv_schema_cache_matches_the_code() {
    let doc = include_str!("../../../kv-schema/cache.md");
    let block = |tag: &str| crate::ports::testing::doc_block(doc, tag);
    let hex64 = crate::ports::testing::is_sha256_hex;
    let url = super::entry::url_digest("gw.example.com", "/items/a", Some("x=1"));
    let record = super::entry::record_key(&url);
    assert!(hex64(record.strip_prefix(block("text key").strip_suffix("{sha256-hex}").unwrap()).unwrap()));
    let claim = super::entry::claim_key(&url);
    assert!(hex64(claim.strip_prefix(block("text claim key").strip_suffix("{sha256-hex}").unwrap()).unwrap()));
    let marks = block("text mark key");
    let purges =
        [super::entry::Purge::Route("r".into()), super::entry::Purge::Tag("t".into()), super::entry::Purge::Url(url)];
    for (layout, purge) in marks.lines().zip(purges) {
        assert!(
            hex64(purge.mark_key().strip_prefix(layout.strip_suffix("{sha256-hex}").unwrap()).unwrap()),
            "{layout}"
        );
    }
    // The record layout: the kind and version bytes, the documented field order.
    let values = block("text value");
    let entry = super::entry::Record::Entry(Arc::new(super::entry::Entry {
        stored_at: 1,
        fresh_until: 2,
        swr_until: 3,
        sie_until: 4,
        age: 5,
        status: StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: Bytes::from_static(b"b"),
        url,
        route: Arc::from("r"),
        tags: vec![],
    }));
    let raw = entry.encode();
    assert_eq!(&raw[..2], b"E\x01");
    assert!(values.starts_with("E 1  stored_at fresh_until swr_until sie_until age"));
    assert_eq!(raw[2..10], 1u64.to_be_bytes(), "stored_at first");
    assert_eq!(raw[34..42], 5u64.to_be_bytes(), "age fifth");
    assert_eq!(raw[42..46], 200u32.to_be_bytes(), "then the status");
    assert_eq!(raw[46..78], url, "then the URL digest");
    assert_eq!(raw[78..83], [0, 0, 0, 1, b'r'], "then the route, a field");
    assert!(values.contains("\nV 1  stamp (u64)"));
    let mark = block("text mark value");
    assert!(mark.parse::<u64>().is_ok(), "a mark is decimal µs");
}

#[test]
fn a_stale_entry_answers_while_another_request_revalidates_it() {
    let (ports, calls) = origin(|_, n| Ok(answer("max-age=10, stale-while-revalidate=30", &format!("v{n}"))));
    let g = gateway();
    send(&g, &ports, get("/items/swr", &[]));
    ports.clock.advance(Duration::from_secs(15));
    // Another request holds the claim to fetch: this one gets the stale entry.
    let primary = super::entry::primary_digest(&super::entry::url_digest("gw.example.com", "/items/swr", None), "");
    let now = ports.clock.now();
    assert!(g.cache_memory.fetching.compare_and_swap(primary, None, (), Some(now + Duration::from_secs(5)), now));
    let stale = send(&g, &ports, get("/items/swr", &[]));
    assert_eq!(stale.response.body(), "v1");
    assert_eq!(status_of(&stale), "portcullis; hit; ttl=-5; detail=stale-while-revalidate");
    assert_eq!(stale.log.cache, Some(super::CacheResult::Stale));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Once no one is fetching, the next request revalidates (and waits for it).
    g.cache_memory.fetching.remove(&primary);
    let fetched = send(&g, &ports, get("/items/swr", &[]));
    assert_eq!((fetched.response.body().as_ref(), calls.load(Ordering::SeqCst)), (b"v2".as_ref(), 2));
    // Past the window, a stale entry is not served even while another fetches.
    ports.clock.advance(Duration::from_secs(45));
    let now = ports.clock.now();
    assert!(g.cache_memory.fetching.compare_and_swap(primary, None, (), Some(now + Duration::from_millis(50)), now));
    let waited = send(&g, &ports, get("/items/swr", &[]));
    assert_eq!(waited.response.body(), "v3", "waited out the other fetch, then fetched");
}

#[test]
fn entries_carry_their_expiry_in_a_store_that_expires_nothing_and_the_sweep_removes_them() {
    let (ports, _) = origin(|_, _| Ok(answer("max-age=60", "kept")));
    ports.kv.spin_like.store(true, Ordering::SeqCst);
    let g = gateway();
    send(&g, &ports, get("/items/swept", &[]));
    let from_store = send(&gateway(), &ports, get("/items/swept", &[]));
    assert_eq!(status_of(&from_store), "portcullis; hit; ttl=60", "read back through the envelope");
    let sweep = |ports: &FakePorts| {
        crate::ports::testing::block_on(crate::ports::KvStore::sweep(&ports.kv, None, 100)).unwrap()
    };
    // Kept through the route's stale_if_error window (1 h) past its freshness.
    ports.clock.advance(Duration::from_secs(3600));
    assert_eq!(sweep(&ports).deleted, 0);
    ports.clock.advance(Duration::from_secs(61));
    let report = sweep(&ports);
    assert_eq!((report.examined, report.deleted), (1, 1), "{report:?}");
}
