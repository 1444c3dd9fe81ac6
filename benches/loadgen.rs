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
//! `--fresh-tokens ALG:PEM` sends every request a token never seen before
//! (minted before the run, so minting costs the measurement nothing): the
//! gateway verifies each one, uncached;
//! `--forged-tokens ALG:PEM` does the same with one character of each
//! signature changed: well-formed tokens whose signatures fail;
//! `--expect-status CODE` counts answers with that status (default: 2xx);
//! `--distinct-header NAME` gives every request its own value of header
//! NAME (a counter): a client never seen before on each request;
//! `loadgen mint <PEM>` prints a token for the bench config's JWT route;
//! `loadgen delay <PORT> <TARGET> <MICROSECONDS>` serves, until killed, a
//! proxy on 127.0.0.1:PORT to TARGET that holds every chunk that long each
//! way (`tests/support/delay.rs`): Redis as if across a network;
//! `loadgen followers …` measures how fast a published config reaches a
//! fleet (`benches/followers.rs`).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a load generator

#[path = "../tests/support/delay.rs"]
mod delay;
mod followers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// `(algorithm, private key PEM path)` for `--fresh-tokens`.
    fresh: Option<(jsonwebtoken::Algorithm, String)>,
    /// `--forged-tokens`: the fresh tokens' signatures are altered.
    forged: bool,
    /// A header whose value differs on every request.
    distinct: Option<String>,
    /// `--expect-status`: the status that counts as an answer (default: any 2xx).
    expect: Option<u16>,
}

/// The next value of `--distinct-header`.
static DISTINCT: AtomicUsize = AtomicUsize::new(0);

/// Pre-minted tokens, one per request, handed out in send order.
#[derive(Default)]
struct Tokens {
    list: Vec<String>,
    next: AtomicUsize,
}

impl Tokens {
    fn take(&self) -> Option<&str> {
        self.list.get(self.next.fetch_add(1, Ordering::Relaxed)).map(String::as_str)
    }
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: http::Uri::default(),
        headers: Vec::new(),
        rate: 1000.0,
        connections: 16,
        seconds: 10.0,
        warmup: 2.0,
        fresh: None,
        forged: false,
        distinct: None,
        expect: None,
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
            "--fresh-tokens" | "--forged-tokens" => {
                let (alg, pem) = value.split_once(':').ok_or(format!("{flag} RS256|ES256|EdDSA:<PEM>"))?;
                let alg = alg.parse().map_err(|e| format!("{flag}: {e}"))?;
                a.fresh = Some((alg, pem.to_string()));
                a.forged = flag == "--forged-tokens";
            }
            "--distinct-header" => a.distinct = Some(value),
            "--expect-status" => a.expect = Some(value.parse().map_err(|e| format!("--expect-status: {e}"))?),
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

/// The status of one GET of `path` on a new connection to `addr`.
async fn status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut sender = connect(&addr.to_string()).await?;
    let req = http::Request::get(path).header("host", "bench.test").body(Empty::<Bytes>::new()).ok()?;
    Some(sender.send_request(req).await.ok()?.status().as_u16())
}

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
async fn connection(
    args: &Args,
    tokens: &Tokens,
    offset: Duration,
    interval: Duration,
    start: Instant,
) -> Vec<Option<u32>> {
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
                if let Some(name) = &args.distinct {
                    req = req.header(name.as_str(), DISTINCT.fetch_add(1, Ordering::Relaxed));
                }
                if let Some(token) = tokens.take() {
                    req = req.header("authorization", format!("Bearer {token}"));
                }
                match s.send_request(req.body(Empty::<Bytes>::new()).expect("request")).await {
                    Ok(resp) => {
                        let status = resp.status();
                        args.expect.map_or(status.is_success(), |e| status.as_u16() == e)
                            && resp.into_body().collect().await.is_ok()
                    }
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

/// `count` distinct tokens (each its own `jti`) for the bench config's JWT
/// route, valid for a day, signed with `alg`; the kid names the algorithm's
/// key in `benches/gateway.toml` (`rs`, `es`, `ed`).
fn mint(alg: jsonwebtoken::Algorithm, pem_path: &str, count: usize, forged: bool) -> Result<Vec<String>, String> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let pem = std::fs::read(pem_path).map_err(|e| format!("{pem_path}: {e}"))?;
    let (key, kid) = match alg {
        Algorithm::RS256 => (EncodingKey::from_rsa_pem(&pem), "rs"),
        Algorithm::ES256 => (EncodingKey::from_ec_pem(&pem), "es"),
        Algorithm::EdDSA => (EncodingKey::from_ed_pem(&pem), "ed"),
        other => return Err(format!("no bench key for {other:?}")),
    };
    let key = key.map_err(|e| format!("{pem_path}: {e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    (0..count)
        .map(|jti| {
            let claims =
                serde_json::json!({"iss": "https://idp.bench/", "aud": "api", "sub": "bench", "exp": now + 86_400, "jti": jti});
            let mut token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())?;
            if forged {
                // A character in the middle of the signature carries six
                // whole bits of it: the length and alphabet stay valid.
                let at = token.rfind('.').unwrap_or(0) + (token.len() - token.rfind('.').unwrap_or(0)) / 2;
                let swap = if &token[at..=at] == "A" { "B" } else { "A" };
                token.replace_range(at..=at, swap);
            }
            Ok(token)
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("mint") {
        let pem = std::env::args().nth(2).ok_or_else(|| "mint <private key PEM>".to_string());
        match pem.and_then(|p| mint(jsonwebtoken::Algorithm::RS256, &p, 1, false)) {
            Ok(tokens) => println!("{}", tokens.concat()),
            Err(e) => {
                eprintln!("loadgen mint: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("followers") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        if let Err(e) = followers::run(&args).await {
            eprintln!("loadgen followers: {e}");
            std::process::exit(2);
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("delay") {
        let arg = |n| std::env::args().nth(n).unwrap_or_default();
        let (port, target, us) = (arg(2).parse(), arg(3).parse(), arg(4).parse());
        let (Ok(port), Ok(target), Ok(us)) = (port, target, us) else {
            eprintln!("loadgen delay <port> <target address> <microseconds each way>");
            std::process::exit(2);
        };
        match delay::start(port, target, Duration::from_micros(us)).await {
            Ok(addr) => println!("delaying {addr} -> {target} by {us} µs each way"),
            Err(e) => {
                eprintln!("loadgen delay: {e}");
                std::process::exit(2);
            }
        }
        std::future::pending::<()>().await;
    }
    let args = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let mut tokens = Tokens::default();
    if let Some((alg, pem)) = &args.fresh {
        // Every scheduled send, plus slack for rounding.
        let count = (args.rate * (args.warmup + args.seconds)) as usize + args.connections * 2;
        match mint(*alg, pem, count, args.forged) {
            Ok(list) => tokens.list = list,
            Err(e) => {
                eprintln!("loadgen: --fresh-tokens: {e}");
                std::process::exit(2);
            }
        }
    }
    let tokens = Arc::new(tokens);
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            let (args, tokens) = (args.clone(), tokens.clone());
            let offset = interval.mul_f64(i as f64 / args.connections as f64);
            tokio::spawn(async move { connection(&args, &tokens, offset, interval, start).await })
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
