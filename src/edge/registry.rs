//! The registry at the edge (`kv-schema/registry.md`): which config an
//! instance runs when the deployment follows the registry, and the admin
//! route an operator publishes through when the store is not one the
//! `portcullis` CLI can write (Spin's default SQLite store, a cloud's).
//!
//! Two Spin variables decide, per deployment:
//! - `portcullis_registry`: `follow` or `off`. A WASI 0.3 instance follows
//!   unless `off` (one store read a second); a WASI 0.2 one only with
//!   `follow` (one store read a request).
//! - `portcullis_registry_token_sha256`: the SHA-256 (hex) of the bearer
//!   token the admin route takes; unset, there is no admin route.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::config::auth::parse_sha256;
use crate::config::published::{Consumer, EDGE_CONFIG, EDGE_CURRENT, EdgeConfig, api_key_providers, consumer_key};
use crate::config::{Config, Variables};
use crate::pipeline::ids::request_id;
use crate::pipeline::log::rfc3339;
use crate::ports::{Clock, KvError, KvStore, Ports, ReadBodyError, read_body};
use crate::shared::entropy::Entropy;
use crate::shared::headers::bearer_sha256;
use crate::shared::hex::hex;
use crate::shared::problem::{Answer, Problem, Source};

pub(super) const FOLLOW_VARIABLE: &str = "portcullis_registry";
pub(super) const TOKEN_VARIABLE: &str = "portcullis_registry_token_sha256";
/// Where the admin route answers (nothing else of the gateway's is there).
const ADMIN: &str = "/.portcullis/registry";
const CONFIG_LIMIT: usize = 4 << 20;
const CONSUMER_LIMIT: usize = 64 << 10;

/// Whether an instance follows the registry, by the Spin variable
/// (`None`: not declared) and the flavour's default.
pub(super) fn follows(value: Option<&str>, by_default: bool) -> bool {
    match value.map(str::trim) {
        Some("follow") => true,
        Some("off") => false,
        Some(other) => {
            eprintln!(
                "portcullis: {FOLLOW_VARIABLE} is `{other}`, not `follow` or `off`: the registry is not followed"
            );
            false
        }
        None => by_default,
    }
}

/// The published config, if one is current.
pub(super) async fn published<P: Ports>(ports: &P) -> Result<Option<EdgeConfig>, String> {
    let read = ports.kv().get(EDGE_CONFIG).await.map_err(|e| e.to_string())?;
    read.map(|bytes| EdgeConfig::decode(&bytes)).transpose()
}

/// The current version's pointer (`<version> <sha256>`), if one is current.
#[cfg(feature = "edge-p3")]
pub(super) async fn pointer<P: Ports>(ports: &P) -> Result<Option<String>, KvError> {
    Ok(ports.kv().get(EDGE_CURRENT).await?.map(|p| String::from_utf8_lossy(&p).into_owned()))
}

/// Why the admin route refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    #[error("a bearer token whose SHA-256 is the deployment's {TOKEN_VARIABLE} is required")]
    Unauthorized,
    #[error("no such registry resource: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the store failed: {0}")]
    Store(String),
}

impl Answer for AdminError {
    fn problem(&self) -> Problem {
        let (status, slug, source) = match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", Source::Client),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", Source::Client),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-registry-record", Source::Client),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", Source::Client),
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", Source::Store),
        };
        let p = Problem::new(status, slug, self.to_string(), source);
        if matches!(self, Self::Unauthorized) {
            p.header(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"portcullis-registry\""))
        } else {
            p
        }
    }
}

impl From<KvError> for AdminError {
    fn from(e: KvError) -> Self {
        AdminError::Store(e.to_string())
    }
}

/// Whether a request is for the admin route (which answers it whole).
pub(super) fn is_admin(path: &str) -> bool {
    path == ADMIN || path.strip_prefix(ADMIN).is_some_and(|rest| rest.starts_with('/'))
}

/// The admin route:
/// - `GET /.portcullis/registry`: the current version;
/// - `PUT /.portcullis/registry/config` (the TOML; `x-portcullis-file`
///   names it): compiled here first, then made the next version;
/// - `PUT /.portcullis/registry/consumers` (a consumer, JSON) and
///   `DELETE /.portcullis/registry/consumers/<provider>/<key_sha256>`.
///
/// `vars` gives the values of the named Spin variables; `running` is the
/// config this instance runs (a consumer's provider must be one of its).
pub(super) async fn admin<P, B>(
    ports: &P,
    token_sha256: &str,
    running: Option<&Config>,
    vars: impl AsyncFn(&[String]) -> Variables,
    req: Request<B>,
) -> Response<Bytes>
where
    P: Ports,
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let id = request_id(req.headers().get("x-request-id"), &Entropy::draw(0));
    let asked = format!("{} {}", req.method(), req.uri().path());
    let answer = match authorized(token_sha256, req.headers()) {
        Ok(()) => route(ports, running, vars, req).await,
        Err(e) => Err(e),
    };
    // Every change, and every refusal, in Spin's log.
    match &answer {
        Ok(_) if asked.starts_with("GET ") => {}
        Ok(json) => eprintln!("portcullis: registry: {asked}: {json}"),
        Err(e) => eprintln!("portcullis: registry: {asked} refused: {e}"),
    }
    let mut resp = match answer {
        Ok(json) => {
            let mut resp = Response::new(Bytes::from(json.to_string()));
            resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => e.problem().to_response(&id),
    };
    resp.headers_mut().insert("x-request-id", id);
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

fn authorized(token_sha256: &str, headers: &http::HeaderMap) -> Result<(), AdminError> {
    let expected = parse_sha256(token_sha256.trim()).map_err(|e| {
        eprintln!("portcullis: {TOKEN_VARIABLE}: {e}; the registry route refuses every token");
        AdminError::Unauthorized
    })?;
    match bearer_sha256(headers.get(header::AUTHORIZATION)) {
        Some(digest) if digest == expected => Ok(()),
        _ => Err(AdminError::Unauthorized),
    }
}

async fn route<P, B>(
    ports: &P,
    running: Option<&Config>,
    vars: impl AsyncFn(&[String]) -> Variables,
    req: Request<B>,
) -> Result<serde_json::Value, AdminError>
where
    P: Ports,
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let (parts, body) = req.into_parts();
    let rest = parts.uri.path().strip_prefix(ADMIN).unwrap_or_default();
    match (&parts.method, rest) {
        (&Method::GET, "" | "/") => {
            let current = published(ports).await.map_err(AdminError::Store)?;
            Ok(current.map_or(serde_json::json!({ "current": null }), |c| version(&c)))
        }
        (&Method::PUT, "/config") => {
            let text = body_text(body, CONFIG_LIMIT).await?;
            let file = parts.headers.get("x-portcullis-file").and_then(|v| v.to_str().ok()).unwrap_or("published.toml");
            publish(ports, &text, file, vars).await
        }
        (&Method::PUT, "/consumers") => {
            let text = body_text(body, CONSUMER_LIMIT).await?;
            let mut consumer: Consumer =
                serde_json::from_str(&text).map_err(|e| AdminError::Invalid(format!("not a consumer: {e}")))?;
            consumer.key_sha256 = consumer.key_sha256.trim().to_ascii_lowercase();
            consumer.added_at = rfc3339(ports.clock().now());
            let providers = running.map(api_key_providers);
            consumer.check(providers.as_deref()).map_err(AdminError::Invalid)?;
            let record = serde_json::to_vec(&consumer).map_err(|e| AdminError::Invalid(e.to_string()))?;
            ports.kv().set(&consumer.edge_key(), &record, None).await?;
            Ok(serde_json::json!({ "added": consumer.field() }))
        }
        (&Method::DELETE, rest) if rest.starts_with("/consumers/") => {
            let field = &rest["/consumers/".len()..];
            let (provider, sha) = field.split_once('/').ok_or_else(|| AdminError::NotFound(rest.to_string()))?;
            let key = consumer_key(provider, &sha.to_ascii_lowercase());
            if ports.kv().get(&key).await?.is_none() {
                return Err(AdminError::NotFound(format!("consumer {field}")));
            }
            ports.kv().delete(&key).await?;
            Ok(serde_json::json!({ "revoked": field }))
        }
        (_, rest) => Err(AdminError::NotFound(format!("{} {ADMIN}{rest}", parts.method))),
    }
}

/// Compiles `text` with this deployment's variables (nothing that does
/// not compile is published), then stores it as the next version.
async fn publish<P: Ports>(
    ports: &P,
    text: &str,
    file: &str,
    vars: impl AsyncFn(&[String]) -> Variables,
) -> Result<serde_json::Value, AdminError> {
    let sha256 = hex(&Sha256::digest(text.as_bytes()));
    let last = published(ports).await.map_err(AdminError::Store)?.map_or(0, |c| c.version);
    let published_at = rfc3339(ports.clock().now());
    let record = EdgeConfig::new(last + 1, &sha256, &published_at, file, text).map_err(AdminError::Invalid)?;
    let values = vars(&record.variable_names()).await;
    record.compile(&values).map_err(|e| AdminError::Invalid(e.to_string()))?;
    // The record first: an instance that sees the new pointer finds it.
    ports.kv().set(EDGE_CONFIG, &record.encode(), None).await?;
    ports.kv().set(EDGE_CURRENT, record.pointer().as_bytes(), None).await?;
    Ok(version(&record))
}

fn version(c: &EdgeConfig) -> serde_json::Value {
    serde_json::json!({ "current": c.version, "sha256": c.sha256, "published_at": c.published_at, "file": c.file })
}

async fn body_text<B>(body: B, limit: usize) -> Result<String, AdminError>
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let bytes = read_body(body, limit).await.map_err(|e| match e {
        ReadBodyError::TooLarge(n) => AdminError::TooLarge(n),
        ReadBodyError::Read(e) => AdminError::Invalid(e),
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| AdminError::Invalid("the body is not UTF-8".into()))
}
