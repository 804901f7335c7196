#!/usr/bin/env bash
# Runs every test: installs and starts what the tests need (scripts/setup.sh),
# then the whole workspace's tests against real PostgreSQL, the embedded
# store and the MongoDB wire-protocol test server.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
# shellcheck disable=SC1091
. "$root/.sqlarena.env"
# Drift fails CI instead of piling up: formatting and lints first.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# --all-targets resolves features as `cargo test` does, so the binaries the
# end-to-end tests start are built once.
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads=4 "$@"
