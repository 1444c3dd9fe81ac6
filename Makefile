# Portcullis: the two commands from the README, and the steps they use.
#
#   make run    the node gateway on routes/gateway.toml, with a demo origin
#   make test   every test, in every home (installs what it needs first)
#   make lint   rustfmt, and clippy with -D warnings for the host and both edge flavours

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_PACKAGES := rustc-web cargo-web rust-web-src rust-web-clippy wasi-libc lld redis-server redis-tools pebble musl-tools libunwind-14-dev
EDGE_HOST := $(TARGET_DIR)/debug/portcullis-edge-host
WASM_TEST_DIR := $(or $(PORTCULLIS_WASM_TARGET_DIR),$(CURDIR)/target/wasm)-tests

.PHONY: run test lint deps build host components check-components test-native test-wasm check-container container bench clean

## The node gateway on the example config, in front of a demo origin on :9080.
run:
	cargo build --release --bin portcullis --example demo_origin
	$(TARGET_DIR)/release/examples/demo_origin 127.0.0.1:9080 & origin=$$!; \
	trap 'kill $$origin' EXIT; \
	echo "try: curl -i http://127.0.0.1:8080/v1/users/42"; \
	$(TARGET_DIR)/release/portcullis serve --config routes/gateway.toml --listen 127.0.0.1:8080

## Everything: native tests, the conformance suite in all three homes, the
## core's unit tests on wasm32-wasip2, and the components' exports.
test: deps host components check-components test-native test-wasm check-container

## Debian packages (the WASI toolchain, redis) and the component tools.
deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@command -v wasm-component-ld >/dev/null || cargo install --locked wasm-component-ld@0.5.31
	@command -v wasm-tools >/dev/null || cargo install --locked wasm-tools@1.263.0 --no-default-features --features component,validate,print

build:
	cargo build --bin portcullis

## The test-only Spin-compatible host (tests/edge-host).
host:
	cargo build -p portcullis-edge-host

## Both flavours with the shipped config, and both with the conformance config.
components:
	edge-deploy/build.sh p2
	edge-deploy/build.sh p3
	edge-deploy/build.sh p2 --config tests/conformance/gateway.toml --out target/edge/conformance-p2.wasm
	edge-deploy/build.sh p3 --config tests/conformance/gateway.toml --out target/edge/conformance-p3.wasm

check-components:
	wasm-tools component wit target/edge/portcullis-p3.wasm | grep -q 'export wasi:http/handler@0.3.0;'
	wasm-tools component wit target/edge/portcullis-p2.wasm | grep -q 'export wasi:http/incoming-handler@0.2.0;'
	@echo "components export wasi:http/handler@0.3.0 (p3) and wasi:http/incoming-handler@0.2.0 (p2)"

test-native:
	PORTCULLIS_REQUIRE_EDGE=1 cargo test
	cargo test -p portcullis-edge-host

## The core's unit tests compiled for wasm32-wasip2 and run by the test host.
test-wasm: host
	PORTCULLIS_WASM_TARGET_DIR=$(WASM_TEST_DIR) CARGO_TARGET_WASM32_WASIP2_RUNNER="$(EDGE_HOST) run" \
	  edge-deploy/wasm-cargo.sh test --lib

## The node as one static binary (musl; a debug build, quicker), and the
## container image's root file system around it: it runs from there alone.
check-container:
	BINARY=$$(edge-deploy/static.sh --debug) edge-deploy/container.sh --rootfs-only

## The container image (podman), from the release binary, started once.
container:
	edge-deploy/container.sh

## Format and clippy (-D warnings): the host workspace (node, tests, test
## host) and the core as each edge flavour builds it for wasm32-wasip2
## (clippy on the host never compiles src/edge/).
lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	edge-deploy/wasm-cargo.sh clippy --lib --features edge-p2 -- -D warnings
	edge-deploy/wasm-cargo.sh clippy --lib --features edge-p3 -- -D warnings

bench:
	cargo bench --bench core
	benches/run.sh

clean:
	cargo clean
	rm -rf target/edge target/wasm*
