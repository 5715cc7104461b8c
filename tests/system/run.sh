#!/usr/bin/env bash
# `make system-test`: the container image and the systemd unit, run for real.
#
#   1. base-image.sh   the Dockerfile's FROM, built locally (mmdebstrap; no registry here)
#   2. podman build    the repository's Dockerfile, unchanged, --pull=never
#   3. containers.sh   a 4-member committee, one container each; restart; archives
#   4. nspawn.sh       the image's filesystem + systemd booted with systemd-nspawn; four
#                      coalitiond@ instances: READY, STATUS=, watchdog restart, clean stop
#
# Needs root and the Debian packages of `make system-deps`. WORKDIR (default
# /tmp/coalitiond-system-test) keeps the base tarball's product and the archives.
# SYSTEM_TEST_PARTS="containers nspawn" chooses parts. docs/testing.md, "System test".
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${SYSTEM_TEST_WORKDIR:-${TMPDIR:-/tmp}/coalitiond-system-test}"
parts="${SYSTEM_TEST_PARTS:-containers nspawn}"
export CONTAINERS_CONF="$here/containers.conf"
export IMAGE="${IMAGE:-localhost/coalitiond:latest}"
if [ "$(id -u)" != 0 ]; then
    echo "system-test: needs root (rootful podman, systemd-nspawn)" >&2
    exit 2
fi
for tool in podman runc mmdebstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || { echo "system-test: $tool missing: run make system-deps" >&2; exit 2; }
done
mkdir -p "$work"
start=$SECONDS
set -e
bash "$here/base-image.sh" "$work"
echo "building $IMAGE from the Dockerfile"
podman build --quiet --pull=never --network host -t "$IMAGE" -f "$repo/Dockerfile" "$repo" >/dev/null
echo "image built ($((SECONDS - start)) s)"
set +e
status=0
export SYSTEM_TEST_COUNTS="$work/counts"
: > "$SYSTEM_TEST_COUNTS"
for part in $parts; do
    bash "$here/$part.sh" "$work" || status=1
    echo "system-test: $part done at $((SECONDS - start)) s"
done
read -r passed failed < <(awk '{p += $1; f += $2} END {print p + 0, f + 0}' "$SYSTEM_TEST_COUNTS")
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi  # a part stopped early
echo "system-test: $passed passed, $failed failed"
exit $status
