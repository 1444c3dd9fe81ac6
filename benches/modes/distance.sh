# shellcheck shell=bash
# benches/run.sh distance: the store across a network, as on an edge
# platform. The test host adds DISTANCE_US (2 000) to every key-value call
# (--kv-latency-us); the node's Redis sits behind a proxy holding every
# chunk half that long each way (`loadgen delay`), so each call is a round
# trip of DISTANCE_US. Per target: /hello (no limit) and /limited (one
# hot key at 100 000 000/s: leased in WASI 0.3 instances and on the node,
# from the shared pool in WASI 0.2 instances), one connection at
# DISTANCE_RATE (100) requests a second (loadgen: p50 and p99, µs, the
# medians of ROUNDS (3) runs, the two paths alternating: this machine's
# figures drift between minutes), then wrk at 16 connections. "added":
# /limited's p50 less /hello's.

D=${DISTANCE_US:-2000}
rate=${DISTANCE_RATE:-100} # every sample one request alone: a WASI 0.2 request makes two calls (4 ms)

distance_rows() { # name addr → its two rows: p50s the medians of ROUNDS (3) alternating runs
  local name=$1 addr=$2 path out wrk non2xx hello p50 p99
  local -A p50s=() p99s=()
  wait_http "http://$addr/hello" >/dev/null
  for _ in $(seq "${ROUNDS:-3}"); do
    for path in /hello /limited; do
      out=$(loadgen "http://$addr$path" "$rate" 1 "$SECS" 1)
      p50s[$path]+="$(field p50_us "$out") "; p99s[$path]+="$(field p99_us "$out") "
    done
  done
  hello=$(xargs -n1 <<<"${p50s[/hello]}" | median)
  for path in /hello /limited; do
    wrk=$(wrk1 "$CONNS" "${SECS}s" "http://$addr$path" "")
    non2xx=$(wrk_non2xx <<<"$wrk")
    p50=$(xargs -n1 <<<"${p50s[$path]}" | median)
    p99=$(xargs -n1 <<<"${p99s[$path]}" | median)
    row "$name" "$path" "$p50" "$p99" "$(( p50 - hello ))" "$(wrk_rps <<<"$wrk")" "${non2xx:-0}"
  done
}

echo
echo "Key-value calls ${D} µs away; ${rate}/s on one connection, ${SECS}s per row; CPU: $(cpu_model)"
echo
row target path "p50 µs" "p99 µs" "added p50 µs" "c16 rps" "c16 non-2xx"
row "---" "---" "---:" "---:" "---:" "---:" "---:"
for f in p3 p2; do
  serve_host "distance-$f" "target/edge/bench-$f-nolog.wasm" err --kv-latency-us "$D"
  distance_rows "edge-$f" "$HOST_ADDR"
  stop_last
done
nolog_config "$WORK/nolog.toml"
port=$(shuf -i 28000-30999 -n 1)
taskset -c 1 "$LOADGEN" delay "$port" "127.0.0.1:$REDIS_PORT" $(( D / 2 )) >/dev/null & PIDS+=($!)
node_serve distance-node "$WORK/nolog.toml" --store "redis://127.0.0.1:$port"
distance_rows node-redis "$NODE_ADDR"
stop_last
exit 0
