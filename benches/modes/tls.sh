# shellcheck shell=bash
# benches/run.sh tls: the node terminating TLS against nginx, side by side,
# one worker each on CPU 0, the same origin, for an ECDSA P-256 and an
# RSA-2048 certificate (made here with openssl), ROUNDS (2) rounds:
# HTTPS keep-alive throughput (wrk -t1 -c16, TLS 1.3), full and resumed
# handshakes a second (openssl s_time -new / -reuse, one request each,
# TLS 1.3 and 1.2), then the node's RSS with IDLE_TLS (10 000) idle TLS
# connections (benches/idle-connections.py --tls).

make_cert() { # kind (ecdsa|rsa) → $WORK/kind.pem and kind.key for bench.test
  local kind=$1 alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [ "$kind" = rsa ] && alg=(-newkey rsa:2048)
  openssl req -x509 "${alg[@]}" -nodes -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$WORK/$kind.key" -out "$WORK/$kind.pem" 2>/dev/null
}

tls_node() { # kind → TLS_ADDR: the node with a TLS listener on that certificate
  local port; port=$(shuf -i 28000-30999 -n 1)
  cat > "$WORK/tls-$1.toml" <<TOML
[gateway]
access_log = true
[services.origin]
url = "http://127.0.0.1:{{ origin_port }}"
[[routes]]
path = "/hello"
service = "origin"
[[listeners]]
name = "tls"
address = "127.0.0.1:$port"
[listeners.tls]
certificates = [{ cert = "$WORK/$1.pem", key = "$WORK/$1.key" }]
TOML
  node_serve "tls-$1" "$WORK/tls-$1.toml" --metrics-listen off --admin-listen off --max-connections 20000
  TLS_ADDR=127.0.0.1:$port
}

tls_nginx() { # kind → TLS_ADDR: nginx terminating TLS with that certificate
  local port; port=$(shuf -i 28000-30999 -n 1)
  mkdir -p "$WORK/nginx-tls"
  sed -e "s|__PREFIX__|$WORK/nginx-tls|g" -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|" \
    -e "s|__CERT__|$WORK/$1.pem|" -e "s|__KEY__|$WORK/$1.key|" benches/nginx-tls.conf > "$WORK/nginx-tls/nginx.conf"
  taskset -c 0 nginx -c "$WORK/nginx-tls/nginx.conf" -p "$WORK/nginx-tls" 2>/dev/null & PIDS+=($!)
  TLS_ADDR=127.0.0.1:$port
}

handshakes() { # addr how (-new|-reuse) version (-tls1_3|-tls1_2) → connections a second (openssl s_time, from CPU 1)
  local out
  out=$(taskset -c 1 openssl s_time -connect "$1" "$2" "$3" -time "$SECS" -www /hello 2>/dev/null || true)
  # "N connections in T real seconds, ..."
  awk '/connections in [0-9.]+ real seconds/ {printf "%d", $1 / $4; exit}' <<<"$out"
}

tls_row() { # round target kind → a row: keep-alive rps, p50, p99, errors, full and resumed handshakes/s
  local round=$1 target=$2 kind=$3
  case $target in
    node) tls_node "$kind" ;;
    nginx) tls_nginx "$kind" ;;
  esac
  wait_https "https://$TLS_ADDR/hello"
  local url="https://$TLS_ADDR/hello"
  wrk_warmup "$url"
  local out; out=$(wrk1 "$CONNS" "${SECS}s" "$url" "" --latency)
  local errors; errors=$(wrk_non2xx <<<"$out")
  row "$round" "$target" "$kind" "$(wrk_rps <<<"$out")" "$(wrk_latency 50% <<<"$out")" "$(wrk_latency 99% <<<"$out")" "${errors:-0}" \
    "$(handshakes "$TLS_ADDR" -new -tls1_3)" "$(handshakes "$TLS_ADDR" -reuse -tls1_3)" \
    "$(handshakes "$TLS_ADDR" -new -tls1_2)" "$(handshakes "$TLS_ADDR" -reuse -tls1_2)"
  stop_last
}

wait_https() { # url → once it answers 200 (certificate not verified: it is the bench's own)
  for _ in $(seq 1 2000); do
    curl -skf -o /dev/null "$1" && return 0
    sleep 0.005
  done
  die "no answer from $1"
}

make_cert ecdsa
make_cert rsa
echo "TLS, one worker each on CPU 0; CPU: $(cpu_model); ${SECS}s per run; handshakes: openssl s_time, one GET each"
echo
echo "| round | target | cert | keep-alive rps | p50 | p99 | non-2xx | full/s 1.3 | resumed/s 1.3 | full/s 1.2 | resumed/s 1.2 |"
echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq "${ROUNDS:-2}"); do
  for kind in ecdsa rsa; do
    tls_row "$round" nginx "$kind"
    tls_row "$round" node "$kind"
  done
done

n=${IDLE_TLS:-10000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo
echo "| node | RSS before MB | RSS with $n idle TLS MB | per connection B |"
echo "|---|---:|---:|---:|"
tls_node ecdsa
wait_https "https://$TLS_ADDR/hello"
out=$(taskset -c 1 python3 benches/idle-connections.py 127.0.0.1 "${TLS_ADDR##*:}" "$n" "$NODE_PID" --tls)
kib() { grep -o "$1=[0-9]*" <<<"$out" | cut -d= -f2; }
row "ecdsa, TLS 1.3" "$(( $(kib rss_before_kib) / 1024 ))" "$(( $(kib rss_after_kib) / 1024 ))" "$(kib per_conn_bytes)"
stop_last
exit 0
