//! An open-loop load generator for latency at a fixed request rate.
//!
//! wrk measures peak throughput well, but at a fixed rate it (like any
//! closed-loop tool) hides queueing: a slow response delays the next send
//! and the delay is never counted. Here every request has a scheduled send
//! time and its latency is measured from that time, so stalls show up in
//! the percentiles (no coordinated omission).
//!
//!     cargo run --release --example loadgen -- --url http://127.0.0.1:8080/hello \
//!         --rate 5000 --connections 16 --seconds 10
//!
//! Prints one JSON object: requests, errors, achieved rate, p50/p90/p99/p99.9/max in µs.
//! `--header "name: value"` (repeatable) adds request headers;
//! `loadgen mint <PEM>` prints a token for the bench config's JWT route.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    url: http::Uri,
    headers: Vec<(String, String)>,
    rate: f64,
    connections: usize,
    seconds: f64,
    warmup: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: http::Uri::default(),
        headers: Vec::new(),
        rate: 1000.0,
        connections: 16,
        seconds: 10.0,
        warmup: 2.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = value.parse().map_err(|e| format!("--url: {e}"))?,
            "--rate" => a.rate = value.parse().map_err(|e| format!("--rate: {e}"))?,
            "--connections" => a.connections = value.parse().map_err(|e| format!("--connections: {e}"))?,
            "--seconds" => a.seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => a.warmup = value.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--header" => {
                let (k, v) = value.split_once(':').ok_or("--header name: value")?;
                a.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.url.authority().is_none() {
        return Err("--url http://host:port/path is required".into());
    }
    Ok(a)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(authority: &str) -> Option<Sender> {
    let stream = TcpStream::connect(authority).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Runs one connection's share of the schedule; returns latencies in µs
/// (`None` for a failed request). A connection the server closes is
/// reopened, as a browser or wrk would.
///
/// Latency runs from the scheduled send time when the server is the reason
/// the send was late (the previous response on this connection came after
/// the schedule), and from the actual send time when only this generator's
/// timer was late (tokio timers tick in milliseconds): coordinated omission
/// is corrected without charging the server for the generator's jitter.
async fn connection(args: &Args, offset: Duration, interval: Duration, start: Instant) -> Vec<Option<u32>> {
    let authority = args.url.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = args.url.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let end = start + Duration::from_secs_f64(args.warmup + args.seconds);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let mut samples = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut due = start + offset;
    let mut free_at = start;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(&authority).await;
        }
        let ok = match sender.as_mut() {
            Some(s) => {
                let mut req = http::Request::get(path.as_str()).header("host", &authority);
                for (k, v) in &args.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                match s.send_request(req.body(Empty::<Bytes>::new()).expect("request")).await {
                    Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            None => false,
        };
        let done = Instant::now();
        if due >= measure_from {
            let from = if free_at > due { due } else { sent };
            samples.push(ok.then(|| u32::try_from(done.duration_since(from).as_micros()).unwrap_or(u32::MAX)));
        }
        if !ok {
            sender = None;
        }
        free_at = done;
        due += interval;
    }
    samples
}

/// `loadgen mint <private key PEM>`: an RS256 token (kid `rs`) for the
/// bench config's JWT route, valid for a day.
fn mint(pem_path: &str) -> Result<String, String> {
    let pem = std::fs::read(pem_path).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let claims = serde_json::json!({"iss": "https://idp.bench/", "aud": "api", "sub": "bench", "exp": now + 86_400});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rs".into());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("mint") {
        match std::env::args().nth(2).ok_or_else(|| "mint <private key PEM>".to_string()).and_then(|p| mint(&p)) {
            Ok(token) => println!("{token}"),
            Err(e) => {
                eprintln!("loadgen mint: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let args = match args() {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            let args = args.clone();
            let offset = interval.mul_f64(i as f64 / args.connections as f64);
            tokio::spawn(async move { connection(&args, offset, interval, start).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    for t in tasks {
        for s in t.await.unwrap_or_default() {
            match s {
                Some(us) => latencies.push(us),
                None => errors += 1,
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        let idx = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[idx]
    };
    println!(
        "{{\"requests\":{},\"errors\":{errors},\"rate\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        latencies.len(),
        latencies.len() as f64 / args.seconds,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        latencies.last().copied().unwrap_or(0)
    );
}
