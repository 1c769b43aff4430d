#!/usr/bin/env bash
# A whole GitStratum cluster on this machine, for tests, benchmarks and trying cluster mode:
# a PostgreSQL database of its own on the local server, a three-node Garage cluster
# (scripts/garage.sh), three frontends (`gitstratum serve`, cluster mode, embedded runners off)
# and one external runner.
#
#   scripts/cluster.sh up DIR [FRONTENDS]   starts it under DIR (FRONTENDS: 3 unless given) and
#                        writes DIR/cluster.json: {"frontends": [{"url", "pid", "data_dir"}],
#                        "object_nodes": [{"pid", "endpoint"}], "runners": [{"pid"}],
#                        "admin_token", "database_url"}
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

up() {
    local frontends=${2:-3}
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local bin; bin=$(binary)
    : > "$DIR/pids"

    # The database: one of its own on the local server.
    if [ -z "${GITSTRATUM_TEST_POSTGRES_URL:-}" ]; then ensure_postgres; fi
    local server_url="${GITSTRATUM_TEST_POSTGRES_URL%/*}"
    local db="gst_cluster_$(date +%s)_$$"
    psql "$GITSTRATUM_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    echo "$db" > "$DIR/database"
    local database_url="$server_url/$db"

    # The object store.
    bash "$ROOT/scripts/garage.sh" up "$DIR/garage" >&2
    local g="$DIR/garage/garage.json"

    local env_file="$DIR/env"
    cat > "$env_file" <<EOF
GITSTRATUM_CLUSTER=true
GITSTRATUM_DATABASE_URL=$database_url
GITSTRATUM_OBJECT_STORAGE_ENDPOINT=$(json_field "$g" endpoint)
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
        (set -a; . "$env_file"; set +a
         exec "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port") > "$DIR/frontend$n.log" 2>&1 &
        local pid=$!
        echo "$pid" >> "$DIR/pids"
        # The first frontend creates the admin account; the others find it.
        wait_ready "http://127.0.0.1:$port" "$pid"
        fronts_json+="${fronts_json:+, }{\"url\": \"http://127.0.0.1:$port\", \"pid\": $pid, \"data_dir\": \"$data\"}"
    done
    local admin_token; admin_token=$(cat "$DIR/frontend1/initial-admin-token")
    local first; first=$(python3 -c 'import json,sys; print(json.loads("["+sys.argv[1]+"]")[0]["url"])' "$fronts_json")

    # One external runner, polling the last frontend.
    local runner_token
    runner_token=$(curl -fsS -X POST -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
        -d '{"name": "cluster-runner", "scopes": ["ci:runner"]}' "$first/api/v1/tokens" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    local last; last=$(python3 -c 'import json,sys; print(json.loads("["+sys.argv[1]+"]")[-1]["url"])' "$fronts_json")
    mkdir -p "$DIR/runner"
    (exec "$bin" runner --server "$last" --token - --name cluster-runner --work-dir "$DIR/runner" \
        <<< "$runner_token") > "$DIR/runner.log" 2>&1 &
    local runner_pid=$!
    echo "$runner_pid" >> "$DIR/pids"

    local nodes_json
    nodes_json=$(python3 -c '
import json, sys
g = json.load(open(sys.argv[1]))
print(", ".join(json.dumps({"pid": n["pid"], "endpoint": n["s3"]}) for n in g["nodes"]))' "$g")
    cat > "$DIR/cluster.json" <<EOF
{"frontends": [$fronts_json],
 "object_nodes": [$nodes_json],
 "runners": [{"pid": $runner_pid}],
 "admin_token": "$admin_token",
 "database_url": "$database_url"}
EOF
    log "cluster up: $DIR/cluster.json"
}

down() {
    [ -d "$DIR" ] || return 0
    stop_pids "$DIR/pids"
    bash "$ROOT/scripts/garage.sh" down "$DIR/garage" || true
    if [ -f "$DIR/database" ]; then
        if [ -z "${GITSTRATUM_TEST_POSTGRES_URL:-}" ]; then ensure_postgres; fi
        psql "$GITSTRATUM_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $(cat "$DIR/database") WITH (FORCE)" >/dev/null || true
        rm -f "$DIR/database"
    fi
}

case "${1:-}" in
    up) DIR="${2:?usage: cluster.sh up DIR [FRONTENDS]}"; if ! up "$DIR" "${3:-3}"; then down; exit 1; fi ;;
    down) DIR="${2:?usage: cluster.sh down DIR}"; down ;;
    *) echo "usage: cluster.sh up DIR [FRONTENDS] | down DIR" >&2; exit 2 ;;
esac
