# shellcheck shell=bash
# benches/run.sh proxy: the plain proxy side by side, node against nginx,
# HAProxy, Pingora (benches/pingora-proxy, its own crate, built here: needs
# cmake), Caddy (benches/Caddyfile, GOMAXPROCS=1) and a bare hyper proxy
# (benches/bare_proxy.rs: hyper alone, no pipeline), in alternating order,
# ROUNDS times (BEFORE_NODE: an older node beside; Pingora not built or
# Caddy not installed: their rows skipped, with a line on stderr); then
# instructions per request under cachegrind, the node's plain route
# against the bare hyper proxy (INSTRUCTIONS=0: skipped); and where their
# CPU time goes at peak, user space against the kernel.

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

# CPU time per request at peak, split between user space and the kernel
# (utime and stime from /proc, in clock ticks), over SECS of wrk after a
# warm-up: the two proxies make the same syscalls, so the kernel's share is
# what the same work costs there, and the user share is ours.
cpu_split_of() { # node|bare → RESULT: "user_us kernel_us" a request
  local pid addr
  if [ "$1" = node ]; then
    node_serve "split-node" benches/gateway.toml --admin-listen off
    pid=$NODE_PID addr=$NODE_ADDR
  else
    local port; port=$(shuf -i 28000-30999 -n 1)
    taskset -c 0 "$T/release/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" & PIDS+=($!)
    pid=$! addr="127.0.0.1:$port"
  fi
  wait_http "http://$addr/hello" >/dev/null
  wrk_warmup "http://$addr/hello"
  local u0 s0 u1 s1 rps tick; tick=$(getconf CLK_TCK)
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  rps=$(wrk1 "$CONNS" "${SECS}s" "http://$addr/hello" "" | wrk_rps)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  stop "$pid"
  local n=$(( rps * SECS ))
  [ "$n" -gt 0 ] || die "cpu split of $1: no requests"
  RESULT="$(awk -v t=$(( u1 - u0 )) -v k="$tick" -v n="$n" 'BEGIN {printf "%.2f", t * 1e6 / k / n}') $(awk -v t=$(( s1 - s0 )) -v k="$tick" -v n="$n" 'BEGIN {printf "%.2f", t * 1e6 / k / n}')"
}

node_first
for _ in $(seq "${ROUNDS:-2}"); do
  nginx_target nginx
  haproxy_target haproxy /hello
  pingora_target pingora
  caddy_target caddy
  bare_target bare-hyper
  [ -n "${BEFORE_NODE:-}" ] && NODE_BIN=$BEFORE_NODE node node-before /hello
  node node /hello
done
echo
echo "| proxy | user µs per request | kernel µs per request |"
echo "|---|---:|---:|"
for _ in $(seq "${ROUNDS:-2}"); do
  for p in bare node; do
    cpu_split_of "$p"
    # shellcheck disable=SC2086  # RESULT is two cells
    row "$([ "$p" = bare ] && echo bare-hyper || echo node)" $RESULT
  done
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
