# shellcheck shell=bash
# benches/run.sh scale: two workers on both cores against one on one core.
# This machine has two cores in all, so wrk and the origin share them with
# the node here: the figure is a floor for what a second core gives, not the
# target's setup (origin and load elsewhere). ROUNDS (3) rounds.
# BEFORE_NODE=binary: that build's two workers beside (before issue 29
# step 5: one work-stealing runtime of two threads, one socket).

# Run in this shell, not in $(...): the node goes into PIDS and a failure
# stops the mode (set -e).
scale_peak() { # name cpus workers [binary] → PEAK: the node's peak rps on /hello, wrk -t2 -c32 from both CPUs
  node_serve --bin "${4:-$T/release/portcullis}" --cpus "$2" --workers "$3" "$1" benches/gateway.toml --admin-listen off --metrics-listen off
  wait_http "http://$NODE_ADDR/hello" >/dev/null
  wrk_warmup "http://$NODE_ADDR/hello"
  PEAK=$(taskset -c 0,1 wrk -t2 -c32 -d"${SECS}"s "http://$NODE_ADDR/hello" | wrk_rps)
  stop_last
  [ "${PEAK:-0}" -gt 0 ] || die "node $1 ($3 workers): no requests/s from wrk"
}

echo "| round | 1 worker, CPU 0 | 2 workers, CPUs 0-1 | ratio |${BEFORE_NODE:+ 2 workers before |}"
echo "|---:|---:|---:|---:|${BEFORE_NODE:+---:|}"
for round in $(seq "${ROUNDS:-3}"); do
  scale_peak one 0 1; one=$PEAK
  scale_peak two 0,1 2; two=$PEAK
  before=()
  if [ -n "${BEFORE_NODE:-}" ]; then scale_peak before 0,1 2 "$BEFORE_NODE"; before=("$PEAK"); fi
  row "$round" "$one" "$two" "$(( two * 100 / one )) %" "${before[@]}"
done
exit 0
