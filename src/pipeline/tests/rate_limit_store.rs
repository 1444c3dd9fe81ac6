//! Rate limits on stores that fail, lie about swaps or have no atomics.

use super::rate_limits::{limited, limited_gateway, statuses};
use super::*;

#[test]
fn a_store_outage_fails_open_or_closed_per_policy() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    ports.kv.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let open = limited(&ports, &gw, "/limited", "a");
    assert_eq!(open.response.status(), StatusCode::OK);
    assert!(open.log.error.as_deref().unwrap().contains("request allowed"), "{:?}", open.log.error);
    assert_eq!((open.log.problem, open.log.source), (None, Some(Source::Store)), "survived, and logged by source");
    let closed = limited(&ports, &gw, "/strict", "a");
    assert_eq!(closed.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem(&closed.response)["type"], "urn:portcullis:problem:rate-limit-unavailable");
    assert_eq!((closed.log.problem, closed.log.source), (Some("rate-limit-unavailable"), Some(Source::Store)));
    let line: serde_json::Value = serde_json::from_str(&closed.log.to_line()).unwrap();
    assert_eq!((line["problem"].as_str(), line["source"].as_str()), (Some("rate-limit-unavailable"), Some("store")));
    ports.kv.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(limited(&ports, &gw, "/strict", "a").response.status(), StatusCode::OK, "recovers with the store");
}

#[test]
fn compare_and_swap_limits_match_the_memory_store() {
    // Also where the store reports each swap as failed after committing it.
    for lying in [false, true] {
        let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
        ports.kv.spin_like.store(true, std::sync::atomic::Ordering::SeqCst);
        ports.kv.spin.store.set_lying(lying);
        assert_eq!(statuses(&ports, &gw, "/limited", 3), [200, 200, 429], "lying: {lying}");
        let other = limited(&ports, &gw, "/limited", "b");
        assert_eq!(other.response.headers()["ratelimit"], "\"per_client\";r=1;t=1, \"hourly\";r=2;t=108");
        assert_eq!(ports.kv.spin.store.swaps(), 2 * 2 + 2, "each admitted request wrote each of its keys once");
    }
}

#[test]
fn best_effort_limits_work_on_a_store_without_atomics_and_exact_ones_do_not() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    ports.kv.spin_like.store(true, std::sync::atomic::Ordering::SeqCst);
    ports.kv.spin.store.set_no_atomics(true);
    // Exact, fail-closed: the missing compare-and-swap is a store failure.
    let strict = limited(&ports, &gw, "/strict", "a");
    assert_eq!(strict.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(strict.log.error.as_deref().unwrap().contains("no atomic"), "{:?}", strict.log.error);
    // Best effort (also fail-closed): counted with plain sets, still limits.
    assert_eq!(statuses(&ports, &gw, "/loose", 3), [200, 200, 429]);
    ports.clock.advance(Duration::from_millis(500));
    let again = limited(&ports, &gw, "/loose", "a");
    assert_eq!(again.response.status(), StatusCode::OK, "one token back after half a second");
    assert_eq!(again.response.headers()["ratelimit"], "\"loose\";r=0;t=1");
}
