#!/usr/bin/env bash
# Runs a cargo command for wasm32-wasip2 (the target is added for you):
#
#   edge-deploy/wasm-cargo.sh <cargo subcommand> [args...]
#   edge-deploy/wasm-cargo.sh --print-target-dir
#
# With the rustup target installed it is plain `cargo --target wasm32-wasip2`.
# Otherwise it uses Debian's rustc-web (1.96) with std built from source,
# wasm-component-ld as the linker and Debian's wasi-libc; PORTCULLIS_WASM_TOOLCHAIN
# (rustup|debian) forces one. Target dir: PORTCULLIS_WASM_TARGET_DIR (default target/wasm).
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=${PORTCULLIS_WASM_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
  if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    toolchain=rustup
  else
    toolchain=debian
  fi
fi
base=${PORTCULLIS_WASM_TARGET_DIR:-$PWD/target/wasm}
target_dir=$base-$toolchain

if [ "${1:-}" = --print-target-dir ]; then
  echo "$target_dir"
  exit 0
fi
[ $# -ge 1 ] || { echo "usage: $0 <cargo subcommand> [args...]" >&2; exit 2; }
sub=$1
shift

if [ "$toolchain" = rustup ]; then
  CARGO_TARGET_DIR=$target_dir exec cargo "$sub" --target wasm32-wasip2 "$@"
fi

for need in /usr/bin/cargo /usr/bin/rustc /usr/lib/rustlib/src/rust/library /usr/lib/wasm32-wasi/libc.a; do
  [ -e "$need" ] || { echo "missing $need: run 'make deps' (Debian: rustc-web cargo-web rust-web-src wasi-libc lld)" >&2; exit 1; }
done
command -v wasm-component-ld >/dev/null || { echo "missing wasm-component-ld: run 'make deps'" >&2; exit 1; }

flags="-C linker=wasm-component-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi"
std=std,panic_abort
extra=()
if [ "$sub" = test ]; then
  # Test binaries are commands: they need wasi-libc's entry point, libtest,
  # and two pthread symbols this wasi-libc predates (see src/lib.rs).
  flags="$flags -C link-arg=/usr/lib/wasm32-wasi/crt1-command.o --cfg portcullis_wasi_libc_shim"
  std=$std,test
  extra=(-Zpanic-abort-tests)
fi
# /usr/bin first: `cargo clippy` must find Debian's cargo-clippy (rust-web-clippy),
# which matches rustc-web, not rustup's.
PATH=/usr/bin:$PATH CARGO_TARGET_DIR=$target_dir RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="$flags" exec /usr/bin/cargo "$sub" --target wasm32-wasip2 -Zbuild-std=$std "${extra[@]}" "$@"
