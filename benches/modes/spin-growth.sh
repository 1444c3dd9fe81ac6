# shellcheck shell=bash
# benches/run.sh spin-growth (PORTCULLIS_SPIN: a Spin CLI): only the
# store-growth table of the spin mode — CLIENTS (100 000) distinct clients
# on a per-client limit in Spin's SQLite store, then in Redis, and a full
# sweep.

spin_intro
store_growth
exit 0
