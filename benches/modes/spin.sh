# shellcheck shell=bash
# benches/run.sh spin (PORTCULLIS_SPIN: a Spin CLI): the components under
# real Spin, each served by `spin up` (lib.sh's spin_up), wrk at 16
# connections and at 1. Baselines: the hello-world answering itself, the
# hello-world making the same outbound call as the gateway (`/proxy`), and
# that call after one key-value write (`/proxy-kv`, on each store: the
# least any limit shared by instances that live one request costs).
# Then one key under contention: non-2xx answers (false refusals: the
# limit is far above the load) and, on Redis, commands per request, at 16
# and 64 connections; and the store-growth table, as in spin-growth.

spin_flavour() { # flavour → its rows, with the gateway's rps as a share of the proxying hello-world's
  local f=$1 base
  spin_row "hello-$f" "target/edge/hello-$f.wasm" /hello
  spin_row "hello-$f-proxy" "target/edge/hello-$f.wasm" /proxy
  base=$LAST_RPS
  spin_row "edge-$f" "target/edge/bench-$f.wasm" /hello
  echo "|   → edge-$f / hello-$f-proxy = $(( LAST_RPS * 100 / base )) % |"
  if [ "$f" = p2 ]; then # the same build, not pre-initialised
    spin_row "edge-p2-compiling" target/edge/bench-p2-compiling.wasm /hello
    echo "|   → edge-p2-compiling / hello-p2-proxy = $(( LAST_RPS * 100 / base )) % |"
  fi
  spin_row "edge-$f-nolog" "target/edge/bench-$f-nolog.wasm" /hello
  spin_row "edge-$f-limited" "target/edge/bench-$f-nolog.wasm" /limited
  echo "|   → edge-$f-limited / hello-$f-proxy = $(( LAST_RPS * 100 / base )) % |"
  spin_row "edge-$f-limited-redis" "target/edge/bench-$f-nolog.wasm" /limited "$RC"
  echo "|   → edge-$f-limited-redis / hello-$f-proxy = $(( LAST_RPS * 100 / base )) % |"
  # The floor of any limit its instances share: one key-value write per request.
  spin_row "hello-$f-proxy-kv" "target/edge/hello-$f.wasm" /proxy-kv
  echo "|   → hello-$f-proxy-kv / hello-$f-proxy = $(( LAST_RPS * 100 / base )) % |"
  spin_row "hello-$f-proxy-kv-redis" "target/edge/hello-$f.wasm" /proxy-kv "$RC"
  spin_row "edge-$f-jwt" "target/edge/bench-$f-nolog.wasm" /jwt
}

redis_calls() { # → every command Redis has run so far (INFO commandstats), rejected ones too
  redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,]' '/^cmdstat_/ {n += $2 + $8} END {print n + 0}'
}

contention_row() { # flavour store → its row: one key at 16 and at 64 connections, non-2xx and Redis commands per request
  local f=$1 store=$2 rc="" out conns non2xx requests before after cells=()
  [ "$store" = redis ] && rc=$RC
  spin_up "contention-$f-$store" "target/edge/bench-$f-nolog.wasm" "$rc"
  wait_http "http://$SPIN_ADDR/limited" >/dev/null
  wrk_warmup "http://$SPIN_ADDR/limited"
  for conns in 16 64; do
    before=$([ "$store" = redis ] && redis_calls || echo 0)
    out=$(wrk1 "$conns" "${SECS}s" "http://$SPIN_ADDR/limited" "")
    after=$([ "$store" = redis ] && redis_calls || echo 0)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(wrk_non2xx <<<"$out"); non2xx=${non2xx:-0}
    cells+=("$(wrk_rps <<<"$out")" "$non2xx")
    [ "$store" = redis ] && cells+=("$(awk -v c=$(( after - before )) -v r="$requests" 'BEGIN {printf "%.1f", c / r}')") || cells+=("–")
  done
  row "edge-$f" "$store" "${cells[@]}"
  stop_last
}

spin_intro
echo
echo "| target                 | c16 rps  | c16 p50   | c1 rps   | c1 p50    | errors | start ms |"
echo "|------------------------|---------:|----------:|---------:|----------:|-------:|---------:|"
for f in p2 p3; do spin_flavour $f; done
echo
echo "One key under contention (/limited, 100 000 000/s: every refusal would be false), wrk ${SECS}s:"
echo
row target store "c16 rps" "c16 non-2xx" "c16 Redis cmds/req" "c64 rps" "c64 non-2xx" "c64 Redis cmds/req"
row "---" "---" "---:" "---:" "---:" "---:" "---:" "---:"
for f in p2 p3; do for store in sqlite redis; do contention_row "$f" "$store"; done; done
store_growth
exit 0
