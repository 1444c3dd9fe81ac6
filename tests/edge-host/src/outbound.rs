//! Outbound HTTP as Spin does it: a pooled hyper client (Spin's
//! `connection_pooling`, on by default), so a component's requests to an
//! origin reuse kept-alive connections instead of connecting each time (as
//! wasmtime's default client does). Timeouts and error codes follow Spin:
//! connect timeout → `ConnectionTimeout`, refused → `ConnectionRefused`,
//! first byte too late → `ConnectionReadTimeout`. HTTPS goes through
//! wasmtime's default client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

type Pool = Client<HttpConnector, WasiBody>;

/// Spin's default when a component sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Pools shared by every instance of the component, one per connect timeout.
#[derive(Clone, Default)]
pub struct Pools(Arc<Mutex<Vec<(Duration, Pool)>>>);

impl Pools {
    fn get(&self, connect_timeout: Duration) -> Pool {
        let mut pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let pool: Pool = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);
        pools.push((connect_timeout, pool.clone()));
        pool
    }
}

/// The hooks every instance's `wasi:http` uses.
pub struct Hooks {
    pub pools: Pools,
}

type Io = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), Error>> + Send> {
        let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
        let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);
        if request.uri().scheme_str() == Some("https") {
            drop(fut);
            return Box::new(async move {
                let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                Ok((resp.map(|b| b.boxed_unsync()), Box::new(io) as Io))
            });
        }
        // Response-side errors need no reporting here: the pooled client
        // surfaces them in the response body.
        drop(fut);
        let pool = self.pools.get(connect_timeout);
        Box::new(async move {
            let answer = tokio::time::timeout(first_byte_timeout, pool.request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?
                .map_err(|e| {
                    if e.is_connect() && timed_out(&e) {
                        Error::ConnectionTimeout
                    } else if e.is_connect() {
                        Error::ConnectionRefused
                    } else {
                        Error::HttpProtocolError
                    }
                })?;
            let response = answer.map(|body| body.map_err(Error::from).boxed_unsync());
            // The pooled client drives the connection; nothing is left to await.
            Ok((response, Box::new(async { Ok(()) }) as Io))
        })
    }
}

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
