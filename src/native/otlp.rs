//! Trace export: the spans the core recorded for a sampled request become
//! OpenTelemetry `SpanData` and go to the SDK's batch processor, which
//! sends them with the OTLP/HTTP (protobuf) exporter. The processor runs
//! on its own thread; its HTTP calls run on the node's runtime through
//! hyper, so no second HTTP stack is linked.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::HttpError;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use crate::pipeline::log::AccessLog;
use crate::pipeline::trace::{SpanKind, SpanRecord};

/// How long an export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans held for export at most; beyond, new ones are dropped (counted by the SDK).
const MAX_QUEUE: usize = 8192;

/// Where spans go.
pub(crate) struct Exporter {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl Exporter {
    /// An exporter to an OTLP/HTTP endpoint: a base URL (`/v1/traces` is
    /// added) or the full traces URL.
    pub(crate) fn new(endpoint: &str, service_name: &str) -> anyhow::Result<Self> {
        let url = traces_url(endpoint)?;
        let client = HyperHttp {
            client: Client::builder(TokioExecutor::new()).build_http(),
            runtime: tokio::runtime::Handle::try_current()?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUE).build())
            .build();
        processor.set_resource(&Resource::builder_empty().with_service_name(service_name.to_string()).build());
        let scope = InstrumentationScope::builder("portcullis").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Self { processor, scope })
    }

    /// Queues a finished request's spans.
    pub(crate) fn export(&self, log: &AccessLog) {
        let Some(spans) = &log.observed.spans else { return };
        let Ok(trace_id) = TraceId::from_hex(&log.trace_id) else { return };
        // Monotonic readings to wall-clock time, from the request's arrival.
        let wall = |t: Duration| UNIX_EPOCH + log.observed.received_at + t.saturating_sub(log.started);
        for span in spans {
            if let Some(data) = self.span_data(trace_id, span, &wall) {
                self.processor.on_end(data);
            }
        }
    }

    fn span_data(
        &self,
        trace_id: TraceId,
        span: &SpanRecord,
        wall: &impl Fn(Duration) -> SystemTime,
    ) -> Option<SpanData> {
        let span_id = SpanId::from_hex(&span.span_id).ok()?;
        let parent = span.parent_id.as_deref().and_then(|p| SpanId::from_hex(p).ok());
        let status = match &span.error {
            Some(e) => Status::error(e.clone()),
            None => Status::Unset,
        };
        Some(SpanData {
            span_context: SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: parent.unwrap_or(SpanId::INVALID),
            // The request span's parent is the client's (from `traceparent`).
            parent_span_is_remote: span.kind == SpanKind::Server && parent.is_some(),
            span_kind: match span.kind {
                SpanKind::Server => OtelKind::Server,
                SpanKind::Client => OtelKind::Client,
                SpanKind::Internal => OtelKind::Internal,
            },
            name: Cow::Borrowed(span.name),
            start_time: wall(span.start),
            end_time: wall(span.end),
            attributes: span.attributes.iter().map(|(k, v)| KeyValue::new(*k, v.clone())).collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        })
    }

    /// Sends what is queued (on drain).
    pub(crate) fn flush(&self) {
        let _ = self.processor.force_flush();
    }
}

fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let uri: http::Uri = endpoint.parse().map_err(|e| anyhow::anyhow!("--otlp-endpoint `{endpoint}`: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        anyhow::bail!("--otlp-endpoint `{endpoint}`: give an http:// URL such as http://127.0.0.1:4318");
    }
    if let Some(Err(e)) = uri.authority().map(crate::config::explicit_port) {
        anyhow::bail!("--otlp-endpoint `{endpoint}`: {e}");
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") })
}

/// The exporter's HTTP client: hyper, run on the node's runtime.
#[derive(Debug)]
struct HyperHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HyperHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let resp = client.request(request.map(Full::new)).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        self.runtime.spawn(call).await?
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_endpoint_is_an_http_url_with_a_numeric_port() {
        assert_eq!(traces_url("http://127.0.0.1:4318").ok().as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(traces_url("http://c:4318/v1/traces/").ok().as_deref(), Some("http://c:4318/v1/traces"));
        assert!(traces_url("https://c:4318").is_err());
        // The http crate reads a port that is not a number as none (port 80).
        let e = traces_url("http://collector:otlp").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("the port `otlp`"), "{e}");
    }
}
