# shellcheck shell=bash
# shellcheck disable=SC2034  # NODE_PID, HOST_* and the like are read by the modes
# The helpers benches/run.sh and its modes (benches/modes/<mode>.sh) share,
# sourced from the repository's root under `set -euo pipefail`. Sourcing it
# makes $WORK, a scratch directory that goes, with every process started
# here (PIDS), when the script exits.

# ---- settings and state

SECS=${SECONDS_PER_RUN:-10}
CONNS=16
T=${CARGO_TARGET_DIR:-$PWD/target}
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
PIDS=()
cleanup() { # → ends every process in PIDS, waits for them, removes $WORK
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
RATE=""   # the fixed rate for the latency runs, set from the node's peak
NODE_BIN=$T/release/portcullis   # the binary node() serves (a mode may set it for one call); not read from the environment
# The Pingora proxy (benches/pingora-proxy): a crate of its own, with its own target directory.
PINGORA_T=${PORTCULLIS_PINGORA_TARGET_DIR:-$HOME/.cache/portcullis/pingora-target}
PINGORA_BIN=$PINGORA_T/release/pingora-proxy   # emptied if its build fails, so its rows are skipped

# ---- small helpers

die() { # message → it on stderr, then exit 1 (cleanup ends what is running)
  echo "benches/run.sh $MODE: $*" >&2; exit 1
}

ms_since() { # start (date +%s%N) → milliseconds since then
  echo $(( ($(date +%s%N) - $1) / 1000000 ))
}

field() { # name json → the number in its "name":N (loadgen's summary, the sweep's answer)
  grep -o "\"$1\":[0-9]*" <<<"$2" | cut -d: -f2
}

median() { # numbers on stdin, one a line → their median (the lower middle one); nothing if none
  sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'
}

row() { # cells... → them as a Markdown table row, "| a | b |"
  printf '|'; printf ' %s |' "$@"; echo
}

auth_for() { # path → the authorization header its route asks for (/jwt, /full), else nothing
  case "$1" in /jwt|/full) echo "authorization: Bearer $TOKEN" ;; esac
}

cpu_ticks() { # pid → its user + system CPU time so far (all threads), in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

cpu_model() { # → this machine's CPU model name
  grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs
}

nolog_config() { # out → benches/gateway.toml with the access log off, written to out
  sed 's/^access_log = true/access_log = false/' benches/gateway.toml > "$1"
}

stop() { # pid → ends that process and waits for it
  kill "$1"; wait "$1" 2>/dev/null || true
}

stop_last() { # → stop the process started last
  stop "${PIDS[-1]}"
}

# ---- setup: tools, builds, the origin and Redis

check_tools() { # mode → exits 1 naming the first tool missing (redis-cli: the spin and limits modes)
  local tool tools=(wrk nginx haproxy taskset redis-server curl openssl)
  [[ "$1" == spin* || "$1" == limits || "$1" == *registry ]] && tools+=(redis-cli)
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx haproxy redis-server redis-tools curl util-linux openssl" >&2; exit 1; }
  done
}

build() { # mode → the release builds it needs (proxy: the Pingora proxy too); NODE_ONLY=1 if it runs no component
  echo "== building (release)" >&2
  cargo build --release --bin portcullis --example demo_origin --example loadgen --example bare_proxy >&2
  case "$1" in observability|haproxy|alternate|proxy|keys|idle|scale|tls|grpc|cors|registry) NODE_ONLY=1 ;; *) NODE_ONLY="" ;; esac
  if [ -z "$NODE_ONLY" ]; then build_components "$1"; fi
  if [ "$1" = proxy ]; then build_pingora; fi
}

build_components() { # mode → the test host; target/edge/bench-p2/p3 (-nolog too for spin*, floor and distance) and hello-p2/p3
  cargo build --release -p portcullis-edge-host >&2
  mkdir -p target/edge
  nolog_config target/edge/bench-nolog.toml
  # WASI 0.2 builds are pre-initialised later (preinit_components), once the origin's port is known.
  local f
  for f in p2 p3; do
    edge-deploy/build.sh $f --config benches/gateway.toml --out target/edge/bench-$f.wasm --no-preinit >&2
    [[ "$1" == spin* || "$1" == floor || "$1" == distance ]] && edge-deploy/build.sh $f --config target/edge/bench-nolog.toml --out target/edge/bench-$f-nolog.wasm --no-preinit >&2
    edge-deploy/wasm-cargo.sh rustc --manifest-path benches/hello/Cargo.toml --lib --profile release --features $f --crate-type cdylib >&2
    cp "$(edge-deploy/wasm-cargo.sh --print-target-dir)/wasm32-wasip2/release/hello.wasm" target/edge/hello-$f.wasm
  done
}

# Pingora's build needs cmake (libz-ng-sys) and takes minutes the first
# time; after that cargo finds it fresh in a second (without cmake too,
# once built). Without cmake and a build, or if the build fails, the mode
# runs on and pingora_target skips its rows.
build_pingora() { # → the Pingora proxy at PINGORA_BIN, or PINGORA_BIN empty
  if ! command -v cmake >/dev/null && [ ! -x "$PINGORA_BIN" ]; then
    echo "pingora: not built, cmake is missing (apt-get install cmake); its rows are skipped" >&2
    PINGORA_BIN=""; return 0
  fi
  CARGO_TARGET_DIR=$PINGORA_T nice -n 10 cargo build --release --manifest-path benches/pingora-proxy/Cargo.toml >&2 \
    || { echo "pingora: the build failed (above; cmake installed?); its rows are skipped" >&2; PINGORA_BIN=""; }
}

start_origin() { # → the demo origin on CPU 1 at ORIGIN_PORT, once it answers
  # Ports below Linux's ephemeral range (32768+), so no client socket holds them.
  ORIGIN_PORT=$(shuf -i 20000-25999 -n 1)
  taskset -c 1 "$T/release/examples/demo_origin" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null & PIDS+=($!)
  wait_http "http://127.0.0.1:$ORIGIN_PORT/hello" >/dev/null
}

preinit_components() { # → the WASI 0.2 builds pre-initialised with the origin's port
  # As `edge-deploy/build.sh p2 --var` makes a deployment's component; the
  # build as it was is kept beside (bench-p2-compiling: compiles its config
  # on every request).
  cp target/edge/bench-p2.wasm target/edge/bench-p2-compiling.wasm
  local w
  for w in bench-p2 bench-p2-nolog; do
    [ -f "target/edge/$w.wasm" ] || continue
    "$HOST" preinit "target/edge/$w.wasm" --out "target/edge/$w.wasm" --var "origin_port=$ORIGIN_PORT" >&2
  done
}

start_redis() { # → a throwaway Redis on CPU 1 at REDIS_PORT
  REDIS_PORT=$(shuf -i 26000-27999 -n 1)
  taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null & PIDS+=($!)
}

setup() { # mode → tools checked, builds made, HOST, LOADGEN and TOKEN set, the origin and Redis running
  check_tools "$1"
  build "$1"
  HOST=$T/release/portcullis-edge-host
  LOADGEN=$T/release/examples/loadgen
  TOKEN=$("$LOADGEN" mint tests/fixtures/keys/rsa1.pem)
  start_origin
  if [ -z "$NODE_ONLY" ]; then preinit_components; fi
  start_redis
}

# ---- waiting for a server

wait_http() { # url [header] → ms until the first 200
  local start; start=$(date +%s%N)
  for _ in $(seq 1 2000); do
    if curl -sf -o /dev/null ${2:+-H "$2"} "$1"; then ms_since "$start"; return 0; fi
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
  # Its log goes with $WORK: its end shown here.
  { echo "nothing listening; the end of $1:"; tail -n 5 "$1"; } >&2; return 1
}

metrics_addr() { # file → the address a node said its metrics listen on
  grep '"metrics listening"' "$1" | grep -o '127\.0\.0\.1:[0-9]*' | head -1
}

# ---- starting the systems under test

# `portcullis serve --workers 1` pinned to CPU 0, listening on 127.0.0.1:0,
# with the origin's port; the serve args follow --listen. Returns once it
# says it listens (its log: $WORK/name.err). --bin: another portcullis;
# --cpus, --workers: other than 0 and 1; --cachegrind file: run under
# valgrind's cachegrind (unpinned), its output to file.
node_serve() { # [--bin path] [--cpus list] [--workers n] [--cachegrind file] name config [serve args...] → NODE_PID, NODE_ADDR
  local bin=$T/release/portcullis workers=1 run=(taskset -c 0)
  while :; do
    case "$1" in
      --bin) bin=$2 ;;
      --cpus) run=(taskset -c "$2") ;;
      --workers) workers=$2 ;;
      --cachegrind) run=(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$2") ;;
      *) break ;;
    esac
    shift 2
  done
  local name=$1 config=$2; shift 2
  PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT "${run[@]}" "$bin" serve --workers "$workers" \
    --config "$config" --listen 127.0.0.1:0 "$@" >/dev/null 2>"$WORK/$name.err" & PIDS+=($!)
  NODE_PID=$!
  NODE_ADDR=$(listening "$WORK/$name.err")
}

# The test host serving a component, pinned to CPU 0, on 127.0.0.1:0 with the
# origin's port; the host args (its cache) come before --listen. Its stdout
# goes to $WORK/name.out, its stderr to name.err (err) or into name.out (out).
serve_host() { # name wasm err|out [host args...] → HOST_PID and HOST_ADDR, once it listens
  local name=$1 wasm=$2 stderr=$3; shift 3
  ( exec >"$WORK/$name.out"
    if [ "$stderr" = out ]; then exec 2>&1; else exec 2>"$WORK/$name.err"; fi
    exec taskset -c 0 "$HOST" serve "$wasm" "$@" --listen 127.0.0.1:0 --var "origin_port=$ORIGIN_PORT"
  ) & PIDS+=($!)
  HOST_PID=$!
  HOST_ADDR=$(listening "$WORK/$name.out")
}

# Under real Spin: each component served by `spin up` pinned to CPU 0 (a
# manifest per run in $WORK, its default SQLite store or Redis).
spin_up() { # name wasm [runtime-config] → SPIN_ADDR, where it will listen; REGISTRY: portcullis_registry's value
  local name=$1 wasm=$2 rc=${3:-}
  local dir="$WORK/spin-$name"; mkdir -p "$dir"
  cat > "$dir/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench"
[variables]
origin_port = { required = true }
portcullis_registry = { default = "" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "$PWD/$wasm"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
key_value_stores = ["default"]
[component.c.variables]
origin_port = "{{ origin_port }}"
portcullis_registry = "{{ portcullis_registry }}"
TOML
  local port; port=$(shuf -i 31000-31999 -n 1)
  (cd "$dir" && exec taskset -c 0 "$PORTCULLIS_SPIN" up --listen "127.0.0.1:$port" --variable "origin_port=$ORIGIN_PORT" \
    --variable "portcullis_registry=${REGISTRY:-}" ${rc:+--runtime-config-file "$rc"} >"$dir/out" 2>"$dir/err") & PIDS+=($!)
  SPIN_ADDR="127.0.0.1:$port"
}

spin_row() { # name wasm path [runtime-config] → its row: wrk at 16 connections and at 1, start ms
  local name=$1 wasm=$2 path=$3 rc=${4:-}
  spin_up "$name" "$wasm" "$rc"
  local header; header=$(auth_for "$path")
  local url="http://$SPIN_ADDR$path"
  local started; started=$(wait_http "$url" "$header")
  wrk_warmup "$url" "$header"
  local many one
  many=$(wrk1 "$CONNS" "${SECS}s" "$url" "$header" --latency)
  one=$(wrk1 1 "${SECS}s" "$url" "$header" --latency)
  local rps p50 rps1 p501 errors
  rps=$(wrk_rps <<<"$many"); p50=$(wrk_latency 50% <<<"$many")
  rps1=$(wrk_rps <<<"$one"); p501=$(wrk_latency 50% <<<"$one")
  errors=$(printf '%s\n' "$many" "$one" | wrk_non2xx | awk '{n += $1} END {print n + 0}')
  printf '| %-22s | %8s | %9s | %8s | %9s | %6s | %8s |\n' "$name" "$rps" "$p50" "$rps1" "$p501" "$errors" "$started"
  LAST_RPS=$rps
  stop_last
}

# ---- load

wrk1() { # connections duration url header [wrk args...] → the report of wrk -t1 run from CPU 1 (header: "" for none)
  local conns=$1 duration=$2 url=$3 header=$4; shift 4
  local h=(); [ -n "$header" ] && h=(-H "$header")
  taskset -c 1 wrk -t1 -c"$conns" -d"$duration" "$@" "${h[@]}" "$url"
}

wrk_warmup() { # url [header] → 2 s of wrk at 16 connections, its report dropped
  wrk1 "$CONNS" 2s "$1" "${2:-}" >/dev/null
}

wrk_rps() { # a wrk report on stdin → its requests/s, whole
  awk '/Requests\/sec/ {print int($2)}'
}

wrk_latency() { # percentile ("50%") and a wrk --latency report on stdin → that latency
  awk -v p="$1" '$1==p {print $2}'
}

wrk_non2xx() { # a wrk report on stdin → its count of non-2xx answers; nothing if none
  awk '/Non-2xx/ {print $NF}'
}

loadgen() { # url rate connections seconds warmup [loadgen args...] → loadgen's JSON summary, open loop from CPU 1
  local url=$1 rate=$2 conns=$3 secs=$4 warmup=$5; shift 5
  taskset -c 1 "$LOADGEN" --url "$url" --rate "$rate" --connections "$conns" --seconds "$secs" --warmup "$warmup" "$@"
}

# The component's own time: the median overhead_us (total minus time on the
# origin) of its access-log lines after line $2 of file $1; empty if none.
own_us() { # file line → µs
  tail -n +$(( $2 + 1 )) "$1" | { grep -o '"overhead_us":[0-9]*' || true; } | cut -d: -f2 | median
}

# ---- the node table: peak, latency at fixed rates, start

measure() { # name url started_ms [header] → a row of the node table (LOW_RATE: a second, clean fixed rate)
  local name=$1 url=$2 startup=${3:--} header=${4:-}
  wrk_warmup "$url" "$header"
  local out; out=$(wrk1 "$CONNS" "${SECS}s" "$url" "$header" --latency)
  local rps p50 p99 errors
  rps=$(wrk_rps <<<"$out"); p50=$(wrk_latency 50% <<<"$out"); p99=$(wrk_latency 99% <<<"$out")
  errors=$(wrk_non2xx <<<"$out")
  local rate=${RATE:-$(( rps / 2 ))}
  [ "$rate" -gt $(( rps * 9 / 10 )) ] && rate=$(( rps / 2 ))
  local g=(); [ -n "$header" ] && g=(--header "$header")
  local lat; lat=$(loadgen "$url" "$rate" "$CONNS" "$SECS" 2 "${g[@]}")
  local lp50 lp99 lerr
  lp50=$(field p50_us "$lat"); lp99=$(field p99_us "$lat"); lerr=$(field errors "$lat")
  # A second fixed rate the load generator sustains with room to spare (it
  # shares a core with the origin and saturates near 20k/s): clean latencies.
  local low=${LOW_RATE:-0} q50=- q99=-
  if [ "$low" -gt 0 ] && [ "$low" -lt "$rps" ]; then
    local quiet; quiet=$(loadgen "$url" "$low" "$CONNS" "$SECS" 2 "${g[@]}")
    q50=$(field p50_us "$quiet"); q99=$(field p99_us "$quiet")
    lerr=$(( lerr + $(field errors "$quiet") ))
  fi
  printf '| %-18s | %8s | %8s | %8s | %7s | %8s | %8s | %8s | %8s | %6s | %8s |\n' \
    "$name" "$rps" "$p50" "$p99" "$rate" "$lp50" "$lp99" "$q50" "$q99" "$(( ${errors:-0} + lerr ))" "$startup"
  LAST_RPS=$rps
}

measure_from() { # start name addr path → once path answers (with the token its route asks for), measure's row, started ms from start
  local start=$1 name=$2 url="http://$3$4" header; header=$(auth_for "$4")
  wait_http "$url" "$header" >/dev/null
  measure "$name" "$url" "$(ms_since "$start")" "$header"
}

node() { # name path [serve args...] → the node's row on path; NODE_BIN: another portcullis binary
  local name=$1 path=$2; shift 2
  local start; start=$(date +%s%N)
  node_serve --bin "$NODE_BIN" "$name" benches/gateway.toml \
    --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "$@"
  measure_from "$start" "$name" "$NODE_ADDR" "$path"
  stop_last
}

nginx_target() { # name → nginx's row, on CPU 0 proxying to the origin (benches/nginx.conf)
  local port; port=$(shuf -i 28000-30999 -n 1)
  mkdir -p "$WORK/nginx"
  sed -e "s|__PREFIX__|$WORK/nginx|g" -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    benches/nginx.conf > "$WORK/nginx/nginx.conf"
  local start; start=$(date +%s%N)
  taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & PIDS+=($!)
  measure_from "$start" "$1" "127.0.0.1:$port" /hello
  stop_last
}

bare_target() { # name → the bare-hyper proxy's row (benches/bare_proxy.rs), on CPU 0 forwarding to the origin
  local port; port=$(shuf -i 28000-30999 -n 1)
  local start; start=$(date +%s%N)
  taskset -c 0 "$T/release/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" & PIDS+=($!)
  measure_from "$start" "$1" "127.0.0.1:$port" /hello
  stop_last
}

pingora_target() { # name → the Pingora proxy's row (benches/pingora-proxy), on CPU 0 forwarding to the origin; skipped if not built
  if [ ! -x "$PINGORA_BIN" ]; then echo "$1: skipped, no Pingora proxy built (needs cmake)" >&2; return 0; fi
  local port; port=$(shuf -i 28000-30999 -n 1)
  local start; start=$(date +%s%N)
  taskset -c 0 "$PINGORA_BIN" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" 2>"$WORK/$1.err" & PIDS+=($!)
  measure_from "$start" "$1" "127.0.0.1:$port" /hello
  stop_last
}

caddy_target() { # name → Caddy's row, GOMAXPROCS=1 on CPU 0 proxying to the origin (benches/Caddyfile); skipped without caddy
  if ! command -v caddy >/dev/null; then echo "$1: skipped, caddy is not installed (apt-get install caddy)" >&2; return 0; fi
  local port; port=$(shuf -i 28000-30999 -n 1)
  mkdir -p "$WORK/caddy"
  sed -e "s|__PREFIX__|$WORK/caddy|g" -e "s|__PORT__|$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    benches/Caddyfile > "$WORK/caddy/Caddyfile"
  local start; start=$(date +%s%N)
  XDG_CONFIG_HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy" GOMAXPROCS=1 taskset -c 0 \
    caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile >/dev/null 2>"$WORK/caddy/caddy.err" & PIDS+=($!)
  measure_from "$start" "$1" "127.0.0.1:$port" /hello
  stop_last
}

haproxy_target() { # name path → HAProxy's row on path, on CPU 0 proxying to the origin (benches/haproxy.cfg)
  local name=$1 path=$2
  local port; port=$(shuf -i 31000-31999 -n 1)
  sed -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    -e "s|__KEY__|$PWD/tests/fixtures/keys/rsa1.pub.pem|" benches/haproxy.cfg > "$WORK/haproxy.cfg"
  local start; start=$(date +%s%N)
  taskset -c 0 haproxy -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!)
  measure_from "$start" "$name" "127.0.0.1:$port" "$path"
  stop_last
}

node_first() { # → the node table's head, then the node on /hello, whose half peak is the latency runs' rate
  echo "| target             | peak rps | wrk p50  | wrk p99  | at rps  | p50 µs   | p99 µs   | p50@5k   | p99@5k   | errors | start ms |"
  echo "|--------------------|---------:|---------:|---------:|--------:|---------:|---------:|---------:|---------:|-------:|---------:|"
  LOW_RATE=5000
  node node /hello
  RATE=$(( LAST_RPS / 2 ))
}

# ---- Spin (spin, spin-growth)

spin_intro() { # → the Spin version and CPU line; RC: a runtime config putting the default store in Redis
  echo
  echo "Spin: $("$PORTCULLIS_SPIN" --version); CPU: $(cpu_model); ${SECS}s per run"
  RC="$WORK/redis.toml"
  printf '[key_value_store.default]\ntype = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT" > "$RC"
}

sweep_all() { # addr → "keys-before deleted"
  local after="" keys="" deleted=0 out
  for _ in $(seq 1 10000); do
    out=$(curl -sf -X POST -H "authorization: Bearer bench-sweep" "http://$1/_portcullis/sweep${after:+?after=$after}")
    [ -z "$keys" ] && keys=$(field keys "$out")
    deleted=$(( deleted + $(field deleted "$out") ))
    after=$(grep -o '"next":"[^"]*"' <<<"$out" | cut -d'"' -f4 || true)
    [ -z "$after" ] && break
  done
  echo "$keys $deleted"
}

store_growth() { # → the store-growth table: CLIENTS distinct clients in Spin's SQLite store, then in Redis
  echo
  echo "Store growth: distinct clients on a per-client limit (one key each, expiring ~1.1 s after), then a full sweep:"
  echo
  echo "| store | clients | keys after | deleted by the sweep | keys after the sweep |"
  echo "|---|---:|---:|---:|---:|"
  CLIENTS=${CLIENTS:-100000}
  local store
  for store in sqlite redis; do growth_row "$store"; done
}

growth_row() { # store → its row: clients sent, keys after, deleted by a full sweep, keys after it
  local store=$1 rc="" rate out sent keys deleted left
  [ "$store" = redis ] && { rc=$RC; redis-cli -p "$REDIS_PORT" flushall >/dev/null; }
  spin_up "growth-$store" target/edge/bench-p3-nolog.wasm "$rc"
  wait_http "http://$SPIN_ADDR/hello" >/dev/null
  rate=${GROWTH_RATE:-300} # below what a store sustains for new keys, so every client is one key
  out=$(loadgen "http://$SPIN_ADDR/per-client" "$rate" "$CONNS" $(( CLIENTS / rate )) 0 --distinct-header x-client)
  sent=$(( $(field requests "$out") + $(field errors "$out") ))
  sleep 2
  read -r keys deleted < <(sweep_all "$SPIN_ADDR")
  read -r left _ < <(sweep_all "$SPIN_ADDR")
  row "$store" "$sent" "$keys" "$deleted" "$left"
  stop_last
}
