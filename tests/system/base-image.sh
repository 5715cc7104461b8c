#!/usr/bin/env bash
# Build the Dockerfile's base image locally, since no container registry is reachable:
# Debian bookworm (minbase) with python3, its venv module and CA certificates, a venv at
# /usr/local (so /usr/local/bin/python and pip exist, as in the python:3.11-slim image), the
# machine's extra CA certificates (pip inside the build goes through the same egress as here),
# imported into podman under the Dockerfile's FROM name. Idempotent: skips if the tag exists.
#
#   tests/system/base-image.sh [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-${TMPDIR:-/tmp}/coalitiond-system-test}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
base="$(awk '/^FROM /{print $2; exit}' "$repo/Dockerfile")"
if podman image exists "$base"; then
    echo "base image $base already present"
    exit 0
fi
mkdir -p "$work"
tarball="$work/base-rootfs.tar"
extra_ca=()
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] && extra_ca+=("--customize-hook=copy-in $crt /usr/local/share/ca-certificates/")
done
echo "building $base with mmdebstrap (bookworm minbase)"
mmdebstrap --quiet --variant=minbase --mode=root \
    --include=python3,python3-venv,ca-certificates,passwd \
    "${extra_ca[@]}" \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
    --customize-hook='chroot "$1" python3 -m venv /usr/local' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    bookworm "$tarball"
podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$base" >/dev/null
rm -f "$tarball"
echo "base image $base imported"
