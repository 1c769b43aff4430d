#!/usr/bin/env bash
# Test hosts of our own on this machine: one network namespace per host, each with one veth link
# to a bridge of its own in the machine's namespace, so a test can cut a host off the network and
# bring it back. The bridge has the network's first address (the machine itself, where etcd,
# runners and the test's clients are); the hosts have the next ones. Needs root (CAP_NET_ADMIN)
# and iproute2. Traffic stays on this machine: the network has no route out.
#
#   netns.sh up DIR NAME...       makes the network and one host per NAME; DIR/hosts/NAME holds
#                                 "NAMESPACE ADDRESS LINK", DIR/gateway the bridge's address
#   netns.sh addr DIR NAME        prints NAME's address (NAME "gateway": the bridge's)
#   netns.sh exec DIR NAME CMD... runs CMD in NAME's namespace (exec: it keeps the process id)
#   netns.sh partition DIR NAME   cuts NAME off: its link goes down, whatever it sends or is sent
#                                 is dropped silently (no reset, no unreachable), both ways
#   netns.sh heal DIR NAME        brings NAME's link back
#   netns.sh down DIR             removes the hosts and the bridge (stop their processes first)
#
# Names are derived from DIR, so two networks (two clusters) do not meet.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# tag DIR: four hex digits of DIR's path; the network is 10.(160 + tag / 256 % 64).(tag % 256).0/24
tag() { printf '%s' "$1" | sha256sum | cut -c1-4; }

host() {  # DIR NAME: "NAMESPACE ADDRESS LINK"
    [ -f "$1/hosts/$2" ] || { log "no test host $2 under $1"; return 1; }
    cat "$1/hosts/$2"
}

up() {
    local dir=$1; shift
    ensure_packages iproute2
    mkdir -p "$dir/hosts"
    dir=$(cd "$dir" && pwd)
    local t; t=$(tag "$dir")
    local n=$((16#$t)) bridge="gsb$t"
    local net="10.$((160 + n / 256 % 64)).$((n % 256))"
    down "$dir"
    mkdir -p "$dir/hosts"
    if ip -4 route show | grep -q "^$net\.0/24 "; then
        log "the network $net.0/24 is in use on this machine already (another DIR's?)"; return 1
    fi
    as_root ip link add "$bridge" type bridge
    as_root ip addr add "$net.1/24" dev "$bridge"
    as_root ip link set "$bridge" up
    echo "$bridge" > "$dir/bridge"
    echo "$net.1" > "$dir/gateway"
    local i=10 name
    for name in "$@"; do
        local ns="gs$t-$name" link="gs$t$i" addr="$net.$i"
        as_root ip netns add "$ns"
        as_root ip link add "$link" type veth peer name eth0 netns "$ns"
        as_root ip link set "$link" master "$bridge" up
        as_root ip netns exec "$ns" ip addr add "$addr/24" dev eth0
        as_root ip netns exec "$ns" ip link set eth0 up
        as_root ip netns exec "$ns" ip link set lo up
        echo "$ns $addr $link" > "$dir/hosts/$name"
        i=$((i + 1))
    done
}

down() {
    local dir=$1 f
    [ -d "$dir/hosts" ] || return 0
    for f in "$dir"/hosts/*; do
        [ -f "$f" ] || continue
        local ns addr link
        read -r ns addr link < "$f"
        as_root ip netns del "$ns" 2>/dev/null || true
        as_root ip link del "$link" 2>/dev/null || true
        rm -f "$f"
    done
    if [ -f "$dir/bridge" ]; then as_root ip link del "$(cat "$dir/bridge")" 2>/dev/null || true; fi
    rm -f "$dir/bridge" "$dir/gateway"
}

USAGE="usage: netns.sh up DIR NAME... | addr DIR NAME | exec DIR NAME CMD... | partition DIR NAME | heal DIR NAME | down DIR"
case "${1:-}" in
    up) shift; dir=${1:?$USAGE}; shift; up "$dir" "$@" ;;
    addr)
        if [ "${3:?$USAGE}" = gateway ]; then cat "$2/gateway"; else host "$2" "$3" | cut -d' ' -f2; fi ;;
    exec) dir=${2:?$USAGE} name=${3:?$USAGE}; shift 3; ns=$(host "$dir" "$name" | cut -d' ' -f1); exec ip netns exec "$ns" "$@" ;;
    partition) link=$(host "${2:?$USAGE}" "${3:?$USAGE}" | cut -d' ' -f3); as_root ip link set "$link" down ;;
    heal) link=$(host "${2:?$USAGE}" "${3:?$USAGE}" | cut -d' ' -f3); as_root ip link set "$link" up ;;
    down) down "${2:?$USAGE}" ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
