#!/usr/bin/env bash
# PostgreSQL servers of a test's own on loopback, for failover tests: node 1 a primary that
# commits synchronously (a commit is acknowledged once a replica has it), nodes 2..N streaming
# replicas of it. Each node runs as a session of its own, so `kill` takes the whole server down at
# once, as the crash of its machine would.
#
#   pg-nodes.sh up DIR [N]      starts N nodes (2 unless given); prints their multi-host URL,
#                               which it also writes to DIR/url
#   pg-nodes.sh kill DIR I      SIGKILLs every process of node I
#   pg-nodes.sh promote DIR I   promotes replica I to primary and waits until it accepts writes
#   pg-nodes.sh down DIR        stops every node
#
# Exits 3 when this machine has no PostgreSQL server binaries.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || { log "no PostgreSQL server binaries (pg_config --bindir has no initdb)"; exit 3; }

# The server refuses to run as root: as root, run it as the postgres user.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups); fi

port_of() { cat "$1/node-$2/port"; }

# start_node DIR I [SETTING...]: starts node I (a session leader: its pid is its process group)
# and waits until it accepts connections.
start_node() {
    local dir=$1 i=$2; shift 2
    local node=$dir/node-$i port
    port=$(port_of "$dir" "$i")
    local settings=(-c listen_addresses=127.0.0.1 -c "unix_socket_directories=$node" -c fsync=off
        -c wal_level=replica -c max_wal_senders=10 -c hot_standby=on -c wal_receiver_status_interval=1)
    for s in "$@"; do settings+=(-c "$s"); done
    setsid "${as_pg[@]}" "$bindir/postgres" -D "$node/data" -p "$port" "${settings[@]}" >>"$node/log" 2>&1 </dev/null &
    for _ in $(seq 1 200); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
            head -1 "$node/data/postmaster.pid" > "$node/pid"
            return 0
        fi
        sleep 0.1
    done
    log "node $i did not start:"; tail -20 "$node/log" >&2; return 1
}

sql() { "$bindir/psql" -X -q -h 127.0.0.1 -p "$(port_of "$1" "$2")" -U postgres -d postgres -Atc "$3"; }

up() {
    local dir=$1 n=${2:-2}
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do mkdir -p "$dir/node-$i"; free_port > "$dir/node-$i/port"; done
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi
    "${as_pg[@]}" "$bindir/initdb" -D "$dir/node-1/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$dir/node-1/initdb.log" 2>&1 || { cat "$dir/node-1/initdb.log" >&2; return 1; }
    # Only node 1 waits for a replica; a replica promoted later commits on its own.
    start_node "$dir" 1 "synchronous_standby_names=*"
    for i in $(seq 2 "$n"); do
        "${as_pg[@]}" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$(port_of "$dir" 1)" -U postgres \
            -D "$dir/node-$i/data" -R -X stream --no-sync >"$dir/node-$i/basebackup.log" 2>&1 \
            || { cat "$dir/node-$i/basebackup.log" >&2; return 1; }
        start_node "$dir" "$i"
    done
    local streaming=0
    for _ in $(seq 1 100); do
        streaming=$(sql "$dir" 1 "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        [ "$streaming" -ge $((n - 1)) ] && break
        sleep 0.1
    done
    [ "$streaming" -ge $((n - 1)) ] || { log "only $streaming of $((n - 1)) replicas stream"; return 1; }
    local hosts=()
    for i in $(seq 1 "$n"); do hosts+=("127.0.0.1:$(port_of "$dir" "$i")"); done
    local IFS=,
    echo "postgres://postgres@${hosts[*]}/postgres" | tee "$dir/url"
}

kill_node() {
    local pid; pid=$(cat "$1/node-$2/pid" 2>/dev/null) || return 0
    kill -9 -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$1/node-$2/pid"
}

promote() {
    "${as_pg[@]}" "$bindir/pg_ctl" promote -w -t 30 -D "$1/node-$2/data" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(sql "$1" "$2" 'SELECT pg_is_in_recovery()')" = f ] && return 0
        sleep 0.1
    done
    log "node $2 still in recovery"; return 1
}

# Throwaway servers: killed, not shut down (a smart shutdown would wait for clients).
down() {
    local node
    for node in "$1"/node-*; do [ -d "$node" ] && kill_node "$1" "${node##*/node-}"; done
    return 0
}

case "${1:-}" in
    up) up "$2" "${3:-2}" ;;
    kill) kill_node "$2" "$3" ;;
    promote) promote "$2" "$3" ;;
    down) down "$2" ;;
    *) echo "usage: $0 up DIR [N] | kill DIR I | promote DIR I | down DIR" >&2; exit 2 ;;
esac
