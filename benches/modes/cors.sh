# shellcheck shell=bash
# benches/run.sh cors: a CORS preflight the node answers itself (OPTIONS
# /cors from https://app.bench asking for POST with two headers) against
# a 404 (GET /nowhere): both answered without an origin, so the preflight's
# own work (routing by the asked method, the policy's checks, its headers)
# is what differs. wrk -t1 -c16 from CPU 1, ROUNDS (3) rounds, medians.

preflight_lua=$WORK/preflight.lua
cat >"$preflight_lua" <<'LUA'
wrk.method = "OPTIONS"
wrk.headers["Origin"] = "https://app.bench"
wrk.headers["Access-Control-Request-Method"] = "POST"
wrk.headers["Access-Control-Request-Headers"] = "content-type, authorization"
LUA

node_serve cors benches/gateway.toml
check=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS -H 'Origin: https://app.bench' \
  -H 'Access-Control-Request-Method: POST' "http://$NODE_ADDR/cors")
[ "$check" = 204 ] || die "the preflight was answered $check, not 204"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$NODE_ADDR/nowhere")" = 404 ] || die "/nowhere is not a 404"

declare -a PRE=() NF=()
echo
echo "CORS preflight against a 404, answered by the node (wrk -t1 -c16, ${SECS}s each), req/s:"
row round "preflight (204)" "404" "preflight / 404"
row "---" "---:" "---:" "---:"
for round in $(seq 1 "${ROUNDS:-3}"); do
  wrk_warmup "http://$NODE_ADDR/cors"
  pre=$(taskset -c 1 wrk -t1 -c16 -d"${SECS}"s -s "$preflight_lua" "http://$NODE_ADDR/cors" | wrk_rps)
  nf=$(taskset -c 1 wrk -t1 -c16 -d"${SECS}"s "http://$NODE_ADDR/nowhere" | wrk_rps)
  PRE+=("$pre"); NF+=("$nf")
  row "$round" "$pre" "$nf" "$(awk -v a="$pre" -v b="$nf" 'BEGIN { printf "%.2f", a / b }')"
done
pre=$(printf '%s\n' "${PRE[@]}" | median); nf=$(printf '%s\n' "${NF[@]}" | median)
row median "$pre" "$nf" "$(awk -v a="$pre" -v b="$nf" 'BEGIN { printf "%.2f", a / b }')"
