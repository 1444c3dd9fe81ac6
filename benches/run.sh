#!/usr/bin/env bash
# Side-by-side end-to-end benchmarks, one run, same machine, same load
# generator (plus `cargo bench --bench core` for the micro-benchmarks):
#
#   benches/run.sh                      # everything (~10 min after the builds)
#   SECONDS_PER_RUN=5 benches/run.sh
#   PORTCULLIS_SPIN=/path/to/spin benches/run.sh spin   # the components under real Spin
#   benches/run.sh observability        # metrics + 1 % traces against both off; /metrics of 200 routes
#   benches/run.sh haproxy              # the full job (JWT + per-subject limit + proxy): node against HAProxy, ROUNDS (2) rounds (BEFORE_NODE=binary: an older node beside)
#   BEFORE_NODE=binary benches/run.sh alternate   # /hello and /full, this build and an older one taking turns, ROUNDS (3) rounds
#   benches/run.sh proxy                # the plain proxy: node against nginx, HAProxy, Pingora, Caddy and bare hyper, ROUNDS rounds (BEFORE_NODE=binary: an older node beside)
#   benches/run.sh keys                 # 1 000 new rate-limit keys a second for 10 min: the node's memory
#   benches/run.sh idle                 # 10 000 idle keep-alive connections: the node's RSS (BEFORE_NODE=binary: an older node beside)
#   benches/run.sh scale                # --workers 2 on both cores against --workers 1 on one, ROUNDS (3) rounds
#   benches/run.sh tokens               # a new token's cost in each component (BEFORE=dir: older builds beside)
#   benches/run.sh floor                # each component against its hello-world that proxies too, one request at a time
#   benches/run.sh grpc                 # gRPC unary calls (h2load) straight to a tonic origin and through the node
#   benches/run.sh tls                  # TLS termination: node against nginx, ECDSA and RSA: keep-alive, handshakes/s, idle TLS memory
#   benches/run.sh cors                 # CORS preflights the node answers against its 404s, ROUNDS (3) rounds
#   benches/run.sh cache                # response-cache hits against the proxied route, node and nginx (PORTCULLIS_SPIN: the edge too)
#   benches/run.sh limits               # one hot rate-limit key on the node: memory store against Redis, ROUNDS (3) rounds (BEFORE_NODE: an older node beside)
#   benches/run.sh distance             # the store across a network (DISTANCE_US, 2 000 per call): a hot key leased, pooled and unlimited
#   benches/run.sh registry             # publish → applied on 3 nodes and FOLLOWERS (1 000) simulated followers, also across a Redis restart
#   PORTCULLIS_SPIN=/path/to/spin benches/run.sh edge-registry   # what following the registry costs each component under real Spin
#
# Layout: the system under test (proxy, or the component host) is pinned to
# CPU 0 with one worker thread; the origin, Redis and the load generator
# share CPU 1. Peak throughput: wrk -t1 -c16 (keep-alive). Latency:
# benches/loadgen.rs, open loop at a fixed rate (half of the node's peak on
# /hello, or of each component's own peak), latency from the scheduled send.
#
# Files: this script checks the mode, then sources benches/lib.sh (the
# helpers every mode shares: the builds, the origin and Redis, starting a
# node, the test host, Spin, nginx, HAProxy, Pingora or Caddy, wrk and
# loadgen, the node table's row) and benches/modes/<mode>.sh, which runs
# the mode (all.sh: the default run, with the list of its targets).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

MODE=${1:-all}
case "$MODE" in
  alternate) [ -x "${BEFORE_NODE:-}" ] || { echo "benches/run.sh alternate: set BEFORE_NODE to an older portcullis binary" >&2; exit 1; } ;;
  all|observability|haproxy|proxy|keys|idle|scale|tokens|floor|tls|grpc|cors|cache|limits|distance|registry) ;;
  spin|spin-growth|edge-registry) [ -x "${PORTCULLIS_SPIN:-}" ] || { echo "benches/run.sh $MODE: set PORTCULLIS_SPIN to a Spin CLI" >&2; exit 1; } ;;
  *) echo "usage: $0 [all|spin|spin-growth|observability|haproxy|alternate|proxy|keys|idle|scale|tokens|floor|tls|grpc|cors|cache|limits|distance|registry|edge-registry]" >&2; exit 2 ;;
esac

setup "$MODE"
# shellcheck source=/dev/null
source "benches/modes/$MODE.sh"
