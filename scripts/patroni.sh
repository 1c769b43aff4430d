#!/usr/bin/env bash
# Highly available PostgreSQL on this machine, for the failure suite and trying cluster mode:
# three etcd members (Debian's etcd-server) and three PostgreSQL nodes under Patroni (Debian's
# patroni) in synchronous mode — a commit is acknowledged once a second node has it, and only that
# node may be promoted. Each etcd member and each Patroni node (with the PostgreSQL it runs) is a
# session of its own, so a kill takes the whole node down at once, as its machine's crash would.
# Timeouts are short so failovers take seconds: ttl 10 s, loop_wait 1 s, retry_timeout 3 s.
#
#   patroni.sh up DIR            starts all of it; writes DIR/postgres.json:
#                                {"url": multi-host URL, "postgres": [{"name", "pid", "url", "api"}],
#                                 "etcd": [{"name", "pid", "url"}]}
#   patroni.sh kill-node DIR I   SIGKILLs PostgreSQL node I (1-3) with its Patroni
#   patroni.sh start-node DIR I  starts node I again (it rejoins as a replica)
#   patroni.sh kill-etcd DIR I   SIGKILLs etcd member I
#   patroni.sh start-etcd DIR I  starts etcd member I again
#   patroni.sh primary DIR       prints the number of the node that is primary now (waits for one)
#   patroni.sh roles DIR         prints each node's role as Patroni reports it
#   patroni.sh down DIR          stops everything
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_packages patroni etcd-server
bindir=$(pg_config --bindir)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups); fi

N=3

ports() {  # DIR: allocates every port once
    local dir=$1 i
    for i in $(seq 1 $N); do
        mkdir -p "$dir/etcd-$i" "$dir/pg-$i"
        [ -f "$dir/etcd-$i/ports" ] || echo "$(free_port) $(free_port)" > "$dir/etcd-$i/ports"
        [ -f "$dir/pg-$i/ports" ] || echo "$(free_port) $(free_port)" > "$dir/pg-$i/ports"
    done
}
etcd_client() { cut -d' ' -f1 "$1/etcd-$2/ports"; }
etcd_peer() { cut -d' ' -f2 "$1/etcd-$2/ports"; }
pg_port() { cut -d' ' -f1 "$1/pg-$2/ports"; }
api_port() { cut -d' ' -f2 "$1/pg-$2/ports"; }

start_etcd() {
    local dir=$1 i=$2 cluster="" j
    for j in $(seq 1 $N); do cluster+="${cluster:+,}e$j=http://127.0.0.1:$(etcd_peer "$dir" "$j")"; done
    local state=new
    [ -d "$dir/etcd-$i/data/member" ] && state=existing
    setsid etcd --name "e$i" --data-dir "$dir/etcd-$i/data" \
        --listen-client-urls "http://127.0.0.1:$(etcd_client "$dir" "$i")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client "$dir" "$i")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer "$dir" "$i")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer "$dir" "$i")" \
        --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token gitstratum \
        --heartbeat-interval 100 --election-timeout 1000 \
        >>"$dir/etcd-$i/log" 2>&1 </dev/null &
    echo $! > "$dir/etcd-$i/pid"
}

write_patroni_config() {
    local dir=$1 i=$2 hosts="" j
    for j in $(seq 1 $N); do hosts+="${hosts:+,}127.0.0.1:$(etcd_client "$dir" "$j")"; done
    cat > "$dir/pg-$i/patroni.yml" <<YAML
scope: gitstratum
name: pg$i
restapi:
  listen: 127.0.0.1:$(api_port "$dir" "$i")
  connect_address: 127.0.0.1:$(api_port "$dir" "$i")
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: 'on'
        max_connections: 200
  initdb:
    - encoding: UTF8
    - auth: trust
postgresql:
  listen: 127.0.0.1:$(pg_port "$dir" "$i")
  connect_address: 127.0.0.1:$(pg_port "$dir" "$i")
  data_dir: $dir/pg-$i/data
  bin_dir: $bindir
  pgpass: $dir/pg-$i/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
    rewind:
      username: postgres
      password: postgres
  parameters:
    unix_socket_directories: $dir/pg-$i
    # The suite kills processes, not machines: the page cache survives, so fsync buys nothing here.
    fsync: 'off'
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
YAML
}

start_node() {
    local dir=$1 i=$2
    write_patroni_config "$dir" "$i"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir/pg-$i"; fi
    # From the node's own directory: Patroni runs as postgres, which may not enter the caller's
    # (a private checkout under /tmp), and its bootstrap then never finishes.
    (cd "$dir/pg-$i" && exec setsid "${as_pg[@]}" patroni "$dir/pg-$i/patroni.yml" >>"$dir/pg-$i/log" 2>&1 </dev/null) &
    echo $! > "$dir/pg-$i/pid"
}

kill_group() {  # PIDFILE
    local pid; pid=$(cat "$1" 2>/dev/null) || return 0
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$1"
}

# kill_node DIR I: Patroni and the PostgreSQL it runs (which Patroni starts in a session of its
# own, so it is killed by the postmaster's process group), at once.
kill_node() {
    local dir=$1 i=$2 pm=""
    pm=$(head -1 "$dir/pg-$i/data/postmaster.pid" 2>/dev/null || true)
    if [ -n "$pm" ] && ! grep -qs "pg-$i/data" "/proc/$pm/cmdline"; then pm=""; fi
    [ -n "$pm" ] && { kill -9 -- "-$pm" 2>/dev/null || kill -9 "$pm" 2>/dev/null || true; }
    kill_group "$dir/pg-$i/pid"
    if [ -n "$pm" ]; then for _ in $(seq 1 50); do kill -0 "$pm" 2>/dev/null || break; sleep 0.1; done; fi
    return 0
}

role() {  # DIR I: the role Patroni reports for node I, or "down"
    curl -fsS -m 2 "http://127.0.0.1:$(api_port "$1" "$2")/patroni" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role", "?"))' 2>/dev/null || echo down
}

primary() {  # DIR: the node whose /primary answers 200 (60 s at most)
    local dir=$1 i
    for _ in $(seq 1 600); do
        for i in $(seq 1 $N); do
            if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$(api_port "$dir" "$i")/primary" 2>/dev/null; then
                echo "$i"; return 0
            fi
        done
        sleep 0.1
    done
    log "no primary"; return 1
}

up() {
    local dir=$1 i
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    ports "$dir"
    if ! "${as_pg[@]}" test -x "$dir"; then
        log "the postgres user cannot reach $dir (a directory above it is private)"; return 1
    fi
    for i in $(seq 1 $N); do start_etcd "$dir" "$i"; done
    for _ in $(seq 1 100); do
        curl -fsS -m 1 "http://127.0.0.1:$(etcd_client "$dir" 1)/health" 2>/dev/null | grep -q '"health":"true"' && break
        sleep 0.1
    done
    # The first node bootstraps the cluster; the others join it as replicas (pg_basebackup).
    start_node "$dir" 1
    primary "$dir" >/dev/null
    for i in $(seq 2 $N); do start_node "$dir" "$i"; done
    # Up when both replicas stream and one of them is the synchronous standby.
    local ok=0
    for _ in $(seq 1 1200); do
        local sync
        sync=$("$bindir/psql" -X -h 127.0.0.1 -p "$(pg_port "$dir" 1)" -U postgres -d postgres -Atc \
            "SELECT count(*) FILTER (WHERE state = 'streaming'), count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication" 2>/dev/null || true)
        if [ "$sync" = "2|1" ]; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { log "the replicas did not come up: $(tail -5 "$dir"/pg-*/log)"; return 1; }
    local hosts="" pg="" etcd=""
    for i in $(seq 1 $N); do
        hosts+="${hosts:+,}127.0.0.1:$(pg_port "$dir" "$i")"
        pg+="${pg:+, }{\"name\": \"pg$i\", \"pid\": $(cat "$dir/pg-$i/pid"), \"url\": \"postgres://postgres@127.0.0.1:$(pg_port "$dir" "$i")/postgres\", \"api\": \"http://127.0.0.1:$(api_port "$dir" "$i")\"}"
        etcd+="${etcd:+, }{\"name\": \"e$i\", \"pid\": $(cat "$dir/etcd-$i/pid"), \"url\": \"http://127.0.0.1:$(etcd_client "$dir" "$i")\"}"
    done
    cat > "$dir/postgres.json" <<JSON
{"url": "postgres://postgres@$hosts/postgres",
 "postgres": [$pg],
 "etcd": [$etcd]}
JSON
    echo "postgres://postgres@$hosts/postgres"
}

down() {
    local dir=$1 i
    for i in $(seq 1 $N); do kill_node "$dir" "$i"; done
    for i in $(seq 1 $N); do kill_group "$dir/etcd-$i/pid"; done
    return 0
}

case "${1:-}" in
    up) up "$2" || { down "$2"; exit 1; } ;;
    kill-node) kill_node "$2" "$3" ;;
    start-node) start_node "$2" "$3" ;;
    kill-etcd) kill_group "$2/etcd-$3/pid" ;;
    start-etcd) start_etcd "$2" "$3" ;;
    primary) primary "$2" ;;
    roles) for i in $(seq 1 $N); do echo "pg$i $(role "$2" "$i")"; done ;;
    down) down "$2" ;;
    *) echo "usage: $0 up DIR | kill-node DIR I | start-node DIR I | kill-etcd DIR I | start-etcd DIR I | primary DIR | roles DIR | down DIR" >&2; exit 2 ;;
esac
