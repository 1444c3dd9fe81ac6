//! The sweep phase (`[sweep]`): an operator's `POST` that removes expired
//! records from a key-value store without expiry (Spin's), one bounded
//! batch per call. Answered before routing; never reaches an origin.
//!
//! ```text
//! POST /_portcullis/sweep?after=<cursor>   Authorization: Bearer <token>
//! 200 {"keys":100012,"examined":1000,"deleted":998,"next":"pc1:rl:per_ip:0f…"}
//! ```

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use thiserror::Error;

use super::{Ctx, Flow, Gateway};
use crate::config::sweep::Sweep;
use crate::ports::{Body, KvError, KvStore, Ports};
use crate::shared::headers::bearer_sha256;
use crate::shared::problem::{Answer, Problem, Source};

#[derive(Debug, Error)]
pub(crate) enum SweepError {
    #[error("the sweep path answers POST only")]
    Method,
    #[error("the sweep requires its bearer token")]
    Unauthorized,
    #[error("the `after` cursor is not a key")]
    BadCursor,
    #[error("the key-value store failed: {0}")]
    Store(#[from] KvError),
}

impl Answer for SweepError {
    fn problem(&self) -> Problem {
        let client = |status, slug| Problem::new(status, slug, self.to_string(), Source::Client);
        match self {
            Self::Method => client(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
                .header(ALLOW, HeaderValue::from_static("POST")),
            Self::Unauthorized => client(StatusCode::UNAUTHORIZED, "unauthorized")
                .header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sweep\"")),
            Self::BadCursor => client(StatusCode::BAD_REQUEST, "bad-request"),
            Self::Store(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the key-value store failed",
                Source::Store,
            ),
        }
    }
}

/// The sweep phase: answers the configured sweep path itself.
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, SweepError> {
    match gateway.config.sweep.as_ref().filter(|s| s.path == ctx.path) {
        Some(sweep) => Ok(Flow::Respond(run(sweep, ports, req).await?.map(Body::<P>::from))),
        None => Ok(Flow::Continue),
    }
}

/// Runs one batch, continuing after the `after` query parameter.
async fn run<P: Ports, B>(sweep: &Sweep, ports: &P, req: &Request<B>) -> Result<Response<Bytes>, SweepError> {
    if req.method() != Method::POST {
        return Err(SweepError::Method);
    }
    if bearer_sha256(req.headers().get(AUTHORIZATION)) != Some(sweep.token_sha256) {
        return Err(SweepError::Unauthorized);
    }
    let after = cursor(req.uri().query())?;
    let report = ports.kv().sweep(after.as_deref(), sweep.batch).await?;
    // Serialising a struct of numbers and strings cannot fail.
    let body = serde_json::to_vec(&report).unwrap_or_default();
    let len = body.len();
    let mut resp = Response::new(Bytes::from(body));
    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The `after` parameter, percent-decoded; keys are printable ASCII.
fn cursor(query: Option<&str>) -> Result<Option<String>, SweepError> {
    let Some(raw) = query.into_iter().flat_map(|q| q.split('&')).find_map(|p| p.strip_prefix("after=")) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hi = bytes.next().and_then(|c| (c as char).to_digit(16));
                let lo = bytes.next().and_then(|c| (c as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => (hi * 16 + lo) as u8,
                    _ => return Err(SweepError::BadCursor),
                }
            }
            b => b,
        });
    }
    match String::from_utf8(out) {
        Ok(key) if key.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(key)),
        _ => Err(SweepError::BadCursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_percent_decoded_keys() {
        assert_eq!(cursor(None).unwrap(), None);
        assert_eq!(cursor(Some("x=1")).unwrap(), None);
        assert_eq!(cursor(Some("after=pc1:rl:a")).unwrap().as_deref(), Some("pc1:rl:a"));
        assert_eq!(cursor(Some("x=1&after=pc1%3Arl%3Ab")).unwrap().as_deref(), Some("pc1:rl:b"));
        for bad in ["after=%zz", "after=%3", "after=a%20b", "after=%ff"] {
            assert!(matches!(cursor(Some(bad)), Err(SweepError::BadCursor)), "{bad}");
        }
    }
}
