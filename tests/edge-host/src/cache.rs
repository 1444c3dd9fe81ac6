//! Compiled components kept on disk between starts, as Spin keeps them
//! (wasmtime's cache, on unless `--disable-cache`): a later start maps the
//! native code instead of compiling the component again. An entry is named
//! by the SHA-256 of the component and of the engine's compilation
//! settings, written whole (temporary file, then rename), and the least
//! recently used entries go once the directory passes 1 GiB.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Wasmtime's default soft limit for its own cache.
const MAX_BYTES: u64 = 1 << 30;

/// How a component was made ready, reported on the host's first line.
pub enum Loaded {
    Compiled,
    Cached,
}

impl Loaded {
    pub fn as_str(&self) -> &'static str {
        match self {
            Loaded::Compiled => "compiled",
            Loaded::Cached => "cached",
        }
    }
}

/// The cache directory when none is given: `$XDG_CACHE_HOME` or
/// `~/.cache`, under `portcullis-edge-host`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("portcullis-edge-host"))
}

/// The component at `path`, from `dir` when it holds this component
/// compiled by an engine like `engine`; compiled (and kept there) if not.
/// Without a `dir`, always compiled.
pub fn load(engine: &Engine, path: &Path, dir: Option<&Path>) -> anyhow::Result<(Component, Loaded)> {
    let wasm = fs::read(path)?;
    let Some(dir) = dir else {
        return Ok((Component::new(engine, &wasm)?, Loaded::Compiled));
    };
    let entry = dir.join(format!("{}.cwasm", key(engine, &wasm)));
    if entry.exists() {
        // SAFETY: entries are only written by `keep`, from `Component::serialize`
        // of this same component and engine settings (the name is their digest),
        // and only appear whole (renamed into place); wasmtime also checks the
        // artifact's header against this engine and refuses a mismatch.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &entry) } {
            // Mark it recently used, for the pruning in `keep`.
            let _ = fs::File::options().append(true).open(&entry).and_then(|f| f.set_modified(SystemTime::now()));
            return Ok((component, Loaded::Cached));
        }
    }
    let component = Component::new(engine, &wasm)?;
    if let Err(e) = component.serialize().map_err(anyhow::Error::from).and_then(|bytes| keep(dir, &entry, &bytes)) {
        eprintln!("edge-host: compiled component not cached in {}: {e:#}", dir.display());
    }
    Ok((component, Loaded::Compiled))
}

fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut digest = Sha256::new();
    // Target, compiler flags, tunables, features and wasmtime's version.
    engine.precompile_compatibility_hash().hash(&mut DigestHasher(&mut digest));
    digest.update(wasm);
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` input into the digest (wasmtime exposes its settings as `Hash`).
struct DigestHasher<'a>(&'a mut Sha256);

impl Hasher for DigestHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

fn keep(dir: &Path, entry: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let partial = entry.with_extension(format!("partial-{}", std::process::id()));
    fs::write(&partial, bytes)?;
    fs::rename(&partial, entry)?;
    prune(dir)
}

/// Removes the least recently used entries past [`MAX_BYTES`].
fn prune(dir: &Path) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        if meta.is_file() && item.path().extension().is_some_and(|e| e == "cwasm") {
            entries.push((meta.modified()?, meta.len(), item.path()));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut total = 0;
    for (_, len, path) in entries {
        total += len;
        if total > MAX_BYTES {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}
