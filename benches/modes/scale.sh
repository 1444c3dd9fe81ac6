# shellcheck shell=bash
# benches/run.sh scale: two workers on both cores against one on one core.
# This machine has two cores in all, so wrk and the origin share them with
# the node here: the figure is a floor for what a second core gives, not the
# target's setup (origin and load elsewhere). Three rounds.

scale_peak() { # name cpus workers → the node's peak rps on /hello, wrk -t2 -c32 from both CPUs
  node_serve --cpus "$2" --workers "$3" "$1" benches/gateway.toml --admin-listen off --metrics-listen off
  wait_http "http://$NODE_ADDR/hello" >/dev/null
  wrk_warmup "http://$NODE_ADDR/hello"
  local rps; rps=$(taskset -c 0,1 wrk -t2 -c32 -d"${SECS}"s "http://$NODE_ADDR/hello" | wrk_rps)
  stop_last
  echo "$rps"
}

echo "| round | 1 worker, CPU 0 | 2 workers, CPUs 0-1 | ratio |"
echo "|---:|---:|---:|---:|"
for round in 1 2 3; do
  one=$(scale_peak one 0 1); two=$(scale_peak two 0,1 2)
  row "$round" "$one" "$two" "$(( two * 100 / one )) %"
done
exit 0
