# Shared helpers for the project's scripts. Source it; do not run it.
# Everything a build or test needs is installed or started here, so a fresh Debian machine with
# only Rust and git gets there in one command.

: "${CARGO_TARGET_DIR:=$HOME/.cache/gitstratum-target}"
export CARGO_TARGET_DIR

log() { printf '==> %s\n' "$*" >&2; }

# free_port: a TCP port free on loopback right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_pids FILE [TENTHS]: stops the processes whose ids FILE lists (TERM, up to TENTHS tenths of
# a second, 100 unless given, then KILL) and removes FILE.
stop_pids() {
    local file=$1 tenths=${2:-100} pid
    [ -f "$file" ] || return 0
    while read -r pid; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done < "$file"
    for _ in $(seq 1 "$tenths"); do
        local alive=0
        while read -r pid; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done < "$file"
        [ $alive = 0 ] && break
        sleep 0.1
    done
    while read -r pid; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done < "$file"
    rm -f "$file"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1
    fi
}

APT_UPDATED=
# ensure_packages PKG... : installs the Debian packages that are not installed yet.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build prerequisites: C and C++ compilers (the bundled SQLite is C, RocksDB is C++) and libclang
# (RocksDB's bindings are generated at build time).
ensure_build_deps() {
    local wanted=(libclang-dev)
    command -v cc >/dev/null || wanted+=(gcc libc6-dev)
    command -v c++ >/dev/null || wanted+=(g++)
    ensure_packages "${wanted[@]}"
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

# ensure_postgres: a PostgreSQL server on 127.0.0.1:5432 and, in GITSTRATUM_TEST_POSTGRES_URL, a URL
# of a database the tests may create schemas in. Uses the running server if there is one,
# else starts the installed cluster, else installs PostgreSQL from Debian's packages.
ensure_postgres() {
    if [ -n "${GITSTRATUM_TEST_POSTGRES_URL:-}" ]; then return 0; fi
    if ! pg_ready; then
        if ! command -v pg_ctlcluster >/dev/null; then
            ensure_packages postgresql
        fi
        local version
        version=$(ls /etc/postgresql | sort -n | tail -1)
        log "starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
        pg_ready || { log "PostgreSQL did not come up on 127.0.0.1:5432"; return 1; }
    fi
    local trust_url="postgres://postgres@127.0.0.1:5432/test"
    if psql "$trust_url" -Atqc 'select 1' >/dev/null 2>&1; then
        export GITSTRATUM_TEST_POSTGRES_URL="$trust_url"
        return 0
    fi
    # A stock Debian server wants a password over TCP: give the tests a role and a database of their own.
    log "creating the gitstratum_test role and database"
    as_root su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gitstratum_test') THEN
    CREATE ROLE gitstratum_test LOGIN PASSWORD 'gitstratum_test';
  END IF;
END $$;
SELECT 'CREATE DATABASE gitstratum_test OWNER gitstratum_test'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'gitstratum_test')\gexec
SQL
    export GITSTRATUM_TEST_POSTGRES_URL="postgres://gitstratum_test:gitstratum_test@127.0.0.1:5432/gitstratum_test"
}

# Drops test schemas left behind by failed runs more than an hour ago.
sweep_stale_test_schemas() {
    command -v psql >/dev/null || return 0
    local cutoff=$(( $(date +%s) - 3600 ))
    psql "$GITSTRATUM_TEST_POSTGRES_URL" -Atq -c "
        SELECT format('DROP SCHEMA %I CASCADE;', nspname) FROM pg_namespace
        WHERE nspname ~ '^gst_test_[0-9]+_' AND split_part(nspname, '_', 3)::bigint < $cutoff" 2>/dev/null \
        | psql "$GITSTRATUM_TEST_POSTGRES_URL" -q >/dev/null 2>&1 || true
}

# ensure_schemathesis: the OpenAPI fuzzer the API test runs, pinned, in a virtualenv under
# ~/.cache (from PyPI); its `st` in GITSTRATUM_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local venv="$HOME/.cache/gitstratum-schemathesis"
    if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
        python3 -m venv "$venv" 2>/dev/null || { ensure_packages python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
        "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    export GITSTRATUM_SCHEMATHESIS="$venv/bin/st"
}

# ensure_actions_toolkit: GitHub's JavaScript actions toolkit (@actions/core) and esbuild, pinned,
# under ~/.cache (from npm), so a test can bundle an action exactly as published actions are.
ACTIONS_CORE_VERSION=1.11.1
ESBUILD_VERSION=0.24.2
ensure_actions_toolkit() {
    local dir="$HOME/.cache/gitstratum-actions-toolkit"
    if ! grep -qs "\"version\": \"$ACTIONS_CORE_VERSION\"" "$dir/node_modules/@actions/core/package.json" \
        || ! [ -x "$dir/node_modules/.bin/esbuild" ]; then
        command -v npm >/dev/null 2>&1 || ensure_packages npm
        log "installing @actions/core $ACTIONS_CORE_VERSION and esbuild $ESBUILD_VERSION into $dir"
        mkdir -p "$dir"
        echo '{"name": "gitstratum-actions-toolkit", "private": true}' > "$dir/package.json"
        (cd "$dir" && npm install --no-audit --no-fund --silent \
            "@actions/core@$ACTIONS_CORE_VERSION" "esbuild@$ESBUILD_VERSION")
    fi
    export GITSTRATUM_ACTIONS_TOOLKIT="$dir"
}

ensure_nextest() {
    cargo nextest --version >/dev/null 2>&1 && return 0
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
}

# Garage (S3-compatible object storage), built once from crates.io into ~/.cache: the object
# storage tests start three-node clusters of it (scripts/garage.sh). AGPL: run as a separate
# process only.
ensure_garage() {
    bash "$(dirname "${BASH_SOURCE[0]}")/garage.sh" build
}
