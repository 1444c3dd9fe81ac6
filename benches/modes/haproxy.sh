# shellcheck shell=bash
# benches/run.sh haproxy: the full job (JWT + per-subject limit + proxy) side
# by side, node against HAProxy, ROUNDS (2) times in alternating order
# (BEFORE_NODE: an older node beside, on both routes).

node_first
for _ in $(seq "${ROUNDS:-2}"); do
  node node-full /full
  haproxy_target haproxy-full /full
  haproxy_target haproxy /hello
  node node /hello
  if [ -n "${BEFORE_NODE:-}" ]; then
    NODE_BIN=$BEFORE_NODE node node-before-full /full
    NODE_BIN=$BEFORE_NODE node node-before /hello
  fi
done
exit 0
