//! Outbound HTTP for the node: hyper's pooled client, keep-alive on, one
//! pool per distinct connect timeout (hyper fixes the timeout per connector;
//! configs have a handful of distinct values, so this stays tiny).

use std::error::Error as _;
use std::sync::RwLock;
use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::NodeBody;
use crate::body::BodyFailure;
use crate::ports::{HttpClient, UpstreamError, UpstreamOptions};

type Pool = Client<HttpConnector, NodeBody>;

/// The node's [`HttpClient`].
#[derive(Default)]
pub struct HyperClient {
    pools: RwLock<Vec<(Duration, Pool)>>,
}

impl HyperClient {
    fn pool(&self, connect_timeout: Duration) -> Pool {
        let read = self.pools.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = read.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        drop(read);
        let mut write = self.pools.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = write.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let pool = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        write.push((connect_timeout, pool.clone()));
        pool
    }
}

impl HttpClient for HyperClient {
    type Body = NodeBody;

    async fn send(
        &self,
        mut req: Request<NodeBody>,
        opts: &UpstreamOptions,
    ) -> Result<Response<NodeBody>, UpstreamError> {
        req.body_mut().limit(opts.max_request_body);
        let probe = req.body().probe();
        let pool = self.pool(opts.connect_timeout);
        let answer = tokio::time::timeout(opts.request_timeout, pool.request(req)).await;
        match answer {
            Err(_) => Err(UpstreamError::Timeout(opts.request_timeout)),
            Ok(Ok(resp)) => Ok(resp.map(|body| NodeBody::stream(body, None))),
            Ok(Err(err)) => Err(match probe.and_then(|p| p.failure()) {
                Some(BodyFailure::TooLarge) => UpstreamError::BodyTooLarge { limit: opts.max_request_body },
                Some(BodyFailure::ClientFailed) => UpstreamError::ClientBody(chain(&err)),
                None if err.is_connect() && timed_out(&err) => UpstreamError::ConnectTimeout,
                None if err.is_connect() => UpstreamError::Connect(chain(&err)),
                None => UpstreamError::Protocol(chain(&err)),
            }),
        }
    }
}

/// hyper reports a connect timeout as an `io::Error` of kind `TimedOut` in the chain.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes on one line, for the log.
fn chain(err: &hyper_util::client::legacy::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
