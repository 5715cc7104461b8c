#!/usr/bin/env bash
# System test, part 2: systemd/coalitiond@.service as shipped, under a real systemd. The
# image's filesystem plus systemd is booted with systemd-nspawn (sharing the host network);
# four coalitiond@member-<i> instances form a committee. Checks: each instance active (Type=
# notify: READY=1 arrived); STATUS= follows the height; the watchdog timestamp advances; a
# member frozen with SIGSTOP is killed by the watchdog, restarted, and catches up; stopping
# every instance ends with exit 0 and Result=success; systemd-analyze verify passes.
#
#   tests/system/nspawn.sh WORKDIR      (run by tests/system/run.sh, after the image build)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
work="$1"
image="${IMAGE:-localhost/coalitiond:latest}"
cli="${COALITIOND:-$repo/.venv/bin/coalitiond}"
base="${BASE_PORT:-17400}"
n=4
root="$work/nspawn-root"
committee="$work/nspawn-committee"
nspawn_pid=""

cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    podman rm -f coalitiond-st-rootfs >/dev/null 2>&1
    rm -rf "$root"
}
trap cleanup EXIT

echo "building the systemd variant of $image"
podman build --quiet --pull=never --network host -t localhost/coalitiond-systemd:test \
    -f "$here/Containerfile.systemd" "$here" >/dev/null || { not_ok "systemd image builds"; summary nspawn; exit 1; }
rm -rf "$root" && mkdir -p "$root"
podman rm -f coalitiond-st-rootfs >/dev/null 2>&1
podman create --name coalitiond-st-rootfs localhost/coalitiond-systemd:test >/dev/null
podman export coalitiond-st-rootfs | tar -x -C "$root"
podman rm -f coalitiond-st-rootfs >/dev/null

# The unit as shipped, one instance per member; configs and keys as docs/operations.md says.
rm -rf "$committee"
BASE_PORT="$base" COALITIOND="$cli" bash "$repo/deploy/make-committee.sh" "$committee" "$n" loopback
install -m 0644 "$repo/systemd/coalitiond@.service" "$root/etc/systemd/system/"
install -d -m 0750 -o root -g 10001 "$root/etc/coalitiond"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
for ((i = 0; i < n; i++)); do
    sed -e "s|^key_file = .*|key_file = \"member-$i.key\"|" \
        -e "s|^data_dir = .*|data_dir = \"/var/lib/coalitiond/member-$i\"|" \
        "$committee/member-$i/member.toml" > "$root/etc/coalitiond/member-$i.toml"
    chown root:10001 "$root/etc/coalitiond/member-$i.toml"
    chmod 0640 "$root/etc/coalitiond/member-$i.toml"
    install -m 0600 -o 10001 -g 10001 "$committee/member-$i/member.key" \
        "$root/etc/coalitiond/member-$i.key"
    ln -sf /etc/systemd/system/coalitiond@.service \
        "$root/etc/systemd/system/multi-user.target.wants/coalitiond@member-$i.service"
done
# A container has no consoles to log in on.
ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"

echo "booting the image's filesystem with systemd-nspawn"
systemd-nspawn --quiet --boot --register=no --keep-unit --console=pipe \
    --machine=coalitiond-st -D "$root" </dev/null >"$work/nspawn-boot.log" 2>&1 &
nspawn_pid=$!

leader() { pgrep -P "$nspawn_pid" | head -1; }
wait_for 30 "the container's init" leader || { cat "$work/nspawn-boot.log"; not_ok "container boots"; summary nspawn; exit 1; }
pid1="$(leader)"
inside() { nsenter -t "$pid1" -m -u -i -n -p -r -w -- "$@"; }
prop() { inside systemctl show -P "$2" "coalitiond@member-$1.service"; }
active() { [ "$(inside systemctl is-active "coalitiond@member-$1.service")" = active ]; }

wait_for 60 "systemd in the container" inside systemctl is-system-running --wait
for ((i = 0; i < n; i++)); do
    check "coalitiond@member-$i active: READY=1 received (Type=notify)" \
        wait_for 60 "coalitiond@member-$i active" active "$i"
done
check "systemd-analyze verify accepts the unit" \
    inside systemd-analyze verify coalitiond@member-0.service
inside systemd-analyze security coalitiond@member-0.service 2>/dev/null | tail -1

status_height() { prop "$1" StatusText | sed -n 's/^member [0-9]*, height \([0-9]*\),.*/\1/p'; }
status_above() { local h; h="$(status_height "$1")" && [ -n "$h" ] && [ "$h" -gt "$2" ]; }
first="$(prop 0 StatusText)"
echo "StatusText: $first"
h0="$(status_height 0)"
check "STATUS= names the member and its height at READY ($first)" test -n "$h0"
check "STATUS= follows the height while the member runs (was $h0)" \
    wait_for 30 "StatusText height above $h0" status_above 0 "${h0:-0}"
echo "StatusText: $(prop 0 StatusText)"

watchdog_at() { prop "$1" WatchdogTimestampMonotonic; }
w0="$(watchdog_at 0)"
advanced() { [ "$(watchdog_at 0)" != "$w0" ]; }
check "the watchdog timestamp advanced" wait_for 30 "watchdog timestamp past $w0" advanced

# Freeze member 1: no more WATCHDOG=1; after WatchdogSec (30 s) systemd kills it (SIGABRT),
# Restart=on-failure starts it again after RestartSec (5 s).
restarts="$(prop 1 NRestarts)"
inside systemctl kill -s SIGSTOP --kill-whom=main coalitiond@member-1.service
restarted() { [ "$(prop 1 NRestarts)" -gt "$restarts" ] && active 1; }
check "a member frozen with SIGSTOP is killed by the watchdog and restarted" \
    wait_for 90 "coalitiond@member-1 restarted" restarted
check "the journal names the watchdog" \
    bash -c "nsenter -t $pid1 -m -u -i -n -p -r -w -- journalctl -q -u coalitiond@member-1.service | grep -q 'Watchdog timeout'"
target="$(status_field $((base + 100)) height)"
caught_up() { local h; h="$(status_field $((base + 101)) height)" && [ "$h" -ge "$target" ]; }
check "the restarted member catches up to height $target" wait_for 60 "member 1 at $target" caught_up

# A clean stop: SIGTERM, STOPPING=1, exit 0.
for ((i = 0; i < n; i++)); do
    inside systemctl stop "coalitiond@member-$i.service"
    check "coalitiond@member-$i stopped cleanly (Result=$(prop "$i" Result), exit $(prop "$i" ExecMainStatus))" \
        test "$(prop "$i" Result)/$(prop "$i" ExecMainStatus)" = success/0
done
inside systemctl poweroff --no-block >/dev/null 2>&1
wait_for 30 "the container to power off" bash -c "! kill -0 $nspawn_pid"
summary nspawn
