//! The architecture, checked: imports run one way (pipeline → config →
//! shared, ports → shared), and the core's compiler-enforced bans
//! (`clippy.toml`: no clocks, environment, files, sockets or threads
//! outside the adapters) catch a violation.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test: it reads sources and runs clippy

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each layer of the core and the top-level modules it may import.
const LAYERS: &[(&str, &[&str])] = &[
    ("shared", &["shared"]),
    ("ports", &["ports", "shared"]),
    ("config", &["config", "shared"]),
    ("pipeline", &["pipeline", "config", "ports", "shared"]),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            rust_files(&entry.path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a source file names through `crate::`, including
/// grouped imports (`use crate::{a::b, c}`).
fn crate_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().map(|l| l.split("//").next().unwrap_or_default()) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                found.extend(inner.split(',').map(|p| p.trim().split("::").next().unwrap_or_default().to_string()));
            } else {
                found.insert(rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().into());
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut scanned = 0;
    for (layer, allowed) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no sources under src/{layer}");
        for file in files {
            scanned += 1;
            let text = std::fs::read_to_string(&file).expect("read source");
            for module in crate_modules(&text) {
                if !allowed.contains(&module.as_str()) {
                    violations
                        .push(format!("{} imports crate::{module} ({layer} may use {allowed:?})", file.display()));
                }
            }
        }
    }
    assert!(scanned >= 30, "scanned too little: {scanned} files");
    assert!(violations.is_empty(), "imports must run one way:\n{}", violations.join("\n"));
}

#[test]
fn the_import_scan_sees_every_form() {
    let text = "use crate::config::Config;\nuse crate::{ports::Ports, shared::hex};\nlet x = crate::pipeline::handle; // crate::edge\n";
    let found: Vec<String> = crate_modules(text).into_iter().collect();
    assert_eq!(found, ["config", "pipeline", "ports", "shared"]);
}

/// The bans in `clippy.toml`, applied to a scratch crate that reads the
/// wall clock and the environment as core code must not.
#[test]
fn the_core_bans_catch_a_violation() {
    let dir = std::env::temp_dir().join(format!("portcullis-ban-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).expect("scratch crate");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("clippy.toml"), dir.join("clippy.toml"))
        .expect("copy clippy.toml");
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"ban-probe\"\nversion = \"0.0.0\"\nedition = \"2024\"\n[workspace]\n",
    )
    .expect("manifest");
    std::fs::write(
        dir.join("src/lib.rs"),
        "pub fn now() -> std::time::SystemTime { std::time::SystemTime::now() }\n\
         pub fn var() -> Option<String> { std::env::var(\"X\").ok() }\n",
    )
    .expect("source");
    let out = Command::new(env!("CARGO"))
        .args(["clippy", "--offline", "--quiet", "--", "-D", "warnings"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo clippy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "clippy accepted a banned call:\n{stderr}");
    for banned in ["std::time::SystemTime::now", "std::env::var"] {
        assert!(stderr.contains(&format!("disallowed method `{banned}`")), "{banned} not reported:\n{stderr}");
    }
}
