#!/usr/bin/env bash
# Builds the node as one static binary (musl, no interpreter, no shared
# library), the one the container image holds:
#
#   edge-deploy/static.sh            # release; prints the binary's path
#   edge-deploy/static.sh --debug    # quicker to build (make test checks this one)
#
# No musl Rust target is installed (the build machines reach only package
# registries), so as for the edge components (edge-deploy/wasm-cargo.sh)
# std is built from source with Debian's rustc-web and rust-web-src, linked
# by musl-gcc (musl-tools) against musl's libc.a, LLVM's libunwind
# (libunwind-14-dev, for std's unwinding) and libgcc; LLVM's libunwind was
# built against glibc and calls its fortified fprintf (`__fprintf_chk`),
# which a two-line shim compiled here gives it. Target dir:
# PORTCULLIS_STATIC_TARGET_DIR (default: static/ in the cargo target dir).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = --debug ] && profile=debug
target_dir=${PORTCULLIS_STATIC_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/static}
unwind=/usr/lib/llvm-14/lib
for need in /usr/bin/cargo /usr/bin/rustc /usr/lib/rustlib/src/rust/library /usr/bin/musl-gcc "$unwind/libunwind.a"; do
  [ -e "$need" ] || { echo "missing $need: run 'make deps' (Debian: rustc-web cargo-web rust-web-src musl-tools libunwind-14-dev)" >&2; exit 1; }
done
shim=$target_dir/shim
mkdir -p "$shim"
if [ ! -f "$shim/libfortifyshim.a" ]; then
  cat >"$shim/fortify.c" <<'C'
#include <stdarg.h>
#include <stdio.h>
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) {
    va_list ap;
    (void)flag;
    va_start(ap, fmt);
    int n = vfprintf(f, fmt, ap);
    va_end(ap);
    return n;
}
C
  musl-gcc -O2 -c "$shim/fortify.c" -o "$shim/fortify.o"
  ar rcs "$shim/libfortifyshim.a" "$shim/fortify.o"
fi
flags="-C link-self-contained=no -C target-feature=+crt-static -C relocation-model=static"
flags="$flags -L $unwind -L $shim -C link-arg=-lfortifyshim -C link-arg=-lgcc"
args=(--bin portcullis --target x86_64-unknown-linux-musl "-Zbuild-std=std,panic_abort")
[ "$profile" = release ] && args+=(--release)
PATH=/usr/bin:$PATH CARGO_TARGET_DIR=$target_dir RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc \
  RUSTFLAGS="$flags" /usr/bin/cargo build "${args[@]}" >&2
binary=$target_dir/x86_64-unknown-linux-musl/$profile/portcullis
# Static: no program interpreter, no shared library needed.
if readelf -l "$binary" | grep -q INTERP || readelf -d "$binary" | grep -q NEEDED; then
  echo "$binary is not static:" >&2
  readelf -l "$binary" | grep -A1 INTERP >&2 || true
  readelf -d "$binary" | grep NEEDED >&2 || true
  exit 1
fi
echo "$binary"
