#!/usr/bin/env bash
# Builds GitStratum and starts the server on the embedded defaults (http://127.0.0.1:3000, data in
# ./gitstratum-data). Arguments are passed to `gitstratum serve`, e.g. ./scripts/run.sh --listen 0.0.0.0:3000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
# The embedded CI runner checks out with git and runs steps in a bubblewrap sandbox.
ensure_packages git bubblewrap
log "building (release; the first build compiles RocksDB and takes a long while, later ones are quick)"
cargo build --release --locked --bin gitstratum
exec "$CARGO_TARGET_DIR/release/gitstratum" serve "$@"
