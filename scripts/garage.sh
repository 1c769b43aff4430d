#!/usr/bin/env bash
# A Garage cluster (S3-compatible object storage) on this machine, for tests and for trying
# cluster mode: three nodes on loopback, replication factor 3, fsync of data and metadata on.
#
#   scripts/garage.sh build      builds Garage from crates.io into ~/.cache/gitstratum-garage
#                                (AGPL: run as a separate process only, never vendored)
#   scripts/garage.sh up DIR     starts three nodes under DIR, makes a bucket and a key, and writes
#                                DIR/garage.json: {"endpoint", "region", "bucket",
#                                "access_key_id", "secret_access_key",
#                                "nodes": [{"pid", "s3", "rpc"}]}
#   scripts/garage.sh down DIR   stops the nodes DIR's cluster started (by process id)
#   scripts/garage.sh kill-node DIR N    SIGKILLs node N (1 to 3) of DIR's cluster
#   scripts/garage.sh start-node DIR N   starts node N again, on its data, ports and identity
#   scripts/garage.sh reconnect DIR      connects every running node to every other, both ways
#                                (Garage left alone took over a minute to reconnect two nodes
#                                after a restart or a healed partition)
#   scripts/garage.sh wait-healthy DIR   waits (60 s at most) until every node sees every other
#                                as healthy, with its status (a restarted node's takes seconds)
#
# With GITSTRATUM_NETNS=NETDIR (a network of test hosts, scripts/netns.sh), node N runs on host objN
# of that network, so it can be cut off (netns.sh partition NETDIR objN); `up` keeps NETDIR in
# DIR/netns for the other commands. Otherwise the nodes are on loopback.
#
# Exit status 3: no Garage binary (build it first, or set GITSTRATUM_GARAGE to one).
set -euo pipefail

GARAGE_VERSION=2.5.0
CACHE="${GITSTRATUM_GARAGE_CACHE:-$HOME/.cache/gitstratum-garage}"
GARAGE="${GITSTRATUM_GARAGE:-$CACHE/bin/garage}"

. "$(dirname "$0")/lib.sh"

NET=${GITSTRATUM_NETNS:-}
NETNS="$(cd "$(dirname "$0")" && pwd)/netns.sh"
# node_addr N: node N's address; in_node N CMD...: runs CMD where node N runs.
node_addr() { if [ -n "$NET" ]; then bash "$NETNS" addr "$NET" "obj$1"; else echo 127.0.0.1; fi; }
in_node() {
    local n=$1; shift
    if [ -n "$NET" ]; then exec bash "$NETNS" exec "$NET" "obj$n" "$@"; else exec "$@"; fi
}

build() {
    if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then return 0; fi
    log "building Garage $GARAGE_VERSION into $CACHE (once; the build is kept there)"
    mkdir -p "$CACHE"
    CARGO_TARGET_DIR="$CACHE/build" cargo install garage --version "$GARAGE_VERSION" --locked \
        --no-default-features --features bundled-libs,lmdb --root "$CACHE" --quiet
    rm -rf "$CACHE/build"
}

# garage CLI against node 1 of DIR.
cli() { "$GARAGE" -c "$DIR/node1/garage.toml" "$@"; }

up() {
    [ -x "$GARAGE" ] || { echo "no Garage binary at $GARAGE: run scripts/garage.sh build" >&2; exit 3; }
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local secret admin_token
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    : > "$DIR/pids"
    if [ -n "$NET" ]; then echo "$NET" > "$DIR/netns"; else rm -f "$DIR/netns"; fi
    local nodes_json="" n
    for n in 1 2 3; do
        local node="$DIR/node$n" rpc s3 admin a
        rpc=$(free_port); s3=$(free_port); admin=$(free_port); a=$(node_addr "$n")
        mkdir -p "$node/meta" "$node/data"
        cat > "$node/garage.toml" <<EOF
metadata_dir = "$node/meta"
data_dir = "$node/data"
db_engine = "lmdb"
lmdb_map_size = "1G"
replication_factor = 3
consistency_mode = "consistent"
metadata_fsync = true
data_fsync = true
rpc_bind_addr = "$a:$rpc"
rpc_public_addr = "$a:$rpc"
rpc_secret = "$secret"
rpc_timeout_msec = 5000

[s3_api]
s3_region = "garage"
api_bind_addr = "$a:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "$a:$admin"
admin_token = "$admin_token"
EOF
        chmod 600 "$node/garage.toml"
        (in_node "$n" setsid "$GARAGE" -c "$node/garage.toml" server > "$node/log" 2>&1 < /dev/null) &
        echo $! >> "$DIR/pids"
        echo "$rpc $s3" > "$node/ports"
        nodes_json="$nodes_json${nodes_json:+,}{\"pid\": $!, \"s3\": \"http://$a:$s3\", \"rpc\": \"$a:$rpc\"}"
    done
    # Each node listens on its RPC and S3 ports (a node that could not bind one has exited: the
    # caller tries again with other ports), then nodes 2 and 3 join node 1.
    local ids=()
    for n in 1 2 3; do
        local rpc s3 pid id="" ready=0 a
        read -r rpc s3 < "$DIR/node$n/ports"
        a=$(node_addr "$n")
        pid=$(sed -n "${n}p" "$DIR/pids")
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/$a/$rpc") 2>/dev/null && (exec 3<>"/dev/tcp/$a/$s3") 2>/dev/null; then
                ready=1
                break
            fi
            sleep 0.05
        done
        [ $ready = 1 ] && id=$("$GARAGE" -c "$DIR/node$n/garage.toml" node id -q 2>/dev/null) || true
        if [ -z "$id" ]; then
            log "Garage node $n did not start:"
            tail -5 "$DIR/node$n/log" >&2
            return 1
        fi
        ids+=("$id")
    done
    local joined
    for id in "${ids[1]}" "${ids[2]}"; do
        joined=0
        for _ in $(seq 1 50); do
            cli node connect "$id" >/dev/null 2>&1 && { joined=1; break; }
            sleep 0.1
        done
        [ $joined = 1 ] || { log "Garage nodes could not connect"; return 1; }
    done
    for id in "${ids[@]}"; do
        cli layout assign -z dc1 -c 1G "${id%%@*}" >/dev/null || return 1
    done
    cli layout apply --version 1 >/dev/null || return 1
    # The bucket and key are made once the layout has reached every node.
    for _ in $(seq 1 100); do
        cli bucket create gitstratum >/dev/null 2>&1 && break
        sleep 0.1
    done
    local key
    key=$(cli key create gitstratum) || return 1
    local key_id secret_key
    key_id=$(printf '%s\n' "$key" | sed -n 's/^Key ID: *//p' | head -1)
    secret_key=$(printf '%s\n' "$key" | sed -n 's/^Secret key: *//p' | head -1)
    [ -n "$key_id" ] && [ -n "$secret_key" ] || { log "cannot read the new key:"; printf '%s\n' "$key" >&2; return 1; }
    cli bucket allow --read --write --owner gitstratum --key gitstratum >/dev/null || return 1
    local s3
    s3=$(cut -d' ' -f2 "$DIR/node1/ports")
    cat > "$DIR/garage.json" <<EOF
{"endpoint": "http://$(node_addr 1):$s3", "region": "garage", "bucket": "gitstratum",
 "access_key_id": "$key_id", "secret_access_key": "$secret_key",
 "nodes": [$nodes_json]}
EOF
}

down() {
    stop_pids "$DIR/pids" 50
}

kill_node() {
    local pid
    pid=$(sed -n "${N}p" "$DIR/pids")
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

start_node() {
    local node="$DIR/node$N" rpc s3 pid a
    read -r rpc s3 < "$node/ports"
    a=$(node_addr "$N")
    (in_node "$N" setsid "$GARAGE" -c "$node/garage.toml" server >> "$node/log" 2>&1 < /dev/null) &
    pid=$!
    sed -i "${N}s/.*/$pid/" "$DIR/pids"
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || { log "Garage node $N did not start again"; tail -5 "$node/log" >&2; return 1; }
        if (exec 3<>"/dev/tcp/$a/$rpc") 2>/dev/null && (exec 3<>"/dev/tcp/$a/$s3") 2>/dev/null; then
            # Connect it to the other nodes that run (as `up` joined them): left to itself, a node
            # restarted while another was down too may stay disconnected from it for minutes.
            reconnect
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Connects each running node to each other running node, from both ends.
reconnect() {
    local m k ids=()
    for m in 1 2 3; do
        ids[$m]=""
        kill -0 "$(sed -n "${m}p" "$DIR/pids")" 2>/dev/null || continue
        ids[$m]=$("$GARAGE" -c "$DIR/node$m/garage.toml" node id -q 2>/dev/null) || ids[$m]=""
    done
    for m in 1 2 3; do
        for k in 1 2 3; do
            [ "$m" = "$k" ] || [ -z "${ids[$m]}" ] || [ -z "${ids[$k]}" ] && continue
            for _ in $(seq 1 50); do
                "$GARAGE" -c "$DIR/node$m/garage.toml" node connect "${ids[$k]}" >/dev/null 2>&1 && break
                sleep 0.1
            done
        done
    done
}

wait_healthy() {
    local m ok
    for _ in $(seq 1 120); do
        ok=1
        for m in 1 2 3; do
            local seen
            seen=$("$GARAGE" -c "$DIR/node$m/garage.toml" status 2>/dev/null) || { ok=0; break; }
            # Three healthy rows with a hostname each, and no failed node.
            if printf '%s\n' "$seen" | grep -q "FAILED NODES" \
                || [ "$(printf '%s\n' "$seen" | grep -cE '^[0-9a-f]{16} +[^? ]')" != 3 ]; then
                ok=0; break
            fi
        done
        [ $ok = 1 ] && return 0
        sleep 0.5
    done
    log "the Garage nodes do not all see each other healthy"; return 1
}

# Starts the cluster; a try that fails (a port taken meanwhile by another process, say) is stopped
# and made again on other ports, three times at most.
up_with_retries() {
    [ -x "$GARAGE" ] || { echo "no Garage binary at $GARAGE: run scripts/garage.sh build" >&2; exit 3; }
    local try
    for try in 1 2 3; do
        if up; then return 0; fi
        down
        rm -rf "$DIR/node1" "$DIR/node2" "$DIR/node3"
        log "starting Garage failed (try $try of 3)"
    done
    exit 1
}

if [ "${1:-}" != up ] && [ -f "${2:-}/netns" ]; then NET=$(cat "$2/netns"); fi
case "${1:-}" in
    build) build ;;
    up) DIR="${2:?usage: garage.sh up DIR}"; up_with_retries ;;
    down) DIR="${2:?usage: garage.sh down DIR}"; down ;;
    kill-node) DIR="${2:?usage: garage.sh kill-node DIR N}"; N="${3:?node number}"; kill_node ;;
    start-node) DIR="${2:?usage: garage.sh start-node DIR N}"; N="${3:?node number}"; start_node ;;
    reconnect) DIR="${2:?usage: garage.sh reconnect DIR}"; reconnect ;;
    wait-healthy) DIR="${2:?usage: garage.sh wait-healthy DIR}"; wait_healthy ;;
    *) echo "usage: garage.sh build | up DIR | down DIR | kill-node DIR N | start-node DIR N | reconnect DIR | wait-healthy DIR" >&2; exit 2 ;;
esac
