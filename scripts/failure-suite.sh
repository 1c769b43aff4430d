#!/usr/bin/env bash
# The cluster failure suite (scripts/failure_suite.py): a highly available cluster on this machine,
# one failure per scenario under load, and the oracles after each; one line per scenario and
# "N passed, N failed". Installs what it needs (etcd, Patroni, Garage, the gitstratum binary).
#
#   scripts/failure-suite.sh [--keep DIR] [SCENARIO...]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"
ensure_packages git curl patroni etcd-server
ensure_garage
if [ -z "${GITSTRATUM_BIN:-}" ] && [ ! -x "$CARGO_TARGET_DIR/debug/gitstratum" ]; then
    log "building gitstratum"
    (cd "$ROOT" && cargo build -q -p gitstratum --locked)
fi
exec python3 "$ROOT/scripts/failure_suite.py" "$@"
