# shellcheck shell=bash
# benches/run.sh proxy: the plain proxy side by side, node against nginx,
# HAProxy and a bare hyper proxy (benches/bare_proxy.rs: hyper alone, no
# pipeline), in alternating order, ROUNDS times (BEFORE_NODE: an older node
# beside); then instructions per request under cachegrind, the node's plain
# route against the bare hyper proxy (INSTRUCTIONS=0: skipped).

# Instructions per request (valgrind's cachegrind, unpinned: no noise at
# all): runs of 1 000 and 3 000 requests at 500/s, the difference over
# 2 000, so start-up and shutdown are left out.
hello_load() { # addr n → n requests to /hello at 500/s, once it answers
  wait_http "http://$1/hello" >/dev/null
  loadgen "http://$1/hello" 500 4 $(( $2 / 500 )) 0 >/dev/null
}

instructions_of() { # node|bare n → RESULT: instructions of the whole run
  local out="$WORK/cg.$1.$2"
  if [ "$1" = node ]; then
    node_serve --cachegrind "$out" "cg-node-$2" benches/gateway.toml --admin-listen off
    hello_load "$NODE_ADDR" "$2"
    stop "$NODE_PID"
  else
    local port; port=$(shuf -i 28000-30999 -n 1)
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
      "$T/release/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null & PIDS+=($!)
    local pid=$!
    hello_load "127.0.0.1:$port" "$2"
    stop "$pid"
  fi
  RESULT=$(awk '/^summary/ {print $2}' "$out")
  [ "${RESULT:-0}" -gt 0 ] || die "instructions of $1: nothing counted"
}

node_first
for _ in $(seq "${ROUNDS:-2}"); do
  nginx_target nginx
  haproxy_target haproxy /hello
  bare_target bare-hyper
  [ -n "${BEFORE_NODE:-}" ] && NODE_BIN=$BEFORE_NODE node node-before /hello
  node node /hello
done
if [ "${INSTRUCTIONS:-1}" = 1 ] && command -v valgrind >/dev/null; then
  echo
  echo "| proxy | instructions per request |"
  echo "|---|---:|"
  for p in bare node; do
    instructions_of "$p" 1000; few=$RESULT
    instructions_of "$p" 3000; many=$RESULT
    row "$([ "$p" = bare ] && echo bare-hyper || echo node)" "$(( (many - few) / 2000 ))"
  done
fi
exit 0
