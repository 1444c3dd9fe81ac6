//! A real HTTP origin on loopback for tests, benches and the demo: it
//! answers with a JSON echo of what it received, so a test can see exactly
//! what crossed the gateway, and it records every request it got.
//!
//! Paths with a meaning:
//! - `/delay/{ms}[/…]`: wait, then echo;
//! - `/status/{code}[/…]`: answer with that status (and the echo) — so a
//!   target URL such as `http://origin/status/503` makes a failing target;
//! - `/bytes/{n}`: `n` bytes of `x`, streamed in 16 KiB chunks;
//! - `/hello`: a fixed 13-byte text body (for load tests);
//! - `/flap[/…]`: every other request in the process answers 503.
//!
//! A request header `x-echo-response-header: name: value` makes the origin
//! add that header to its response (repeatable).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Requests to `/flap` so far, in this process.
static FLAPS: AtomicUsize = AtomicUsize::new(0);

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

/// A running origin; it stops when its runtime does.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    open: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
}

/// What a TLS origin saw of one handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate, DER.
    pub client_cert: Option<Vec<u8>>,
}

impl Origin {
    /// Binds `addr` (use port 0 for any free port) and serves in the background.
    pub async fn start(addr: &str) -> std::io::Result<Origin> {
        Self::serve(addr, None).await
    }

    /// The same origin over TLS: `tls` decides its certificate, whether it
    /// asks for a client's, and ALPN (HTTP/1.1 and HTTP/2 are both served).
    #[allow(dead_code)] // not every user of this file serves TLS
    pub async fn start_tls(addr: &str, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Origin> {
        Self::serve(addr, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(addr).await?;
        let origin = Origin {
            addr: listener.local_addr()?,
            received: Arc::default(),
            open: Arc::default(),
            handshakes: Arc::default(),
        };
        let (received, open, handshakes) = (origin.received.clone(), origin.open.clone(), origin.handshakes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (received, open, handshakes, tls) =
                    (received.clone(), open.clone(), handshakes.clone(), tls.clone());
                tokio::spawn(async move {
                    open.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |req| answer(req, received.clone()));
                    let serving = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => drop(serving.serve_connection(TokioIo::new(stream), service).await),
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let (_, conn) = stream.get_ref();
                                let seen = Handshake {
                                    sni: conn.server_name().map(str::to_string),
                                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                                    client_cert: conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()),
                                };
                                if let Ok(mut h) = handshakes.lock() {
                                    h.push(seen);
                                }
                                drop(serving.serve_connection(TokioIo::new(stream), service).await);
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(origin)
    }

    /// The TLS handshakes completed so far.
    #[allow(dead_code)]
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

async fn answer(req: Request<Incoming>, log: Arc<Mutex<Vec<Received>>>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path == "/hello" {
        return Ok(Response::new(full("hello, world\n")));
    }
    // A problem status whose body went missing (for the harness's own test).
    if let Some(code) = path.strip_prefix("/empty/").and_then(|c| StatusCode::from_bytes(c.as_bytes()).ok()) {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = code;
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/problem+json"));
        return Ok(resp);
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    // `/once/…`: answers as usual the first time, then 503 (an origin gone bad).
    let again = path.starts_with("/once/")
        && log.lock().is_ok_and(|l| l.iter().any(|r| r.uri.split('?').next() == Some(path.as_str())));
    let seen = Received {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: headers.clone(),
        body_len: body.len(),
    };
    if let Ok(mut l) = log.lock() {
        l.push(seen);
    }

    let mut status = if again { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    match segments.as_slice() {
        ["delay", rest] => {
            let ms = rest.split('/').next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await
        }
        ["status", rest] => {
            let code = rest.split('/').next().and_then(|c| c.parse().ok());
            status = code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST)
        }
        ["bytes", n] => return Ok(streamed(n.parse().unwrap_or(0))),
        ["flap", ..] if FLAPS.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) => {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        _ => {}
    }

    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": path,
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect::<Vec<_>>(),
        "body_len": body.len(),
        "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
    });
    let mut resp = Response::new(full(serde_json::to_vec(&echo).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    for v in parts.headers.get_all("x-echo-response-header") {
        let Some((name, value)) = v.to_str().ok().and_then(|s| s.split_once(':')) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim())) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}

fn streamed(n: usize) -> Response<Body> {
    Response::new(Chunks { remaining: n }.boxed())
}

/// `remaining` bytes of `x`, one 16 KiB frame at a time.
struct Chunks {
    remaining: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let len = self.remaining.min(16 << 10);
        self.remaining -= len;
        std::task::Poll::Ready((len > 0).then(|| Ok(Frame::data(Bytes::from(vec![b'x'; len])))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining as u64)
    }
}

/// An origin that writes canned bytes, to misbehave in ways a well-kept
/// HTTP server will not: by the request path,
/// - `/te-and-cl`: `Transfer-Encoding: chunked` and a `Content-Length` that
///   is not the body's (5), then a 20-byte chunked body; `/te-and-cl-20`
///   the same with a length that matches;
/// - `/huge-head/{kib}`: a 200 whose head has `kib` KiB of headers.
///
/// Each connection serves one request and closes. It counts the requests
/// it was sent, by path.
pub struct RawOrigin {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
}

impl RawOrigin {
    pub async fn start() -> std::io::Result<RawOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let Some(head) = read_head(&mut stream).await else { return };
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(path.clone());
                    let _ = stream.write_all(&canned(&path)).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(RawOrigin { addr, hits })
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|p| *p == path).count()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Reads a request head up to its blank line (`None`: the peer closed or failed first).
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

fn canned(path: &str) -> Vec<u8> {
    let te_and_cl = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n\
             a\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"
        )
        .into_bytes()
    };
    match path {
        "/te-and-cl" => return te_and_cl(5),
        "/te-and-cl-20" => return te_and_cl(20),
        _ => {}
    }
    if let Some(kib) = path.strip_prefix("/huge-head/").and_then(|k| k.parse::<usize>().ok()) {
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n".to_vec();
        for i in 0..kib {
            out.extend_from_slice(format!("x-filler-{i:04}: {}\r\n", "f".repeat(1000)).as_bytes());
        }
        out.extend_from_slice(b"\r\nok");
        return out;
    }
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
}
