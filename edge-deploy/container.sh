#!/usr/bin/env bash
# Assembles the node's container root file system and, where podman runs,
# builds the image and starts it once to see it answer.
#
#   edge-deploy/container.sh                 # static release binary → rootfs → image → smoke run
#   edge-deploy/container.sh --rootfs-only   # rootfs, then run the binary from it
#   BINARY=path/to/portcullis edge-deploy/container.sh --rootfs-only   # a static binary made before
#
# The image is FROM scratch: the static binary (edge-deploy/static.sh:
# musl, no interpreter, no shared library), the CA roots, /etc/passwd with
# the unprivileged account 65532, /etc/hosts, and routes/gateway.toml as
# /etc/portcullis/gateway.toml. musl resolves host names from /etc/hosts
# and the resolv.conf the runtime mounts, with no NSS modules.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
rootfs_only=false
[ "${1:-}" = "--rootfs-only" ] && rootfs_only=true

binary="${BINARY:-}"
[ -n "$binary" ] || binary=$(edge-deploy/static.sh)
if readelf -l "$binary" | grep -q INTERP || readelf -d "$binary" | grep -q NEEDED; then
  echo "$binary is not a static binary (edge-deploy/static.sh makes one)" >&2
  exit 1
fi
context="$target_dir/container"
rootfs="$context/rootfs"
rm -rf "$context"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/portcullis" "$rootfs/etc/ssl/certs" "$rootfs/var/lib/portcullis" "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/portcullis"
printf 'root:x:0:0:root:/:/sbin/nologin\nportcullis:x:65532:65532:portcullis:/var/lib/portcullis:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nportcullis:x:65532:\n' >"$rootfs/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$rootfs/etc/hosts"
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
cp routes/gateway.toml "$rootfs/etc/portcullis/gateway.toml"
chmod 1777 "$rootfs/tmp"
cp edge-deploy/Containerfile "$context/"

# It runs from the rootfs with nothing from the environment, and reads its config there.
env -i "$rootfs/usr/local/bin/portcullis" --version
env -i "$rootfs/usr/local/bin/portcullis" check "$rootfs/etc/portcullis/gateway.toml"
echo "rootfs: $rootfs ($(du -sh "$rootfs" | cut -f1)): a static binary and its files"
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
