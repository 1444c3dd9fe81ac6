# shellcheck shell=bash
# benches/run.sh tokens: one connection at a fixed rate (TOKEN_RATE, 200)
# below saturation, so each sample is one request alone: no auth, a cached
# token, then a token never seen before on every request (forged: fresh
# RS256 tokens with a changed signature, answered 401). "added" is the p50
# over the same component's no-auth p50 in the same round. BEFORE: a
# directory with older bench-p2.wasm and bench-p3.wasm, served at the same
# time and measured row by row.

token_host() { # flavour build (now|before) → its component served; ADDR
  local f=$1 b=$2 wasm=target/edge/bench-$1.wasm
  [ "$b" = before ] && wasm=$BEFORE/bench-$f.wasm
  serve_host "tok-$f-$b" "$wasm" out --cache-dir "$WORK/host-cache"
  ADDR[$f-$b]=$HOST_ADDR
  wait_http "http://${ADDR[$f-$b]}/hello" >/dev/null
}

token_head() { # round → the round's table head: a column per flavour and build
  local f b
  printf '| round %-2s %-12s |' "$1" ""; for f in p2 p3; do for b in "${builds[@]}"; do printf ' %-24s |' "edge-$f ($b)"; done; done; echo
  printf '|%s|' "-----------------------"; for f in p2 p3; do for b in "${builds[@]}"; do printf '%s|' "-------------------------:"; done; done; echo
}

kind_request() { # kind → KIND_PATH and KIND_ARGS: the route and loadgen args of that kind of request
  KIND_PATH=/jwt; KIND_ARGS=()
  case "$1" in
    "no auth") KIND_PATH=/hello ;;
    cached) KIND_ARGS=(--header "authorization: Bearer $TOKEN") ;;
    "RS256 new") KIND_ARGS=(--fresh-tokens RS256:tests/fixtures/keys/rsa1.pem) ;;
    "RS256 forged") KIND_ARGS=(--forged-tokens RS256:tests/fixtures/keys/rsa1.pem --expect-status 401) ;;
    "ES256 new") KIND_ARGS=(--fresh-tokens ES256:tests/fixtures/keys/ec256.pem) ;;
    "EdDSA new") KIND_ARGS=(--fresh-tokens EdDSA:tests/fixtures/keys/ed25519.pem) ;;
  esac
}

token_cell() { # kind flavour build → its cell: p50 (added over no auth) · own µs, and errors if any
  local kind=$1 key=$2-$3 log seen out p50 errors ovh cell
  kind_request "$kind"
  log=$WORK/tok-$key.out; seen=$(wc -l <"$log")
  out=$(loadgen "http://${ADDR[$key]}$KIND_PATH" "$rate" 1 "$SECS" 1 "${KIND_ARGS[@]}")
  p50=$(field p50_us "$out")
  errors=$(field errors "$out")
  ovh=$(own_us "$log" "$seen")
  if [ "$kind" = "no auth" ]; then BASE[$key]=$p50; cell="$p50 · $ovh"; else cell="$p50 ($(( p50 - BASE[$key] ))) · $ovh"; fi
  [ "$errors" != 0 ] && cell="$cell ${errors}err"
  printf ' %24s |' "$cell"
}

rate=${TOKEN_RATE:-200}
builds=(now); [ -n "${BEFORE:-}" ] && builds+=(before)
declare -A ADDR
for f in p2 p3; do
  for b in "${builds[@]}"; do token_host "$f" "$b"; done
done
echo
echo "New tokens in the component (test host): one connection at $rate req/s, ${SECS}s per row."
echo "Each cell: p50 (added over no auth) · the component's own time (median overhead_us from its log), in µs."
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo
  token_head "$round"
  declare -A BASE=()
  for kind in "no auth" cached "RS256 new" "RS256 forged" "ES256 new" "EdDSA new"; do
    printf '| %-21s |' "$kind"
    for f in p2 p3; do
      for b in "${builds[@]}"; do token_cell "$kind" "$f" "$b"; done
    done
    echo
  done
done
echo
for f in p2 p3; do printf 'bench-%s.wasm: %d bytes\n' "$f" "$(wc -c <target/edge/bench-$f.wasm)"; done
exit 0
