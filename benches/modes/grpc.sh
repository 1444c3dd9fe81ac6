# shellcheck shell=bash
# benches/run.sh grpc: gRPC unary calls (grpc.health.v1.Health/Check) to
# the health service (examples/grpc_origin.rs, tonic, h2c) on CPU 1, from
# h2load on CPU 1 (one connection, 16 streams, HTTP/2 prior knowledge):
# directly, then through the node (one worker on CPU 0, an http2 service),
# ROUNDS (2) rounds.

command -v h2load >/dev/null || die "missing h2load: apt-get install nghttp2-client"
cargo build --release --example grpc_origin >&2
GRPC_PORT=$(shuf -i 20000-25999 -n 1)
taskset -c 1 "$T/release/examples/grpc_origin" "127.0.0.1:$GRPC_PORT" 2>/dev/null & PIDS+=($!)
cat > "$WORK/grpc.toml" <<TOML
[gateway]
access_log = true
[services.health]
url = "http://127.0.0.1:$GRPC_PORT"
http2 = true
[[routes]]
path = "/grpc.health.v1.Health/{method}"
methods = ["POST"]
service = "health"
TOML
# One framed HealthCheckRequest { service: "bench" }: flag 0, length 7, field 1 (tag 0x0a), length 5, "bench".
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$WORK/check.bin"

calls() { # addr → "rps p50 errors" of h2load's unary calls to addr
  local out
  out=$(taskset -c 1 h2load -n "${CALLS:-100000}" -c 1 -m 16 -t 1 -d "$WORK/check.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://$1/grpc.health.v1.Health/Check" 2>&1)
  local rps p50 failed
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print int($4)}' <<<"$out")
  p50=$(awk '/^time for request:/ {print $6}' <<<"$out")
  failed=$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) print $i}' <<<"$out")
  echo "$rps ${p50:--} ${failed:-?}"
}

sleep 0.5
echo "gRPC unary, h2load -c1 -m16 from CPU 1; CPU: $(cpu_model)"
echo
echo "| round | path | calls/s | mean ms | failed |"
echo "|---:|---|---:|---:|---:|"
for round in $(seq "${ROUNDS:-2}"); do
  read -r rps p50 failed < <(calls "127.0.0.1:$GRPC_PORT")
  row "$round" direct "$rps" "$p50" "$failed"
  node_serve grpc "$WORK/grpc.toml" --metrics-listen off --admin-listen off
  calls "$NODE_ADDR" >/dev/null # warm-up
  read -r rps p50 failed < <(calls "$NODE_ADDR")
  row "$round" "through the node" "$rps" "$p50" "$failed"
  stop_last
done
exit 0
