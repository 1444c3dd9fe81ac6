#!/usr/bin/env bash
# Builds the Spin component.
#
#   edge-deploy/build.sh [p2|p3] [--config FILE] [--out FILE]
#
#   p2  WASI 0.2 (spin-sdk 5.2): runs on every Spin since 2.x. Default.
#   p3  WASI 0.3 (spin-sdk 7): needs a Spin with wasi:http@0.3.0 (4.1+).
#   --config  gateway config to embed (default routes/gateway.toml)
#   --out     where to put the component (default target/edge/portcullis-<flavour>.wasm)
#
# Uses the rustup wasm32-wasip2 target when it is installed; otherwise
# Debian's rustc-web with a std built from source (see README, "Building
# the component without the rustup target").
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=p2
config=routes/gateway.toml
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    p2|p3) flavour=$1 ;;
    --config) config=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [p2|p3] [--config FILE] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-target/edge/portcullis-$flavour.wasm}
export PORTCULLIS_CONFIG=$config
target_dir=${PORTCULLIS_WASM_TARGET_DIR:-$PWD/target/wasm}
args=(rustc --lib --release --target wasm32-wasip2 --features "edge-$flavour" --crate-type cdylib)

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  CARGO_TARGET_DIR=$target_dir cargo "${args[@]}"
else
  for need in /usr/bin/cargo /usr/lib/wasm32-wasi/libc.a; do
    [ -e "$need" ] || { echo "missing $need: run 'make deps' (Debian: rustc-web cargo-web rust-web-src wasi-libc lld)" >&2; exit 1; }
  done
  command -v wasm-component-ld >/dev/null || { echo "missing wasm-component-ld: cargo install --locked wasm-component-ld" >&2; exit 1; }
  CARGO_TARGET_DIR=$target_dir-debian RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-C linker=wasm-component-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
    /usr/bin/cargo "${args[@]}" -Zbuild-std=std,panic_abort
  target_dir=$target_dir-debian
fi

mkdir -p "$(dirname "$out")"
cp "$target_dir/wasm32-wasip2/release/portcullis.wasm" "$out"
echo "built $out ($(wc -c <"$out") bytes, flavour $flavour, config $config)"
