#!/usr/bin/env bash
# Benchmarks, built in release mode; figures go into BENCHMARKS.md.
#
#   scripts/bench.sh dispatch [flags]   coordinator dispatch: enqueue -> lease -> complete
#                                       (bench_dispatch: --jobs --graders --store --deep-queue --kill-test)
#   scripts/bench.sh grader             grader execution overhead, init time, reference ratio
#   scripts/bench.sh e2e [flags]        real processes: submit -> result latency, attempts/s
#                                       (e2e-bench: --latency-runs --students --attempts)
#   scripts/bench.sh leaderboard [flags] GET /challenges/:id with 100,000 passing attempts
#                                       (bench_leaderboard: --attempts --users --requests --store)
#   scripts/bench.sh storage [flags]    store bytes per graded attempt (bench_storage: --attempts)
#   scripts/bench.sh logins [flags]     a coordinator under a flood of bogus logins: its RSS and a
#                                       student's read latency (bench_logins: --clients --seconds
#                                       [-- coordinator flags]); runs the defaults, then without the
#                                       per-client limit when given no flags
#   scripts/bench.sh                    all three with their default sizes
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh >/dev/null
# shellcheck disable=SC1091
. "$root/.sqlarena.env"
cargo build --release --workspace --bins --examples

which="${1:-all}"
[ $# -gt 0 ] && shift
case "$which" in
    dispatch) target/release/examples/bench_dispatch "$@" ;;
    grader) target/release/grader-bench "$@" ;;
    e2e) SQLARENA_BIN_PROFILE=release target/release/e2e-bench "$@" ;;
    leaderboard) target/release/examples/bench_leaderboard "$@" ;;
    storage) target/release/examples/bench_storage "$@" ;;
    logins)
        if [ $# -gt 0 ]; then
            target/release/examples/bench_logins "$@"
        else
            target/release/examples/bench_logins --clients 300 --seconds 10
            target/release/examples/bench_logins --clients 300 --seconds 10 \
                -- --auth-client-burst 1000000 --auth-client-per-minute 1000000
        fi
        ;;
    all)
        echo "== dispatch"; target/release/examples/bench_dispatch --kill-test
        echo "== grader"; target/release/grader-bench
        echo "== e2e"; SQLARENA_BIN_PROFILE=release target/release/e2e-bench
        ;;
    *) echo "usage: scripts/bench.sh [dispatch|grader|e2e|leaderboard|storage|logins|all] [flags]" >&2; exit 2 ;;
esac
