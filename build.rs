//! Embeds the gateway config into edge (wasm32) builds: `routes/gateway.toml`,
//! or the file named by `PORTCULLIS_CONFIG` (relative to this directory),
//! with its digest (`src/config/digest.rs`) and the names of the Spin
//! variables it uses, so a component never parses TOML at run time. A file that is not a config's shape (not TOML, an
//! unknown key, a wrong type) fails the build; the rest is checked when the
//! component compiles it with its Spin variables.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a build script reads and writes files

use std::path::PathBuf;

#[allow(dead_code)] // the tag constants are for the reader
#[path = "src/config/digest_write.rs"]
mod digest_write;
#[allow(dead_code)] // only the shape is needed here
#[path = "src/config/raw.rs"]
mod raw;
#[allow(dead_code)] // only the placeholder scan is needed here
#[path = "src/config/vars.rs"]
mod vars;

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_CONFIG");
    println!("cargo:rerun-if-changed=src/config/digest_write.rs");
    println!("cargo:rerun-if-changed=src/config/raw.rs");
    println!("cargo:rerun-if-changed=src/config/vars.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("wasm32") {
        return;
    }
    let name = std::env::var("PORTCULLIS_CONFIG").unwrap_or_else(|_| "routes/gateway.toml".into());
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = dir.join(&name);
    println!("cargo:rerun-if-changed={}", source.display());
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("cannot embed the edge config {}: {e}", source.display()));
    let raw = toml::from_str::<raw::RawConfig>(&text).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    if let Some(name) = raw.auth.mtls.keys().next() {
        panic!(
            "{}: auth.mtls.{name}: the edge never sees a client certificate (Spin terminates TLS), so an mtls provider authenticates nobody there; keep it in the node's config",
            source.display()
        );
    }
    let digest = digest_write::digest(&text).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The Spin variables it uses, one name a line: a WASI 0.2 instance asks
    // for them on every request, and finding them means parsing the TOML.
    let names = vars::referenced(&text).join("\n");
    for (file, bytes) in
        [("gateway.toml", text.as_bytes()), ("gateway.digest", &digest[..]), ("gateway.vars", names.as_bytes())]
    {
        if let Err(e) = std::fs::write(out.join(file), bytes) {
            panic!("cannot write {file}: {e}");
        }
    }
    println!("cargo:rustc-env=PORTCULLIS_CONFIG_NAME={name}");
}
