# shellcheck shell=bash
# benches/run.sh cache: the response cache. On the node (memory), a hit
# (/cached: /hello kept for an hour) against the proxied route (/hello),
# beside nginx proxying /hello and answering /cached from its proxy_cache
# (benches/nginx.conf); wrk -t1 -c16 from CPU 1, ROUNDS (3) rounds,
# medians. With PORTCULLIS_SPIN, the edge too: each component under real
# Spin (its default store, SQLite), a hit against the proxied route, one
# connection at a time (p50) and 16 (req/s).

node_serve cache benches/gateway.toml
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$NODE_ADDR/cached")" = 200 ] || die "/cached does not answer 200"
curl -s -D - -o /dev/null "http://$NODE_ADDR/cached" | grep -qi '^cache-status: portcullis; hit' || die "/cached is not a hit"
NGINX_PORT=$(shuf -i 28000-30999 -n 1)
mkdir -p "$WORK/nginx"
# nginx's workers (nobody, when started as root) write its cache there.
chmod 755 "$WORK" "$WORK/nginx"
sed -e "s|__PREFIX__|$WORK/nginx|g" -e "s|__LISTEN__|127.0.0.1:$NGINX_PORT|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
  benches/nginx.conf > "$WORK/nginx/nginx.conf"
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/cached" >/dev/null
curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/cached"
curl -s -D - -o /dev/null "http://127.0.0.1:$NGINX_PORT/cached" | grep -qi '^x-cache: HIT' || die "nginx's /cached is not a hit"

rps_of() { # url → wrk -t1 -c16 req/s, failing on any non-2xx answer
  local report; report=$(taskset -c 1 wrk -t1 -c16 -d"${SECS}"s "$1")
  [ -z "$(wrk_non2xx <<<"$report")" ] || die "non-2xx answers from $1"
  wrk_rps <<<"$report"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

declare -a NP=() NH=() XP=() XH=()
echo
echo "Response cache on the node against nginx (wrk -t1 -c16, ${SECS}s each), req/s:"
row round "node proxied" "node hit" "nginx proxied" "nginx proxy_cache hit" "node hit / node proxied" "node hit / nginx hit"
row "---" "---:" "---:" "---:" "---:" "---:" "---:"
for round in $(seq 1 "${ROUNDS:-3}"); do
  wrk_warmup "http://$NODE_ADDR/cached"
  np=$(rps_of "http://$NODE_ADDR/hello"); nh=$(rps_of "http://$NODE_ADDR/cached")
  xp=$(rps_of "http://127.0.0.1:$NGINX_PORT/hello"); xh=$(rps_of "http://127.0.0.1:$NGINX_PORT/cached")
  NP+=("$np"); NH+=("$nh"); XP+=("$xp"); XH+=("$xh")
  row "$round" "$np" "$nh" "$xp" "$xh" "$(ratio "$nh" "$np")" "$(ratio "$nh" "$xh")"
done
np=$(printf '%s\n' "${NP[@]}" | median); nh=$(printf '%s\n' "${NH[@]}" | median)
xp=$(printf '%s\n' "${XP[@]}" | median); xh=$(printf '%s\n' "${XH[@]}" | median)
row median "$np" "$nh" "$xp" "$xh" "$(ratio "$nh" "$np")" "$(ratio "$nh" "$xh")"

[ -x "${PORTCULLIS_SPIN:-}" ] || exit 0
edge_row() { # flavour path → its row under real Spin: c1 p50, c16 req/s
  local f=$1 path=$2
  spin_up "cache-$f-${path#/}" "target/edge/bench-$f.wasm"
  local url="http://$SPIN_ADDR$path"
  wait_http "$url" >/dev/null
  wrk_warmup "$url"
  local one many
  one=$(wrk1 1 "${SECS}s" "$url" "" --latency); many=$(wrk1 "$CONNS" "${SECS}s" "$url" "")
  [ -z "$(printf '%s\n' "$one" "$many" | wrk_non2xx)" ] || die "non-2xx answers from $f $path"
  row "edge-$f $path" "$(wrk_latency 50% <<<"$one")" "$(wrk_rps <<<"$many")"
  stop_last
}
echo
echo "Spin: $("$PORTCULLIS_SPIN" --version), the default store (SQLite); ${SECS}s per run:"
row target "c1 p50" "c16 req/s"
row "---" "---:" "---:"
for f in p2 p3; do
  edge_row "$f" /hello
  edge_row "$f" /cached
done
exit 0
