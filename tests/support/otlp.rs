//! A loopback OTLP/HTTP collector: it decodes the protobuf trace exports
//! it is sent and keeps their spans.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A loopback OTLP/HTTP collector: the spans it was sent.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    pub async fn start() -> (Collector, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let collector = Collector::default();
        let spans = collector.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let spans = spans.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let spans = spans.clone();
                        async move {
                            // Logs and metrics (Spin sends them too) are taken and dropped.
                            let traces = req.uri().path() == "/v1/traces";
                            let protobuf =
                                req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
                            let body = req.into_body().collect().await?.to_bytes();
                            if !traces {
                                return Ok(Response::new(Full::new(Bytes::new())));
                            }
                            assert!(protobuf, "OTLP/HTTP traces are protobuf");
                            let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            for resource in export.resource_spans {
                                for scope in resource.scope_spans {
                                    spans.0.lock().unwrap().extend(scope.spans);
                                }
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, port)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Lower-case hex of an id.
pub fn hex(b: &[u8]) -> String {
    portcullis::shared::hex::hex(b)
}
