# shellcheck shell=bash
# shellcheck disable=SC2034  # RATE and LOW_RATE are read by lib.sh's measure
# benches/run.sh (no mode): every target side by side, then JWT per request
# in each component and the components' sizes.
#
# Targets (all proxy GET /hello on the demo origin, 13-byte body):
#   direct               wrk -> origin
#   nginx                one worker, keep-alive upstream (benches/nginx.conf)
#   haproxy              HAProxy 2.6, one thread, keep-alive upstream (benches/haproxy.cfg)
#   haproxy-full, node-full  /full: RS256 JWT (cached by Portcullis; HAProxy
#                        verifies every time) + a per-subject limit + proxy
#   node                 portcullis serve --workers 1
#   node-jwt             ... route with RS256 JWT auth (cached token)
#   node-limited         ... route with a rate limit, in-memory store
#   node-limited-redis   ... the same limit, Redis store
#   hello-p2/p3          the smallest Spin component of each flavour, in the test host
#   edge-p2/p3           the Portcullis component, in the test host
#   edge-p2/p3-jwt       ... on the JWT route
#   node-pool, edge-*-pool  three targets, retries, passive health and a
#                        circuit breaker configured, nothing failing
# then, per flavour at a fixed 500 req/s: no auth, a cached token, and a new
# token on every request (RS256, ES256, EdDSA) to price uncached verification.

edge() { # name wasm path → the component's row in the node table, in the test host
  local start; start=$(date +%s%N)
  # Compiled at each start, as in the earlier runs' start column (the floor
  # mode measures starts from the cache too).
  serve_host "$1" "$2" err --disable-cache
  measure_from "$start" "$1" "$HOST_ADDR" "$3"
  stop_last
}

lat_row() { # name url [loadgen args...] → a row of the JWT table: loadgen at FRESH_RATE
  local name=$1 url=$2; shift 2
  local out; out=$(loadgen "$url" "$FRESH_RATE" "$CONNS" "$SECS" 2 "$@")
  printf '| %-18s | %6s | %6s | %6s |\n' "$name" "$(field p50_us "$out")" "$(field p99_us "$out")" "$(field errors "$out")"
}

jwt_rows() { # flavour → its rows of the JWT table: no auth, a cached token, a new token of each algorithm
  local f=$1
  serve_host "jwt-$f" "target/edge/bench-$f.wasm" err --cache-dir "$WORK/host-cache"
  local addr=$HOST_ADDR
  wait_http "http://$addr/hello" >/dev/null
  lat_row "edge-$f no auth" "http://$addr/hello"
  lat_row "edge-$f cached" "http://$addr/jwt" --header "authorization: Bearer $TOKEN"
  lat_row "edge-$f RS256 new" "http://$addr/jwt" --fresh-tokens RS256:tests/fixtures/keys/rsa1.pem
  lat_row "edge-$f ES256 new" "http://$addr/jwt" --fresh-tokens ES256:tests/fixtures/keys/ec256.pem
  lat_row "edge-$f EdDSA new" "http://$addr/jwt" --fresh-tokens EdDSA:tests/fixtures/keys/ed25519.pem
  stop_last
}

echo
echo "CPU: $(cpu_model), $(nproc) cores; ${SECS}s per run, $CONNS connections"
echo
node_first
measure direct "http://127.0.0.1:$ORIGIN_PORT/hello"

nginx_target nginx

haproxy_target haproxy /hello

node node-jwt /jwt
node node-full /full
haproxy_target haproxy-full /full
node node-limited /limited
node node-limited-redis /limited --store "redis://127.0.0.1:$REDIS_PORT"
node node-pool /pool

LOW_RATE=0
# Each flavour: Portcullis first; then its hello-world and JWT route at the
# same fixed rate (half of Portcullis' peak), so the p50s compare directly.
for f in p2 p3; do
  RATE=""
  edge edge-$f target/edge/bench-$f.wasm /hello
  RATE=$(( LAST_RPS / 2 ))
  edge hello-$f target/edge/hello-$f.wasm /hello
  edge edge-$f-jwt target/edge/bench-$f.wasm /jwt
  edge edge-$f-pool target/edge/bench-$f.wasm /pool
done

# JWT cost per request in each component, at one fixed rate every flavour
# sustains: the route without auth, a cached token, and a token never seen
# before on every request (verified from scratch) for each algorithm.
FRESH_RATE=${FRESH_RATE:-500}
echo
echo "JWT per request in the component, open loop at $FRESH_RATE req/s:"
echo
echo "| target             | p50 µs | p99 µs | errors |"
echo "|--------------------|-------:|-------:|-------:|"
for f in p2 p3; do jwt_rows $f; done

echo
echo "Component sizes (those built):"
for f in hello-p2 hello-p3 bench-p2 bench-p3 portcullis-p2 portcullis-p3; do
  if [ -f target/edge/$f.wasm ]; then printf '  %-14s %8d bytes\n' "$f" "$(wc -c <target/edge/$f.wasm)"; fi
done
