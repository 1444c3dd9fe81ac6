# shellcheck shell=bash
# benches/run.sh edge-registry (PORTCULLIS_SPIN: a Spin CLI): what following
# the registry costs a component under real Spin, its default store on the
# Redis the registry is published to, on the plain route (/hello), two
# rounds alternating:
# - WASI 0.2 pre-initialised, not following; following with nothing
#   published (a store read a request); following a published version
#   that is not the one built in (a read and a compile a request);
# - WASI 0.3 not following; following a published version (a read a second).

spin_intro
PUBLISHED="$WORK/published.toml"
{ cat benches/gateway.toml; printf '\n[[routes]]\npath = "/published"\nservice = "origin"\n'; } > "$PUBLISHED"
grep -q '^\[services.origin\]' benches/gateway.toml || die "benches/gateway.toml has no service \`origin\` for the published route"

publish() { # → the published config made current in the registry's Redis
  PORTCULLIS_VAR_ORIGIN_PORT=$ORIGIN_PORT "$T/release/portcullis" publish "$PUBLISHED" --store "redis://127.0.0.1:$REDIS_PORT" >&2
}

unpublish() { # → nothing current at the edge (the embedded config serves)
  redis-cli -p "$REDIS_PORT" del 'pc1:{cfg}:edge:current' 'pc1:{cfg}:edge:config' >/dev/null
}

echo
echo "| target                 | c16 rps  | c16 p50   | c1 rps   | c1 p50    | errors | start ms |"
echo "|------------------------|---------:|----------:|---------:|----------:|-------:|---------:|"
for round in 1 2; do
  unpublish
  REGISTRY=off spin_row "p2-off-$round" target/edge/bench-p2.wasm /hello "$RC"
  REGISTRY=follow spin_row "p2-follow-none-$round" target/edge/bench-p2.wasm /hello "$RC"
  REGISTRY=off spin_row "p3-off-$round" target/edge/bench-p3.wasm /hello "$RC"
  publish
  REGISTRY=follow spin_row "p2-follow-publ-$round" target/edge/bench-p2.wasm /hello "$RC"
  REGISTRY=follow spin_row "p3-follow-publ-$round" target/edge/bench-p3.wasm /hello "$RC"
  # The published version is what answers: its own route.
  REGISTRY=follow spin_up "check-$round" target/edge/bench-p2.wasm "$RC"
  wait_http "http://$SPIN_ADDR/published" >/dev/null
  stop_last
done
exit 0
