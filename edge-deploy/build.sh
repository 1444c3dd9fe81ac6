#!/usr/bin/env bash
# Builds the Spin component.
#
#   edge-deploy/build.sh [p2|p3] [--config FILE] [--out FILE]
#
#   p2  WASI 0.2 (spin-sdk 5.2): runs on Spin 3.x and later (needs wasi:keyvalue atomics). Default.
#   p3  WASI 0.3 (spin-sdk 7): needs a Spin with wasi:http@0.3.0 (4.1+).
#   --config  gateway config to embed (default routes/gateway.toml)
#   --out     where to put the component (default target/edge/portcullis-<flavour>.wasm)
#
# The toolchain (rustup target, or Debian's with std from source) is chosen
# by edge-deploy/wasm-cargo.sh.
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
[ -f "$config" ] || { echo "no config at $config" >&2; exit 1; }

PORTCULLIS_CONFIG=$config edge-deploy/wasm-cargo.sh rustc --lib --profile edge --features "edge-$flavour" --crate-type cdylib
mkdir -p "$(dirname "$out")"
cp "$(edge-deploy/wasm-cargo.sh --print-target-dir)/wasm32-wasip2/edge/portcullis.wasm" "$out"
echo "built $out ($(wc -c <"$out") bytes, flavour $flavour, config $config)"
