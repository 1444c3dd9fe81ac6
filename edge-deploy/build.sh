#!/usr/bin/env bash
# Builds the Spin component.
#
#   edge-deploy/build.sh [p2|p3] [--config FILE] [--out FILE] [--var NAME=VALUE]... [--no-preinit]
#
#   p2  WASI 0.2 (spin-sdk 5.2): runs on Spin 3.x and later (needs wasi:keyvalue atomics). Default.
#   p3  WASI 0.3 (spin-sdk 7): needs a Spin with wasi:http@0.3.0 (4.1+).
#   --config  gateway config to embed (default routes/gateway.toml)
#   --out     where to put the component (default target/edge/portcullis-<flavour>.wasm)
#   --var     a Spin variable's value, as the component will be given it (repeatable)
#   --no-preinit  leave the WASI 0.2 component to compile its config per request
#
# A WASI 0.2 instance serves one request, so the build pre-initialises the
# component: it compiles the embedded config once, with the --var values, and
# keeps the result in the component (the test host's `preinit`, Wizer's method;
# the first run builds that host). A request whose Spin variables differ from
# those compiles its own config; a config that uses variables not given here
# is left to compile per request. WASI 0.3 instances compile once each anyway.
#
# The toolchain (rustup target, or Debian's with std from source) is chosen
# by edge-deploy/wasm-cargo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=p2
config=routes/gateway.toml
out=""
vars=()
preinit=1
while [ $# -gt 0 ]; do
  case "$1" in
    p2|p3) flavour=$1 ;;
    --config) config=$2; shift ;;
    --out) out=$2; shift ;;
    --var) vars+=(--var "$2"); shift ;;
    --no-preinit) preinit="" ;;
    *) echo "usage: $0 [p2|p3] [--config FILE] [--out FILE] [--var NAME=VALUE]... [--no-preinit]" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-target/edge/portcullis-$flavour.wasm}
[ -f "$config" ] || { echo "no config at $config" >&2; exit 1; }

PORTCULLIS_CONFIG=$config edge-deploy/wasm-cargo.sh rustc --lib --profile edge --features "edge-$flavour" --crate-type cdylib
mkdir -p "$(dirname "$out")"
built="$(edge-deploy/wasm-cargo.sh --print-target-dir)/wasm32-wasip2/edge/portcullis.wasm"
if [ "$flavour" = p2 ] && [ -n "$preinit" ]; then
  cargo run -q -p portcullis-edge-host -- preinit "$built" --out "$out" "${vars[@]}"
else
  cp "$built" "$out"
fi
echo "built $out ($(wc -c <"$out") bytes, flavour $flavour, config $config)"
