//! The response cache on the node: 100 concurrent misses reach the origin
//! once; an origin that goes away (connections refused, then its circuit
//! open) is stood in for by the stale entry before the route's fallback;
//! the admin API purges by tag, route and URL.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::support::origin::Origin;
use super::support::{Node, send};

fn config(origin_port: u16) -> String {
    format!(
        r#"
[services.echo]
url = "http://127.0.0.1:{origin_port}"
connect_timeout = "1s"
[services.echo.retry]
attempts = 1
[services.echo.breaker]
consecutive_failures = 2
failure_rate = "off"
open_for = "30s"

[[routes]]
name = "cached"
path = "/c/{{*rest}}"
service = "echo"
strip_prefix = "/c"
cache = {{ stale_if_error = "10m" }}
fallback = {{ status = 200, body = "static fallback" }}
"#
    )
}

fn cached(path: &str, cache_control: &str) -> Request<Bytes> {
    Request::get(path)
        .header("host", "gw.test")
        .header("x-echo-response-header", format!("cache-control: {cache_control}"))
        .header("x-echo-response-header", "cache-tag: catalogue, red")
        .body(Bytes::new())
        .unwrap()
}

fn status(reply: &super::support::Reply) -> String {
    reply.header("cache-status").unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_reach_the_origin_once() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(origin.port()), &[]);
    let answers =
        futures::future::join_all((0..100).map(|_| send(node.addr, cached("/c/delay/200/hot", "max-age=60")))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(origin.received().len(), 1, "collapsed forwarding");
    let statuses: Vec<String> = answers.iter().map(status).collect();
    assert_eq!(statuses.iter().filter(|s| s.contains("fwd=uri-miss")).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| s.ends_with("detail=collapsed")).count(), 99, "{statuses:?}");
    // The log and metrics say so, once the 100 lines are written.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines = node.access_log();
        let hot: Vec<_> = lines.iter().filter(|l| l["path"] == "/c/delay/200/hot").collect();
        if hot.len() == 100 || std::time::Instant::now() > deadline {
            assert_eq!(hot.iter().filter(|l| l["cache"] == "collapsed").count(), 99);
            assert_eq!(hot.iter().filter(|l| l["cache"] == "miss").count(), 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = send(node.metrics_addr.unwrap(), super::support::get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains(r#"portcullis_cache_total{route="cached",result="collapsed"} 99"#), "{text}");
    assert!(text.lines().any(|l| l.starts_with("portcullis_cache_memory_bytes ") && !l.ends_with(" 0")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_goes_away_is_stood_in_for_by_the_stale_entry_before_the_fallback() {
    // The origin runs on a runtime of its own, so it can be stopped.
    let (runtime, origin) = std::thread::spawn(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let origin = runtime.block_on(Origin::start("127.0.0.1:0")).unwrap();
        (runtime, origin)
    })
    .join()
    .unwrap();
    let node = Node::start(&config(origin.port()), &[]);
    let fresh = send(node.addr, cached("/c/catalogue", "max-age=1")).await;
    assert_eq!(fresh.status, 200);
    runtime.shutdown_background();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for expect_problem in ["upstream-unavailable", "upstream-unavailable", "circuit-open"] {
        let stale = send(node.addr, cached("/c/catalogue", "max-age=1")).await;
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body, fresh.body, "the last good answer");
        assert!(status(&stale).starts_with("portcullis; fwd=stale; ttl=-"), "{}", status(&stale));
        assert!(status(&stale).ends_with("detail=stale-if-error"), "{}", status(&stale));
        let line = node.wait_for_log(|l| l["path"] == "/c/catalogue" && l["problem"] == expect_problem);
        assert_eq!((&line["cache"], &line["fallback"]), (&"stale".into(), &serde_json::Value::Null));
    }
    // Nothing stored for this URL: the static fallback answers.
    let never_stored = send(node.addr, cached("/c/other", "max-age=1")).await;
    assert_eq!((never_stored.status, &never_stored.body[..]), (200, &b"static fallback"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_purges_by_tag_route_and_url() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start(&config(origin.port()), &[]);
    let admin = node.admin_addr.unwrap();
    let purge = |query: &str| {
        Request::post(format!("/cache/purge?{query}")).header("host", "admin").body(Bytes::new()).unwrap()
    };
    for (query, purged) in
        [("tag=red", "tag red"), ("route=cached", "route cached"), ("url=http%3A%2F%2Fgw.test%2Fc%2Fx%3Fa%3D1", "url ")]
    {
        send(node.addr, cached("/c/x?a=1", "max-age=600")).await;
        assert!(status(&send(node.addr, cached("/c/x?a=1", "max-age=600")).await).starts_with("portcullis; hit"));
        let done = send(admin, purge(query)).await;
        assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
        let said: serde_json::Value = serde_json::from_slice(&done.body).unwrap();
        assert!(said["purged"].as_str().unwrap().starts_with(purged), "{said}");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let after = send(node.addr, cached("/c/x?a=1", "max-age=600")).await;
        assert!(status(&after).contains("fwd=uri-miss"), "{query}: {}", status(&after));
    }
    let bad = send(admin, purge("route=nope")).await;
    assert_eq!(bad.status, 400);
    let problem: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("routes with a cache: cached"), "{problem}");
    assert_eq!(send(admin, purge("")).await.status, 400);
    assert_eq!(send(admin, super::support::get("/cache/purge?tag=red")).await.status, 405);
}
