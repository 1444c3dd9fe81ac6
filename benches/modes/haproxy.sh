# shellcheck shell=bash
# benches/run.sh haproxy: the full job (JWT + per-subject limit + proxy) side
# by side, node against HAProxy, ROUNDS (2) times in alternating order.

node_first
for _ in $(seq "${ROUNDS:-2}"); do
  node node-full /full
  haproxy_target haproxy-full /full
  haproxy_target haproxy /hello
  node node /hello
done
exit 0
