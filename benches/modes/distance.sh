# shellcheck shell=bash
# benches/run.sh distance: the store across a network, as on an edge
# platform. The test host adds DISTANCE_US (2 000) to every key-value call
# (--kv-latency-us); the node's Redis sits behind a proxy holding every
# chunk half that long each way (`loadgen delay`), so each call is a round
# trip of DISTANCE_US. Per target: /hello (no limit) and /limited (one
# hot key at 100 000 000/s: leased in WASI 0.3 instances and on the node,
# from the shared pool in WASI 0.2 instances), one connection at
# FLOOR_RATE (200) requests a second (loadgen: p50 and p99, µs), then
# wrk at 16 connections. "added": /limited's p50 less /hello's.

D=${DISTANCE_US:-2000}
rate=${FLOOR_RATE:-200}

distance_rows() { # name addr → its two rows
  local name=$1 addr=$2 path out hello="" p50 wrk
  wait_http "http://$addr/hello" >/dev/null
  for path in /hello /limited; do
    out=$(loadgen "http://$addr$path" "$rate" 1 "$SECS" 2)
    p50=$(field p50_us "$out")
    wrk=$(wrk1 "$CONNS" "${SECS}s" "http://$addr$path" "")
    [ "$path" = /hello ] && hello=$p50
    row "$name" "$path" "$p50" "$(field p99_us "$out")" "$(field errors "$out")" "$(( p50 - hello ))" \
      "$(wrk_rps <<<"$wrk")" "$(wrk_non2xx <<<"$wrk")"
  done
}

echo
echo "Key-value calls ${D} µs away; ${rate}/s on one connection, ${SECS}s per row; CPU: $(cpu_model)"
echo
row target path "p50 µs" "p99 µs" errors "added p50 µs" "c16 rps" "c16 non-2xx"
row "---" "---" "---:" "---:" "---:" "---:" "---:" "---:"
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
