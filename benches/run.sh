#!/usr/bin/env bash
# Side-by-side benchmarks, one run, same machine, same load generator:
#
#   benches/run.sh            # all of it (~5 min after the builds)
#   SECONDS_PER_RUN=5 benches/run.sh
#
# Layout: the system under test (proxy, or the component host) is pinned to
# CPU 0 with one worker thread; the origin and the load generator share CPU 1.
# Peak throughput: wrk -t1 -c16 (keep-alive). Latency: benches/loadgen.rs,
# open loop at half of each target's peak, latency from the scheduled send.
#
# Targets:
#   direct            wrk → origin
#   nginx             one worker, keep-alive upstream (benches/nginx.conf)
#   node              portcullis serve --workers 1
#   hello-p2/p3       the smallest Spin component per flavour, in the test host
#   edge-p2/p3        the Portcullis component per flavour, in the test host
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECONDS_PER_RUN:-10}
CONNS=16
T=${CARGO_TARGET_DIR:-$PWD/target}
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx util-linux" >&2; exit 1; }
done

echo "== building (release)" >&2
cargo build --release --bin portcullis --example demo_origin --example loadgen >&2
cargo build --release -p portcullis-edge-host >&2
for f in p2 p3; do
  edge-deploy/build.sh $f --config benches/gateway.toml --out target/edge/bench-$f.wasm >&2
  edge-deploy/wasm-cargo.sh rustc --manifest-path benches/hello/Cargo.toml --lib --release --features $f --crate-type cdylib >&2
  cp "$(edge-deploy/wasm-cargo.sh --print-target-dir)/wasm32-wasip2/release/hello.wasm" target/edge/hello-$f.wasm
done
HOST=$T/release/portcullis-edge-host

wait_http() { # url → ms until the first 200
  local start=$(date +%s%N)
  for _ in $(seq 1 2000); do
    if curl -sf -o /dev/null "$1"; then echo $(( ($(date +%s%N) - start) / 1000000 )); return 0; fi
    sleep 0.005
  done
  echo "no answer from $1" >&2; return 1
}

# Ports below Linux's ephemeral range (32768+), so no client socket holds them.
ORIGIN_PORT=$(shuf -i 20000-25999 -n 1)
taskset -c 1 "$T/release/examples/demo_origin" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/hello" >/dev/null

measure() { # name url started_ms
  local name=$1 url=$2 startup=${3:--}
  taskset -c 1 wrk -t1 -c$CONNS -d2s "$url" >/dev/null   # warm up
  local out; out=$(taskset -c 1 wrk -t1 -c$CONNS -d${SECS}s --latency "$url")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local half=$(( rps / 2 ))
  local lat; lat=$(taskset -c 1 "$T/release/examples/loadgen" --url "$url" --rate "$half" --connections $CONNS --seconds "$SECS" --warmup 2)
  local lp50 lp99 errors
  lp50=$(grep -o '"p50_us":[0-9]*' <<<"$lat" | cut -d: -f2)
  lp99=$(grep -o '"p99_us":[0-9]*' <<<"$lat" | cut -d: -f2)
  errors=$(grep -o '"errors":[0-9]*' <<<"$lat" | cut -d: -f2)
  printf '| %-9s | %8s | %8s | %8s | %8s | %9s | %9s | %6s | %8s |\n' "$name" "$rps" "$p50" "$p99" "$half" "$lp50" "$lp99" "$errors" "$startup"
}

echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; ${SECS}s per run, $CONNS connections"
echo
echo "| target    | peak rps | wrk p50  | wrk p99  | half rps | p50 @half | p99 @half | errors | start ms |"
echo "|-----------|---------:|---------:|---------:|---------:|----------:|----------:|-------:|---------:|"

measure direct "http://127.0.0.1:$ORIGIN_PORT/hello"

NGINX_PORT=$(shuf -i 26000-28999 -n 1)
mkdir -p "$WORK/nginx"
sed -e "s|__PREFIX__|$WORK/nginx|g" -e "s|__LISTEN__|127.0.0.1:$NGINX_PORT|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
  benches/nginx.conf > "$WORK/nginx/nginx.conf"
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & PIDS+=($!)
ms=$(wait_http "http://127.0.0.1:$NGINX_PORT/hello")
measure nginx "http://127.0.0.1:$NGINX_PORT/hello" "$ms"

NODE_PORT=$(shuf -i 29000-30999 -n 1)
PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$T/release/portcullis" serve --workers 1 \
  --config benches/gateway.toml --listen "127.0.0.1:$NODE_PORT" >/dev/null 2>"$WORK/node.err" & PIDS+=($!)
ms=$(wait_http "http://127.0.0.1:$NODE_PORT/hello")
measure node "http://127.0.0.1:$NODE_PORT/hello" "$ms"
kill "${PIDS[-1]}"

for target in hello-p2 hello-p3 edge-p2 edge-p3; do
  wasm=target/edge/${target/edge-/bench-}.wasm
  port=$(shuf -i 31000-32700 -n 1)
  taskset -c 0 "$HOST" serve "$wasm" --listen "127.0.0.1:$port" --var "origin_port=$ORIGIN_PORT" >/dev/null 2>"$WORK/$target.err" & PIDS+=($!)
  ms=$(wait_http "http://127.0.0.1:$port/hello")
  measure "$target" "http://127.0.0.1:$port/hello" "$ms"
  kill "${PIDS[-1]}"
done

echo
echo "Component sizes:"
for f in hello-p2 hello-p3 bench-p2 bench-p3 portcullis-p2 portcullis-p3; do
  [ -f target/edge/$f.wasm ] && printf '  %-14s %8d bytes\n' "$f" "$(wc -c <target/edge/$f.wasm)"
done
