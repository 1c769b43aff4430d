#!/usr/bin/env bash
# A whole GitStratum cluster on this machine, for tests, benchmarks and trying cluster mode:
# a PostgreSQL database of its own on the local server, a three-node Garage cluster
# (scripts/garage.sh), three frontends (`gitstratum serve`, cluster mode, embedded runners off)
# and one external runner. With --ha, PostgreSQL is instead three nodes under Patroni with three
# etcd members (scripts/patroni.sh, synchronous mode), which the frontends follow through
# failovers (a multi-host database URL), and there are two runners; and every PostgreSQL node, Garage
# node and frontend is a test host of its own (a network namespace, scripts/netns.sh: hosts pgI,
# objI, feI of the network in DIR/net), so a test can cut one off the network and heal it. etcd,
# the runners and the clients are on the machine itself, at the network's gateway address.
#
#   scripts/cluster.sh up DIR [FRONTENDS] [--ha]   starts it under DIR (FRONTENDS: 3 unless given)
#                        and writes DIR/cluster.json: {"frontends": [{"url", "pid", "data_dir"}],
#                        "object_nodes": [{"pid", "endpoint"}], "runners": [{"pid", "server"}],
#                        "admin_token", "database_url"}, and with --ha also "postgres":
#                        [{"name", "pid", "role", "url", "api"}], "etcd": [{"name", "pid", "url"}] and
#                        "network": {"dir", "gateway", "hosts": {NAME: {"namespace", "address"}}}
#   scripts/cluster.sh start-frontend DIR N   starts frontend N again (after a kill), on its port
#                        and data directory; prints its new process id
#   scripts/cluster.sh down DIR             stops everything DIR's cluster started (by process
#                        id) and drops its database
#
# The binary is $GITSTRATUM_BIN, else target/debug/gitstratum under $CARGO_TARGET_DIR (built if
# missing). PostgreSQL: $GITSTRATUM_TEST_POSTGRES_URL, else the local server (scripts/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

binary() {
    if [ -n "${GITSTRATUM_BIN:-}" ]; then echo "$GITSTRATUM_BIN"; return; fi
    local bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug/gitstratum"
    if [ ! -x "$bin" ]; then
        log "building gitstratum"
        (cd "$ROOT" && cargo build -q -p gitstratum --locked) >&2
    fi
    echo "$bin"
}

# Waits until URL answers 200 (30 s at most).
wait_ready() {
    local url=$1 pid=$2
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { echo "the process $pid serving $url died" >&2; return 1; }
        if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$url did not become ready" >&2
    return 1
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# frontend_addr N: the address frontend N listens on.
frontend_addr() {
    if [ -d "$DIR/net" ]; then bash "$ROOT/scripts/netns.sh" addr "$DIR/net" "fe$1"; else echo 127.0.0.1; fi
}

# start_frontend N: starts frontend N on its address, port and data directory; prints its process id.
start_frontend() {
    local n=$1 data="$DIR/frontend$1" port addr in_ns=()
    port=$(cat "$data.port")
    addr=$(frontend_addr "$n")
    [ -d "$DIR/net" ] && in_ns=(bash "$ROOT/scripts/netns.sh" exec "$DIR/net" "fe$n")
    # GITSTRATUM_CRASH_AT in the caller's environment reaches the frontend (crash tests); a
    # frontend that dies there leaves no core file.
    (set -a; . "$DIR/env"; set +a; ulimit -c 0
     exec "${in_ns[@]}" "$(cat "$DIR/bin")" serve --data-dir "$data" --listen "$addr:$port") >> "$DIR/frontend$n.log" 2>&1 &
    local pid=$!
    echo "$pid" >> "$DIR/pids"
    wait_ready "http://$addr:$port" "$pid"
    echo "$pid"
}

up() {
    local frontends=${2:-3} ha=${3:-}
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local bin; bin=$(binary)
    echo "$bin" > "$DIR/bin"
    : > "$DIR/pids"

    local database_url runners=1
    if [ -n "$ha" ]; then
        # The test hosts; the scripts below start their nodes on them.
        local hosts=(pg1 pg2 pg3 obj1 obj2 obj3) n
        for n in $(seq 1 "$frontends"); do hosts+=("fe$n"); done
        bash "$ROOT/scripts/netns.sh" up "$DIR/net" "${hosts[@]}" || return 1
        export GITSTRATUM_NETNS="$DIR/net"

        # The database: three PostgreSQL nodes under Patroni, the frontends told of all three.
        database_url=$(bash "$ROOT/scripts/patroni.sh" up "$DIR/pg") || return 1
        [ -n "$database_url" ] || { log "scripts/patroni.sh up gave no database URL"; return 1; }
        runners=2
    else
        # The database: one of its own on the local server.
        if [ -z "${GITSTRATUM_TEST_POSTGRES_URL:-}" ]; then ensure_postgres; fi
        local server_url="${GITSTRATUM_TEST_POSTGRES_URL%/*}"
        local db="gst_cluster_$(date +%s)_$$"
        psql "$GITSTRATUM_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null || return 1
        echo "$db" > "$DIR/database"
        database_url="$server_url/$db"
    fi

    # The object store.
    bash "$ROOT/scripts/garage.sh" up "$DIR/garage" >&2 || return 1
    local g="$DIR/garage/garage.json"

    local env_file="$DIR/env"
    cat > "$env_file" <<EOF
GITSTRATUM_CLUSTER=true
GITSTRATUM_DATABASE_URL=$database_url
GITSTRATUM_OBJECT_STORAGE_ENDPOINT=$(python3 -c 'import json,sys; print(",".join(n["s3"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$g")
GITSTRATUM_OBJECT_STORAGE_BUCKET=$(json_field "$g" bucket)
GITSTRATUM_OBJECT_STORAGE_REGION=$(json_field "$g" region)
GITSTRATUM_OBJECT_STORAGE_ACCESS_KEY_ID=$(json_field "$g" access_key_id)
GITSTRATUM_OBJECT_STORAGE_SECRET_ACCESS_KEY=$(json_field "$g" secret_access_key)
GITSTRATUM_SECRETS_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
GITSTRATUM_EMBEDDED_RUNNER=false
GITSTRATUM_LOG_LEVEL=${GITSTRATUM_CLUSTER_LOG_LEVEL:-info}
EOF
    chmod 600 "$env_file"

    local fronts_json="" n
    for n in $(seq 1 "$frontends"); do
        local port data="$DIR/frontend$n"
        port=$(free_port)
        mkdir -p "$data"
        echo "$port" > "$data.port"
        # The first frontend creates the admin account; the others find it.
        local pid; pid=$(start_frontend "$n") || return 1
        fronts_json+="${fronts_json:+, }{\"url\": \"http://$(frontend_addr "$n"):$port\", \"pid\": $pid, \"data_dir\": \"$data\"}"
    done
    local admin_token; admin_token=$(cat "$DIR/frontend1/initial-admin-token")
    local first; first=$(python3 -c 'import json,sys; print(json.loads("["+sys.argv[1]+"]")[0]["url"])' "$fronts_json")

    # External runners, polling the last frontends (runner R the R-th from the end).
    local runner_token
    runner_token=$(curl -fsS -X POST -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
        -d '{"name": "cluster-runner", "scopes": ["ci:runner"]}' "$first/api/v1/tokens" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || return 1
    local runners_json="" r
    for r in $(seq 1 "$runners"); do
        local polls
        polls=$(python3 -c 'import json,sys; f = json.loads("["+sys.argv[1]+"]"); print(f[-int(sys.argv[2]) % len(f)]["url"])' "$fronts_json" "$r")
        mkdir -p "$DIR/runner$r"
        (exec "$bin" runner --server "$polls" --token - --name "cluster-runner-$r" --work-dir "$DIR/runner$r" \
            <<< "$runner_token") > "$DIR/runner$r.log" 2>&1 &
        echo "$!" >> "$DIR/pids"
        runners_json+="${runners_json:+, }{\"pid\": $!, \"server\": \"$polls\"}"
    done

    local nodes_json
    nodes_json=$(python3 -c '
import json, sys
g = json.load(open(sys.argv[1]))
print(", ".join(json.dumps({"pid": n["pid"], "endpoint": n["s3"]}) for n in g["nodes"]))' "$g")
    local ha_json=""
    if [ -n "$ha" ]; then
        ha_json=$(python3 -c '
import json, os, subprocess, sys
pg = json.load(open(sys.argv[1]))
roles = dict(line.split() for line in subprocess.run(["bash", sys.argv[2], "roles", sys.argv[3]],
             capture_output=True, text=True, check=True).stdout.splitlines())
for node in pg["postgres"]:
    node["role"] = "primary" if roles.get(node["name"]) in ("master", "primary", "leader") else "replica"
net = {"dir": sys.argv[4], "gateway": open(sys.argv[4] + "/gateway").read().strip(), "hosts": {}}
for name in sorted(os.listdir(sys.argv[4] + "/hosts")):
    ns, addr, _ = open(sys.argv[4] + "/hosts/" + name).read().split()
    net["hosts"][name] = {"namespace": ns, "address": addr}
print(",\n \"postgres\": " + json.dumps(pg["postgres"]) + ",\n \"etcd\": " + json.dumps(pg["etcd"])
      + ",\n \"network\": " + json.dumps(net))' \
            "$DIR/pg/postgres.json" "$ROOT/scripts/patroni.sh" "$DIR/pg" "$DIR/net") || return 1
    fi
    cat > "$DIR/cluster.json" <<EOF
{"frontends": [$fronts_json],
 "object_nodes": [$nodes_json],
 "runners": [$runners_json],
 "admin_token": "$admin_token",
 "database_url": "$database_url"$ha_json}
EOF
    log "cluster up: $DIR/cluster.json"
}

down() {
    [ -d "$DIR" ] || return 0
    stop_pids "$DIR/pids"
    bash "$ROOT/scripts/garage.sh" down "$DIR/garage" || true
    if [ -d "$DIR/pg" ]; then bash "$ROOT/scripts/patroni.sh" down "$DIR/pg" || true; fi
    if [ -d "$DIR/net" ]; then bash "$ROOT/scripts/netns.sh" down "$DIR/net" || true; fi
    if [ -f "$DIR/database" ]; then
        if [ -z "${GITSTRATUM_TEST_POSTGRES_URL:-}" ]; then ensure_postgres; fi
        psql "$GITSTRATUM_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $(cat "$DIR/database") WITH (FORCE)" >/dev/null || true
        rm -f "$DIR/database"
    fi
}

USAGE="usage: cluster.sh up DIR [FRONTENDS] [--ha] | start-frontend DIR N | down DIR"
case "${1:-}" in
    up)
        DIR="${2:?$USAGE}"; shift 2
        frontends=3 ha=""
        for arg in "$@"; do
            case "$arg" in --ha) ha=1 ;; [0-9]*) frontends=$arg ;; *) echo "$USAGE" >&2; exit 2 ;; esac
        done
        if ! up "$DIR" "$frontends" "$ha"; then down; exit 1; fi ;;
    start-frontend) DIR="${2:?$USAGE}"; DIR=$(cd "$DIR" && pwd); start_frontend "${3:?$USAGE}" ;;
    down) DIR="${2:?$USAGE}"; down ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
