# shellcheck shell=bash
# benches/run.sh keys: a new caller every millisecond on a per-client limit
# (one key each, idle after about 0.1 s) for KEYS_SECONDS (600): the node's
# RSS and its in-memory store's size every 30 s. (Access log off: a million
# lines say nothing here.)

nolog_config "$WORK/nolog.toml"
node_serve keys "$WORK/nolog.toml" --admin-listen off --metrics-listen 127.0.0.1:0
pid=$NODE_PID addr=$NODE_ADDR
metrics=$(metrics_addr "$WORK/keys.err")
wait_http "http://$addr/hello" >/dev/null
secs=${KEYS_SECONDS:-600}
# loadgen itself in the background, not lib.sh's loadgen function (killing
# that subshell would leave loadgen running), and in PIDS: cleanup ends it.
taskset -c 1 "$LOADGEN" --url "http://$addr/per-client" --rate 1000 --connections "$CONNS" --seconds "$secs" --warmup 0 \
  --distinct-header x-client > "$WORK/keys.out" & PIDS+=($!)
load=$!
echo "| s | node RSS MB | store keys |"
echo "|---:|---:|---:|"
for t in $(seq 0 30 "$secs"); do
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")
  keys=$(curl -s "http://$metrics/metrics" | awk '/^portcullis_store_keys / {print $2}')
  row "$t" "$rss" "$keys"
  [ "$t" -lt "$secs" ] && sleep $(( secs - t < 30 ? secs - t : 30 ))   # the last: only what remains
done
wait "$load" || true
echo "load: $(cat "$WORK/keys.out")"
exit 0
