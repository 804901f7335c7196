#!/usr/bin/env bash
# Benchmarks, built in release mode; figures go into BENCHMARKS.md.
#
#   scripts/bench.sh dispatch [flags]   coordinator dispatch: enqueue -> lease -> complete
#                                       (bench_dispatch: --jobs --graders --store --deep-queue --kill-test)
#   scripts/bench.sh grader             grader execution overhead, init time, reference ratio
#   scripts/bench.sh e2e [flags]        real processes: submit -> result latency, attempts/s
#                                       (e2e-bench: --latency-runs --students --attempts)
#   scripts/bench.sh cluster [flags]    challenge affinity on and off: 8 graders x 1 slot, 40 challenges,
#                                       2,000 Zipf-popular attempts from 100 students; bundle builds,
#                                       submit -> graded p50/p99, attempts/s (cluster-bench: --graders
#                                       --challenges --rows --attempts --students --zipf-s
#                                       --times-to-run --wait-ms --max-reorder-ms --modes)
#   scripts/bench.sh drain [flags]      a 10,000-item grading run draining through two real graders:
#                                       a live attempt's submit -> graded p50/p99 idle and meanwhile
#                                       (run-drain-bench: --students --live --precision-time-ms)
#   scripts/bench.sh leaderboard [flags] GET /challenges/:id with 100,000 passing attempts
#                                       (bench_leaderboard: --attempts --users --requests --store)
#   scripts/bench.sh assessments [flags] 1,000 sessions started, then GET /assessments/:id/scores
#                                       for them (bench_assessments: --students --concurrency
#                                       --requests --store)
#   scripts/bench.sh storage [flags]    store bytes per graded attempt (bench_storage: --attempts)
#   scripts/bench.sh console [flags]    the web console's list pages and overview with 1,000,000 jobs
#                                       and 100,000 attempts: p50/p95 per page against its target
#                                       (bench_console: --jobs --attempts --requests --store)
#   scripts/bench.sh logins [flags]     a coordinator under a flood of bogus logins: its RSS and a
#                                       student's read latency (bench_logins: --clients --seconds
#                                       [-- coordinator flags]); runs the defaults, then without the
#                                       per-client limit when given no flags
#   scripts/bench.sh ops [flags]        runs and exports against a real coordinator: an export of
#                                       1,000,000 attempts (rows/s, peak RSS), a 10,000-item run
#                                       created, GET /runs/:id at 100,000 items (bench_ops:
#                                       --attempts --students --run-items --requests)
#   scripts/bench.sh peers [N]          the dispatch workload (N no-op jobs, default 20,000; K=8
#                                       simulated graders) through bench_dispatch and through
#                                       Celery 5 + a private Redis (scripts/celery_peer.py, two
#                                       prefork workers, acks_late), one after the other; prints
#                                       both and their ratio
#   scripts/bench.sh                    all three with their default sizes
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh >/dev/null
# shellcheck disable=SC1091
. "$root/.sqlarena.env"
which="${1:-all}"
[ $# -gt 0 ] && shift
if [ "$which" = peers ]; then
    # Celery's side: Redis (Debian package) and celery[redis] (PyPI, .venv).
    if ! command -v redis-server >/dev/null; then
        echo "bench: redis-server is missing: installing it with apt-get"
        if [ "$(id -u)" = 0 ]; then sudo=""; else sudo=sudo; fi
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
        # The package's own service is not used: the benchmark starts a private one.
        $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -c 'import celery, redis' 2>/dev/null \
        || .venv/bin/pip install -q 'celery[redis]>=5,<6'
    cargo build --release -p sqlarena-coordinator --example bench_dispatch
else
    cargo build --release --workspace --bins --examples
fi

case "$which" in
    dispatch) target/release/examples/bench_dispatch "$@" ;;
    grader) target/release/grader-bench "$@" ;;
    e2e) SQLARENA_BIN_PROFILE=release target/release/e2e-bench "$@" ;;
    cluster) SQLARENA_BIN_PROFILE=release target/release/cluster-bench "$@" ;;
    drain) SQLARENA_BIN_PROFILE=release target/release/run-drain-bench "$@" ;;
    leaderboard) target/release/examples/bench_leaderboard "$@" ;;
    assessments) target/release/examples/bench_assessments "$@" ;;
    storage) target/release/examples/bench_storage "$@" ;;
    console) target/release/examples/bench_console "$@" ;;
    ops) target/release/examples/bench_ops "$@" ;;
    logins)
        if [ $# -gt 0 ]; then
            target/release/examples/bench_logins "$@"
        else
            target/release/examples/bench_logins --clients 300 --seconds 10
            target/release/examples/bench_logins --clients 300 --seconds 10 \
                -- --auth-client-burst 1000000 --auth-client-per-minute 1000000
        fi
        ;;
    peers)
        jobs="${1:-20000}"
        # Four slots per simulated grader, leased in one request, as the
        # grader daemon does (Celery's workers prefetch likewise).
        echo "== sqlarena: bench_dispatch --jobs $jobs --graders 8 --slots 4"
        output=$(target/release/examples/bench_dispatch --jobs "$jobs" --graders 8 --slots 4)
        echo "$output"
        sqlarena=$(grep '^throughput:' <<<"$output")
        echo "== Celery 5 + Redis: scripts/celery_peer.py --jobs $jobs"
        output=$(.venv/bin/python scripts/celery_peer.py --jobs "$jobs")
        echo "$output"
        celery=$(grep '^celery throughput:' <<<"$output")
        # "... = R jobs/s; CPU C us/job ..." from each.
        rate() { sed -E 's/.* = ([0-9.]+) jobs\/s.*/\1/' <<<"$1"; }
        cpu() { sed -E 's/.*CPU ([0-9.]+) us\/job.*/\1/' <<<"$1"; }
        awk -v sr="$(rate "$sqlarena")" -v sc="$(cpu "$sqlarena")" \
            -v cr="$(rate "$celery")" -v cc="$(cpu "$celery")" -v n="$jobs" 'BEGIN {
            printf "N=%d no-op jobs  | jobs/s | CPU per job\n", n
            printf "sqlarena (K=8)   | %6.0f | %7.1f us\n", sr, sc
            printf "Celery + Redis   | %6.0f | %7.1f us\n", cr, cc
            printf "ratio sqlarena/Celery: %.2fx the throughput, %.2fx less CPU per job\n", sr / cr, cc / sc
        }'
        ;;
    all)
        echo "== dispatch"; target/release/examples/bench_dispatch --kill-test
        echo "== grader"; target/release/grader-bench
        echo "== e2e"; SQLARENA_BIN_PROFILE=release target/release/e2e-bench
        ;;
    *) echo "usage: scripts/bench.sh [dispatch|grader|e2e|cluster|leaderboard|assessments|storage|console|logins|ops|peers|all] [flags]" >&2; exit 2 ;;
esac
