//! Rate limits: headers, 429, tiers and costs.

use super::*;
use crate::pipeline::{leases, rate_limit};

const LIMITED: &str = r#"
[limits.per_client]
rate = "2/s"
key = "header:x-client"
legacy_headers = true

[limits.hourly]
rate = "100/hour"
burst = 5

[limits.gold]
rate = "1000/s"
groups = ["gold"]

[limits.pricey]
rate = "10/s"
burst = 3
cost = 5

[limits.strict]
rate = "10/s"
on_store_error = "deny"

[limits.loose]
rate = "2/s"
consistency = "best_effort"
on_store_error = "deny"

[auth.api_key.keys]
consumers = [{ id = "acme", groups = ["gold"], key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]

[services.s]
url = "http://o.test"

[[routes]]
path = "/limited"
service = "s"
limits = ["per_client", "hourly"]

[[routes]]
path = "/tiered"
service = "s"
auth = { any_of = ["keys"] }
limits = ["gold"]

[[routes]]
path = "/pricey"
service = "s"
limits = ["pricey"]

[[routes]]
path = "/strict"
service = "s"
limits = ["strict", "hourly"]

[[routes]]
path = "/loose"
service = "s"
limits = ["loose"]
"#;

pub(super) fn limited(ports: &FakePorts, gw: &Gateway, path: &str, client: &str) -> Exchange<Bytes> {
    let req = Request::get(path)
        .header("host", "gw.example.com")
        .header("x-client", client)
        .header("x-api-key", "acme-secret-key")
        .body(Bytes::new())
        .unwrap();
    run_with(gw, ports, req, peer("198.51.100.7"))
}

/// The statuses of `n` requests in a row from client `a`.
pub(super) fn statuses(ports: &FakePorts, gw: &Gateway, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| limited(ports, gw, path, "a").response.status().as_u16()).collect()
}

pub(super) fn limited_gateway() -> Gateway {
    Gateway::new(Config::parse(LIMITED, "limits.toml", &Default::default()).unwrap())
}

#[test]
fn rate_limits_answer_with_ietf_headers_and_429() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    let first = limited(&ports, &gw, "/limited", "a");
    assert_eq!(first.response.status(), StatusCode::OK);
    let h = first.response.headers();
    assert_eq!(h["ratelimit-policy"], "\"per_client\";q=2;w=1, \"hourly\";q=5;w=180");
    assert_eq!(h["ratelimit"], "\"per_client\";r=1;t=1, \"hourly\";r=4;t=36");
    assert_eq!(
        (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
        (&"2".parse::<http::HeaderValue>().unwrap(), &"1".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(limited(&ports, &gw, "/limited", "a").response.status(), StatusCode::OK);
    let refused = limited(&ports, &gw, "/limited", "a");
    assert_eq!(refused.response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.response.headers()["retry-after"], "1");
    assert_eq!(problem(&refused.response)["type"], "urn:portcullis:problem:rate-limited");
    assert!(refused.response.headers().contains_key("ratelimit"));
    assert_eq!(ports.http.sent.lock().unwrap().len(), 2, "the refused request never reached the origin");
    // Another client has its own per-client bucket; the hourly one is shared by IP.
    let other = limited(&ports, &gw, "/limited", "b");
    assert_eq!(other.response.status(), StatusCode::OK);
    assert_eq!(
        other.response.headers()["ratelimit"],
        "\"per_client\";r=1;t=1, \"hourly\";r=2;t=108",
        "the refusal charged no limit"
    );
    // Waiting Retry-After admits it again.
    ports.clock.advance(Duration::from_secs(1));
    assert_eq!(limited(&ports, &gw, "/limited", "a").response.status(), StatusCode::OK);
}

#[test]
fn tiers_apply_to_their_groups_only_and_costs_beyond_the_burst_never_pass() {
    let (ports, gw) = (FakePorts::new(FakeHttp::ok()), limited_gateway());
    let tiered = limited(&ports, &gw, "/tiered", "a");
    assert_eq!(tiered.response.headers()["ratelimit-policy"], "\"gold\";q=1000;w=1");
    assert!(tiered.log.to_line().contains("\"identity\":\"keys:acme\""), "{}", tiered.log.to_line());
    assert!(limited(&ports, &gw, "/limited", "a").log.to_line().contains("\"identity\":null"));
    let pricey = limited(&ports, &gw, "/pricey", "a");
    assert_eq!(pricey.response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(pricey.response.headers().get("retry-after").is_none(), "waiting would not help");
}

const QUOTAS: &str = r#"
[limits.monthly]
quota = "3/month"
key = "header:x-client"
warn_at = ["60%", "100%"]

[limits.hourly]
rate = "1/hour"
key = "header:x-client"

[services.s]
url = "http://o.test"

[[routes]]
path = "/quota"
service = "s"
limits = ["monthly"]

[[routes]]
path = "/both"
service = "s"
limits = ["monthly", "hourly"]
"#;

#[test]
fn a_quota_counts_a_calendar_month_warns_and_renews_at_its_boundary() {
    for spin_like in [false, true] {
        let ports = FakePorts::new(FakeHttp::ok());
        ports.kv.spin_like.store(spin_like, std::sync::atomic::Ordering::SeqCst);
        let gw = Gateway::new(Config::parse(QUOTAS, "quotas.toml", &Default::default()).unwrap());
        // 2026-01-31T23:59:59Z: a second before February.
        ports.clock.advance(Duration::from_secs(31 * 86_400 - 1));
        let h =
            |e: &Exchange<Bytes>, name: &str| e.response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let first = limited(&ports, &gw, "/quota", "a");
        assert_eq!(first.response.status(), StatusCode::OK);
        assert_eq!(h(&first, "ratelimit-policy").as_deref(), Some("\"monthly\";q=3;w=2678400"), "January: 31 days");
        assert_eq!(h(&first, "ratelimit").as_deref(), Some("\"monthly\";r=2;t=1"));
        assert_eq!(h(&first, "quota-warning"), None, "a third is below 60 %");
        let second = limited(&ports, &gw, "/quota", "a");
        assert_eq!(h(&second, "quota-warning").as_deref(), Some("\"monthly\";threshold=60;used=2;q=3;t=1"));
        let third = limited(&ports, &gw, "/quota", "a");
        assert_eq!(h(&third, "quota-warning").as_deref(), Some("\"monthly\";threshold=100;used=3;q=3;t=1"));
        let spent = limited(&ports, &gw, "/quota", "a");
        assert_eq!(spent.response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(problem(&spent.response)["type"], "urn:portcullis:problem:quota-exceeded");
        assert_eq!(h(&spent, "retry-after").as_deref(), Some("1"));
        assert_eq!(limited(&ports, &gw, "/quota", "b").response.status(), StatusCode::OK, "another caller's own count");
        // February: the count starts again, and the window is 28 days.
        ports.clock.advance(Duration::from_secs(1));
        let renewed = limited(&ports, &gw, "/quota", "a");
        assert_eq!(renewed.response.status(), StatusCode::OK, "spin-like store: {spin_like}");
        assert_eq!(h(&renewed, "ratelimit-policy").as_deref(), Some("\"monthly\";q=3;w=2419200"));
        assert_eq!(h(&renewed, "ratelimit").as_deref(), Some("\"monthly\";r=2;t=2419200"));
    }
}

/// A daily quota in Berlin renews at local midnight, and the day the
/// clocks go forward is 23 hours long (`w`, and `t` at its start).
#[test]
fn a_quota_in_an_iana_zone_renews_at_local_midnight_across_a_clock_change() {
    let config = QUOTAS.replace(
        "[limits.hourly]",
        "[limits.berlin]\nquota = \"1/day\"\nkey = \"header:x-client\"\ntime_zone = \"Europe/Berlin\"\n\n[limits.hourly]",
    ) + "\n[[routes]]\npath = \"/berlin\"\nservice = \"s\"\nlimits = [\"berlin\"]\n";
    let ports = FakePorts::new(FakeHttp::ok());
    let gw = Gateway::new(Config::parse(&config, "quotas.toml", &Default::default()).unwrap());
    // 2026-03-28T22:59:59Z: a second before midnight in Berlin (CET).
    ports.clock.advance(Duration::from_secs(7_513_199));
    let h = |e: &Exchange<Bytes>, name: &str| e.response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let last = limited(&ports, &gw, "/berlin", "a");
    assert_eq!(h(&last, "ratelimit-policy").as_deref(), Some("\"berlin\";q=1;w=86400"));
    assert_eq!(h(&last, "ratelimit").as_deref(), Some("\"berlin\";r=0;t=1"));
    assert_eq!(limited(&ports, &gw, "/berlin", "a").response.status(), StatusCode::TOO_MANY_REQUESTS);
    ports.clock.advance(Duration::from_secs(1));
    let next = limited(&ports, &gw, "/berlin", "a");
    assert_eq!(next.response.status(), StatusCode::OK, "a new day in Berlin, 23:00 in UTC");
    assert_eq!(h(&next, "ratelimit-policy").as_deref(), Some("\"berlin\";q=1;w=82800"), "23 hours");
    assert_eq!(h(&next, "ratelimit").as_deref(), Some("\"berlin\";r=0;t=82800"));
}

#[test]
fn a_quota_and_a_rate_pass_together_or_neither_is_charged() {
    let ports = FakePorts::new(FakeHttp::ok());
    let gw = Gateway::new(Config::parse(QUOTAS, "quotas.toml", &Default::default()).unwrap());
    assert_eq!(limited(&ports, &gw, "/both", "a").response.status(), StatusCode::OK);
    let refused = limited(&ports, &gw, "/both", "a");
    assert_eq!(refused.response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem(&refused.response)["type"], "urn:portcullis:problem:rate-limited", "the rate refused");
    assert!(refused.response.headers()["ratelimit"].to_str().unwrap().starts_with("\"monthly\";r=2;"));
    ports.clock.advance(Duration::from_secs(3600));
    let next = limited(&ports, &gw, "/both", "a");
    assert!(
        next.response.headers()["ratelimit"].to_str().unwrap().starts_with("\"monthly\";r=1;"),
        "the refusal charged no quota"
    );
}

/// A key hot on one node or instance is decided under leases: past 20
/// requests a second, while more than half its burst is left, most go
/// without the store; yet at one moment the
/// key admits exactly its burst, refusals come from the store with
/// `Retry-After`, and a stretch taken for a request another policy
/// refuses is given back (else the burst would not be reached).
#[test]
fn a_hot_key_is_decided_under_leases_and_admits_exactly_its_burst() {
    let config = r#"
[limits.hot]
rate = "1000/hour"

[limits.tight]
rate = "5/hour"
key = "header:x-client"

[services.s]
url = "http://o.test"

[[routes]]
path = "/hot"
service = "s"
limits = ["hot", "tight"]
"#;
    for spin_like in [false, true] {
        let ports = FakePorts::new(FakeHttp::ok());
        ports.kv.spin_like.store(spin_like, std::sync::atomic::Ordering::SeqCst);
        let gw = Gateway::new(Config::parse(config, "hot.toml", &Default::default()).unwrap());
        let mut outcomes: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut admitted = 0;
        let mut last = None;
        let mut many = |from: usize, to: usize, admitted: &mut usize| {
            for i in from..to {
                let e = limited(&ports, &gw, "/hot", &format!("c{}", i / 4));
                *admitted += usize::from(e.response.status() == StatusCode::OK);
                *outcomes.entry(e.log.limits[0].outcome.name()).or_default() += 1;
                last = Some(e);
            }
        };
        many(0, 200, &mut admitted);
        assert_eq!(admitted, 200);
        // One client, while the key is leased: the tight policy refuses all
        // but 5, whatever the hot one decided here.
        let greedy: Vec<_> = (0..100).map(|_| limited(&ports, &gw, "/hot", "greedy")).collect();
        assert_eq!(greedy.iter().filter(|e| e.response.status() == StatusCode::OK).count(), 5);
        admitted += 5;
        many(200, 1_100, &mut admitted);
        assert_eq!(admitted, 1_000, "spin-like store: {spin_like}; {outcomes:?}");
        // The upper half of the burst, past the first 20 requests, goes mostly without the store.
        assert!(outcomes.get("leased").copied().unwrap_or(0) > 400, "{outcomes:?}");
        assert!(outcomes.get("lease_taken").copied().unwrap_or(0) > 0, "{outcomes:?}");
        let last = last.unwrap();
        assert_eq!(last.response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(last.log.limits[0].outcome.name(), "limited");
        assert_eq!(last.response.headers()["retry-after"], "4", "one interval of 3.6 s");
    }
}

/// A holder whose key goes quiet gives back the rest of its range: a
/// second holder then admits everything the first did not use, yet
/// nothing more, and the first decides by the store again. A range
/// another holder leased past stays where it is.
#[test]
fn a_holder_gives_back_the_unused_rest_of_its_range_when_its_key_goes_idle() {
    let config = r#"
[limits.hot]
rate = "1000/hour"

[services.s]
url = "http://o.test"

[[routes]]
path = "/hot"
service = "s"
limits = ["hot"]
"#;
    let parse = || Gateway::new(Config::parse(config, "hot.toml", &Default::default()).unwrap());
    let admitted = |ports: &FakePorts, gw: &Gateway, n: usize| {
        (0..n).filter(|_| limited(ports, gw, "/hot", "c").response.status() == StatusCode::OK).count()
    };
    for spin_like in [false, true] {
        let ports = FakePorts::new(FakeHttp::ok());
        ports.kv.spin_like.store(spin_like, std::sync::atomic::Ordering::SeqCst);
        let (a, b) = (parse(), parse());
        assert_eq!(admitted(&ports, &a, 100), 100);
        assert_eq!(block_on(rate_limit::give_back(&a, &ports, false)), 0, "the key is busy here");
        ports.clock.advance(Duration::from_micros(leases::IDLE_US));
        assert_eq!(block_on(rate_limit::give_back(&a, &ports, false)), 1, "spin-like store: {spin_like}");
        // Nothing is stranded: b admits the whole burst less what a admitted.
        assert_eq!(admitted(&ports, &b, 1_000), 900, "spin-like store: {spin_like}");
        let refused = limited(&ports, &a, "/hot", "c");
        assert_eq!(refused.response.status(), StatusCode::TOO_MANY_REQUESTS, "a hands nothing out any more");
        assert_eq!(refused.log.limits[0].outcome.name(), "limited");
    }
    // b leases past a's range: a's cannot go back, and the fleet still
    // admits its burst exactly once.
    let ports = FakePorts::new(FakeHttp::ok());
    let (a, b) = (parse(), parse());
    assert_eq!(admitted(&ports, &a, 100), 100);
    assert_eq!(admitted(&ports, &b, 100), 100);
    ports.clock.advance(Duration::from_micros(leases::IDLE_US));
    assert_eq!(block_on(rate_limit::give_back(&a, &ports, false)), 0, "b's range ends at the TAT");
    assert_eq!(block_on(rate_limit::give_back(&b, &ports, false)), 1);
    let c = parse();
    assert!(admitted(&ports, &c, 1_000) < 800, "a's unused range stays out of use");
}
