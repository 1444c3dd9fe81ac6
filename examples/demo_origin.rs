//! A demo origin for trying the gateway (`make run`) and for benchmarks: it
//! answers every request with a JSON echo of what it received (`/hello`
//! answers a fixed text). The same server the tests use.
//!
//!     cargo run --example demo_origin -- 127.0.0.1:9080

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a demo server

#[path = "../tests/support/origin.rs"]
#[allow(dead_code)] // the recording side is for tests
mod origin;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9080".into());
    let origin = origin::Origin::start(&addr).await?;
    eprintln!("demo origin listening on http://{}", origin.addr);
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
