//! The operator's listeners, apart from the traffic port: `/metrics` on
//! `--metrics-listen`, and the admin API on `--admin-listen`:
//!
//! - `GET /healthz`: the process answers;
//! - `GET /readyz`: 200 once the config is loaded, every key set of a
//!   configured provider is at hand (fetched, or read from the store),
//!   active health checks have run once, and no certificate a listener
//!   serves expires within its listener's `expiry_margin`; 503 otherwise,
//!   saying what waits (and which certificates expire);
//! - `GET /config`: the running config's file, SHA-256, load time and counts;
//! - `POST /reload`: as SIGHUP; 422 with every error if the file is rejected;
//! - `GET /upstreams`: each service's targets, their health, its circuit.
//!
//! From beyond loopback the admin API wants `Authorization: Bearer T` where
//! the SHA-256 of T is in the config's `[admin] token_sha256`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::server::{Node, keys_at_hand, reload};
use crate::pipeline::ids::request_id;
use crate::ports::{Clock, Ports};
use crate::shared::entropy::Entropy;
use crate::shared::problem::{Problem, Source};
use crate::system_clock;

type Answer = Response<Full<Bytes>>;

/// Binds an operator listener, saying where (port 0 picks one).
pub(super) async fn listen(addr: SocketAddr, what: &'static str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--{what}-listen {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
}

/// Serves `GET /metrics`.
pub(super) async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    run(listener, move |req, _| {
        let metrics = metrics.clone();
        async move {
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => match metrics.encode() {
                    Ok(text) => Response::builder()
                        .header(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                        .body(Full::new(Bytes::from(text)))
                        .unwrap_or_default(),
                    Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written"),
                },
                (_, "/metrics") => problem(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
                _ => problem(StatusCode::NOT_FOUND, "this listener serves /metrics"),
            }
        }
    })
    .await;
}

/// Serves the admin API.
pub(super) async fn serve_admin(listener: TcpListener, node: Arc<Node>) {
    run(listener, move |req, peer| {
        let node = node.clone();
        async move {
            if !peer.ip().is_loopback() && !authorized(&node, &req) {
                let mut answer = problem(StatusCode::UNAUTHORIZED, "a bearer token listed in [admin] is required");
                answer.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return answer;
            }
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/healthz") => json_answer(StatusCode::OK, &json!({ "status": "ok" })),
                (&Method::GET, "/readyz") => readiness(&node),
                (&Method::GET, "/config") => config(&node),
                (&Method::POST, "/reload") => reloaded(&node),
                (&Method::GET, "/upstreams") => upstreams(&node),
                (&Method::GET, "/quotas") => quotas(&node, req.uri().query()).await,
                (&Method::GET, "/refusals") => refusals(&node),
                (&Method::POST, "/cache/purge") => cache_purge(&node, req.uri().query()).await,
                (_, "/cache/purge") => problem(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                (_, "/healthz" | "/readyz" | "/config" | "/upstreams" | "/quotas" | "/refusals") => {
                    problem(StatusCode::METHOD_NOT_ALLOWED, "use GET")
                }
                (_, "/reload") => problem(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                _ => problem(
                    StatusCode::NOT_FOUND,
                    "no such admin path (healthz, readyz, config, reload, upstreams, quotas, refusals, cache/purge)",
                ),
            }
        }
    })
    .await;
}

fn authorized(node: &Node, req: &Request<Incoming>) -> bool {
    bearer_listed(req.headers().get(header::AUTHORIZATION), &node.gateway.load().config.admin_tokens)
}

/// An `Authorization: Bearer T` whose SHA-256 is one of `tokens`.
fn bearer_listed(authorization: Option<&header::HeaderValue>, tokens: &[[u8; 32]]) -> bool {
    let Some(token) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    tokens.contains(&digest)
}

fn readiness(node: &Node) -> Answer {
    let keys = keys_at_hand(node);
    let probes = node.probes_ready.load(Ordering::Acquire);
    let now = i64::try_from(node.ports.clock().now().as_secs()).unwrap_or(i64::MAX);
    let expiring: Vec<serde_json::Value> = node
        .listeners
        .certificates()
        .into_iter()
        .filter(|(_, cert, margin)| cert.not_after - now < i64::try_from(margin.as_secs()).unwrap_or(i64::MAX))
        .map(|(listener, cert, _)| json!({ "listener": &*listener, "names": cert.names, "not_after": cert.not_after }))
        .collect();
    let ready = keys && probes && expiring.is_empty();
    let body = json!({
        "ready": ready,
        "checks": { "config": true, "key_sets": keys, "health_checks": probes, "certificates": expiring.is_empty() },
        "expiring_certificates": expiring,
    });
    json_answer(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
}

fn config(node: &Node) -> Answer {
    let gateway = node.gateway.load();
    let c = &gateway.config;
    let loaded = node.loaded.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = json!({
        "file": node.config_path.display().to_string(),
        "source": if node.follower.is_some() { "registry" } else { "file" },
        "version": loaded.version,
        "registry_consumers": gateway.caches.consumers.len(),
        "sha256": loaded.sha256,
        "loaded_at": loaded.at,
        "routes": c.routes.len(),
        "services": c.services.len(),
        "auth_providers": c.auth.providers.len(),
        "rate_limits": c.rate_limits.len(),
    });
    json_answer(StatusCode::OK, &body)
}

fn reloaded(node: &Arc<Node>) -> Answer {
    if let Some(wake) = &node.follower {
        // A node that follows the registry applies what it publishes.
        wake.notify_one();
        return json_answer(StatusCode::ACCEPTED, &json!({ "reloaded": false, "checking": "registry" }));
    }
    match reload(node) {
        Ok(sha256) => json_answer(StatusCode::OK, &json!({ "reloaded": true, "sha256": sha256 })),
        Err(errors) => {
            let errors: Vec<Value> = errors
                .0
                .iter()
                .map(|e| json!({ "file": e.file, "line": e.line, "column": e.column, "key": e.key, "message": e.message }))
                .collect();
            let body = json!({
                "type": "urn:portcullis:problem:config-rejected",
                "title": "the config was rejected; the running config stays",
                "status": 422,
                "reloaded": false,
                "errors": errors,
            });
            json_answer(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}

fn upstreams(node: &Node) -> Answer {
    let gateway = node.gateway.load_full();
    let now = node.ports.clock().now();
    let mono = system_clock::monotonic();
    let services: Vec<Value> = gateway
        .config
        .services
        .iter()
        .zip(gateway.upstreams.iter())
        .map(|(service, state)| {
            let targets: Vec<Value> = service
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| json!({ "target": &*t.label, "weight": t.weight, "healthy": state.target_in(i, mono) }))
                .collect();
            json!({
                "service": &*service.name,
                "circuit": state.circuit(now),
                "in_flight": state.in_flight(),
                "targets": targets,
            })
        })
        .collect();
    json_answer(StatusCode::OK, &json!({ "services": services }))
}

/// `GET /refusals`: the callers rate limits and quotas refused most over
/// the last minutes (a bounded sketch, `native/refusals.rs`).
fn refusals(node: &Node) -> Answer {
    let minute = node.ports.clock().now().as_secs() / 60;
    let top = node.metrics.top_refused.top(20, minute);
    json_answer(StatusCode::OK, &json!({ "minutes": super::refusals::MINUTES, "top": top }))
}

/// `GET /quotas?caller=consumer:partners:acme`: what a caller (as the
/// policies count it, `kv-schema/quotas.md`) has used of each quota.
async fn quotas(node: &Node, query: Option<&str>) -> Answer {
    let caller = query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "caller"));
    let Some(caller) = caller.map(|(_, v)| v.into_owned()).filter(|c| !c.is_empty()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "name the caller: ?caller=consumer:<provider>:<id> (or subject:, header:, ip:)",
        );
    };
    let gateway = node.gateway.load_full();
    let now_us = u64::try_from(node.ports.clock().now().as_micros()).unwrap_or(u64::MAX);
    match crate::pipeline::rate_limit::quota_usage(&gateway.config, node.ports.kv(), &caller, now_us).await {
        Ok(usage) => json_answer(StatusCode::OK, &json!({ "caller": caller, "quotas": usage })),
        Err(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read right now"),
    }
}

/// `POST /cache/purge?route=NAME` (or `?tag=TAG`, `?url=URL`): entries
/// stored before now that it names are dropped here at once and on every
/// node and instance sharing the store within a second.
async fn cache_purge(node: &Node, query: Option<&str>) -> Answer {
    let pairs: Vec<(String, String)> =
        query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let find = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let gateway = node.gateway.load_full();
    let target = crate::pipeline::cache::purge_target(&gateway.config, find("route"), find("tag"), find("url"));
    let purge = match target {
        Ok(purge) => purge,
        Err(why) => {
            let body = json!({ "type": "urn:portcullis:problem:bad-purge", "title": "Bad Request", "status": 400, "detail": why });
            let mut answer = json_answer(StatusCode::BAD_REQUEST, &body);
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
            return answer;
        }
    };
    let clock = node.ports.clock();
    match crate::pipeline::cache::purge(&gateway.cache_memory, node.ports.kv(), clock, &purge).await {
        Ok(at) => json_answer(StatusCode::OK, &json!({ "purged": purge.describe(), "at_us": at })),
        Err(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "purged here; the store cannot be written right now"),
    }
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

/// A problem document, as the gateway answers them (`shared::problem`).
fn problem(status: StatusCode, detail: &'static str) -> Answer {
    let (slug, source) = match status {
        StatusCode::UNAUTHORIZED => ("unauthorized", Source::Client),
        StatusCode::NOT_FOUND => ("not-found", Source::Client),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", Source::Client),
        _ => ("internal", Source::Internal),
    };
    Problem::new(status, slug, detail, source).to_response(&request_id(None, &Entropy::draw(0))).map(Full::new)
}

/// Accepts connections and serves each with HTTP/1.1.
async fn run<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "operator listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = handler(req, peer);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_bearer_token_is_accepted() {
        let tokens = [Sha256::digest(b"s3cret").into()];
        let header = |v: &str| header::HeaderValue::from_str(v).unwrap();
        assert!(bearer_listed(Some(&header("Bearer s3cret")), &tokens));
        for refused in ["Bearer other", "Basic s3cret", "bearer s3cret", "s3cret", "Bearer "] {
            assert!(!bearer_listed(Some(&header(refused)), &tokens), "{refused}");
        }
        assert!(!bearer_listed(None, &tokens));
        assert!(!bearer_listed(Some(&header("Bearer s3cret")), &[]), "no token listed: nobody");
    }
}
