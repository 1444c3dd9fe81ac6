#!/usr/bin/env bash
# Side-by-side end-to-end benchmarks, one run, same machine, same load
# generator (plus `cargo bench --bench core` for the micro-benchmarks):
#
#   benches/run.sh                      # everything (~10 min after the builds)
#   SECONDS_PER_RUN=5 benches/run.sh
#   PORTCULLIS_SPIN=/path/to/spin benches/run.sh spin   # the components under real Spin
#   benches/run.sh observability        # metrics + 1 % traces against both off; /metrics of 200 routes
#   benches/run.sh haproxy              # the full job (JWT + per-subject limit + proxy): node against HAProxy
#   benches/run.sh proxy                # the plain proxy: node against nginx and HAProxy, ROUNDS rounds (BEFORE_NODE=binary: an older node beside)
#   benches/run.sh keys                 # 1 000 new rate-limit keys a second for 10 min: the node's memory
#   benches/run.sh idle                 # 10 000 idle keep-alive connections: the node's RSS (BEFORE_NODE=binary: an older node beside)
#   benches/run.sh scale                # --workers 2 on both cores against --workers 1 on one
#   benches/run.sh tokens               # a new token's cost in each component (BEFORE=dir: older builds beside)
#   benches/run.sh floor                # each component against its hello-world that proxies too, one request at a time
#
# Layout: the system under test (proxy, or the component host) is pinned to
# CPU 0 with one worker thread; the origin, Redis and the load generator
# share CPU 1. Peak throughput: wrk -t1 -c16 (keep-alive). Latency:
# benches/loadgen.rs, open loop at a fixed rate (half of the node's peak on
# /hello, or of each component's own peak), latency from the scheduled send.
#
# Targets (all proxy GET /hello on the demo origin, 13-byte body):
#   direct               wrk -> origin
#   nginx                one worker, keep-alive upstream (benches/nginx.conf)
#   haproxy              HAProxy 2.6, one thread, keep-alive upstream (benches/haproxy.cfg)
#   haproxy-full, node-full  /full: RS256 JWT (cached by Portcullis; HAProxy
#                        verifies every time) + a per-subject limit + proxy
#   node                 portcullis serve --workers 1
#   node-jwt             ... route with RS256 JWT auth (cached token)
#   node-limited         ... route with a rate limit, in-memory store
#   node-limited-redis   ... the same limit, Redis store
#   hello-p2/p3          the smallest Spin component of each flavour, in the test host
#   edge-p2/p3           the Portcullis component, in the test host
#   edge-p2/p3-jwt       ... on the JWT route
#   node-pool, edge-*-pool  three targets, retries, passive health and a
#                        circuit breaker configured, nothing failing
# then, per flavour at a fixed 500 req/s: no auth, a cached token, and a new
# token on every request (RS256, ES256, EdDSA) to price uncached verification.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECONDS_PER_RUN:-10}
CONNS=16
T=${CARGO_TARGET_DIR:-$PWD/target}
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

MODE=${1:-all}
case "$MODE" in
  all|observability|haproxy|proxy|keys|idle|scale|tokens|floor) ;;
  spin|spin-growth) [ -x "${PORTCULLIS_SPIN:-}" ] || { echo "benches/run.sh $MODE: set PORTCULLIS_SPIN to a Spin CLI" >&2; exit 1; } ;;
  *) echo "usage: $0 [spin|spin-growth|observability|haproxy|proxy|keys|idle|scale|tokens|floor]" >&2; exit 2 ;;
esac

for tool in wrk nginx haproxy taskset redis-server curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx haproxy redis-server curl util-linux" >&2; exit 1; }
done

echo "== building (release)" >&2
cargo build --release --bin portcullis --example demo_origin --example loadgen >&2
case "$MODE" in observability|haproxy|proxy|keys|idle|scale) NODE_ONLY=1 ;; *) NODE_ONLY="" ;; esac
[ -n "$NODE_ONLY" ] || cargo build --release -p portcullis-edge-host >&2
[ -n "$NODE_ONLY" ] || {
sed 's/^access_log = true/access_log = false/' benches/gateway.toml > target/edge/bench-nolog.toml
# WASI 0.2 builds are pre-initialised below, once the origin's port is known.
for f in p2 p3; do
  edge-deploy/build.sh $f --config benches/gateway.toml --out target/edge/bench-$f.wasm --no-preinit >&2
  [[ "$MODE" == spin* || "$MODE" == floor ]] && edge-deploy/build.sh $f --config target/edge/bench-nolog.toml --out target/edge/bench-$f-nolog.wasm --no-preinit >&2
  edge-deploy/wasm-cargo.sh rustc --manifest-path benches/hello/Cargo.toml --lib --profile release --features $f --crate-type cdylib >&2
  cp "$(edge-deploy/wasm-cargo.sh --print-target-dir)/wasm32-wasip2/release/hello.wasm" target/edge/hello-$f.wasm
done
}
HOST=$T/release/portcullis-edge-host
LOADGEN=$T/release/examples/loadgen
TOKEN=$("$LOADGEN" mint tests/fixtures/keys/rsa1.pem)

wait_http() { # url [header] → ms until the first 200
  local start=$(date +%s%N)
  for _ in $(seq 1 2000); do
    if curl -sf -o /dev/null ${2:+-H "$2"} "$1"; then echo $(( ($(date +%s%N) - start) / 1000000 )); return 0; fi
    sleep 0.005
  done
  echo "no answer from $1" >&2; return 1
}

listening() { # file → the address a host or node said it listens on
  for _ in $(seq 1 2000); do
    local a; a=$(grep '"listening"' "$1" 2>/dev/null | grep -o '127\.0\.0\.1:[0-9]*' | head -1 || true)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.005
  done
  echo "nothing listening (see $1)" >&2; return 1
}

# Ports below Linux's ephemeral range (32768+), so no client socket holds them.
ORIGIN_PORT=$(shuf -i 20000-25999 -n 1)
taskset -c 1 "$T/release/examples/demo_origin" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/hello" >/dev/null
# Pre-initialised with the origin's port, as `edge-deploy/build.sh p2 --var`
# makes a deployment's component; the build as it was is kept beside
# (bench-p2-compiling: compiles its config on every request).
if [ -z "$NODE_ONLY" ]; then
  cp target/edge/bench-p2.wasm target/edge/bench-p2-compiling.wasm
  for w in bench-p2 bench-p2-nolog; do
    [ -f "target/edge/$w.wasm" ] || continue
    "$HOST" preinit "target/edge/$w.wasm" --out "target/edge/$w.wasm" --var "origin_port=$ORIGIN_PORT" >&2
  done
fi
REDIS_PORT=$(shuf -i 26000-27999 -n 1)
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null & PIDS+=($!)

RATE=""   # the fixed rate for the latency runs, set from the node's peak
measure() { # name url started_ms [header]
  local name=$1 url=$2 startup=${3:--} header=${4:-}
  local h=(); [ -n "$header" ] && h=(-H "$header")
  taskset -c 1 wrk -t1 -c$CONNS -d2s "${h[@]}" "$url" >/dev/null
  local out; out=$(taskset -c 1 wrk -t1 -c$CONNS -d${SECS}s --latency "${h[@]}" "$url")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  local rate=${RATE:-$(( rps / 2 ))}
  [ "$rate" -gt $(( rps * 9 / 10 )) ] && rate=$(( rps / 2 ))
  local g=(); [ -n "$header" ] && g=(--header "$header")
  local lat; lat=$(taskset -c 1 "$LOADGEN" --url "$url" --rate "$rate" --connections $CONNS --seconds "$SECS" --warmup 2 "${g[@]}")
  local lp50 lp99 lerr
  lp50=$(grep -o '"p50_us":[0-9]*' <<<"$lat" | cut -d: -f2)
  lp99=$(grep -o '"p99_us":[0-9]*' <<<"$lat" | cut -d: -f2)
  lerr=$(grep -o '"errors":[0-9]*' <<<"$lat" | cut -d: -f2)
  # A second fixed rate the load generator sustains with room to spare (it
  # shares a core with the origin and saturates near 20k/s): clean latencies.
  local low=${LOW_RATE:-0} q50=- q99=-
  if [ "$low" -gt 0 ] && [ "$low" -lt "$rps" ]; then
    local quiet; quiet=$(taskset -c 1 "$LOADGEN" --url "$url" --rate "$low" --connections $CONNS --seconds "$SECS" --warmup 2 "${g[@]}")
    q50=$(grep -o '"p50_us":[0-9]*' <<<"$quiet" | cut -d: -f2)
    q99=$(grep -o '"p99_us":[0-9]*' <<<"$quiet" | cut -d: -f2)
    lerr=$(( lerr + $(grep -o '"errors":[0-9]*' <<<"$quiet" | cut -d: -f2) ))
  fi
  printf '| %-18s | %8s | %8s | %8s | %7s | %8s | %8s | %8s | %8s | %6s | %8s |\n' \
    "$name" "$rps" "$p50" "$p99" "$rate" "$lp50" "$lp99" "$q50" "$q99" "$(( ${errors:-0} + lerr ))" "$startup"
  LAST_RPS=$rps
}

node() { # name path [serve args...]; NODE_BIN: another portcullis binary
  local name=$1 path=$2; shift 2
  local start; start=$(date +%s%N)
  PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "${NODE_BIN:-$T/release/portcullis}" serve --workers 1 \
    --config benches/gateway.toml --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "$@" >/dev/null 2>"$WORK/$name.err" & PIDS+=($!)
  local addr; addr=$(listening "$WORK/$name.err")
  local header=""; case "$path" in /jwt|/full) header="authorization: Bearer $TOKEN" ;; esac
  wait_http "http://$addr$path" "$header" >/dev/null
  measure "$name" "http://$addr$path" $(( ($(date +%s%N) - start) / 1000000 )) "$header"
  kill "${PIDS[-1]}"
}

edge() { # name wasm path
  local name=$1 wasm=$2 path=$3
  local start; start=$(date +%s%N)
  # Compiled at each start, as in the earlier runs' start column (the floor
  # mode below measures starts from the cache too).
  taskset -c 0 "$HOST" serve "$wasm" --disable-cache --listen 127.0.0.1:0 --var "origin_port=$ORIGIN_PORT" >"$WORK/$name.out" 2>"$WORK/$name.err" & PIDS+=($!)
  local addr; addr=$(listening "$WORK/$name.out")
  local header=""; case "$path" in /jwt|/full) header="authorization: Bearer $TOKEN" ;; esac
  wait_http "http://$addr$path" "$header" >/dev/null
  local started=$(( ($(date +%s%N) - start) / 1000000 ))
  measure "$name" "http://$addr$path" "$started" "$header"
  kill "${PIDS[-1]}"
}

# Under real Spin: each component served by `spin up` pinned to CPU 0 (a
# manifest per run in $WORK, its default SQLite store or Redis), wrk at 16
# connections and at 1. Baselines: the hello-world answering itself, and the
# hello-world making the same outbound call as the gateway (`/proxy`).
spin_up() { # name wasm [runtime-config]
  local name=$1 wasm=$2 rc=${3:-}
  local dir="$WORK/spin-$name"; mkdir -p "$dir"
  cat > "$dir/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench"
[variables]
origin_port = { required = true }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "$PWD/$wasm"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
key_value_stores = ["default"]
[component.c.variables]
origin_port = "{{ origin_port }}"
TOML
  local port; port=$(shuf -i 31000-31999 -n 1)
  SPIN_SERVE_START=$(date +%s%N)
  (cd "$dir" && exec taskset -c 0 "$PORTCULLIS_SPIN" up --listen "127.0.0.1:$port" --variable "origin_port=$ORIGIN_PORT" \
    ${rc:+--runtime-config-file "$rc"} >"$dir/out" 2>"$dir/err") & PIDS+=($!)
  SPIN_ADDR="127.0.0.1:$port"
}

spin_row() { # name wasm path [runtime-config]
  local name=$1 wasm=$2 path=$3 rc=${4:-}
  spin_up "$name" "$wasm" "$rc"
  local header=""; case "$path" in /jwt|/full) header="authorization: Bearer $TOKEN" ;; esac
  local h=(); [ -n "$header" ] && h=(-H "$header")
  local started; started=$(wait_http "http://$SPIN_ADDR$path" "$header")
  local url="http://$SPIN_ADDR$path"
  taskset -c 1 wrk -t1 -c$CONNS -d2s "${h[@]}" "$url" >/dev/null
  local many one
  many=$(taskset -c 1 wrk -t1 -c$CONNS -d${SECS}s --latency "${h[@]}" "$url")
  one=$(taskset -c 1 wrk -t1 -c1 -d${SECS}s --latency "${h[@]}" "$url")
  local rps p50 rps1 p501 errors
  rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$many"); p50=$(awk '$1=="50%" {print $2}' <<<"$many")
  rps1=$(awk '/Requests\/sec/ {print int($2)}' <<<"$one"); p501=$(awk '$1=="50%" {print $2}' <<<"$one")
  errors=$(( $(awk '/Non-2xx/ {print $NF}' <<<"$many$one" | paste -sd+ | bc 2>/dev/null || echo 0) + 0 ))
  printf '| %-22s | %8s | %9s | %8s | %9s | %6s | %8s |\n' "$name" "$rps" "$p50" "$rps1" "$p501" "$errors" "$started"
  LAST_RPS=$rps
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

sweep_all() { # addr → "keys-before deleted"
  local after="" keys="" deleted=0 out
  for _ in $(seq 1 10000); do
    out=$(curl -sf -X POST -H "authorization: Bearer bench-sweep" "http://$1/_portcullis/sweep${after:+?after=$after}")
    [ -z "$keys" ] && keys=$(grep -o '"keys":[0-9]*' <<<"$out" | cut -d: -f2)
    deleted=$(( deleted + $(grep -o '"deleted":[0-9]*' <<<"$out" | cut -d: -f2) ))
    after=$(grep -o '"next":"[^"]*"' <<<"$out" | cut -d'"' -f4 || true)
    [ -z "$after" ] && break
  done
  echo "$keys $deleted"
}

haproxy_target() { # name path
  local name=$1 path=$2
  local port; port=$(shuf -i 31000-31999 -n 1)
  sed -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    -e "s|__KEY__|$PWD/tests/fixtures/keys/rsa1.pub.pem|" benches/haproxy.cfg > "$WORK/haproxy.cfg"
  local start; start=$(date +%s%N)
  taskset -c 0 haproxy -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!)
  local header=""; [ "$path" = /full ] && header="authorization: Bearer $TOKEN"
  wait_http "http://127.0.0.1:$port$path" "$header" >/dev/null
  measure "$name" "http://127.0.0.1:$port$path" $(( ($(date +%s%N) - start) / 1000000 )) "$header"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

if [ "$MODE" = scale ]; then
  # Two workers on both cores against one on one core. This machine has two
  # cores in all, so wrk and the origin share them with the node here: the
  # figure is a floor for what a second core gives, not the target's setup
  # (origin and load elsewhere).
  scale_peak() { # name cpus workers
    PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c "$2" "$T/release/portcullis" serve --workers "$3" \
      --config benches/gateway.toml --listen 127.0.0.1:0 --admin-listen off --metrics-listen off \
      >/dev/null 2>"$WORK/$1.err" & PIDS+=($!)
    local addr; addr=$(listening "$WORK/$1.err")
    wait_http "http://$addr/hello" >/dev/null
    taskset -c 1 wrk -t1 -c$CONNS -d2s "http://$addr/hello" >/dev/null
    local rps; rps=$(taskset -c 0,1 wrk -t2 -c32 -d${SECS}s "http://$addr/hello" | awk '/Requests\/sec/ {print int($2)}')
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    echo "$rps"
  }
  echo "| round | 1 worker, CPU 0 | 2 workers, CPUs 0-1 | ratio |"
  echo "|---:|---:|---:|---:|"
  for round in 1 2 3; do
    one=$(scale_peak one 0 1); two=$(scale_peak two 0,1 2)
    echo "| $round | $one | $two | $(( two * 100 / one )) % |"
  done
  exit 0
fi

if [ "$MODE" = keys ]; then
  # A new caller every millisecond on a per-client limit (one key each,
  # idle after about 0.1 s): the node's RSS and its in-memory store's size
  # every 30 s. (Access log off: a million lines say nothing here.)
  sed 's/^access_log = true/access_log = false/' benches/gateway.toml > "$WORK/nolog.toml"
  PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$T/release/portcullis" serve --workers 1 \
    --config "$WORK/nolog.toml" --listen 127.0.0.1:0 --admin-listen off --metrics-listen 127.0.0.1:0 \
    >/dev/null 2>"$WORK/keys.err" & PIDS+=($!)
  pid=${PIDS[-1]}; addr=$(listening "$WORK/keys.err")
  metrics=$(grep '"metrics listening"' "$WORK/keys.err" | grep -o '127\.0\.0\.1:[0-9]*' | head -1)
  wait_http "http://$addr/hello" >/dev/null
  secs=${KEYS_SECONDS:-600}
  taskset -c 1 "$LOADGEN" --url "http://$addr/per-client" --rate 1000 --connections $CONNS --seconds "$secs" \
    --warmup 0 --distinct-header x-client > "$WORK/keys.out" & load=$!
  echo "| s | node RSS MB | store keys |"
  echo "|---:|---:|---:|"
  for t in $(seq 0 30 "$secs"); do
    rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")
    keys=$(curl -s "http://$metrics/metrics" | awk '/^portcullis_store_keys / {print $2}')
    echo "| $t | $rss | $keys |"
    [ "$t" -lt "$secs" ] && sleep 30
  done
  wait "$load" || true
  echo "load: $(cat "$WORK/keys.out")"
  exit 0
fi

if [ "$MODE" = idle ]; then
  # Idle keep-alive connections: the node's RSS with IDLE_CONNECTIONS
  # (10 000) open, each having made one request (benches/idle-connections.py,
  # from 127.0.x.y sources). The limit on connections is raised above them
  # (its default follows the open-file limit). BEFORE_NODE: an older node,
  # alternating, ROUNDS rounds.
  n=${IDLE_CONNECTIONS:-10000}
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  echo "| round | node | RSS before MB | RSS with $n idle MB | per connection B |"
  echo "|---:|---|---:|---:|---:|"
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for side in now ${BEFORE_NODE:+before}; do
      bin=$T/release/portcullis; [ "$side" = before ] && bin=$BEFORE_NODE
      PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$bin" serve --workers 1 --config benches/gateway.toml \
        --listen 127.0.0.1:0 --admin-listen off --metrics-listen 127.0.0.1:0 --max-connections $(( n + 1000 )) \
        >/dev/null 2>"$WORK/idle-$side.err" & PIDS+=($!)
      addr=$(listening "$WORK/idle-$side.err")
      wait_http "http://$addr/hello" >/dev/null
      out=$(taskset -c 1 python3 benches/idle-connections.py 127.0.0.1 "${addr##*:}" "$n" "${PIDS[-1]}")
      before=$(grep -o 'rss_before_kib=[0-9]*' <<<"$out" | cut -d= -f2)
      after=$(grep -o 'rss_after_kib=[0-9]*' <<<"$out" | cut -d= -f2)
      echo "| $round | $side | $(( before / 1024 )).$(( before % 1024 * 10 / 1024 )) | $(( after / 1024 )).$(( after % 1024 * 10 / 1024 )) | $(grep -o 'per_conn_bytes=[0-9]*' <<<"$out" | cut -d= -f2) |"
      kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    done
  done
  exit 0
fi

nginx_target() { # name
  local port; port=$(shuf -i 28000-30999 -n 1)
  mkdir -p "$WORK/nginx"
  sed -e "s|__PREFIX__|$WORK/nginx|g" -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    benches/nginx.conf > "$WORK/nginx/nginx.conf"
  local start; start=$(date +%s%N)
  taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & PIDS+=($!)
  wait_http "http://127.0.0.1:$port/hello" >/dev/null
  measure "$1" "http://127.0.0.1:$port/hello" $(( ($(date +%s%N) - start) / 1000000 ))
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

node_first() { # the table's head, then the node on /hello, whose half peak is the latency runs' rate
  echo "| target             | peak rps | wrk p50  | wrk p99  | at rps  | p50 µs   | p99 µs   | p50@5k   | p99@5k   | errors | start ms |"
  echo "|--------------------|---------:|---------:|---------:|--------:|---------:|---------:|---------:|---------:|-------:|---------:|"
  LOW_RATE=5000
  node node /hello
  RATE=$(( LAST_RPS / 2 ))
}

if [ "$MODE" = proxy ]; then
  # The plain proxy side by side, in alternating order, ROUNDS times.
  node_first
  for round in $(seq "${ROUNDS:-2}"); do
    nginx_target nginx
    haproxy_target haproxy /hello
    [ -n "${BEFORE_NODE:-}" ] && NODE_BIN=$BEFORE_NODE node node-before /hello
    node node /hello
  done
  exit 0
fi

if [ "$MODE" = haproxy ]; then
  # The full job side by side, twice over in alternating order.
  node_first
  for round in 1 2; do
    node node-full /full
    haproxy_target haproxy-full /full
    haproxy_target haproxy /hello
    node node /hello
  done
  exit 0
fi

if [ "$MODE" = observability ]; then
  # Peak throughput of /hello, alternating: metrics and traces off
  # (--metrics-listen off stops recording too) against metrics on and spans
  # exported for 1 % of new traces (to the demo origin, which takes the
  # OTLP posts). Pairs alternate so drift hits both sides alike.
  sed 's/^access_log = true/access_log = true\ntrace_sample_ratio = 0.01/' benches/gateway.toml > "$WORK/traced.toml"
  peak() { # name config [serve args...]
    local name=$1 config=$2; shift 2
    PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$T/release/portcullis" serve --workers 1 \
      --config "$config" --listen 127.0.0.1:0 --admin-listen off "$@" >/dev/null 2>"$WORK/$name.err" & PIDS+=($!)
    local addr; addr=$(listening "$WORK/$name.err")
    wait_http "http://$addr/hello" >/dev/null
    taskset -c 1 wrk -t1 -c$CONNS -d2s "http://$addr/hello" >/dev/null
    taskset -c 1 wrk -t1 -c$CONNS -d${SECS}s "http://$addr/hello" | awk '/Requests\/sec/ {print int($2)}'
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  }
  # One measure of both sides (sets `off` and `on`), which goes first
  # alternating with the pair's number so drift in the machine cancels out.
  both() { # measure pair
    local side
    for side in $( [ $(( $2 % 2 )) = 1 ] && echo off on || echo on off ); do
      if [ "$side" = off ]; then off=$("$1" off benches/gateway.toml --metrics-listen off)
      else on=$("$1" on "$WORK/traced.toml" --metrics-listen 127.0.0.1:0 --otlp-endpoint "http://127.0.0.1:$ORIGIN_PORT"); fi
    done
  }
  median_row() { # per-mille ratios → the median's row
    [ "$#" -gt 0 ] || return 0
    local m; m=$(printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "| median | | | $(( m / 10 )).$(( m % 10 )) % |"
  }
  echo "| pair | off rps | on rps | on / off |"
  echo "|---:|---:|---:|---:|"
  ratios=()
  for i in $(seq 1 "${PAIRS:-5}"); do
    both peak "$i"
    ratios+=("$(( on * 1000 / off ))")
    echo "| $i | $off | $on | $(( on * 1000 / off / 10 )).$(( on * 1000 / off % 10 )) % |"
  done
  median_row "${ratios[@]}"
  # Peak throughput on this shared machine swings by ±15 % between runs of
  # one binary; the node's own CPU time per request at a fixed rate (well
  # below either side's peak) is steadier: its inverse is the throughput a
  # CPU-bound node reaches.
  cpu() { # name config [serve args...] → node CPU µs per request ×100
    local name=$1 config=$2; shift 2
    PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$T/release/portcullis" serve --workers 1 \
      --config "$config" --listen 127.0.0.1:0 --admin-listen off "$@" >/dev/null 2>"$WORK/$name.err" & PIDS+=($!)
    local pid=${PIDS[-1]} addr; addr=$(listening "$WORK/$name.err")
    wait_http "http://$addr/hello" >/dev/null
    taskset -c 1 "$LOADGEN" --url "http://$addr/hello" --rate "${CPU_RATE:-10000}" --connections $CONNS --seconds 2 --warmup 0 >/dev/null
    local before after out n
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(taskset -c 1 "$LOADGEN" --url "http://$addr/hello" --rate "${CPU_RATE:-10000}" --connections $CONNS --seconds "$SECS" --warmup 0)
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    n=$(grep -o '"requests":[0-9]*' <<<"$out" | cut -d: -f2)
    echo $(( (after - before) * 1000000 / n ))   # clock ticks are 10 ms = 10 000 µs; ×100
    kill "$pid"; wait "$pid" 2>/dev/null || true
  }
  echo
  echo "| pair | off µs/req | on µs/req | off / on |"
  echo "|---:|---:|---:|---:|"
  cpus=()
  for i in $(seq 1 "${CPU_PAIRS:-5}"); do
    both cpu "$i"
    cpus+=("$(( off * 1000 / on ))")
    echo "| $i | $(( off / 100 )).$(printf %02d $(( off % 100 ))) | $(( on / 100 )).$(printf %02d $(( on % 100 ))) | $(( off * 1000 / on / 10 )).$(( off * 1000 / on % 10 )) % |"
  done
  median_row "${cpus[@]}"
  # Instructions per request under cachegrind (valgrind): no noise at all.
  # Two runs per side, 2 000 and 6 000 requests at 400/s; the difference
  # over 4 000 leaves start-up and shutdown out.
  if [ "${INSTRUCTIONS:-1}" = 1 ] && command -v valgrind >/dev/null; then
    instructions() { # name n config [serve args...] → instructions of the whole run
      local name=$1 n=$2 config=$3; shift 3
      PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$WORK/cg.$name" \
        "$T/release/portcullis" serve --workers 1 --config "$config" --listen 127.0.0.1:0 --admin-listen off "$@" \
        >/dev/null 2>"$WORK/$name.err" & PIDS+=($!)
      local pid=${PIDS[-1]} addr; addr=$(listening "$WORK/$name.err")
      wait_http "http://$addr/hello" >/dev/null
      taskset -c 1 "$LOADGEN" --url "http://$addr/hello" --rate 400 --connections 4 --seconds $(( n / 400 )) --warmup 0 >/dev/null
      kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
      awk '/^summary/ {print $2}' "$WORK/cg.$name"
    }
    echo
    echo "| side | instructions per request |"
    echo "|---|---:|"
    for side in off on; do
      if [ $side = off ]; then args=(benches/gateway.toml --metrics-listen off)
      else args=("$WORK/traced.toml" --metrics-listen 127.0.0.1:0 --otlp-endpoint "http://127.0.0.1:$ORIGIN_PORT"); fi
      few=$(instructions "$side-2k" 2000 "${args[@]}"); many=$(instructions "$side-6k" 6000 "${args[@]}")
      echo "| $side | $(( (many - few) / 4000 )) |"
    done
  fi
  # /metrics with 200 routes, each having served requests (so every route's
  # series exist): the time of a scrape, over 20 scrapes.
  {
    sed -n '/^\[gateway\]/,/^$/p' benches/gateway.toml
    echo '[services.origin]'; echo 'url = "http://127.0.0.1:{{ origin_port }}"'
    for r in $(seq 1 200); do printf '[[routes]]\nname = "r%03d"\npath = "/r%03d"\nservice = "origin"\nrewrite = "/hello"\n' "$r" "$r"; done
  } > "$WORK/routes200.toml"
  sed -i 's/^access_log = true/access_log = false/' "$WORK/routes200.toml"
  PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT taskset -c 0 "$T/release/portcullis" serve --workers 1 \
    --config "$WORK/routes200.toml" --listen 127.0.0.1:0 --admin-listen off --metrics-listen 127.0.0.1:0 >/dev/null 2>"$WORK/scrape.err" & PIDS+=($!)
  addr=$(listening "$WORK/scrape.err")
  wait_http "http://$addr/r001" >/dev/null
  metrics=$(grep '"metrics listening"' "$WORK/scrape.err" | grep -o '127\.0\.0\.1:[0-9]*' | head -1)
  for r in $(seq 1 200); do curl -sf -o /dev/null "http://$addr/r$(printf %03d "$r")"; curl -sfI -o /dev/null "http://$addr/r$(printf %03d "$r")"; curl -s -o /dev/null "http://$addr/none$r"; done
  times=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://$metrics/metrics"; done | sort -n)
  size=$(curl -s "http://$metrics/metrics" | wc -c); series=$(curl -s "http://$metrics/metrics" | grep -vc '^#')
  echo
  echo "/metrics, 200 routes ($series series, $size bytes): median $(sed -n 10p <<<"$times") s, max $(tail -1 <<<"$times") s over 20 scrapes"
  exit 0
fi

# The component's own time: the median overhead_us (total minus time on the
# origin) of its access-log lines after line $2 of file $1; empty if none.
own_us() {
  tail -n +$(( $2 + 1 )) "$1" | { grep -o '"overhead_us":[0-9]*' || true; } | cut -d: -f2 | sort -n \
    | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'
}

if [ "$MODE" = floor ]; then
  # What a component adds per request over the smallest component making
  # the same outbound hop (hello-world's /proxy: GET the origin's /hello),
  # in the test host: one connection at a fixed rate below saturation, so
  # each sample is one request alone. All served at once, measured row by
  # row, ROUNDS times. "own" is the component's own time (median
  # overhead_us from its access log; none for hello-world or -nolog).
  # "first start": start to first answer compiling the component (an empty
  # cache); "start": the next start, from the compiled component the host
  # kept, as Spin keeps it.
  # edge-compiling (WASI 0.2): the same build not pre-initialised, compiling
  # its config on every request. BEFORE: a directory with older
  # bench-p2.wasm / bench-p3.wasm, served as edge-before alongside.
  rate=${FLOOR_RATE:-200}
  rows() { echo hello edge edge-nolog; [ "$1" = p2 ] && echo edge-compiling; [ -n "${BEFORE:-}" ] && echo edge-before; true; }
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # the host's user + system CPU, all threads
  declare -A ADDR START FIRST HOSTPID
  for f in p2 p3; do
    for c in $(rows $f); do
      case $c in
        hello) wasm=target/edge/hello-$f.wasm ;;
        edge) wasm=target/edge/bench-$f.wasm ;;
        edge-compiling) wasm=target/edge/bench-$f-compiling.wasm ;;
        edge-before) wasm=$BEFORE/bench-$f.wasm ;;
        *) wasm=target/edge/bench-$f-nolog.wasm ;;
      esac
      for start in FIRST START; do
        [ "$start" = START ] && { kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; }
        t0=$(date +%s%N)
        taskset -c 0 "$HOST" serve "$wasm" --cache-dir "$WORK/host-cache" --listen 127.0.0.1:0 \
          --var "origin_port=$ORIGIN_PORT" >"$WORK/floor-$c-$f.out" 2>&1 & PIDS+=($!); HOSTPID[$c-$f]=$!
        ADDR[$c-$f]=$(listening "$WORK/floor-$c-$f.out")
        wait_http "http://${ADDR[$c-$f]}/hello" >/dev/null
        ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        if [ "$start" = FIRST ]; then FIRST[$c-$f]=$ms; else START[$c-$f]=$ms; fi
      done
    done
  done
  echo
  echo "Per request in the test host: one connection at $rate req/s, ${SECS}s per row; p50 / p99 µs (own µs);"
  echo "host CPU: the host process's user + system time over the row (its 1 s warm-up included) per request sent."
  for round in $(seq 1 "${ROUNDS:-2}"); do
    echo
    echo "| round $round              | p50 µs | p99 µs | own µs | over hello-proxy p50 | host CPU µs | first start ms | start ms |"
    echo "|----------------------|-------:|-------:|-------:|---------------------:|------------:|---------------:|---------:|"
    for f in p2 p3; do
      base=""
      for c in $(rows $f); do
        url=http://${ADDR[$c-$f]}/hello; [ "$c" = hello ] && url=http://${ADDR[$c-$f]}/proxy
        log=$WORK/floor-$c-$f.out; seen=$(wc -l <"$log")
        t0=$(ticks "${HOSTPID[$c-$f]}")
        out=$(taskset -c 1 "$LOADGEN" --url "$url" --rate "$rate" --connections 1 --seconds "$SECS" --warmup 1)
        cpu=$(( ($(ticks "${HOSTPID[$c-$f]}") - t0) * 1000000 / $(getconf CLK_TCK) / (rate * (SECS + 1)) ))
        p50=$(grep -o '"p50_us":[0-9]*' <<<"$out" | cut -d: -f2)
        own=$(own_us "$log" "$seen")
        [ "$c" = hello ] && base=$p50
        printf '| %-20s | %6s | %6s | %6s | %20s | %11s | %14s | %8s |\n' "$c-$f$([ "$c" = hello ] && echo -proxy)" "$p50" \
          "$(grep -o '"p99_us":[0-9]*' <<<"$out" | cut -d: -f2)" "${own:--}" "$([ "$c" = hello ] && echo - || echo $(( p50 - base )))" \
          "$cpu" "${FIRST[$c-$f]}" "${START[$c-$f]}"
      done
    done
  done
  exit 0
fi

if [ "$MODE" = tokens ]; then
  # One connection at a fixed rate below saturation, so each sample is one
  # request alone: no auth, a cached token, then a token never seen before
  # on every request (forged: fresh RS256 tokens with a changed signature,
  # answered 401). "added" is the p50 over the same component's no-auth p50
  # in the same round. BEFORE: a directory with older bench-p2.wasm and
  # bench-p3.wasm, served at the same time and measured row by row.
  rate=${TOKEN_RATE:-200}
  builds=(now); [ -n "${BEFORE:-}" ] && builds+=(before)
  declare -A ADDR
  for f in p2 p3; do
    for b in "${builds[@]}"; do
      wasm=target/edge/bench-$f.wasm; [ "$b" = before ] && wasm=$BEFORE/bench-$f.wasm
      taskset -c 0 "$HOST" serve "$wasm" --cache-dir "$WORK/host-cache" --listen 127.0.0.1:0 --var "origin_port=$ORIGIN_PORT" >"$WORK/tok-$f-$b.out" 2>&1 & PIDS+=($!)
      ADDR[$f-$b]=$(listening "$WORK/tok-$f-$b.out")
      wait_http "http://${ADDR[$f-$b]}/hello" >/dev/null
    done
  done
  echo
  echo "New tokens in the component (test host): one connection at $rate req/s, ${SECS}s per row."
  echo "Each cell: p50 (added over no auth) · the component's own time (median overhead_us from its log), in µs."
  for round in $(seq 1 "${ROUNDS:-2}"); do
    echo
    printf '| round %-2s %-12s |' "$round" ""; for f in p2 p3; do for b in "${builds[@]}"; do printf ' %-24s |' "edge-$f ($b)"; done; done; echo
    printf '|%s|' "-----------------------"; for f in p2 p3; do for b in "${builds[@]}"; do printf '%s|' "-------------------------:"; done; done; echo
    declare -A BASE=()
    for kind in "no auth" cached "RS256 new" "RS256 forged" "ES256 new" "EdDSA new"; do
      printf '| %-21s |' "$kind"
      for f in p2 p3; do
        for b in "${builds[@]}"; do
          url=http://${ADDR[$f-$b]}/jwt; args=()
          case "$kind" in
            "no auth") url=http://${ADDR[$f-$b]}/hello ;;
            cached) args=(--header "authorization: Bearer $TOKEN") ;;
            "RS256 new") args=(--fresh-tokens RS256:tests/fixtures/keys/rsa1.pem) ;;
            "RS256 forged") args=(--forged-tokens RS256:tests/fixtures/keys/rsa1.pem --expect-status 401) ;;
            "ES256 new") args=(--fresh-tokens ES256:tests/fixtures/keys/ec256.pem) ;;
            "EdDSA new") args=(--fresh-tokens EdDSA:tests/fixtures/keys/ed25519.pem) ;;
          esac
          log=$WORK/tok-$f-$b.out; seen=$(wc -l <"$log")
          out=$(taskset -c 1 "$LOADGEN" --url "$url" --rate "$rate" --connections 1 --seconds "$SECS" --warmup 1 "${args[@]}")
          p50=$(grep -o '"p50_us":[0-9]*' <<<"$out" | cut -d: -f2)
          errors=$(grep -o '"errors":[0-9]*' <<<"$out" | cut -d: -f2)
          ovh=$(own_us "$log" "$seen")
          if [ "$kind" = "no auth" ]; then BASE[$f-$b]=$p50; cell="$p50 · $ovh"; else cell="$p50 ($(( p50 - BASE[$f-$b] ))) · $ovh"; fi
          [ "$errors" != 0 ] && cell="$cell ${errors}err"
          printf ' %24s |' "$cell"
        done
      done
      echo
    done
  done
  echo
  for f in p2 p3; do printf 'bench-%s.wasm: %d bytes\n' "$f" "$(wc -c <target/edge/bench-$f.wasm)"; done
  exit 0
fi

if [ "$MODE" != all ]; then
  echo
  echo "Spin: $("$PORTCULLIS_SPIN" --version); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${SECS}s per run"
  RC="$WORK/redis.toml"
  printf '[key_value_store.default]\ntype = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT" > "$RC"
fi
if [ "$MODE" = spin ]; then
  echo
  echo "| target                 | c16 rps  | c16 p50   | c1 rps   | c1 p50    | errors | start ms |"
  echo "|------------------------|---------:|----------:|---------:|----------:|-------:|---------:|"
  for f in p2 p3; do
    spin_row "hello-$f" target/edge/hello-$f.wasm /hello
    spin_row "hello-$f-proxy" target/edge/hello-$f.wasm /proxy
    base=$LAST_RPS
    spin_row "edge-$f" target/edge/bench-$f.wasm /hello
    echo "|   → edge-$f / hello-$f-proxy = $(( LAST_RPS * 100 / base )) % |"
    if [ "$f" = p2 ]; then # the same build, not pre-initialised
      spin_row "edge-p2-compiling" target/edge/bench-p2-compiling.wasm /hello
      echo "|   → edge-p2-compiling / hello-p2-proxy = $(( LAST_RPS * 100 / base )) % |"
    fi
    spin_row "edge-$f-nolog" target/edge/bench-$f-nolog.wasm /hello
    spin_row "edge-$f-limited" target/edge/bench-$f-nolog.wasm /limited
    spin_row "edge-$f-limited-redis" target/edge/bench-$f-nolog.wasm /limited "$RC"
    spin_row "edge-$f-jwt" target/edge/bench-$f-nolog.wasm /jwt
  done
fi
if [ "$MODE" != all ]; then
  echo
  echo "Store growth: distinct clients on a per-client limit (one key each, expiring ~1.1 s after), then a full sweep:"
  echo
  echo "| store | clients | keys after | deleted by the sweep | keys after the sweep |"
  echo "|---|---:|---:|---:|---:|"
  CLIENTS=${CLIENTS:-100000}
  for store in sqlite redis; do
    rc=""; [ "$store" = redis ] && { rc=$RC; redis-cli -p "$REDIS_PORT" flushall >/dev/null; }
    spin_up "growth-$store" target/edge/bench-p3-nolog.wasm "$rc"
    wait_http "http://$SPIN_ADDR/hello" >/dev/null
    rate=${GROWTH_RATE:-300} # below what a store sustains for new keys, so every client is one key
    out=$(taskset -c 1 "$LOADGEN" --url "http://$SPIN_ADDR/per-client" --rate $rate --connections $CONNS \
      --seconds $(( CLIENTS / rate )) --warmup 0 --distinct-header x-client)
    sent=$(( $(grep -o '"requests":[0-9]*' <<<"$out" | cut -d: -f2) + $(grep -o '"errors":[0-9]*' <<<"$out" | cut -d: -f2) ))
    sleep 2
    read -r keys deleted < <(sweep_all "$SPIN_ADDR")
    read -r left _ < <(sweep_all "$SPIN_ADDR")
    echo "| $store | $sent | $keys | $deleted | $left |"
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  done
  exit 0
fi

echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; ${SECS}s per run, $CONNS connections"
echo
echo "| target             | peak rps | wrk p50  | wrk p99  | at rps  | p50 µs   | p99 µs   | p50@5k   | p99@5k   | errors | start ms |"
echo "|--------------------|---------:|---------:|---------:|--------:|---------:|---------:|---------:|---------:|-------:|---------:|"
LOW_RATE=5000

node node /hello
RATE=$(( LAST_RPS / 2 ))
measure direct "http://127.0.0.1:$ORIGIN_PORT/hello"

nginx_target nginx

haproxy_target haproxy /hello

node node-jwt /jwt
node node-full /full
haproxy_target haproxy-full /full
node node-limited /limited
node node-limited-redis /limited --store "redis://127.0.0.1:$REDIS_PORT"
node node-pool /pool

LOW_RATE=0
# Each flavour: Portcullis first; then its hello-world and JWT route at the
# same fixed rate (half of Portcullis' peak), so the p50s compare directly.
for f in p2 p3; do
  RATE=""
  edge edge-$f target/edge/bench-$f.wasm /hello
  RATE=$(( LAST_RPS / 2 ))
  edge hello-$f target/edge/hello-$f.wasm /hello
  edge edge-$f-jwt target/edge/bench-$f.wasm /jwt
  edge edge-$f-pool target/edge/bench-$f.wasm /pool
done

# JWT cost per request in each component, at one fixed rate every flavour
# sustains: the route without auth, a cached token, and a token never seen
# before on every request (verified from scratch) for each algorithm.
FRESH_RATE=${FRESH_RATE:-500}
echo
echo "JWT per request in the component, open loop at $FRESH_RATE req/s:"
echo
echo "| target             | p50 µs | p99 µs | errors |"
echo "|--------------------|-------:|-------:|-------:|"
lat_row() { # name url [loadgen args...]
  local name=$1 url=$2; shift 2
  local out; out=$(taskset -c 1 "$LOADGEN" --url "$url" --rate "$FRESH_RATE" --connections $CONNS --seconds "$SECS" --warmup 2 "$@")
  printf '| %-18s | %6s | %6s | %6s |\n' "$name" \
    "$(grep -o '"p50_us":[0-9]*' <<<"$out" | cut -d: -f2)" \
    "$(grep -o '"p99_us":[0-9]*' <<<"$out" | cut -d: -f2)" \
    "$(grep -o '"errors":[0-9]*' <<<"$out" | cut -d: -f2)"
}
for f in p2 p3; do
  taskset -c 0 "$HOST" serve target/edge/bench-$f.wasm --cache-dir "$WORK/host-cache" --listen 127.0.0.1:0 --var "origin_port=$ORIGIN_PORT" >"$WORK/jwt-$f.out" 2>"$WORK/jwt-$f.err" & PIDS+=($!)
  addr=$(listening "$WORK/jwt-$f.out")
  wait_http "http://$addr/hello" >/dev/null
  lat_row "edge-$f no auth" "http://$addr/hello"
  lat_row "edge-$f cached" "http://$addr/jwt" --header "authorization: Bearer $TOKEN"
  lat_row "edge-$f RS256 new" "http://$addr/jwt" --fresh-tokens RS256:tests/fixtures/keys/rsa1.pem
  lat_row "edge-$f ES256 new" "http://$addr/jwt" --fresh-tokens ES256:tests/fixtures/keys/ec256.pem
  lat_row "edge-$f EdDSA new" "http://$addr/jwt" --fresh-tokens EdDSA:tests/fixtures/keys/ed25519.pem
  kill "${PIDS[-1]}"
done

echo
echo "Component sizes:"
for f in hello-p2 hello-p3 bench-p2 bench-p3 portcullis-p2 portcullis-p3; do
  [ -f target/edge/$f.wasm ] && printf '  %-14s %8d bytes\n' "$f" "$(wc -c <target/edge/$f.wasm)"
done
