# shellcheck shell=bash
# benches/run.sh alternate: this build against BEFORE_NODE (an older
# portcullis binary, required) on /hello and /full, one node at a time in
# turn, ROUNDS (3) rounds, the order reversed every other round (ABBA).
# Each node gets a 2 s warm-up, then wrk at 16 connections for
# SECONDS_PER_RUN on /hello, /full, /hello, /full. A shared VM's peaks
# drift within minutes; builds taking turns share the drift, so their
# difference is the builds'.

alternate_runs() { # label bin → "label route rps" lines, one per wrk run, into $WORK/alternate
  local label=$1 bin=$2 route rps
  node_serve --bin "$bin" "alternate-$label" benches/gateway.toml --metrics-listen 127.0.0.1:0 --admin-listen off
  wait_http "http://$NODE_ADDR/hello" >/dev/null
  wrk1 16 2 "http://$NODE_ADDR/full" "$(auth_for /full)" >/dev/null
  for route in hello full hello full; do
    rps=$(wrk1 "$CONNS" "$SECS" "http://$NODE_ADDR/$route" "$(auth_for "/$route")" | wrk_rps)
    echo "$label $route $rps" | tee -a "$WORK/alternate" >&2
  done
  stop "$NODE_PID"
}

for round in $(seq "${ROUNDS:-3}"); do
  if [ $((round % 2)) = 1 ]; then
    alternate_runs now "$T/release/portcullis"; alternate_runs before "$BEFORE_NODE"
  else
    alternate_runs before "$BEFORE_NODE"; alternate_runs now "$T/release/portcullis"
  fi
done

echo "| build | /hello median | /full median | /full ÷ /hello, median of the pairs |"
echo "|---|---:|---:|---:|"
for label in now before; do
  hello=$(awk -v l=$label '$1 == l && $2 == "hello" {print $3}' "$WORK/alternate" | median)
  full=$(awk -v l=$label '$1 == l && $2 == "full" {print $3}' "$WORK/alternate" | median)
  # Each /full run over the /hello run before it, in the same process.
  ratio=$(awk -v l=$label '$1 == l && $2 == "hello" {h=$3} $1 == l && $2 == "full" {printf "%.3f\n", $3 / h}' "$WORK/alternate" | median)
  row "$label" "$hello" "$full" "$ratio"
done
