//! Rate limiting across a fleet: a real `redis-server` (started here, on a
//! free loopback port) shared by two `portcullis serve` processes.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test: processes, files and clocks

mod support;

use std::time::{Duration, Instant};

use portcullis::native::redis_kv::RedisKv;
use portcullis::ports::memory::MemoryKv;
use portcullis::ports::{Clock, GcraStep, KvStore};
use portcullis::shared::gcra::Rate;
use support::origin::Origin;
use support::redis::Redis;
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

/// Five requests against a slow and a fast limit on `kv`: (allowed, remaining) per limit.
async fn five_steps(kv: &impl KvStore, slow: Rate, fast: Rate, now: u64) -> Vec<Vec<(bool, u64)>> {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let steps = [
            GcraStep { key: "pc1:rl:slow:k", rate: slow, cost: 1, exact: true },
            GcraStep { key: "pc1:rl:fast:k", rate: fast, cost: 1, exact: true },
        ];
        let (decisions, _) = kv.gcra(&steps, now).await.unwrap();
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
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let args = ["--store", &redis.url()];
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
