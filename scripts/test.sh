#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test, with the platform data-access
# suite on both SQLite and PostgreSQL. Installs or starts what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_packages git bubblewrap chromium chromium-driver
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
