#!/usr/bin/env bash
# Assembles the node's container root file system and, where podman runs,
# builds the image and starts it once to see it answer.
#
#   edge-deploy/container.sh                 # release binary → rootfs → image → smoke run
#   edge-deploy/container.sh --rootfs-only   # rootfs, then run the binary on its libraries alone
#   BINARY=path/to/portcullis edge-deploy/container.sh --rootfs-only
#
# The image is FROM scratch: the binary and exactly the shared libraries
# it links (`ldd`), glibc's NSS modules for `files` and `dns` (so origin
# host names resolve), the CA roots, /etc/passwd with the unprivileged
# account 65532, and routes/gateway.toml as /etc/portcullis/gateway.toml.
# (A static musl binary would need the musl Rust target, which the build
# machines here cannot fetch; the rootfs check below proves the same thing
# — nothing from the host is needed at run time.)
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
rootfs_only=false
[ "${1:-}" = "--rootfs-only" ] && rootfs_only=true

binary="${BINARY:-}"
if [ -z "$binary" ]; then
  cargo build --release --bin portcullis
  binary="$target_dir/release/portcullis"
fi
context="$target_dir/container"
rootfs="$context/rootfs"
rm -rf "$context"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/portcullis" "$rootfs/etc/ssl/certs" "$rootfs/var/lib/portcullis" "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/portcullis"

# The libraries it links, at the paths the loader looks in.
libs=$(ldd "$binary" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u)
multiarch=$(dirname "$(ldd "$binary" | awk '/libc.so/ { print $3 }')")
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
for nss in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  [ -e "$multiarch/$nss" ] && mkdir -p "$rootfs$multiarch" && cp -L "$multiarch/$nss" "$rootfs$multiarch/"
done
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nportcullis:x:65532:65532:portcullis:/var/lib/portcullis:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nportcullis:x:65532:\n' >"$rootfs/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$rootfs/etc/hosts"
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
cp routes/gateway.toml "$rootfs/etc/portcullis/gateway.toml"
chmod 1777 "$rootfs/tmp"
cp edge-deploy/Containerfile "$context/"

# It runs on the rootfs' libraries alone, and reads its config there.
loader=$(ldd "$binary" | awk '/ld-linux/ { print $1 }')
run_in_rootfs() {
  env -i "$rootfs$loader" --library-path "$rootfs$multiarch:$rootfs/lib:$rootfs/usr/lib" "$rootfs/usr/local/bin/portcullis" "$@"
}
run_in_rootfs --version
run_in_rootfs check "$rootfs/etc/portcullis/gateway.toml"
echo "rootfs: $rootfs ($(du -sh "$rootfs" | cut -f1)), runs on its own libraries"
$rootfs_only && exit 0

if ! command -v podman >/dev/null || ! podman info >/dev/null 2>&1; then
  echo "podman is not usable here (apt-get install podman; rootless needs user namespaces): image not built" >&2
  exit 0
fi
podman build -t portcullis:latest "$context"
name="portcullis-smoke-$$"
if ! podman run -d --rm --name "$name" -p 127.0.0.1:18080:8080 portcullis:latest >/dev/null; then
  echo "the image was built but podman could not start it (above: the runtime's own error)" >&2
  exit 1
fi
trap 'podman stop -t 2 "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do
  if code=$(curl -s -o /dev/null -w '%{http_code}' -H 'host: gw.test' http://127.0.0.1:18080/nowhere); then
    echo "the container answers: $code for a path with no route"
    [ "$code" = 404 ] && exit 0
  fi
  sleep 0.2
done
echo "the container did not answer" >&2
podman logs "$name" >&2 || true
exit 1
