# shellcheck shell=bash
# shellcheck disable=SC2317  # peak and cpu are called by both, as "$1"
# benches/run.sh observability: metrics and traces off (--metrics-listen off
# stops recording too) against metrics on and spans exported for 1 % of new
# traces (to the demo origin, which takes the OTLP posts), in pairs that
# alternate so drift hits both sides alike: peak throughput (PAIRS), the
# node's CPU time per request (CPU_PAIRS), instructions per request under
# cachegrind (INSTRUCTIONS=0: skipped); then /metrics of 200 routes.

side() { # off|on → SIDE: that side's config and serve args
  if [ "$1" = off ]; then SIDE=(benches/gateway.toml --metrics-listen off)
  else SIDE=("$WORK/traced.toml" --metrics-listen 127.0.0.1:0 --otlp-endpoint "http://127.0.0.1:$ORIGIN_PORT"); fi
}

# One measure of both sides (sets `off` and `on`), which goes first
# alternating with the pair's number so drift in the machine cancels out.
# The measures run in this shell, not in $(...), and leave their figure in
# RESULT: their nodes go into PIDS and a failure stops the mode (set -e).
both() { # measure pair
  local s
  for s in $( [ $(( $2 % 2 )) = 1 ] && echo off on || echo on off ); do
    side "$s"
    "$1" "$s" "${SIDE[@]}"
    if [ "$s" = off ]; then off=$RESULT; else on=$RESULT; fi
  done
}

counted() { # what n → exits naming what unless n is a count above 0
  [ "${2:-0}" -gt 0 ] || die "$1: nothing counted (got '${2:-}')"
}

permille() { # n per mille → "n/10 %" with one decimal
  echo "$(( $1 / 10 )).$(( $1 % 10 )) %"
}

median_row() { # per-mille ratios → the median's row
  [ "$#" -gt 0 ] || return 0
  local m; m=$(printf '%s\n' "$@" | median)
  echo "| median | | | $(permille "$m") |"
}

hello_node() { # name config [serve args...] → a node (admin off) answering /hello; NODE_PID, NODE_ADDR
  local name=$1 config=$2; shift 2
  node_serve "$name" "$config" --admin-listen off "$@"
  wait_http "http://$NODE_ADDR/hello" >/dev/null
}

peak() { # name config [serve args...] → RESULT: the node's peak rps on /hello
  hello_node "$@"
  wrk_warmup "http://$NODE_ADDR/hello"
  RESULT=$(wrk1 "$CONNS" "${SECS}s" "http://$NODE_ADDR/hello" "" | wrk_rps)
  stop_last
  counted "peak of node $1 (rps)" "$RESULT"
}

peak_table() { # → PAIRS pairs of peak rps, off against on, and the median ratio
  echo "| pair | off rps | on rps | on / off |"
  echo "|---:|---:|---:|---:|"
  local ratios=() i
  for i in $(seq 1 "${PAIRS:-5}"); do
    both peak "$i"
    ratios+=("$(( on * 1000 / off ))")
    row "$i" "$off" "$on" "$(permille $(( on * 1000 / off )))"
  done
  median_row "${ratios[@]}"
}

# Peak throughput on this shared machine swings by ±15 % between runs of
# one binary; the node's own CPU time per request at a fixed rate (well
# below either side's peak) is steadier: its inverse is the throughput a
# CPU-bound node reaches.
cpu() { # name config [serve args...] → RESULT: node CPU µs per request ×100
  hello_node "$@"
  local pid=$NODE_PID url="http://$NODE_ADDR/hello"
  loadgen "$url" "${CPU_RATE:-10000}" "$CONNS" 2 0 >/dev/null
  local before after out n
  before=$(cpu_ticks "$pid")
  out=$(loadgen "$url" "${CPU_RATE:-10000}" "$CONNS" "$SECS" 0)
  after=$(cpu_ticks "$pid")
  n=$(field requests "$out")
  stop "$pid"
  counted "requests to node $1" "$n"
  RESULT=$(( (after - before) * 100000000 / ($(getconf CLK_TCK) * n) ))   # ticks → µs (1 000 000 / CLK_TCK each), ×100
  counted "CPU per request of node $1 (µs ×100)" "$RESULT"
}

hundredths() { # n → n/100 with two decimals
  echo "$(( $1 / 100 )).$(printf %02d $(( $1 % 100 )))"
}

cpu_table() { # → CPU_PAIRS pairs of CPU µs per request, off against on, and the median ratio
  echo
  echo "| pair | off µs/req | on µs/req | off / on |"
  echo "|---:|---:|---:|---:|"
  local cpus=() i
  for i in $(seq 1 "${CPU_PAIRS:-5}"); do
    both cpu "$i"
    cpus+=("$(( off * 1000 / on ))")
    row "$i" "$(hundredths "$off")" "$(hundredths "$on")" "$(permille $(( off * 1000 / on )))"
  done
  median_row "${cpus[@]}"
}

# Instructions per request under cachegrind (valgrind): no noise at all.
# Two runs per side, 2 000 and 6 000 requests at 400/s; the difference
# over 4 000 leaves start-up and shutdown out.
instructions() { # name n config [serve args...] → RESULT: instructions of the whole run
  local name=$1 n=$2 config=$3; shift 3
  node_serve --cachegrind "$WORK/cg.$name" "$name" "$config" --admin-listen off "$@"
  wait_http "http://$NODE_ADDR/hello" >/dev/null
  loadgen "http://$NODE_ADDR/hello" 400 4 $(( n / 400 )) 0 >/dev/null
  stop "$NODE_PID"
  RESULT=$(awk '/^summary/ {print $2}' "$WORK/cg.$name")
  counted "instructions of node $name" "$RESULT"
}

instructions_table() { # → instructions per request of each side
  echo
  echo "| side | instructions per request |"
  echo "|---|---:|"
  local s few many
  for s in off on; do
    side "$s"
    instructions "$s-2k" 2000 "${SIDE[@]}"; few=$RESULT
    instructions "$s-6k" 6000 "${SIDE[@]}"; many=$RESULT
    row "$s" "$(( (many - few) / 4000 ))"
  done
}

routes200() { # → $WORK/routes200.toml: the gateway section and 200 routes to the origin, access log off
  {
    sed -n '/^\[gateway\]/,/^$/p' benches/gateway.toml
    echo '[services.origin]'; echo 'url = "http://127.0.0.1:{{ origin_port }}"'
    for r in $(seq 1 200); do printf '[[routes]]\nname = "r%03d"\npath = "/r%03d"\nservice = "origin"\nrewrite = "/hello"\n' "$r" "$r"; done
  } > "$WORK/routes200.toml"
  sed -i 's/^access_log = true/access_log = false/' "$WORK/routes200.toml"
}

# /metrics with 200 routes, each having served requests (so every route's
# series exist): the time of a scrape, over 20 scrapes.
scrape_line() { # → the scrape's median and max time, its series and bytes
  routes200
  node_serve scrape "$WORK/routes200.toml" --admin-listen off --metrics-listen 127.0.0.1:0
  local addr=$NODE_ADDR metrics r times size series
  wait_http "http://$addr/r001" >/dev/null
  metrics=$(metrics_addr "$WORK/scrape.err")
  for r in $(seq 1 200); do curl -sf -o /dev/null "http://$addr/r$(printf %03d "$r")"; curl -sfI -o /dev/null "http://$addr/r$(printf %03d "$r")"; curl -s -o /dev/null "http://$addr/none$r"; done
  times=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://$metrics/metrics"; done | sort -n)
  size=$(curl -s "http://$metrics/metrics" | wc -c); series=$(curl -s "http://$metrics/metrics" | grep -vc '^#')
  echo
  echo "/metrics, 200 routes ($series series, $size bytes): median $(sed -n 10p <<<"$times") s, max $(tail -1 <<<"$times") s over 20 scrapes"
}

sed 's/^access_log = true/access_log = true\ntrace_sample_ratio = 0.01/' benches/gateway.toml > "$WORK/traced.toml"
peak_table
cpu_table
if [ "${INSTRUCTIONS:-1}" = 1 ] && command -v valgrind >/dev/null; then instructions_table; fi
scrape_line
exit 0
