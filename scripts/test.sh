#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, every test (the platform data-access
# suite on both SQLite and PostgreSQL), then the cluster failure suite. Installs or starts what the
# tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_packages git openssh-client bubblewrap chromium chromium-driver
ensure_nextest
ensure_schemathesis
ensure_actions_toolkit
ensure_garage
ensure_postgres
sweep_stale_test_schemas
export GITSTRATUM_TEST_POSTGRES_URL

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo nextest (PostgreSQL at ${GITSTRATUM_TEST_POSTGRES_URL#*@})"
cargo nextest run --workspace --locked --no-fail-fast
# The cluster failure suite: a highly available cluster (etcd, PostgreSQL under Patroni, Garage,
# three frontends, two runners), one failure per scenario under load, the oracles after each; on
# the binary the tests just built.
log "cluster failure suite (scripts/failure-suite.sh)"
GITSTRATUM_BIN="$CARGO_TARGET_DIR/debug/gitstratum" bash scripts/failure-suite.sh
