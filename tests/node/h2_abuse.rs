//! HTTP/2 over TLS under abuse: raw frames from a client that means harm
//! (rapid reset, CONTINUATION, PING and SETTINGS floods, more streams than
//! allowed, an oversized header list, a body far past the window) against
//! a real TLS listener, while another client is served. Each shows the
//! node's answer to the pattern and that its CPU and memory stay bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::origin::Origin;
use super::support::pki::{Ca, write};
use super::support::{self, Node, get};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const NO_ERROR: u32 = 0x0;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block: GET https://a.test{path}, plus `extra` (name,
/// value) pairs, every field a literal without indexing.
fn block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https (static table)
    let literal = |b: &mut Vec<u8>, bytes: &[u8]| {
        assert!(bytes.len() < 127 || bytes.len() < (1 << 14));
        if bytes.len() < 127 {
            b.push(bytes.len() as u8);
        } else {
            // 7-bit prefix integer: 127, then the rest in 7-bit groups.
            b.push(127);
            let mut rest = bytes.len() - 127;
            while rest >= 128 {
                b.push((rest % 128) as u8 | 0x80);
                rest /= 128;
            }
            b.push(rest as u8);
        }
        b.extend_from_slice(bytes);
    };
    b.push(0x04); // :path, by its static index
    literal(&mut b, path.as_bytes());
    b.push(0x01); // :authority
    literal(&mut b, b"a.test");
    for (name, value) in extra {
        b.push(0x00); // literal name
        literal(&mut b, name.as_bytes());
        literal(&mut b, value.as_bytes());
    }
    b
}

/// A node with a TLS listener (`h2`) and a plaintext one for the
/// well-behaved client, in front of a real origin.
struct Target {
    node: Node,
    ca: rustls::pki_types::CertificateDer<'static>,
    _origin: Origin,
}

async fn target(extra_flags: &[&str]) -> Target {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let ca = Ca::new("abuse CA");
    let pair = ca.server(&["a.test"], Duration::from_secs(3600));
    let dir = support::temp_path("h2-abuse");
    let (cert, key) = (write(&dir, "a.pem", &pair.cert), write(&dir, "a.key", &pair.key));
    let config = format!(
        "[services.echo]\nurl = \"http://127.0.0.1:{}\"\n\n[[routes]]\npath = \"/{{*rest}}\"\nservice = \"echo\"\n\n\
         [[listeners]]\nname = \"h2\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        origin.port(),
        cert.display(),
        key.display()
    );
    let node = Node::start_args(&config, &[], extra_flags);
    let _ = std::fs::remove_dir_all(&dir); // read at start
    Target { node, ca: ca.der(), _origin: origin }
}

/// A TLS connection to the node's `h2` listener that chose HTTP/2.
async fn h2(t: &Target) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(t.node.listener("h2")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tls
}

/// The node's CPU time so far and its resident memory.
fn usage(pid: i32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB");
    (Duration::from_millis(ticks * 1000 / hz), rss_kb.trim().parse().unwrap())
}

fn clock_ticks() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100)
}

/// What the node sent back.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    goaway: Option<u32>,
    refused: usize,
}

/// What an attack came to.
#[derive(Debug)]
struct Outcome {
    /// The node closed the connection (GOAWAY or end of stream) within the time given.
    closed: bool,
    goaway: Option<u32>,
    refused: usize,
    cpu: Duration,
    rss_growth_kb: i64,
    /// The well-behaved client's slowest answer during the attack.
    slowest: Duration,
}

/// An empty frame in an attack: the attacker pauses this long.
const PAUSE_MS: u64 = 50;

/// Writes `frames` on a fresh HTTP/2 connection (as fast as the node takes
/// them, pausing at each empty one) while reading what it sends, and a well-behaved client asks for
/// `/hello` every 50 ms on the plaintext listener; stops `settle` after the
/// last frame or when the node closes the connection.
async fn attack(t: &Target, frames: Vec<Vec<u8>>, settle: Duration) -> Outcome {
    let pid = t.node.pid();
    let (cpu0, rss0) = usage(pid);
    let (mut reader, mut writer) = tokio::io::split(h2(t).await);
    let write = tokio::spawn(async move {
        for f in frames {
            if f.is_empty() {
                let _ = writer.flush().await;
                tokio::time::sleep(Duration::from_millis(PAUSE_MS)).await;
                continue;
            }
            if writer.write_all(&f).await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
    });
    let sent_back = Arc::new(std::sync::Mutex::new(Seen::default()));
    let record = sent_back.clone();
    let read = tokio::spawn(async move {
        let mut head = [0u8; 9];
        loop {
            if reader.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err() {
                return;
            }
            let code = |at: usize| payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let mut seen = record.lock().unwrap();
            match head[3] {
                GOAWAY => seen.goaway = code(4),
                RST_STREAM if code(0) == Some(REFUSED_STREAM) => seen.refused += 1,
                _ => {}
            }
        }
    });
    let slowest = Arc::new(AtomicU64::new(0));
    let (addr, seen) = (t.node.addr, slowest.clone());
    let good = tokio::spawn(async move {
        loop {
            let started = Instant::now();
            let reply = support::send(addr, get("/hello")).await;
            assert_eq!(reply.status, 200, "the other client is served");
            seen.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(20), write).await;
    let closed = tokio::time::timeout(settle, read).await.is_ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    good.abort();
    if let Err(e) = good.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    let Seen { goaway, refused } = *sent_back.lock().unwrap();
    let (cpu1, rss1) = usage(pid);
    Outcome {
        closed,
        goaway,
        refused,
        cpu: cpu1 - cpu0,
        rss_growth_kb: rss1 as i64 - rss0 as i64,
        slowest: Duration::from_micros(slowest.load(Ordering::Relaxed)),
    }
}

/// Served well: the node's own figures for it, with room for a slow machine.
fn bounded(what: &str, o: &Outcome, cpu: Duration, rss_mb: i64) {
    assert!(o.cpu < cpu, "{what}: the node spent {:?} of CPU: {o:?}", o.cpu);
    assert!(o.rss_growth_kb < rss_mb * 1024, "{what}: the node grew by {} KiB: {o:?}", o.rss_growth_kb);
    assert!(o.slowest < Duration::from_secs(2), "{what}: the other client waited {:?}: {o:?}", o.slowest);
    eprintln!("{what}: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection() {
    // Reset before the node takes the streams up: h2 counts them.
    let t = target(&[]).await;
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        frames.push(frame(HEADERS, END_HEADERS | END_STREAM, id, &block("/hello", &[])));
        frames.push(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let o = attack(&t, frames, Duration::from_secs(10)).await;
    assert!(o.closed && o.goaway == Some(ENHANCE_YOUR_CALM), "the connection was closed: {o:?}");
    bounded("rapid reset", &o, Duration::from_secs(3), 64);

    // Reset once each request is on its way to the origin: the node counts
    // requests cancelled before their answers and closes the connection.
    let mut frames = Vec::new();
    for batch in 0..100u32 {
        let ids: Vec<u32> = (0..10).map(|i| 2 * (batch * 10 + i) + 1).collect();
        frames.extend(ids.iter().map(|&id| frame(HEADERS, END_HEADERS | END_STREAM, id, &block("/delay/2000", &[]))));
        frames.push(Vec::new());
        frames.extend(ids.iter().map(|&id| frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes())));
    }
    let o = attack(&t, frames, Duration::from_secs(10)).await;
    assert!(o.closed && o.goaway == Some(NO_ERROR), "the connection was closed: {o:?}");
    bounded("slow rapid reset", &o, Duration::from_secs(3), 64);
    t.node.wait_for_stderr("cancels most of its requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_list_size() {
    let t = target(&[]).await;
    let mut frames = vec![frame(HEADERS, END_STREAM, 1, &block("/hello", &[]))];
    let junk = vec![0x40u8; 16_000];
    frames.extend((0..5_000).map(|_| frame(CONTINUATION, 0, 1, &junk))); // 80 MB, never END_HEADERS
    let o = attack(&t, frames, Duration::from_secs(10)).await;
    assert!(o.closed, "the connection was closed: {o:?}");
    bounded("CONTINUATION flood", &o, Duration::from_secs(3), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_cost_little() {
    let t = target(&[]).await;
    let pings = (0..200_000u64).map(|i| frame(PING, 0, 0, &i.to_be_bytes())).collect();
    let o = attack(&t, pings, Duration::from_secs(3)).await;
    bounded("PING flood", &o, Duration::from_secs(5), 64);
    let settings = (0..200_000).map(|_| frame(SETTINGS, 0, 0, &[0, 0x3, 0, 0, 0, 100])).collect();
    let o = attack(&t, settings, Duration::from_secs(3)).await;
    bounded("SETTINGS flood", &o, Duration::from_secs(5), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused() {
    let t = target(&["--h2-max-streams", "64"]).await;
    // Streams left open (no END_STREAM): each waits for a body that never comes.
    let frames = (0..200u32).map(|i| frame(HEADERS, END_HEADERS, 2 * i + 1, &block("/delay/5000", &[]))).collect();
    let o = attack(&t, frames, Duration::from_secs(3)).await;
    assert_eq!(o.refused, 200 - 64, "streams past 64 were refused: {o:?}");
    bounded("too many streams", &o, Duration::from_secs(3), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_far_past_the_limit_or_a_body_past_the_window_closes_the_connection() {
    let t = target(&[]).await;
    let big = "x".repeat(15_000);
    let headers: Vec<(&str, &str)> = (0..8).map(|_| ("x-big", big.as_str())).collect();
    let block = block("/hello", &headers); // 120 KB: in a HEADERS and CONTINUATIONs
    let mut frames = vec![frame(HEADERS, END_STREAM, 1, &block[..16_000])];
    let chunks: Vec<&[u8]> = block[16_000..].chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        frames.push(frame(CONTINUATION, if i + 1 == chunks.len() { END_HEADERS } else { 0 }, 1, c));
    }
    let o = attack(&t, frames, Duration::from_secs(3)).await;
    // (A list a little past the limit is answered 431: conformance.)
    assert!(o.closed && o.goaway == Some(ENHANCE_YOUR_CALM), "the connection was closed: {o:?}");
    bounded("oversized header list", &o, Duration::from_secs(3), 64);

    // 64 MB on one stream to an origin that takes its time, far past the
    // windows the node granted: a flow-control error, and what the node
    // held stayed within those windows.
    let mut frames = vec![frame(HEADERS, END_HEADERS, 1, &self::block("/delay/3000", &[]))];
    let chunk = vec![b'z'; 16_000];
    frames.extend((0..4_000).map(|_| frame(DATA, 0, 1, &chunk)));
    let o = attack(&t, frames, Duration::from_secs(3)).await;
    assert!(o.closed && o.goaway == Some(FLOW_CONTROL_ERROR), "the connection was closed: {o:?}");
    bounded("body past the window", &o, Duration::from_secs(3), 64);
}
