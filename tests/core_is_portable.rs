//! The core (config, pipeline, ports, error) must build for wasm32-wasip2
//! and behave the same in both homes: no runtime crates, no clocks, no
//! environment, no files, no sockets, no threads. Time and I/O come
//! through the ports. This scan keeps it that way.

use std::path::Path;

const CORE: &[&str] = &["src/config", "src/pipeline", "src/ports", "src/shared"];

const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "a runtime"),
    ("hyper", "a runtime HTTP stack"),
    ("redis", "a store client"),
    ("spin_sdk", "the edge SDK"),
    ("SystemTime::now", "the wall clock (use the Clock port)"),
    ("Instant::now", "the monotonic clock (use the Clock port)"),
    ("std::env", "the environment (config variables come from the adapter)"),
    ("std::fs", "files (config text comes from the adapter)"),
    ("std::net::Tcp", "sockets"),
    ("std::thread", "threads"),
];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            rust_files(&entry.path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn the_core_reaches_for_nothing_outside_its_ports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for part in CORE {
        rust_files(&root.join(part), &mut files);
    }
    assert!(files.len() >= 10, "scanned too little: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (needle, what) in FORBIDDEN {
                if code.contains(needle) {
                    found.push(format!("{}:{}: uses {what}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core must stay portable:\n{}", found.join("\n"));
}
