//! Embeds the gateway config into edge (wasm32) builds: `routes/gateway.toml`,
//! or the file named by `PORTCULLIS_CONFIG` (relative to this directory).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_CONFIG");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("wasm32") {
        return;
    }
    let name = std::env::var("PORTCULLIS_CONFIG").unwrap_or_else(|_| "routes/gateway.toml".into());
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = dir.join(&name);
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("gateway.toml");
    if let Err(e) = std::fs::copy(&source, &out) {
        panic!("cannot embed the edge config {}: {e}", source.display());
    }
    println!("cargo:rustc-env=PORTCULLIS_CONFIG_NAME={name}");
}
