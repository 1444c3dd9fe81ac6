//! Smoothing instead of refusing: a policy's `max_delay` makes requests
//! over the rate wait for their turn, at most `max_waiting` at once.

use std::time::{Duration, Instant};

use super::support::origin::Origin;
use super::support::{Node, get_with, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_wait_their_turn_and_only_max_waiting_of_them() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let config = format!(
        r#"
[services.echo]
url = "http://127.0.0.1:{}"

[limits.smooth]
rate = "10/s"
burst = 1
key = "header:x-client"
max_delay = "1s"
max_waiting = 3

[[routes]]
path = "/s"
service = "echo"
limits = ["smooth"]
"#,
        origin.port()
    );
    let node = Node::start(&config, &[]);
    let request = || get_with("/s", "x-client", "one");
    assert_eq!(send(node.addr, request()).await.status, 200, "the burst");
    // Six at once, each over the rate: three wait their turn (100, 200,
    // 300 ms), three find no place and are refused as without smoothing.
    let started = Instant::now();
    let answers = futures::future::join_all((0..6).map(|_| send(node.addr, request()))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert!(started.elapsed() >= Duration::from_millis(250), "the last waited its turn: {:?}", started.elapsed());
    assert!(answers.iter().filter(|a| a.status == 429).all(|a| a.header("retry-after").is_some()));

    let delayed = |l: &serde_json::Value| l["limit_delay_us"].as_u64().is_some();
    node.wait_for_log(|l| delayed(l) && l["limit_delay_us"].as_u64() > Some(250_000));
    let lines: Vec<serde_json::Value> = node.access_log().into_iter().filter(delayed).collect();
    let mut delays: Vec<u64> = lines.iter().map(|l| l["limit_delay_us"].as_u64().unwrap_or(0) / 10_000).collect();
    delays.sort_unstable();
    // Each waits until its turn: 100, 200 and 300 ms after the burst, less
    // how much later than the first it arrived (well under 50 ms).
    assert_eq!(delays.len(), 3, "{lines:?}");
    for (delay, turn) in delays.iter().zip([10, 20, 30]) {
        assert!((turn - 5..=turn).contains(delay), "{delays:?} (10 ms units)");
    }
    for line in &lines {
        assert_eq!(line["limits"], serde_json::json!([{"policy": "smooth", "outcome": "delayed"}]));
        assert!(line["overhead_us"].as_u64() < line["limit_delay_us"].as_u64(), "the wait is not overhead: {line}");
    }
    // The places are given back: once the key has room again, one more waits.
    assert_eq!(send(node.addr, request()).await.status, 200);
}
