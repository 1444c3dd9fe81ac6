# shellcheck shell=bash
# benches/run.sh idle: the node's RSS with IDLE_CONNECTIONS (10 000) idle
# keep-alive connections open, each having made one request
# (benches/idle-connections.py, from 127.0.x.y sources). The limit on
# connections is raised above them (its default follows the open-file
# limit). BEFORE_NODE: an older node, alternating, ROUNDS rounds.

kv() { # name text → the N of name=N in text
  grep -o "$1=[0-9]*" <<<"$2" | cut -d= -f2
}

mib() { # KiB → MiB with one decimal
  echo "$(( $1 / 1024 )).$(( $1 % 1024 * 10 / 1024 ))"
}

idle_row() { # round side (now|before) → its row: RSS before and with n idle connections, bytes per connection
  local round=$1 side=$2 bin=$T/release/portcullis out before after
  [ "$side" = before ] && bin=$BEFORE_NODE
  node_serve --bin "$bin" "idle-$side" benches/gateway.toml --admin-listen off --metrics-listen 127.0.0.1:0 --max-connections $(( n + 1000 ))
  wait_http "http://$NODE_ADDR/hello" >/dev/null
  out=$(taskset -c 1 python3 benches/idle-connections.py 127.0.0.1 "${NODE_ADDR##*:}" "$n" "$NODE_PID")
  before=$(kv rss_before_kib "$out")
  after=$(kv rss_after_kib "$out")
  row "$round" "$side" "$(mib "$before")" "$(mib "$after")" "$(kv per_conn_bytes "$out")"
  stop_last
}

n=${IDLE_CONNECTIONS:-10000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "| round | node | RSS before MB | RSS with $n idle MB | per connection B |"
echo "|---:|---|---:|---:|---:|"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for side in now ${BEFORE_NODE:+before}; do idle_row "$round" "$side"; done
done
exit 0
