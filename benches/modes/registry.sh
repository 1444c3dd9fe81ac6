# shellcheck shell=bash
# benches/run.sh registry: how fast a published config reaches a fleet
# (issue 28). A Redis of its own (with its data on disk, so it can be
# restarted), 3 real nodes following it (`--config-from`) and
# FOLLOWERS (1 000) simulated followers in one process (`loadgen
# followers`: the nodes' own watch code, a subscription each): publish,
# then the time until each holds the version (the nodes: answer on its
# new route), p50/p99/max; again with Redis restarted just before the
# publish. Then a following node against a file-configured one on /hello,
# wrk -c16, ROUNDS (3) rounds alternating; then 100 000 API-key consumers
# imported: how long until a node holds them, and its memory for them.

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
echo
echo "== 100 000 API-key consumers in the registry: a following node's memory"
printf '[auth.api_key.partners]\n\n[services.echo]\nurl = "http://127.0.0.1:%s"\n\n[[routes]]\npath = "/hello"\nservice = "echo"\nauth = { any_of = ["partners"] }\n' "$ORIGIN_PORT" > "$WORK/partners.toml"
"$T/release/portcullis" publish "$WORK/partners.toml" --store "$REG_URL" -m "partners" >/dev/null
follow_node reg-consumers
wait_http "http://$FOLLOW_ADDR/healthz" >/dev/null 2>&1 || true
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$FOLLOW_PID/status"; }
before=$(rss)
awk 'BEGIN { for (i = 0; i < 100000; i++) printf "[[consumers]]\nprovider = \"partners\"\nid = \"consumer-%d\"\nkey_sha256 = \"%064x\"\ngroups = [\"gold\"]\n", i, i }' > "$WORK/consumers.toml"
start=$(date +%s%N)
"$T/release/portcullis" consumers import "$WORK/consumers.toml" --store "$REG_URL" >/dev/null
imported=$(ms_since "$start")
key=$(echo -n "last-key" | "$T/release/portcullis" consumers add --provider partners --id last --store "$REG_URL" >/dev/null && echo ok)
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'x-api-key: last-key' "http://$FOLLOW_ADDR/hello")" = 200 ]; do sleep 0.01; done
held=$(ms_since "$start")
sleep 1
after=$(rss)
echo "| consumers | import ms | imported to held ms | RSS before KiB | RSS after KiB | per consumer B |"
echo "|---:|---:|---:|---:|---:|---:|"
echo "| 100 001 | $imported | $held | $before | $after | $(( (after - before) * 1024 / 100001 )) |"
[ "$key" = ok ]
stop "$FOLLOW_PID"
exit 0
