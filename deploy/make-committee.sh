#!/usr/bin/env bash
# Keys and configs for an N-member feed committee run in containers (compose, Kubernetes)
# or as containers on the host network (the system test), from `coalitiond devnet
# --generate-only`, rewritten for one member per container:
#
#   deploy/make-committee.sh DIR [N] [compose|kubernetes|loopback]
#
#   DIR/member-<i>/member.toml   member i's config: key_file "member.key" beside it,
#                                data_dir /var/lib/coalitiond (the image's volume)
#   DIR/member-<i>/member.key    member i's identity (mode 0600; owned by uid 10001, the
#                                image's user, when run as root)
#   DIR/operator.key, DIR/client.toml   the committee's client (ACL client, feed publisher)
#
# Addresses: compose     member-<i>:7000, metrics and read API on 0.0.0.0:9100
#            kubernetes  coalitiond-<i>.coalitiond:7000 (StatefulSet pods behind the
#                        headless Service), metrics on 0.0.0.0:9100
#            loopback    127.0.0.1:(BASE_PORT+i), metrics 127.0.0.1:(BASE_PORT+100+i)
#                        (--network host; BASE_PORT defaults to 7400)
# Re-runnable: existing keys in DIR/.devnet are kept. COALITIOND names the command
# (default: coalitiond on PATH).
set -euo pipefail
dir="${1:?usage: deploy/make-committee.sh DIR [N] [compose|kubernetes|loopback]}"
n="${2:-4}"
mode="${3:-compose}"
coalitiond="${COALITIOND:-coalitiond}"
base="${BASE_PORT:-7400}"
case "$mode" in
    compose) pattern="member-%d:7000" ;;
    kubernetes) pattern="coalitiond-%d.coalitiond:7000" ;;
    loopback) pattern="" ;;
    *) echo "make-committee.sh: unknown mode $mode (compose, kubernetes, loopback)" >&2; exit 2 ;;
esac
gen="$dir/.devnet"
mkdir -p "$gen"
$coalitiond devnet --members "$n" --component feed --dir "$gen" --base-port "$base" \
    --generate-only >/dev/null
for ((i = 0; i < n; i++)); do
    out="$dir/member-$i"
    mkdir -p "$out"
    edits=(-e "s|^key_file = .*|key_file = \"member.key\"|"
           -e "s|^data_dir = .*|data_dir = \"/var/lib/coalitiond\"|")
    if [ -n "$pattern" ]; then
        edits+=(-e "s|^listen = .*|listen = \"0.0.0.0:7000\"|"
                -e "s|^metrics = .*|metrics = \"0.0.0.0:9100\"|")
        for ((j = 0; j < n; j++)); do
            # shellcheck disable=SC2059
            edits+=(-e "s|^address = \"127.0.0.1:$((base + j))\"|address = \"$(printf "$pattern" "$j")\"|")
        done
    fi
    sed "${edits[@]}" "$gen/member-$i.toml" > "$out/member.toml"
    install -m 0600 "$gen/member-$i.key" "$out/member.key"
    if [ "$(id -u)" = 0 ]; then
        chown 10001:10001 "$out/member.key"
    fi
done
install -m 0600 "$gen/operator.key" "$dir/operator.key"
cat > "$dir/client.toml" <<TOML
# The committee's client (submit, tail, status): the operator key is the ACL's client.
[client]
key_file = "operator.key"
committee_config = "member-0/member.toml"
TOML
echo "committee of $n ($mode) in $dir"
