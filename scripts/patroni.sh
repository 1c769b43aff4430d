#!/usr/bin/env bash
# Highly available PostgreSQL on this machine, for the failure suite and trying cluster mode:
# three etcd members (Debian's etcd-server) and three PostgreSQL nodes under Patroni (Debian's
# patroni) in synchronous mode — a commit is acknowledged once a second node has it, and only that
# node may be promoted. Each etcd member and each Patroni node (with the PostgreSQL it runs) is a
# session of its own, so a kill takes the whole node down at once, as its machine's crash would.
# Timeouts are short so failovers take seconds: ttl 10 s, loop_wait 1 s, retry_timeout 3 s; failsafe
# mode keeps a primary that reaches every member through a moment without etcd.
#
#   patroni.sh up DIR            starts all of it; writes DIR/postgres.json:
#                                {"url": multi-host URL, "postgres": [{"name", "pid", "url", "api"}],
#                                 "etcd": [{"name", "pid", "url"}]}
#   patroni.sh kill-node DIR I   SIGKILLs PostgreSQL node I (1-3) with its Patroni
#   patroni.sh start-node DIR I  starts node I again (it rejoins as a replica)
#   patroni.sh kill-etcd DIR I   SIGKILLs etcd member I
#   patroni.sh start-etcd DIR I  starts etcd member I again
#   patroni.sh etcd-leader DIR   prints the number of the etcd member that leads now
#   patroni.sh primary DIR       prints the number of the node that is primary now (waits for one)
#   patroni.sh roles DIR         prints each node's role as Patroni reports it
#   patroni.sh down DIR          stops everything
#
# With GITSTRATUM_NETNS=NETDIR (a network of test hosts, scripts/netns.sh), PostgreSQL node I and
# its Patroni run on host pgI of that network, and the etcd members on the machine itself at the
# network's gateway address: a node can then be cut off the network (netns.sh partition NETDIR pgI)
# and lose etcd, its replicas and its clients at once (`up` keeps NETDIR in DIR/netns for the other
# commands). Otherwise everything is on loopback.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_packages patroni etcd-server
bindir=$(pg_config --bindir)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups); fi

N=3
NET=${GITSTRATUM_NETNS:-}
netns() { bash "$(dirname "$0")/netns.sh" "$@"; }
# The address of PostgreSQL node I, and of the etcd members.
pg_addr() { if [ -n "$NET" ]; then netns addr "$NET" "pg$1"; else echo 127.0.0.1; fi; }
etcd_addr() { if [ -n "$NET" ]; then netns addr "$NET" gateway; else echo 127.0.0.1; fi; }

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
    local a; a=$(etcd_addr)
    for j in $(seq 1 $N); do cluster+="${cluster:+,}e$j=http://$a:$(etcd_peer "$dir" "$j")"; done
    local state=new
    [ -d "$dir/etcd-$i/data/member" ] && state=existing
    setsid etcd --name "e$i" --data-dir "$dir/etcd-$i/data" \
        --listen-client-urls "http://$a:$(etcd_client "$dir" "$i")" \
        --advertise-client-urls "http://$a:$(etcd_client "$dir" "$i")" \
        --listen-peer-urls "http://$a:$(etcd_peer "$dir" "$i")" \
        --initial-advertise-peer-urls "http://$a:$(etcd_peer "$dir" "$i")" \
        --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token gitstratum \
        --heartbeat-interval 100 --election-timeout 1000 \
        >>"$dir/etcd-$i/log" 2>&1 </dev/null &
    echo $! > "$dir/etcd-$i/pid"
}

write_patroni_config() {
    local dir=$1 i=$2 hosts="" j a e net=127.0.0.1/32
    a=$(pg_addr "$i"); e=$(etcd_addr)
    [ -n "$NET" ] && net="${e%.*}.0/24"
    for j in $(seq 1 $N); do hosts+="${hosts:+,}$e:$(etcd_client "$dir" "$j")"; done
    cat > "$dir/pg-$i/patroni.yml" <<YAML
scope: gitstratum
name: pg$i
restapi:
  listen: $a:$(api_port "$dir" "$i")
  connect_address: $a:$(api_port "$dir" "$i")
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    # While etcd cannot be reached (its leader died and the others have not elected a new one,
    # or the client is still on the dead member), a primary that still reaches every other member
    # stays primary instead of demoting itself; one cut off from them (a partition) still steps
    # down.
    failsafe_mode: true
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
  listen: $a:$(pg_port "$dir" "$i")
  connect_address: $a:$(pg_port "$dir" "$i")
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
    - host all all $net trust
    - host replication all $net trust
YAML
}

start_node() {
    local dir=$1 i=$2
    write_patroni_config "$dir" "$i"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir/pg-$i"; fi
    # From the node's own directory: Patroni runs as postgres, which may not enter the caller's
    # (a private checkout under /tmp), and its bootstrap then never finishes.
    local in_ns=()
    [ -n "$NET" ] && in_ns=(bash "$(cd "$(dirname "$0")" && pwd)/netns.sh" exec "$NET" "pg$i")
    (cd "$dir/pg-$i" && exec setsid "${in_ns[@]}" "${as_pg[@]}" patroni "$dir/pg-$i/patroni.yml" >>"$dir/pg-$i/log" 2>&1 </dev/null) &
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
    curl -fsS -m 2 "http://$(pg_addr "$2"):$(api_port "$1" "$2")/patroni" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role", "?"))' 2>/dev/null || echo down
}

primary() {  # DIR: the node whose /primary answers 200 (60 s at most)
    local dir=$1 i
    for _ in $(seq 1 600); do
        for i in $(seq 1 $N); do
            if curl -fsS -m 1 -o /dev/null "http://$(pg_addr "$i"):$(api_port "$dir" "$i")/primary" 2>/dev/null; then
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
    if [ -n "$NET" ]; then echo "$NET" > "$dir/netns"; else rm -f "$dir/netns"; fi
    if ! "${as_pg[@]}" test -x "$dir"; then
        log "the postgres user cannot reach $dir (a directory above it is private)"; return 1
    fi
    for i in $(seq 1 $N); do start_etcd "$dir" "$i"; done
    for _ in $(seq 1 100); do
        curl -fsS -m 1 "http://$(etcd_addr):$(etcd_client "$dir" 1)/health" 2>/dev/null | grep -q '"health":"true"' && break
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
        sync=$("$bindir/psql" -X -h "$(pg_addr 1)" -p "$(pg_port "$dir" 1)" -U postgres -d postgres -Atc \
            "SELECT count(*) FILTER (WHERE state = 'streaming'), count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication" 2>/dev/null || true)
        if [ "$sync" = "2|1" ]; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { log "the replicas did not come up: $(tail -5 "$dir"/pg-*/log)"; return 1; }
    local hosts="" pg="" etcd=""
    for i in $(seq 1 $N); do
        local a; a=$(pg_addr "$i")
        hosts+="${hosts:+,}$a:$(pg_port "$dir" "$i")"
        pg+="${pg:+, }{\"name\": \"pg$i\", \"pid\": $(cat "$dir/pg-$i/pid"), \"url\": \"postgres://postgres@$a:$(pg_port "$dir" "$i")/postgres\", \"api\": \"http://$a:$(api_port "$dir" "$i")\"}"
        etcd+="${etcd:+, }{\"name\": \"e$i\", \"pid\": $(cat "$dir/etcd-$i/pid"), \"url\": \"http://$(etcd_addr):$(etcd_client "$dir" "$i")\"}"
    done
    cat > "$dir/postgres.json" <<JSON
{"url": "postgres://postgres@$hosts/postgres",
 "postgres": [$pg],
 "etcd": [$etcd]}
JSON
    echo "postgres://postgres@$hosts/postgres"
}

etcd_leader() {  # DIR: the member whose status names itself as the leader
    local dir=$1 i
    for _ in $(seq 1 100); do
        for i in $(seq 1 $N); do
            if curl -fsS -m 1 -X POST -d '{}' "http://$(etcd_addr):$(etcd_client "$dir" "$i")/v3/maintenance/status" 2>/dev/null \
                | python3 -c 'import json,sys; s = json.load(sys.stdin); sys.exit(0 if s["header"]["member_id"] == s["leader"] else 1)' 2>/dev/null; then
                echo "$i"; return 0
            fi
        done
        sleep 0.1
    done
    log "no etcd leader"; return 1
}

down() {
    local dir=$1 i
    for i in $(seq 1 $N); do kill_node "$dir" "$i"; done
    for i in $(seq 1 $N); do kill_group "$dir/etcd-$i/pid"; done
    return 0
}

if [ "${1:-}" != up ] && [ -f "${2:-}/netns" ]; then NET=$(cat "$2/netns"); fi
case "${1:-}" in
    up) up "$2" || { down "$2"; exit 1; } ;;
    kill-node) kill_node "$2" "$3" ;;
    start-node) start_node "$2" "$3" ;;
    kill-etcd) kill_group "$2/etcd-$3/pid" ;;
    start-etcd) start_etcd "$2" "$3" ;;
    etcd-leader) etcd_leader "$2" ;;
    primary) primary "$2" ;;
    roles) for i in $(seq 1 $N); do echo "pg$i $(role "$2" "$i")"; done ;;
    down) down "$2" ;;
    *) echo "usage: $0 up DIR | kill-node DIR I | start-node DIR I | kill-etcd DIR I | start-etcd DIR I | etcd-leader DIR | primary DIR | roles DIR | down DIR" >&2; exit 2 ;;
esac
