# shellcheck shell=bash
# benches/run.sh proxy: the plain proxy side by side, node against nginx,
# HAProxy and a bare hyper proxy (benches/bare_proxy.rs: hyper alone, no
# pipeline), in alternating order, ROUNDS times (BEFORE_NODE: an older node
# beside).

node_first
for _ in $(seq "${ROUNDS:-2}"); do
  nginx_target nginx
  haproxy_target haproxy /hello
  bare_target bare-hyper
  [ -n "${BEFORE_NODE:-}" ] && NODE_BIN=$BEFORE_NODE node node-before /hello
  node node /hello
done
exit 0
