//! A gRPC origin for benchmarks (`benches/run.sh grpc`): the standard
//! health service (tonic) over h2c, with the service `bench` serving.
//!
//!     cargo run --release --example grpc_origin -- 127.0.0.1:9090

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a demo server

use tonic_health::ServingStatus;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9090".into()).parse()?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("bench", ServingStatus::Serving).await;
    eprintln!("gRPC origin listening on http://{addr}");
    tonic::transport::Server::builder().add_service(service).serve(addr).await?;
    Ok(())
}
