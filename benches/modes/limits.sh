# shellcheck shell=bash
# benches/run.sh limits: one hot rate-limit key (benches/gateway.toml's
# /limited, 100 000 000/s by client IP: every request of the run on one
# key), the node deciding it with the memory store and with Redis, ROUNDS
# (3) rounds in alternating order (BEFORE_NODE: an older node beside, on
# Redis); then Redis' script calls per request of a Redis run.

node_first
for _ in $(seq "${ROUNDS:-3}"); do
  node node-limited /limited
  node node-limited-redis /limited --store "redis://127.0.0.1:$REDIS_PORT"
  [ -n "${BEFORE_NODE:-}" ] && NODE_BIN=$BEFORE_NODE node node-before-redis /limited --store "redis://127.0.0.1:$REDIS_PORT"
done

calls() { redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,]' '/^cmdstat_eval(sha)?:/ {n += $2} END {print n + 0}'; }
node_serve limits-count benches/gateway.toml --store "redis://127.0.0.1:$REDIS_PORT"
wait_http "http://$NODE_ADDR/limited" "" >/dev/null
before=$(calls)
out=$(taskset -c 1 wrk -t1 -c16 -d"${SECS}"s "http://$NODE_ADDR/limited")
requests=$(awk '/requests in/ {print $1}' <<<"$out")
after=$(calls)
echo
echo "Redis scripts per request, hot key (wrk -t1 -c16, ${SECS}s): $(( after - before )) for $requests requests"
stop_last
exit 0
