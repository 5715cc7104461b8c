#!/usr/bin/env bash
# System test, part 1: the image built from the Dockerfile runs a 4-member committee, one
# container each (--network host, a volume each). Checks: every member ready; submissions
# finalised; SIGTERM stops a member with exit 0; it resumes from its volume and catches up;
# the members report the open-file limit they got; every archive, exported from a volume
# mounted read-only, verifies offline and all four agree.
#
#   tests/system/containers.sh WORKDIR      (run by tests/system/run.sh)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
work="$1"
image="${IMAGE:-localhost/coalitiond:latest}"
cli="${COALITIOND:-$repo/.venv/bin/coalitiond}"
base="${BASE_PORT:-17400}"
n=4
prefix=coalitiond-st
committee="$work/committee"

cleanup() {
    for ((i = 0; i < n; i++)); do
        podman rm -f -t 5 "$prefix-$i" >/dev/null 2>&1
        podman volume rm -f "$prefix-data-$i" >/dev/null 2>&1
    done
}
cleanup
trap cleanup EXIT

rm -rf "$committee"
BASE_PORT="$base" COALITIOND="$cli" bash "$repo/deploy/make-committee.sh" "$committee" "$n" loopback

start_member() {
    podman run -d --name "$prefix-$1" --network host \
        -v "$committee/member-$1:/etc/coalitiond:ro" \
        -v "$prefix-data-$1:/var/lib/coalitiond" \
        "$image" run --config /etc/coalitiond/member.toml >/dev/null
}
metrics_port() { echo $((base + 100 + $1)); }
ready() { http_ok "http://127.0.0.1:$(metrics_port "$1")/readyz"; }
height() { status_field "$(metrics_port "$1")" height; }
at_least() { local h; h="$(height "$1")" && [ "$h" -ge "$2" ]; }
exit_code() { podman inspect -f '{{.State.ExitCode}}' "$prefix-$1"; }
stopped_cleanly() { [ "$(podman inspect -f '{{.State.Status}}' "$prefix-$1")" = exited ] && [ "$(exit_code "$1")" = 0 ]; }

for ((i = 0; i < n; i++)); do
    podman volume create "$prefix-data-$i" >/dev/null
    start_member "$i"
done
for ((i = 0; i < n; i++)); do
    check "member $i ready (/readyz 200) in its container" wait_for 60 "member $i ready" ready "$i"
done
check "the open-file limit the member got is reported" \
    bash -c "podman logs $prefix-0 2>&1 | grep -q 'coalitiond: open files limit '"
podman logs "$prefix-0" 2>&1 | grep 'open files limit' || true

submit() {
    "$cli" submit --config "$committee/client.toml" --kind system-test --body "{\"n\": $1}"
}
check "a submission is finalised" submit 1
check "a second submission is finalised" submit 2

# Restart member 2: SIGTERM -> exit 0, the others go on, it resumes from its volume.
before="$(height 2)"
check "SIGTERM stops member 2 with exit 0" podman stop -t 60 "$prefix-2"
check "member 2's container exited 0" stopped_cleanly 2
check "submission finalised while member 2 is down" submit 3
target="$(height 0)"
podman start "$prefix-2" >/dev/null
check "member 2 ready again after the restart" wait_for 60 "member 2 ready" ready 2
check "member 2 resumed from its volume (height $before before) and caught up to $target" \
    wait_for 60 "member 2 at height $target" at_least 2 "$target"
check "submission finalised after the restart" submit 4

# Stop everything, then export each volume through a read-only mount.
for ((i = 0; i < n; i++)); do
    podman stop -t 60 "$prefix-$i" >/dev/null
    check "member $i stopped with exit 0" stopped_cleanly "$i"
done
mkdir -p "$work/archives"
export_read_only() {
    local out
    out="$(podman run --rm --network none --user 0 \
        -v "$prefix-data-$1:/var/lib/coalitiond:ro" -v "$work/archives:/out" \
        "$image" export --data-dir /var/lib/coalitiond --out "/out/member-$1.archive" 2>&1)" \
        || { echo "$out" >&2; return 1; }
    echo "$out"
    grep -q "is read-only: opened the store read-only" <<<"$out" && ! grep -q damaged <<<"$out"
}
for ((i = 0; i < n; i++)); do
    check "member $i exported from a read-only volume, saying so" export_read_only "$i"
    check "member $i's archive verifies" "$cli" verify --archive "$work/archives/member-$i.archive"
done
for ((i = 1; i < n; i++)); do
    check "archives of members 0 and $i agree" "$cli" verify \
        --archive "$work/archives/member-0.archive" --against "$work/archives/member-$i.archive"
done
summary containers
