//! `loadgen followers <REDIS URL> <N> <CONFIG> [NODE ADDRESS …]`: how long
//! a published config version takes to reach a fleet. N followers in this
//! process watch the registry with the code a node follows it with
//! (`registry::Watch`: a subscription of its own each, and the periodic
//! check); the real nodes given (started with `--config-from`) are asked
//! for the version's new route every millisecond. It publishes CONFIG
//! with a new route and reports, per follower, the time from `publish`
//! returning to the follower holding the version (the nodes: answering on
//! it): p50, p99 and max as JSON. With `RESTART` set (a shell command that
//! restarts Redis with its data), a second run restarts Redis first and
//! publishes once Redis is back, so every follower has to catch up from a
//! broken subscription.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::native::registry::{self, Seen, Watch};

/// The versions each simulated follower holds, and when it got each.
type Held = Arc<Mutex<Vec<(u64, Instant)>>>;

pub async fn run(args: &[String]) -> Result<(), String> {
    let [url, n, config, nodes @ ..] = args else {
        return Err("loadgen followers <redis url> <followers> <config> [node address …]".into());
    };
    let n: usize = n.parse().map_err(|e| format!("followers: {e}"))?;
    let nodes: Vec<SocketAddr> =
        nodes.iter().map(|a| a.parse().map_err(|e| format!("{a}: {e}"))).collect::<Result<_, _>>()?;
    let base = std::fs::read_to_string(config).map_err(|e| format!("{config}: {e}"))?;
    let held: Vec<Held> = (0..n).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for h in &held {
        let mut watch =
            Watch::new(url, Duration::from_secs(5), Arc::new(tokio::sync::Notify::new())).map_err(|e| e.to_string())?;
        let h = h.clone();
        tokio::spawn(async move {
            loop {
                if let Seen::Version(p) = watch.next().await {
                    let at = Instant::now();
                    h.lock().unwrap_or_else(|p| p.into_inner()).push((p.version, at));
                }
            }
        });
    }
    let first = publish(url, &base, "/v1").await?;
    wait_all(&held, first, Duration::from_secs(30)).await?;
    let mut runs = vec![measure(url, &base, "/v2", &held, &nodes, "run").await?];
    if let Ok(restart) = std::env::var("RESTART") {
        let status = std::process::Command::new("sh").args(["-c", &restart]).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("RESTART: {status}"));
        }
        runs.push(measure(url, &base, "/v3", &held, &nodes, "after a Redis restart").await?);
    }
    println!("{}", serde_json::Value::Array(runs));
    Ok(())
}

/// Publishes `base` with a route at `path` (trying again while Redis is
/// not back), then waits for every follower and node to have it.
async fn measure(
    url: &str,
    base: &str,
    path: &str,
    held: &[Held],
    nodes: &[SocketAddr],
    name: &str,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (version, published) = loop {
        match publish(url, base, path).await {
            Ok(v) => break (v, Instant::now()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let polls: Vec<_> = nodes.iter().map(|&addr| tokio::spawn(serves(addr, path.to_string(), published))).collect();
    wait_all(held, version, Duration::from_secs(30)).await?;
    let mut took: Vec<u64> = held
        .iter()
        .filter_map(|h| {
            let h = h.lock().unwrap_or_else(|p| p.into_inner());
            h.iter()
                .find(|(v, _)| *v == version)
                .map(|(_, at)| at.saturating_duration_since(published).as_micros() as u64)
        })
        .collect();
    took.sort_unstable();
    let mut by_node = Vec::new();
    for p in polls {
        by_node.push(p.await.map_err(|e| e.to_string())??);
    }
    let at = |q: f64| took.get(((took.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    Ok(serde_json::json!({
        "run": name,
        "version": version,
        "followers": took.len(),
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "max_us": took.last().copied().unwrap_or(0),
        "nodes_us": by_node,
    }))
}

async fn publish(url: &str, base: &str, path: &str) -> Result<u64, String> {
    let file = std::env::temp_dir().join(format!("followers-{}.toml", std::process::id()));
    let text = format!("{base}\n[[routes]]\nname = \"published\"\npath = \"{path}\"\nservice = \"echo\"\n");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    registry::publish(&file, url, Some(format!("route {path}")), Some("bench".into())).await.map_err(|e| e.to_string())
}

/// Waits until every follower holds `version`.
async fn wait_all(held: &[Held], version: u64, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let missing = held
            .iter()
            .filter(|h| !h.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(v, _)| *v == version))
            .count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{missing} followers never got version {version}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Microseconds from `since` until the node at `addr` answers `path` with 200.
async fn serves(addr: SocketAddr, path: String, since: Instant) -> Result<u64, String> {
    let deadline = since + Duration::from_secs(30);
    loop {
        if super::status(addr, &path).await == Some(200) {
            return Ok(since.elapsed().as_micros() as u64);
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} never served {path}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
