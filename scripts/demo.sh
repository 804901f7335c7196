#!/usr/bin/env bash
# The demo: installs what is missing (scripts/setup.sh), builds, starts a
# coordinator on the embedded store and two graders, creates an admin, a
# professor and three students, publishes a sample challenge (three test
# cases, one hidden), submits correct, wrong, slow and hostile attempts,
# prints each attempt's results and the leaderboard, then stops everything.
# With --keep the cluster stays up (Ctrl-C stops it) and the demo prints how to
# sign in with the sqlarena CLI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
# shellcheck disable=SC1091
. "$root/.sqlarena.env"
# The same targets as scripts/test.sh, so running one after the other builds once.
cargo build --workspace --all-targets
SQLARENA_TEST_POSTGRES_URL="$SQLARENA_TEST_POSTGRES_URL" target/debug/demo "$@"
