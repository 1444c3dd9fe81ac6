# shellcheck shell=bash
# benches/run.sh registry: how fast a published config reaches a fleet
# (issue 28). A Redis of its own (with its data on disk, so it can be
# restarted), 3 real nodes following it (`--config-from`) and
# FOLLOWERS (1 000) simulated followers in one process (`loadgen
# followers`: the nodes' own watch code, a subscription each): publish,
# then the time until each holds the version (the nodes: answer on its
# new route), p50/p99/max; again with Redis restarted just before the
# publish. Then a following node against a file-configured one on /hello,
# wrk -c16, ROUNDS (3) rounds alternating.

REG_PORT=$(shuf -i 26000-27999 -n 1)
REG_DIR="$WORK/registry-redis"
mkdir -p "$REG_DIR"
REG_START="taskset -c 1 redis-server --port $REG_PORT --bind 127.0.0.1 --appendonly yes --save '' --dir $REG_DIR --maxclients 10000 --daemonize yes"
eval "$REG_START" >/dev/null
trap 'redis-cli -p "$REG_PORT" shutdown nosave >/dev/null 2>&1 || true; cleanup' EXIT
until redis-cli -p "$REG_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
REG_URL="redis://127.0.0.1:$REG_PORT"

CONF="$WORK/registry.toml"
printf '[services.echo]\nurl = "http://127.0.0.1:%s"\n\n[[routes]]\npath = "/hello"\nservice = "echo"\n' "$ORIGIN_PORT" > "$CONF"
"$T/release/portcullis" publish "$CONF" --store "$REG_URL" -m "first" >/dev/null

follow_node() { # name [cpus] → FOLLOW_PID, FOLLOW_ADDR
  taskset -c "${2:-0}" "$T/release/portcullis" serve --workers 1 --config-from "$REG_URL" \
    --config-cache "$WORK/$1.json" --node-id "$1" --listen 127.0.0.1:0 \
    --metrics-listen off --admin-listen off >/dev/null 2>"$WORK/$1.err" & PIDS+=($!)
  FOLLOW_PID=$!
  FOLLOW_ADDR=$(listening "$WORK/$1.err")
}

echo
echo "== publish → applied, 3 nodes + ${FOLLOWERS:-1000} simulated followers (µs)"
addrs=() pids=()
for i in 0 1 2; do follow_node "node$i" "$((i % 2))"; addrs+=("$FOLLOW_ADDR"); pids+=("$FOLLOW_PID"); done
ulimit -n 16384
RESTART="redis-cli -p $REG_PORT shutdown >/dev/null; $REG_START >/dev/null; until redis-cli -p $REG_PORT ping >/dev/null 2>&1; do sleep 0.02; done" \
  "$LOADGEN" followers "$REG_URL" "${FOLLOWERS:-1000}" "$CONF" "${addrs[@]}"
for p in "${pids[@]}"; do stop "$p"; done

echo
echo "== a following node against a file-configured one, /hello, wrk -t1 -c16 ${SECS}s"
echo "| round | file rps | following rps | following / file |"
echo "|---|---:|---:|---:|"
for r in $(seq "${ROUNDS:-3}"); do
  node_serve reg-file "$CONF" --metrics-listen off --admin-listen off
  wait_http "http://$NODE_ADDR/hello" >/dev/null; wrk_warmup "http://$NODE_ADDR/hello"
  file=$(wrk1 16 "${SECS}s" "http://$NODE_ADDR/hello" "" | wrk_rps); stop_last
  follow_node reg-follow
  wait_http "http://$FOLLOW_ADDR/hello" >/dev/null; wrk_warmup "http://$FOLLOW_ADDR/hello"
  following=$(wrk1 16 "${SECS}s" "http://$FOLLOW_ADDR/hello" "" | wrk_rps); stop_last
  echo "| $r | $file | $following | $(awk -v a="$following" -v b="$file" 'BEGIN {printf "%.3f", a / b}') |"
done
exit 0
