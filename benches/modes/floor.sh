# shellcheck shell=bash
# benches/run.sh floor: what a component adds per request over the smallest
# component making the same outbound hop (hello-world's /proxy: GET the
# origin's /hello), in the test host: one connection at a fixed rate
# (FLOOR_RATE, 200) below saturation, so each sample is one request alone.
# All served at once, measured row by row, ROUNDS times. "own" is the
# component's own time (median overhead_us from its access log; none for
# hello-world or -nolog). "first start": start to first answer compiling
# the component (an empty cache); "start": the next start, from the
# compiled component the host kept, as Spin keeps it.
# edge-compiling (WASI 0.2): the same build not pre-initialised, compiling
# its config on every request. BEFORE: a directory with older
# bench-p2.wasm / bench-p3.wasm, served as edge-before alongside.

rows() { # flavour → the components it measures
  echo hello edge edge-nolog; [ "$1" = p2 ] && echo edge-compiling; [ -n "${BEFORE:-}" ] && echo edge-before; true
}

floor_wasm() { # component flavour → its .wasm
  case $1 in
    hello) echo "target/edge/hello-$2.wasm" ;;
    edge) echo "target/edge/bench-$2.wasm" ;;
    edge-compiling) echo "target/edge/bench-$2-compiling.wasm" ;;
    edge-before) echo "$BEFORE/bench-$2.wasm" ;;
    *) echo "target/edge/bench-$2-nolog.wasm" ;;
  esac
}

floor_start() { # component flavour → started twice (FIRST: compiling, stopped; START: from the cache, left serving); ADDR, HOSTPID
  local c=$1 f=$2 wasm start t0
  wasm=$(floor_wasm "$c" "$f")
  for start in FIRST START; do
    [ "$start" = START ] && stop_last
    t0=$(date +%s%N)
    serve_host "floor-$c-$f" "$wasm" out --cache-dir "$WORK/host-cache"
    # shellcheck disable=SC2153  # HOST_PID: set by serve_host
    HOSTPID[$c-$f]=$HOST_PID; ADDR[$c-$f]=$HOST_ADDR
    wait_http "http://${ADDR[$c-$f]}/hello" >/dev/null
    if [ "$start" = FIRST ]; then FIRST[$c-$f]=$(ms_since "$t0"); else START[$c-$f]=$(ms_since "$t0"); fi
  done
}

floor_row() { # component flavour → its row; hello's p50 is `base`, the next rows' reference
  local c=$1 f=$2 url log seen t0 out cpu p50 own
  url=http://${ADDR[$c-$f]}/hello; [ "$c" = hello ] && url=http://${ADDR[$c-$f]}/proxy
  log=$WORK/floor-$c-$f.out; seen=$(wc -l <"$log")
  t0=$(cpu_ticks "${HOSTPID[$c-$f]}")
  out=$(loadgen "$url" "$rate" 1 "$SECS" 1)
  cpu=$(( ($(cpu_ticks "${HOSTPID[$c-$f]}") - t0) * 1000000 / $(getconf CLK_TCK) / (rate * (SECS + 1)) ))
  p50=$(field p50_us "$out")
  own=$(own_us "$log" "$seen")
  [ "$c" = hello ] && base=$p50
  printf '| %-20s | %6s | %6s | %6s | %20s | %11s | %14s | %8s |\n' "$c-$f$([ "$c" = hello ] && echo -proxy)" "$p50" \
    "$(field p99_us "$out")" "${own:--}" "$([ "$c" = hello ] && echo - || echo $(( p50 - base )))" \
    "$cpu" "${FIRST[$c-$f]}" "${START[$c-$f]}"
}

rate=${FLOOR_RATE:-200}
declare -A ADDR START FIRST HOSTPID
for f in p2 p3; do
  for c in $(rows $f); do floor_start "$c" "$f"; done
done
echo
echo "Per request in the test host: one connection at $rate req/s, ${SECS}s per row; p50 / p99 µs (own µs);"
echo "host CPU: the host process's user + system time over the row (its 1 s warm-up included) per request sent."
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo
  echo "| round $round              | p50 µs | p99 µs | own µs | over hello-proxy p50 | host CPU µs | first start ms | start ms |"
  echo "|----------------------|-------:|-------:|-------:|---------------------:|------------:|---------------:|---------:|"
  for f in p2 p3; do
    base=""
    for c in $(rows $f); do floor_row "$c" "$f"; done
  done
done
exit 0
