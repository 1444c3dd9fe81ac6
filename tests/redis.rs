//! Rate limiting across a fleet: a real `redis-server` (started here, on a
//! free loopback port) shared by two `portcullis serve` processes.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test: processes, files and clocks

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use portcullis::native::redis_kv::RedisKv;
use portcullis::ports::memory::MemoryKv;
use portcullis::ports::{Clock, KvStore, LimitStep, Meter};
use portcullis::shared::gcra::Rate;
use support::origin::Origin;
use support::redis::{Redis, RedisCluster};
use support::{Node, get, send};

#[derive(Clone, Copy)]
struct Wall;

impl Clock for Wall {
    fn now(&self) -> Duration {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
    }
    fn monotonic(&self) -> Duration {
        self.now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test]
async fn redis_and_memory_decide_alike() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let slow = Rate::new(1, 3_600_000_000, 3).unwrap(); // 1/hour, burst 3: no refill during the test
    let fast = Rate::new(10, 3_600_000_000, 5).unwrap(); // coarse: Redis' clock moving by ms changes nothing
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let outcomes = [five_steps(&store, slow, fast, now).await, five_steps(&memory, slow, fast, now).await];
    assert_eq!(outcomes[0], outcomes[1], "redis vs memory");
    // Refused requests charge neither key: the second limit was used only 3 times.
    assert_eq!(outcomes[0][4], vec![(false, 0), (true, 1)]);
}

#[tokio::test]
async fn a_delay_allowance_admits_over_the_rate_in_redis_as_in_memory() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let hourly = Rate::new(1, 3_600_000_000, 1).unwrap();
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let outcomes = [delayed_steps(&store, hourly, now).await, delayed_steps(&memory, hourly, now).await];
    assert_eq!(outcomes[0], outcomes[1], "redis vs memory");
    // Admitted now, in an hour, in two; the fourth would wait three: refused.
    assert_eq!(outcomes[0], vec![(true, 0), (true, 60), (true, 120), (false, 0)]);
}

#[tokio::test]
async fn a_quota_counts_in_redis_as_in_memory_and_only_with_its_rate() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let outcomes = [quota_steps(&store, now).await, quota_steps(&memory, now).await];
    assert_eq!(outcomes[0], outcomes[1], "redis vs memory");
    // The quota of 3 is charged only while the rate (burst 2) admits too:
    // its third unit stays free however often the rate refuses.
    assert_eq!(outcomes[0], vec![(true, true, 2), (true, true, 1), (false, true, 0), (false, true, 0)]);
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg("pc1:q:m:2026-12:k").query_async(&mut conn).await.unwrap();
    assert!((3_000_000..=3_601_000).contains(&ttl), "kept until the window ends: {ttl} ms");
}

/// On a cluster, a step whose keys are on different slots (here: keys
/// without a shared hash tag) decides exactly as one atomic step does: a
/// refusal on one slot takes back what another slot charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_over_several_cluster_slots_decides_as_one_step() {
    use redis::cluster_routing::Slot;
    let cluster = RedisCluster::start();
    let store = RedisKv::new(&cluster.url(), 1, Duration::from_secs(1)).unwrap();
    assert_ne!(Slot::for_key("pc1:q:m:2026-12:k"), Slot::for_key("pc1:rl:r:k"));
    assert_ne!(Slot::for_key("pc1:rl:slow:k"), Slot::for_key("pc1:rl:fast:k"));
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    assert_eq!(quota_steps(&store, now).await, quota_steps(&memory, now).await, "cluster vs memory");
    let slow = Rate::new(1, 3_600_000_000, 3).unwrap();
    let fast = Rate::new(10, 3_600_000_000, 5).unwrap();
    let outcomes = [five_steps(&store, slow, fast, now).await, five_steps(&memory, slow, fast, now).await];
    assert_eq!(outcomes[0], outcomes[1], "cluster vs memory");
    assert_eq!(outcomes[0][4], vec![(false, 0), (true, 1)], "the refused requests charged the fast limit nothing");
}

/// A step that leases decides, and sizes its lease, in Redis' script as
/// in the memory store (the same function every home uses): what it
/// admits, how much it leases and what is left, as the key fills up.
#[tokio::test]
async fn a_lease_is_granted_in_redis_as_in_memory() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let outcomes = [lease_steps(&store, now).await, lease_steps(&memory, now).await];
    assert_eq!(outcomes[0], outcomes[1], "redis vs memory");
    // Burst 40, half of it kept back: 1 + 9, 1 + 9 (the rest of the upper
    // half), then requests alone.
    assert_eq!(outcomes[0], vec![(true, 9, 39), (true, 9, 29), (true, 0, 19), (true, 0, 18)]);
}

/// Where the limit is far above one holder's use, a range is placed to end
/// 100 ms from now (else it would pass before it is used), in Redis' script
/// as in memory: (admitted, leased, remaining, the TAT less now in µs).
#[tokio::test]
async fn a_lease_on_a_roomy_key_ends_a_span_from_now_in_redis_as_in_memory() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let rate = Rate::new(100, 1_000_000, 1_000).unwrap(); // 100/s, burst 1 000: 10 ms apart
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let step = [LimitStep { key: "pc1:rl:roomy:k", meter: Meter::Lease { rate, want: 5 }, cost: 1, exact: true }];
    let seen = |(d, at): (Vec<portcullis::shared::gcra::Decision>, u64)| {
        (d[0].allowed, d[0].leased, d[0].remaining, d[0].tat_us - at)
    };
    let in_redis = seen(store.limit(&step, now).await.unwrap());
    let in_memory = seen(memory.limit(&step, now).await.unwrap());
    assert_eq!(in_redis, in_memory, "redis vs memory");
    // The request at 10 ms, a gap, then 4 intervals ending at 100 ms.
    assert_eq!(in_memory, (true, 4, 999, 100_000));
}

/// The unused rest of a range goes back in Redis' script as in memory:
/// only while the key's TAT still ends at the range, and the next
/// decision sees it as never leased.
#[tokio::test]
async fn a_range_goes_back_in_redis_as_in_memory() {
    let redis = Redis::start();
    let store = RedisKv::new(&redis.url(), 2, Duration::from_secs(1)).unwrap();
    let memory = MemoryKv::new(Wall, 1000);
    let now = u64::try_from(Wall.now().as_micros()).unwrap();
    let outcomes = [give_back_steps(&store, now).await, give_back_steps(&memory, now).await];
    assert_eq!(outcomes[0], outcomes[1], "redis vs memory");
    // The request and 9 leased, given back from the range's 3rd unit: 1 + 2
    // used, 36 left after one more request; a second give-back, or one of a
    // range another grant passed (1 + 9 more), does nothing.
    assert_eq!(outcomes[0], (true, false, 36, false, 25));
}

/// A lease of 10 on an hourly key of burst 40, then: the give-back of all
/// but its first two units, that give-back again, what the store has left
/// after one more request, whether the range goes back once another
/// grant passed it, and what is left then.
async fn give_back_steps(kv: &impl KvStore, now: u64) -> (bool, bool, u64, bool, u64) {
    let rate = Rate::new(40, 3_600_000_000, 40).unwrap();
    let key = "pc1:rl:back:k";
    let lease = [LimitStep { key, meter: Meter::Lease { rate, want: 10 }, cost: 1, exact: true }];
    let (d, at) = kv.limit(&lease, now).await.unwrap();
    let (end, from) = (d[0].tat_us, d[0].tat_us - 7 * rate.interval_us);
    let back = kv.give_back(key, from, end, now).await.unwrap();
    let again = kv.give_back(key, from, end, now).await.unwrap();
    let one = [LimitStep::rate(key, rate, 1)];
    let left = kv.limit(&one, at).await.unwrap().0[0].remaining;
    let (d, _) = kv.limit(&lease, at).await.unwrap();
    assert_eq!(d[0].leased, 9);
    let past = kv.give_back(key, from, end, now).await.unwrap();
    let after = kv.limit(&one, at).await.unwrap().0[0].remaining;
    (back, again, left, past, after)
}

/// Leasing steps of 10, 20, 30 and 10 units on an hourly key of burst 40:
/// (admitted, leased beyond the request, remaining after the request).
async fn lease_steps(kv: &impl KvStore, now: u64) -> Vec<(bool, u64, u64)> {
    let rate = Rate::new(40, 3_600_000_000, 40).unwrap();
    let mut seen = Vec::new();
    for want in [10, 20, 30, 10] {
        let step = [LimitStep { key: "pc1:rl:hot:k", meter: Meter::Lease { rate, want }, cost: 1, exact: true }];
        let (decisions, _) = kv.limit(&step, now).await.unwrap();
        seen.push((decisions[0].allowed, decisions[0].leased, decisions[0].remaining));
    }
    seen
}

/// Four requests against a quota of 3 and a rate of burst 2: (all admit,
/// the quota admits, the quota's remaining if charged).
async fn quota_steps(kv: &impl KvStore, now: u64) -> Vec<(bool, bool, u64)> {
    let rate = Rate::new(2, 3_600_000_000, 2).unwrap();
    let ends_us = now + 3_600_000_000;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let steps = [
            LimitStep { key: "pc1:q:m:2026-12:k", meter: Meter::Quota { limit: 3, ends_us }, cost: 1, exact: true },
            LimitStep::rate("pc1:rl:r:k", rate, 1),
        ];
        let (decisions, _) = kv.limit(&steps, now).await.unwrap();
        seen.push((decisions.iter().all(|d| d.allowed), decisions[0].allowed, decisions[0].remaining));
    }
    seen
}

/// Four requests on a key allowed to wait two hours: (allowed, delay in minutes).
async fn delayed_steps(kv: &impl KvStore, rate: Rate, now: u64) -> Vec<(bool, u64)> {
    let mut seen = Vec::new();
    for _ in 0..4 {
        let step = [LimitStep {
            key: "pc1:rl:hourly:k",
            meter: Meter::Rate { rate, max_delay_us: 7_200_000_000 },
            cost: 1,
            exact: true,
        }];
        let (decisions, _) = kv.limit(&step, now).await.unwrap();
        seen.push((decisions[0].allowed, (decisions[0].delay_us + 30_000_000) / 60_000_000));
    }
    seen
}

/// Five requests against a slow and a fast limit on `kv`: (allowed, remaining) per limit.
async fn five_steps(kv: &impl KvStore, slow: Rate, fast: Rate, now: u64) -> Vec<Vec<(bool, u64)>> {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let steps = [LimitStep::rate("pc1:rl:slow:k", slow, 1), LimitStep::rate("pc1:rl:fast:k", fast, 1)];
        let (decisions, _) = kv.limit(&steps, now).await.unwrap();
        seen.push(decisions.iter().map(|d| (d.allowed, d.remaining)).collect());
    }
    seen
}

fn config(origin: &Origin) -> String {
    format!(
        r#"
[limits.shared]
rate = "20/hour"

[limits.closed]
rate = "1000/s"
on_store_error = "deny"

[services.echo]
url = "http://127.0.0.1:{}"

[[routes]]
path = "/shared"
service = "echo"
limits = ["shared"]

[[routes]]
path = "/open"
service = "echo"
limits = ["shared"]

[[routes]]
path = "/closed"
service = "echo"
limits = ["closed"]
"#,
        origin.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_redis_never_admit_more_than_the_limit() {
    let redis = Redis::start();
    two_nodes_sharing_redis_never_admit_more_than_the_limit_on(&redis.url()).await;
}

/// The same on a Redis Cluster (three masters, a replica each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_a_cluster() {
    let cluster = RedisCluster::start();
    two_nodes_sharing_redis_never_admit_more_than_the_limit_on(&cluster.url()).await;
}

async fn two_nodes_sharing_redis_never_admit_more_than_the_limit_on(store: &str) {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let args = ["--store", store];
    let a = Node::start_args(&config(&origin), &[], &args);
    let b = Node::start_args(&config(&origin), &[], &args);
    let mut tasks = Vec::new();
    for i in 0..120 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        tasks.push(tokio::spawn(async move { send(addr, get("/shared")).await.status }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // 20/hour with a burst of 20: within seconds, at most 20 in total.
    assert_eq!(admitted, 20, "{admitted} admitted, {refused} refused");
    assert_eq!(origin.received().len(), 20);
}

/// Two nodes on one Redis 2 ms away (behind a proxy holding each way 1 ms,
/// as a store across a network is), 2 000 requests from 16 clients on one
/// hot key of 1 500 an hour: together the nodes admit no more than the
/// limit, and nearly all of it. On a key far from its limit they decide
/// nearly every request under leases, with few Redis calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_leasing_a_hot_key_admit_the_limit_and_no_more() {
    let redis = Redis::start();
    let target = ([127, 0, 0, 1], redis.port).into();
    let distant = support::delay::start(0, target, Duration::from_millis(1)).await.unwrap();
    let distant_url = format!("redis://{distant}");
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        "[limits.hot]\nrate = \"1500/hour\"\n\n[limits.roomy]\nrate = \"1000000/hour\"\n\n[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[[routes]]\npath = \"/hot\"\nservice = \"echo\"\nlimits = [\"hot\"]\n\n[[routes]]\npath = \"/roomy\"\nservice = \"echo\"\nlimits = [\"roomy\"]\n",
        origin.port()
    );
    let args = ["--store", &distant_url];
    let nodes = [Node::start_args(&config, &[], &args), Node::start_args(&config, &[], &args)];
    let burst = |path: &'static str, each: usize| {
        let clients: Vec<_> = (0..16)
            .map(|c| {
                let addr = nodes[c % 2].addr;
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..each {
                        statuses.push(send(addr, get(path)).await.status);
                    }
                    statuses
                })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for c in clients {
                statuses.extend(c.await.unwrap());
            }
            statuses
        }
    };
    let started = Instant::now();
    let statuses = burst("/hot", 125).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    // 1 500 an hour, a burst of 1 500: what refills during the run on top.
    let limit = 1_500 + started.elapsed().as_secs() * 1_500 / 3_600 + 1;
    assert!(admitted <= limit, "{admitted} admitted of {limit}");
    assert!(admitted * 100 >= limit * 95, "{admitted} admitted of {limit}: leases held back too much");
    assert_eq!(admitted + refused, 2_000, "only 200s and 429s");
    assert_eq!(origin.received().len() as u64, admitted);

    let scripts = || async {
        let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = scripts().await;
    let roomy = burst("/roomy", 100).await;
    assert!(roomy.iter().all(|s| *s == 200));
    let calls = scripts().await - before;
    // The access log is written after the answer: wait for all 1 600 lines.
    let logged = || -> Vec<String> {
        nodes
            .iter()
            .flat_map(|n| n.access_log())
            .filter(|l| l["limits"][0]["policy"] == "roomy")
            .filter_map(|l| l["limits"][0]["outcome"].as_str().map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut outcomes = logged();
    while outcomes.len() < 1_600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        outcomes = logged();
    }
    let leased = outcomes.iter().filter(|o| *o == "leased").count();
    assert_eq!(outcomes.len(), 1_600);
    assert!(leased * 10 >= 1_600 * 8, "{leased} of 1 600 without Redis");
    assert!(calls * 5 <= 1_600, "{calls} scripts for 1 600 requests");
    support::notice(&format!(
        "leases: {admitted} admitted of {limit}; on a roomy key {leased} of 1 600 without Redis, {calls} scripts"
    ));
}

/// A node whose hot key goes quiet gives back the unused rest of its
/// range; one that stops gives back all it holds: the other node then
/// admits all of the limit the first did not, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gives_back_what_it_leased_and_did_not_use() {
    let redis = Redis::start();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        "[limits.slow]\nrate = \"400/hour\"\n\n[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[[routes]]\npath = \"/slow\"\nservice = \"echo\"\nlimits = [\"slow\"]\n",
        origin.port()
    );
    let args = ["--store", &redis.url()];
    let (a, mut b) = (Node::start_args(&config, &[], &args), Node::start_args(&config, &[], &args));
    let admitted = |addr, n: usize| async move {
        let mut admitted = 0;
        for _ in 0..n {
            admitted += usize::from(send(addr, get("/slow")).await.status == 200);
        }
        admitted
    };
    let started = Instant::now();
    let first = admitted(a.addr, 150).await;
    assert_eq!(first, 150);
    // Quiet on a for longer than its idle time (250 ms) and a look (125 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = admitted(b.addr, 30).await;
    assert_eq!(second, 30);
    // b stops at once, before its key is idle: it gives back on the way out.
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(10)), Some(0));
    let c = Node::start_args(&config, &[], &args);
    let third = admitted(c.addr, 400).await;
    // 400 an hour, a burst of 400: what refills during the run on top.
    let limit = 400 + started.elapsed().as_secs() * 400 / 3_600 + 1;
    let total = (first + second + third) as u64;
    assert!(total <= limit, "{first} + {second} + {third} admitted of {limit}");
    assert!(total >= 400, "{first} + {second} + {third} admitted: a range was not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_and_recovers() {
    let mut redis = Redis::start();
    let port = redis.port;
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start_args(&config(&origin), &[], &["--store", &redis.url(), "--store-timeout", "200ms"]);
    assert_eq!(send(node.addr, get("/closed")).await.status, 200);

    redis.kill();
    let open = send(node.addr, get("/open")).await;
    assert_eq!(open.status, 200, "fail open");
    assert!(open.headers.get("ratelimit").is_none(), "no limit state to report");
    let closed = send(node.addr, get("/closed")).await;
    assert_eq!(closed.status, 503, "fail closed");
    assert_eq!(closed.json()["type"], "urn:portcullis:problem:rate-limit-unavailable");
    let line = node.wait_for_log(|l| l["path"] == "/open");
    assert!(line["error"].as_str().unwrap().contains("rate-limit store failed, request allowed"), "{line}");

    let _again = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = send(node.addr, get("/closed")).await.status;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..8 {
        let back = send(node.addr, get("/open")).await;
        assert!(back.headers.get("ratelimit").is_some(), "limits are enforced again on every connection");
    }
    // The outage and the round trips are in the metrics.
    let scrape = send(node.metrics_addr.unwrap(), get("/metrics")).await;
    let text = String::from_utf8_lossy(&scrape.body);
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value(r#"portcullis_store_errors_total{operation="gcra"}"#) >= 2.0);
    // Every decision the store made is timed; of the 8 requests on /open,
    // those decided under a lease (`leased`) made no round trip.
    let leased = text
        .lines()
        .find(|l| l.starts_with(r#"portcullis_rate_limit_decisions_total{policy="shared",outcome="leased"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(value(r#"portcullis_store_duration_seconds_count{operation="gcra"}"#) >= 11.0 - leased);
    assert!(value(r#"portcullis_rate_limit_decisions_total{policy="closed",outcome="store_error_denied"}"#) >= 1.0);
    assert!(value(r#"portcullis_rate_limit_decisions_total{policy="shared",outcome="store_error_allowed"}"#) >= 1.0);
}

/// A hung Redis (stopped, its connections open) costs each request a store
/// timeout only until the breaker opens; then requests get their policy's
/// `on_store_error` at once, stderr says so without a line per request, and
/// the store is used again soon after it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_not_called_again_until_it_answers() {
    let redis = Redis::start();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let node = Node::start_args(&config(&origin), &[], &["--store", &redis.url(), "--store-timeout", "300ms"]);
    assert_eq!(send(node.addr, get("/open")).await.status, 200);

    redis.pause(true);
    let mut times = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let reply = send(node.addr, get("/open")).await;
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "fail open");
    }
    let slow = times.iter().filter(|t| **t >= Duration::from_millis(250)).count();
    assert!(slow <= 6, "{slow} of 40 requests waited for the hung store: {times:?}");
    assert!(times[30..].iter().all(|t| *t < Duration::from_millis(250)), "{times:?}");
    let closed = send(node.addr, get("/closed")).await;
    assert_eq!(closed.status, 503, "fail closed, at once");
    let stderr = node.stderr();
    let failures = stderr.iter().filter(|l| l.contains("store call failed")).count();
    assert!((1..=4).contains(&failures), "{failures} failure lines for 40 requests:\n{}", stderr.join("\n"));
    assert!(stderr.iter().any(|l| l.contains("breaker open")), "{}", stderr.join("\n"));

    redis.pause(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(node.addr, get("/closed")).await.status != 200 {
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.wait_for_stderr("breaker closed");
}

/// One node's circuit opening reaches another sharing the store within the
/// breaker's `sync` (1 s): node A sees the failures, node B — whose own
/// requests succeed — refuses too, without calling the service again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_redis_open_the_circuit_together() {
    let redis = Redis::start();
    two_nodes_sharing_redis_open_the_circuit_together_on(&redis.url()).await;
}

/// The same on a Redis Cluster (three masters, a replica each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_on_a_cluster() {
    let cluster = RedisCluster::start();
    two_nodes_sharing_redis_open_the_circuit_together_on(&cluster.url()).await;
}

async fn two_nodes_sharing_redis_open_the_circuit_together_on(store: &str) {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = support::api_config(&format!(
        r#"url = "http://127.0.0.1:{}"
[services.api.retry]
attempts = 1
[services.api.breaker]
consecutive_failures = 3
open_for = "30s""#,
        origin.port()
    ));
    let args = ["--store", store];
    let a = Node::start_args(&config, &[], &args);
    let b = Node::start_args(&config, &[], &args);
    assert_eq!(send(b.addr, get("/ok")).await.status, 200, "B has read the record: closed");
    for _ in 0..3 {
        assert_eq!(send(a.addr, get("/status/500")).await.status, 500);
    }
    let opened = Instant::now();
    let refused = send(a.addr, get("/ok")).await;
    assert_eq!(refused.json()["type"], "urn:portcullis:problem:circuit-open", "A opened it");
    let delay = loop {
        let reply = send(b.addr, get("/ok")).await;
        if reply.status == 503 {
            assert_eq!(reply.json()["type"], "urn:portcullis:problem:circuit-open");
            break opened.elapsed();
        }
        assert!(opened.elapsed() < Duration::from_secs(3), "B still calls the service after 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    support::notice(&format!("circuit opened on node B {} ms after node A", delay.as_millis()));
    assert!(delay <= Duration::from_millis(1300), "B followed after {delay:?}");
    let calls = origin.received().len();
    assert_eq!(send(b.addr, get("/ok")).await.status, 503);
    assert_eq!(origin.received().len(), calls, "an open circuit calls nothing");
    assert!(a.stderr().join("\n").contains("circuit opened: service api (3 requests failed in a row)"));
}

/// A canary that fails is rolled back fleet-wide: node A sees the failures
/// and rolls it back; node B, sharing Redis, sends nobody to it within
/// `sync` (1 s). `portcullis canary reset` brings it back everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_for_the_fleet_until_reset() {
    let redis = Redis::start();
    a_failing_canary_is_rolled_back_for_the_fleet_until_reset_on(&redis.url()).await;
}

/// The same on a Redis Cluster (three masters, a replica each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_on_a_cluster() {
    let cluster = RedisCluster::start();
    a_failing_canary_is_rolled_back_for_the_fleet_until_reset_on(&cluster.url()).await;
}

async fn a_failing_canary_is_rolled_back_for_the_fleet_until_reset_on(store: &str) {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        r#"
[services.v1]
url = "http://127.0.0.1:{port}/v1"
[services.v2]
url = "http://127.0.0.1:{port}/status/500"
[services.v2.retry]
attempts = 1

[[routes]]
name = "orders"
path = "/orders"
service = "v1"
[routes.canary]
service = "v2"
share = "50%"
sticky_on = "header:x-user"
variant_header = "x-variant"
[routes.canary.rollback]
min_requests = 5
max_error_rate_increase = "10%"
"#,
        port = origin.port()
    );
    let args = ["--store", store];
    let a = Node::start_args(&config, &[], &args);
    let b = Node::start_args(&config, &[], &args);
    let as_user =
        |u: String| Request::get("/orders").header("host", "gw.test").header("x-user", u).body(Bytes::new()).unwrap();
    let variants = |addr, tag: &'static str| async move {
        let mut seen = Vec::new();
        for u in 0..40 {
            let reply = send(addr, as_user(format!("{tag}-{u}"))).await;
            seen.push(reply.header("x-variant").unwrap_or_default().to_string());
        }
        seen
    };
    // Callers the 50 % split sends to the canary (see kv-schema and the
    // conformance scenario for the placement rule).
    let on_canary = |u: &str| {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("orders\nheader:{u}"));
        u64::from_le_bytes(digest[..8].try_into().unwrap()) % 10_000 < 5_000
    };
    let canary_users: Vec<String> = (0..).map(|u| format!("u{u}")).filter(|u| on_canary(u)).take(7).collect();
    for u in &canary_users[..2] {
        let reply = send(b.addr, as_user(u.clone())).await;
        assert_eq!((reply.status, reply.header("x-variant")), (500, Some("canary")), "B splits before the rollback");
    }
    for u in &canary_users[2..] {
        assert_eq!(send(a.addr, as_user(u.clone())).await.status, 500, "A's canary fails");
    }
    assert_eq!(
        send(a.addr, as_user(canary_users[0].clone())).await.header("x-variant"),
        Some("stable"),
        "A rolled it back"
    );
    let rolled_back = Instant::now();
    assert!(a.stderr().join("\n").contains("canary rolled back: route orders"));
    loop {
        if variants(b.addr, "b").await.iter().all(|v| v == "stable") {
            break;
        }
        assert!(rolled_back.elapsed() < Duration::from_secs(2), "B still sends callers to the canary");
    }
    support::notice(&format!("canary rolled back on node B within {} ms", rolled_back.elapsed().as_millis()));

    let file = std::env::temp_dir().join(format!("canary-{}.toml", std::process::id()));
    std::fs::write(&file, &config).unwrap();
    let reset = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["canary", "reset", "orders", "--config", file.to_str().unwrap(), "--store", store])
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["canary", "reset", "nope", "--config", file.to_str().unwrap(), "--store", store])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no route named `nope` (routes with a canary: orders)"));
    let _ = std::fs::remove_file(&file);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(variants(b.addr, "c").await.contains(&"canary".to_string()), "the canary serves again after the reset");
}

#[tokio::test]
async fn a_fleet_shares_a_quota_and_its_usage_is_readable_from_the_admin_api_and_the_cli() {
    let redis = Redis::start();
    a_fleet_shares_a_quota_and_its_usage_is_readable_from_the_admin_api_and_the_cli_on(&redis.url()).await;
}

/// The same on a Redis Cluster (three masters, a replica each).
#[tokio::test]
async fn quota_on_a_cluster() {
    let cluster = RedisCluster::start();
    a_fleet_shares_a_quota_and_its_usage_is_readable_from_the_admin_api_and_the_cli_on(&cluster.url()).await;
}

async fn a_fleet_shares_a_quota_and_its_usage_is_readable_from_the_admin_api_and_the_cli_on(store: &str) {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        r#"
[auth.api_key.partners]
consumers = [{{ id = "acme", key_sha256 = "d1616373cb070ca29992c92c1fa716bcda2a13abcd3efd637e85e13243ed7434" }}]

[limits.monthly]
quota = "3/month"
key = "consumer"
warn_at = ["90%"]

[services.echo]
url = "http://127.0.0.1:{}"

[[routes]]
path = "/metered"
service = "echo"
auth = {{ any_of = ["partners"] }}
limits = ["monthly"]
"#,
        origin.port()
    );
    let args = ["--store", store];
    let (a, b) = (Node::start_args(&config, &[], &args), Node::start_args(&config, &[], &args));
    let keyed = || {
        Request::get("/metered")
            .header("host", "gw.test")
            .header("x-api-key", "acme-key-0001")
            .body(Bytes::new())
            .unwrap()
    };
    let statuses = [
        send(a.addr, keyed()).await.status,
        send(b.addr, keyed()).await.status,
        send(a.addr, keyed()).await.status,
        send(b.addr, keyed()).await.status,
    ];
    assert_eq!(statuses, [200, 200, 200, 429], "one quota for the fleet");

    let admin = a.admin_addr.expect("admin listener");
    let usage = send(admin, get("/quotas?caller=consumer%3Apartners%3Aacme")).await;
    assert_eq!(usage.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&usage.body).unwrap();
    assert_eq!(body["caller"], "consumer:partners:acme");
    assert_eq!(
        (&body["quotas"][0]["policy"], &body["quotas"][0]["used"], &body["quotas"][0]["limit"]),
        (&"monthly".into(), &3.into(), &3.into())
    );
    assert!(body["quotas"][0]["window"].as_str().unwrap().len() == 7, "{body}");
    assert_eq!(send(admin, get("/quotas")).await.status, 400, "the caller is named");
    let refusals = send(b.admin_addr.expect("admin listener"), get("/refusals")).await;
    let refusals: serde_json::Value = serde_json::from_slice(&refusals.body).unwrap();
    assert_eq!(refusals["top"], serde_json::json!([{"caller": "partners:acme", "refusals": 1, "error": 0}]));

    let file = std::env::temp_dir().join(format!("quota-{}.toml", std::process::id()));
    std::fs::write(&file, &config).unwrap();
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["quota", "usage", "consumer:partners:acme", "--config", file.to_str().unwrap(), "--store", store])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let mut printed: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    // The seconds to the renewal move on between the two reads.
    let renews = |v: &mut serde_json::Value| v["quotas"][0]["renews_in_s"].take().as_u64().unwrap();
    let mut body = body;
    let (later, earlier) = (renews(&mut printed), renews(&mut body));
    assert!(earlier.abs_diff(later) <= 2, "{earlier} then {later}");
    assert_eq!(printed, body, "the CLI reads what the admin API does");
}

/// The response cache's second level: what one node stored, another
/// serves from Redis; a purge through the CLI (by tag) or one node's
/// admin API (by route) reaches every node within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_cached_answers_and_purges_reach_every_node_within_a_second() {
    let redis = Redis::start();
    a_fleet_shares_cached_answers_and_purges_reach_every_node_within_a_second_on(&redis.url()).await;
}

/// The same on a Redis Cluster (three masters, a replica each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_a_cluster() {
    let cluster = RedisCluster::start();
    a_fleet_shares_cached_answers_and_purges_reach_every_node_within_a_second_on(&cluster.url()).await;
}

async fn a_fleet_shares_cached_answers_and_purges_reach_every_node_within_a_second_on(store: &str) {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        r#"
[services.echo]
url = "http://127.0.0.1:{}"

[[routes]]
name = "catalogue"
path = "/c/{{*rest}}"
service = "echo"
strip_prefix = "/c"
cache = {{ tags_header = "surrogate-key" }}
"#,
        origin.port()
    );
    let args = ["--store", store];
    let (a, b) = (Node::start_args(&config, &[], &args), Node::start_args(&config, &[], &args));
    let cached = |path: &str| {
        Request::get(path)
            .header("host", "gw.test")
            .header("x-echo-response-header", "cache-control: max-age=600")
            .header("x-echo-response-header", "surrogate-key: shoes sale")
            .body(Bytes::new())
            .unwrap()
    };
    let status = |reply: &support::Reply| reply.header("cache-status").unwrap_or_default().to_string();
    let stored = send(a.addr, cached("/c/shoes")).await;
    assert!(status(&stored).contains("stored"), "{}", status(&stored));
    let from_store = send(b.addr, cached("/c/shoes")).await;
    assert!(status(&from_store).starts_with("portcullis; hit"), "{}", status(&from_store));
    assert_eq!(from_store.body, stored.body);
    assert_eq!(origin.received().len(), 1, "one fetch for the fleet");

    let file = std::env::temp_dir().join(format!("cache-{}.toml", std::process::id()));
    std::fs::write(&file, &config).unwrap();
    let url = store.to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["cache", "purge"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", file.to_str().unwrap(), "--store", &url]);
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis")).args(&all).output().unwrap()
    };
    let purged = cli(&["--tag", "sale"]);
    assert!(purged.status.success(), "{}", String::from_utf8_lossy(&purged.stderr));
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged tag sale"));
    let unknown = cli(&["--route", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("routes with a cache: catalogue"));
    let _ = std::fs::remove_file(&file);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first request after it, on either node, fetches again; the other
    // node then has the new answer.
    let refetched = send(a.addr, cached("/c/shoes")).await;
    assert!(status(&refetched).contains("fwd=uri-miss"), "{}", status(&refetched));
    let renewed = send(b.addr, cached("/c/shoes")).await;
    assert!(status(&renewed).starts_with("portcullis; hit"), "{}", status(&renewed));
    assert_eq!(renewed.body, refetched.body);
    assert_ne!(renewed.body, stored.body, "not the purged answer");
    assert_eq!(origin.received().len(), 2);
    // Purged by route through a's admin API: b follows within a second.
    let hit = send(b.addr, cached("/c/shoes")).await;
    assert!(status(&hit).starts_with("portcullis; hit"), "{}", status(&hit));
    let admin = Request::post("/cache/purge?route=catalogue").header("host", "admin").body(Bytes::new()).unwrap();
    assert_eq!(send(a.admin_addr.unwrap(), admin).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = send(b.addr, cached("/c/shoes")).await;
    assert!(status(&after).contains("fwd=uri-miss"), "{}", status(&after));
}

/// A master of the cluster dies while two nodes serve: the requests that
/// meet the failover are answered as the policies say for a store that is
/// down (this one fails open), and once its replica has taken over, limits,
/// cached answers and quotas are exact again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_loses_a_master_mid_run_goes_on_after_its_failover() {
    let mut cluster = RedisCluster::start();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        r#"
[limits.busy]
rate = "100000/s"

[limits.hourly]
rate = "20/hour"

[limits.closed]
rate = "100000/s"
on_store_error = "deny"

[services.echo]
url = "http://127.0.0.1:{}"

[[routes]]
path = "/busy"
service = "echo"
limits = ["busy"]

[[routes]]
path = "/hourly"
service = "echo"
limits = ["hourly"]

[[routes]]
path = "/closed"
service = "echo"
limits = ["closed"]

[[routes]]
name = "cached"
path = "/c/{{*rest}}"
service = "echo"
strip_prefix = "/c"
cache = {{ ttl = "1h" }}
"#,
        origin.port()
    );
    let url = cluster.url();
    let args = ["--store", url.as_str(), "--store-timeout", "300ms"];
    let (a, b) = (Node::start_args(&config, &[], &args), Node::start_args(&config, &[], &args));
    // Load on both nodes through the failover.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |addr: std::net::SocketAddr| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                *statuses.entry(send(addr, get("/busy")).await.status).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    let (load_a, load_b) = (load(a.addr), load(b.addr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The limit key of 127.0.0.1 under `busy`: its hash tag is the caller's digest.
    use sha2::{Digest, Sha256};
    let tag: String = Sha256::digest(b"ip:127.0.0.1").iter().map(|b| format!("{b:02x}")).collect();
    let killed = cluster.kill_master_of(&format!("pc1:rl:busy:{{{tag}}}"));
    let died = Instant::now();
    let waited = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster
    });
    let cluster = waited.await.unwrap();
    let failed_over = died.elapsed();
    // Both nodes use the store again once a fail-closed policy admits
    // (their store breakers may wait a little longer than the failover).
    for node in [&a, &b] {
        while send(node.addr, get("/closed")).await.status != 200 {
            assert!(died.elapsed() < Duration::from_secs(20), "the store is not used again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    support::notice(&format!(
        "cluster: master {killed} killed, its replica serving after {} ms, both nodes deciding in the store after {} ms",
        failed_over.as_millis(),
        died.elapsed().as_millis()
    ));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for statuses in [load_a.await.unwrap(), load_b.await.unwrap()] {
        assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200], "fail open through the failover: {statuses:?}");
    }
    // Exact again: one limit for the fleet, one fetch for a cached answer.
    let mut admitted = 0;
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        admitted += usize::from(send(node.addr, get("/hourly")).await.status == 200);
    }
    assert_eq!(admitted, 20);
    let before = origin.received().len();
    assert_eq!(send(a.addr, get("/c/after")).await.status, 200);
    let hit = send(b.addr, get("/c/after")).await;
    assert!(hit.header("cache-status").unwrap_or_default().starts_with("portcullis; hit"));
    assert_eq!(origin.received().len(), before + 1);
    drop(cluster);
}

/// `portcullis ARGS`: exit code, stdout, stderr.
fn portcullis(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).output().expect("run portcullis");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn registry_config(origin: &Origin, routes: &[&str]) -> String {
    let mut text = format!("[services.echo]\nurl = \"http://127.0.0.1:{}\"\n", origin.port());
    for path in routes {
        text.push_str(&format!("\n[[routes]]\npath = \"{path}\"\nservice = \"echo\"\n"));
    }
    text
}

fn publish(url: &str, config: &str, message: &str) -> (i32, String, String) {
    let file = support::temp_path("published.toml");
    std::fs::write(&file, config).unwrap();
    portcullis(&["publish", file.to_str().unwrap(), "--store", url, "-m", message, "--author", "tests"])
}

/// Waits until every node answers `path` with `status`: how long it took.
async fn until_all(nodes: &[&Node], path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    for node in nodes {
        while send(node.addr, get(path)).await.status != status {
            assert!(started.elapsed() < within, "{path} is not {status} on {} after {within:?}", node.addr);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    started.elapsed()
}

fn following(url: &str, name: &str) -> Node {
    following_with(url, name, &support::temp_path(&format!("{name}.json")))
}

/// A node following the registry that keeps what it applied at `cache`.
fn following_with(url: &str, name: &str, cache: &std::path::Path) -> Node {
    let cache = cache.to_str().unwrap();
    Node::start_args(
        "",
        &[],
        &["--config-from", url, "--config-cache", cache, "--config-check", "1s", "--node-id", name],
    )
}

/// Two nodes follow the registry: a published version is live on both
/// within a second (measured), an invalid one is refused and changes
/// nothing, a rollback is live as fast, a version announced without a
/// message is caught by the periodic check, a version a node cannot
/// compile is not applied, and `versions` shows which node runs what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_what_the_registry_publishes() {
    let redis = Redis::start();
    let url = redis.url();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let (code, out, err) = publish(&url, &registry_config(&origin, &["/one"]), "first");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as version 1"), "{out}");
    let nodes = [following(&url, "n0"), following(&url, "n1")];
    let all: Vec<&Node> = nodes.iter().collect();
    until_all(&all, "/one", 200, Duration::from_secs(1)).await;
    assert_eq!(send(nodes[0].addr, get("/two")).await.status, 404);

    let (code, _, err) = publish(&url, &registry_config(&origin, &["/one", "/two"]), "second");
    assert_eq!(code, 0, "{err}");
    let took = until_all(&all, "/two", 200, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "published to live on both nodes: {took:?}");

    // Invalid: every error with file, line and key; nothing published.
    let (code, _, err) = publish(&url, "[[routes]]\npath = \"/x\"\nservice = \"nowhere\"\n", "broken");
    assert_eq!(code, 1);
    assert!(err.contains("published.toml:3") && err.contains("service") && err.contains("not published"), "{err}");
    let listed: serde_json::Value = serde_json::from_str(&portcullis(&["versions", "--store", &url]).1).unwrap();
    assert_eq!(listed["current"], 2);
    assert_eq!(listed["versions"][0]["message"], "second");

    let (code, out, err) = portcullis(&["rollback", "1", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 1"), "{out}");
    let took_back = until_all(&all, "/two", 404, Duration::from_secs(2)).await;
    let admin = send(nodes[1].admin_addr.unwrap(), get("/config")).await.json();
    assert_eq!((admin["source"].as_str(), admin["version"].as_u64()), (Some("registry"), Some(1)));
    let metrics =
        String::from_utf8_lossy(&send(nodes[0].metrics_addr.unwrap(), get("/metrics")).await.body).into_owned();
    assert!(metrics.contains("portcullis_config_version 1"), "{metrics}");

    // The edge's copy is rolled back in the same script.
    let mut conn = redis::Client::open(url.clone()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let edge: Vec<u8> = redis::cmd("GET").arg("pc1:{cfg}:edge:config").query_async(&mut conn).await.unwrap();
    let edge = String::from_utf8_lossy(&edge).into_owned();
    assert!(edge.starts_with("pc1e - 0000000000000000\npc1c 1 ") && !edge.contains("/two"), "{edge}");
    let pointer: String = redis::cmd("GET").arg("pc1:{cfg}:edge:current").query_async(&mut conn).await.unwrap();
    assert!(pointer.starts_with("pc1e - 0000000000000000\n1 "), "{pointer}");

    // A version made current with no announcement: the check finds it.
    let second: String = redis::cmd("GET").arg("pc1:{cfg}:v:2").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET").arg("pc1:{cfg}:v:3").arg(&second).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET").arg("pc1:{cfg}:current").arg(3).query_async(&mut conn).await.unwrap();
    let caught = until_all(&all, "/two", 200, Duration::from_secs(3)).await;

    // A version this node cannot compile (written around `publish`): reported, not applied.
    let mut broken: serde_json::Value = serde_json::from_str(&second).unwrap();
    broken["config"] = "[[routes]]\npath = \"/x\"\nservice = \"nowhere\"\n".into();
    let _: () = redis::cmd("SET").arg("pc1:{cfg}:v:4").arg(broken.to_string()).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET").arg("pc1:{cfg}:current").arg(4).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg("pc1:{cfg}:announce").arg(4).query_async(&mut conn).await.unwrap();
    nodes[0].wait_for_stderr("config rejected; the running config stays");
    assert_eq!(send(nodes[0].addr, get("/two")).await.status, 200, "version 3 still runs");

    // Heartbeats: which node runs which version.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let listed: serde_json::Value = serde_json::from_str(&portcullis(&["versions", "--store", &url]).1).unwrap();
    let mut running: Vec<(String, u64)> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().to_string(), n["version"].as_u64().unwrap()))
        .collect();
    running.sort();
    assert_eq!(running, vec![("n0".to_string(), 3), ("n1".to_string(), 3)], "{listed}");
    support::notice(&format!(
        "registry: published to live on 2 nodes {took:?}, rollback {took_back:?}, unannounced {caught:?}"
    ));
}

/// A node restarted while the registry is down (or back without its
/// data) starts on the version it last applied, and says so; with none on
/// disk it does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_the_registry_is_down_runs_its_last_version() {
    let mut redis = Redis::start();
    let url = redis.url();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    assert_eq!(publish(&url, &registry_config(&origin, &["/kept"]), "kept").0, 0);
    let cache = support::temp_path("kept.json");
    let args = ["--config-from", &url, "--config-cache", cache.to_str().unwrap(), "--config-check", "1s"];
    let node = Node::start_args("", &[], &args);
    assert_eq!(send(node.addr, get("/kept")).await.status, 200);
    drop(node);
    redis.kill();
    let node = Node::start_args("", &[], &args);
    assert_eq!(send(node.addr, get("/kept")).await.status, 200);
    node.wait_for_stderr("the registry is unreachable or empty: starting on the last version this node applied");
    drop(node);
    // Back, but without its data: the node still starts on what it kept.
    let _back = Redis::start_on(redis.port);
    let node = Node::start_args("", &[], &args);
    assert_eq!(send(node.addr, get("/kept")).await.status, 200);
    drop(_back);
    let empty = support::temp_path("none.json");
    let (code, _, err) = portcullis(&[
        "serve",
        "--config-from",
        &url,
        "--config-cache",
        empty.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--admin-listen",
        "off",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no version to give") && err.contains("holds none to start on"), "{err}");
}

/// Redis restarts empty (no persistence) while a node follows it: the
/// next publish numbers from 1 again, and the node, whose subscription
/// broke, applies it within moments (well before its 10 s check), though
/// it ran a version 1 already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_at_once_when_redis_comes_back_empty() {
    let mut redis = Redis::start();
    let (port, url) = (redis.port, redis.url());
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    assert!(publish(&url, &registry_config(&origin, &["/before"]), "before").1.contains("as version 1"));
    let cache = support::temp_path("restart.json");
    let args = ["--config-from", &url, "--config-cache", cache.to_str().unwrap(), "--config-check", "10s"];
    let node = Node::start_args("", &[], &args);
    assert_eq!(send(node.addr, get("/before")).await.status, 200);
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _redis = Redis::start_on(port);
    let (code, out, err) = publish(&url, &registry_config(&origin, &["/after"]), "after");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as version 1"), "{out}");
    let took = until_all(&[&node], "/after", 200, Duration::from_secs(2)).await;
    support::notice(&format!("registry: a node caught up {took:?} after Redis came back"));
}

/// The same on a Redis Cluster: the registry's keys share a slot (one
/// script publishes), and an announcement reaches a node subscribed at
/// a seed whichever master the script ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_registry_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let (code, _, err) = publish(&url, &registry_config(&origin, &["/one"]), "first");
    assert_eq!(code, 0, "{err}");
    let nodes = [following(&url, "c0"), following(&url, "c1")];
    let all: Vec<&Node> = nodes.iter().collect();
    until_all(&all, "/one", 200, Duration::from_secs(1)).await;
    assert_eq!(publish(&url, &registry_config(&origin, &["/one", "/two"]), "second").0, 0);
    let took = until_all(&all, "/two", 200, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "published to live on both nodes: {took:?}");
    let (code, _, err) = portcullis(&["rollback", "1", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    until_all(&all, "/two", 404, Duration::from_secs(2)).await;
    let listed: serde_json::Value = serde_json::from_str(&portcullis(&["versions", "--store", &url]).1).unwrap();
    assert_eq!((listed["current"].as_u64(), listed["versions"].as_array().map(Vec::len)), (Some(1), Some(2)));
}

/// `portcullis consumers …` with input on standard input: exit code, stdout, stderr.
fn portcullis_in(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run portcullis");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("portcullis ran");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The status of GET `path` with API key `key` on `node`.
async fn with_key(node: &Node, path: &str, key: &str) -> u16 {
    send(node.addr, support::get_with(path, "x-api-key", key)).await.status
}

/// Waits until `node` answers `path` with `key` by `status`: how long it took.
async fn until_key(node: &Node, path: &str, key: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    while with_key(node, path, key).await != status {
        assert!(started.elapsed() < within, "{path} with {key} is not {status} after {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// API-key consumers in the registry: one added is accepted on every
/// following node within a second, one revoked refused as fast, an import
/// accepted whole or refused whole, a bad record refused with why, and a
/// node restarted while Redis is down still knows them (from disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_added_and_revoked_reach_every_node_within_a_second() {
    let mut redis = Redis::start();
    let url = redis.url();
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        "[auth.api_key.partners]\nforward = {{ \"x-consumer-id\" = \"id\" }}\n\n[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[[routes]]\npath = \"/secure\"\nservice = \"echo\"\nauth = {{ any_of = [\"partners\"] }}\n\n[[routes]]\npath = \"/gold\"\nservice = \"echo\"\nauth = {{ any_of = [\"partners\"], groups = [\"gold\"] }}\n",
        origin.port()
    );
    assert_eq!(publish(&url, &config, "partners").0, 0);
    let kept = support::temp_path("k0.json");
    let nodes = [following_with(&url, "k0", &kept), following(&url, "k1")];
    assert_eq!(with_key(&nodes[0], "/secure", "acme-key").await, 401);

    let add = |id: &str, key: &str, extra: &[&str]| {
        let mut args = vec!["consumers", "add", "--provider", "partners", "--id", id, "--store", &url];
        args.extend_from_slice(extra);
        portcullis_in(&args, key)
    };
    let (code, out, err) = add("acme", "acme-key", &["--group", "gold"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added partners/acme"), "{out}");
    let mut took = Vec::new();
    for node in &nodes {
        took.push(until_key(node, "/gold", "acme-key", 200, Duration::from_secs(2)).await);
    }
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "added to accepted: {took:?}");
    let echoed = send(nodes[1].addr, support::get_with("/secure", "x-api-key", "acme-key")).await;
    assert_eq!(echoed.echoed("x-consumer-id"), ["acme"]);

    // Refused with why: an unknown provider, a malformed range; nothing changes.
    let (code, _, err) =
        portcullis_in(&["consumers", "add", "--provider", "nowhere", "--id", "x", "--store", &url], "x-key");
    assert_eq!(code, 1);
    assert!(err.contains("provider `nowhere`") && err.contains("partners"), "{err}");
    let (code, _, err) = add("globex", "globex-key", &["--ip-allow", "10.0.0.0/33"]);
    assert_eq!(code, 1);
    assert!(err.contains("ip_allow") && err.contains("10.0.0.0/33"), "{err}");

    let (code, out, err) =
        portcullis(&["consumers", "revoke", "--provider", "partners", "--id", "acme", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 1 key"), "{out}");
    let mut revoked = Vec::new();
    for node in &nodes {
        revoked.push(until_key(node, "/secure", "acme-key", 401, Duration::from_secs(2)).await);
    }
    assert!(revoked.iter().all(|t| *t < Duration::from_secs(1)), "revoked to refused: {revoked:?}");

    // An import: all or nothing.
    let hash = |key: &str| portcullis_in(&["hash-key"], key).1.trim().to_string();
    let file = support::temp_path("consumers.toml");
    let entry = |id: &str, key: &str| {
        format!("[[consumers]]\nprovider = \"partners\"\nid = \"{id}\"\nkey_sha256 = \"{}\"\n", hash(key))
    };
    std::fs::write(
        &file,
        format!(
            "{}{}[[consumers]]\nprovider = \"partners\"\nid = \"bad\"\nkey_sha256 = \"00\"\n",
            entry("a", "a-key"),
            entry("b", "b-key")
        ),
    )
    .unwrap();
    let (code, _, err) = portcullis(&["consumers", "import", file.to_str().unwrap(), "--store", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("consumers[2] (bad)") && err.contains("key_sha256"), "{err}");
    std::fs::write(&file, format!("{}{}", entry("a", "a-key"), entry("b", "b-key"))).unwrap();
    let (code, out, err) = portcullis(&["consumers", "import", file.to_str().unwrap(), "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 2"), "{out}");
    for node in &nodes {
        until_key(node, "/secure", "b-key", 200, Duration::from_secs(2)).await;
    }
    let listed = portcullis(&["consumers", "list", "--store", &url]).1;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains("b-key"), "keys are never listed");
    // The edge's copies (kv-schema/registry.md): the version and each
    // consumer, sealed as the edge's key-value port reads them; a revoked
    // consumer's is gone.
    let get = |key: String| {
        let url = url.clone();
        async move {
            let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut conn).await.unwrap()
        }
    };
    let sealed = "pc1e - 0000000000000000\n";
    let edge_b = get(format!("pc1:{{cfg}}:edge:key:partners/{}", hash("b-key"))).await.expect("b's edge key");
    let record = String::from_utf8(edge_b).unwrap();
    let record = record.strip_prefix(sealed).unwrap_or_else(|| panic!("not sealed: {record}"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(record).unwrap()["id"], "b");
    assert_eq!(get(format!("pc1:{{cfg}}:edge:key:partners/{}", hash("acme-key"))).await, None, "revoked");
    let pointer = String::from_utf8(get("pc1:{cfg}:edge:current".into()).await.expect("edge pointer")).unwrap();
    assert!(pointer.starts_with(&format!("{sealed}1 ")), "{pointer}");
    let config = get("pc1:{cfg}:edge:config".into()).await.expect("edge config");
    assert!(config.starts_with(format!("{sealed}pc1c 1 ").as_bytes()), "{}", String::from_utf8_lossy(&config));

    // A change after the import is applied alone: no node reads them all again.
    let full_reads = || async {
        let mut conn = redis::Client::open(url.clone()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_hscan:")?.split("calls=").nth(1)?.split(',').next()?.parse().ok())
            .unwrap_or(0u64)
    };
    let before = full_reads().await;
    assert_eq!(add("c", "c-key", &[]).0, 0);
    for node in &nodes {
        until_key(node, "/secure", "c-key", 200, Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(full_reads().await, before, "the nodes read every consumer again for one change");

    // Kept on disk (written at a check): a restart without Redis still knows them.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let [first, _] = nodes;
    drop(first);
    redis.kill();
    let again = following_with(&url, "k0", &kept);
    assert_eq!(with_key(&again, "/secure", "a-key").await, 200);
    assert_eq!(with_key(&again, "/secure", "acme-key").await, 401);
    support::notice(&format!("registry consumers: added to accepted {took:?}, revoked to refused {revoked:?}"));
}
