//! Benchmarks the grader's execution path against the local PostgreSQL.
//!
//! Creates a challenge with 3 test cases of 1,000 rows and times_to_run=5,
//! runs its init job (prints the init time), then grades 50 attempts with
//! the databases cached and prints the overhead per attempt beyond the sum
//! of the measured query times (median, p99), and the ratio reported when
//! the reference is submitted as an attempt over 20 runs.
//!
//! Then it grades decoded-size bombs at the grader's default caps (16 MiB
//! per result, 1 MiB per value) and prints the process's peak RSS.
//!
//! With `--load`, it then measures timing under load: two CPU burners run
//! beside two graders (concurrent tasks) that each grade 15 submissions of
//! the reference and 15 of a fixed slower query, and it prints the spread
//! of their ratios (p10, p50, p90) as graded now (two connections, stalled
//! rounds discarded, rounds until the 95 % interval is within 5 %) and as
//! graded before (one connection, median of `times_to_run` ratios), both in
//! the same run.
//!
//! Run: `cargo run --release -p sqlarena-grader --bin grader-bench [-- --load]`
//! (`SQLARENA_TEST_POSTGRES_URL` overrides the admin URL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlarena_common::{
    AttemptId, AttemptPayload, BundleCase, ChallengeBundle, ChallengeId, InitPayload, TestCaseData,
    TestCaseId, UserId,
};
use sqlarena_grader::run::{run_attempt, run_init};
use sqlarena_grader::sandbox::{Limits, Sandbox, SandboxConfig, SessionKind};
use sqlarena_grader::timing::median;
use tokio_util::sync::CancellationToken;

const ATTEMPTS: usize = 50;
const REFERENCE_RUNS: usize = 20;
const TIMES_TO_RUN: u32 = 5;
const RUN_SAMPLES: usize = 500;

/// One test case's INSERT of 1,000 rows.
fn case_data(seed: usize) -> String {
    let rows: Vec<String> = (1..=1000)
        .map(|i| {
            format!(
                "({i}, 'item {i}', {}, {}.{:02})",
                (i * 31 + seed) % 97,
                (i * 17 + seed) % 500,
                i % 100
            )
        })
        .collect();
    format!(
        "INSERT INTO items (id, name, category, price) VALUES {};",
        rows.join(", ")
    )
}

/// Returns the p-th percentile (0..=100) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin_url = std::env::var("SQLARENA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sandbox = Sandbox::start(&SandboxConfig {
        admin_url: admin_url.clone(),
        prefix: "sqlarena_bench".into(),
        runner_connection_limit: 32,
        runner_statement_timeout: Duration::from_secs(10),
        init_timeout: Duration::from_secs(10),
        max_database_bytes: 256 << 20,
        cache_size: 4,
    })
    .await
    .context("starting the sandbox (is PostgreSQL running? see scripts/setup.sh)")?;
    let limits = Limits::new(Duration::from_secs(5), 100_000, 16 << 20);
    let cancel = CancellationToken::new();
    let solution = "SELECT category, count(*) AS n, sum(price) AS total FROM items WHERE price > 100 GROUP BY category";
    let payload = InitPayload {
        challenge_id: ChallengeId(1),
        challenge_name: "bench".into(),
        version: 1,
        init: "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, category int NOT NULL, price numeric(8,2));"
            .into(),
        solution: solution.into(),
        times_to_run: TIMES_TO_RUN,
        test_cases: (1..=3).map(|id| TestCaseData { id: TestCaseId(id), data: case_data(id as usize) }).collect(),
    };

    let started = Instant::now();
    let init = run_init(&sandbox, &payload, &limits, &cancel, None).await?;
    let init_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(init.errors.is_empty(), "init failed: {:?}", init.errors);
    println!("init: {init_ms:.1} ms (3 test cases x 1,000 rows, times_to_run={TIMES_TO_RUN})");

    let bundle = ChallengeBundle {
        challenge_id: ChallengeId(1),
        version: 1,
        version_hash: "bench-v1".into(),
        init: payload.init.clone(),
        solution: solution.into(),
        times_to_run: TIMES_TO_RUN,
        test_cases: init
            .expected
            .iter()
            .map(|e| BundleCase {
                id: e.test_case_id,
                data: payload
                    .test_cases
                    .iter()
                    .find(|c| c.id == e.test_case_id)
                    .unwrap()
                    .data
                    .clone(),
                expected: Some(e.result.clone()),
            })
            .collect(),
    };
    let started = Instant::now();
    let bundle = sandbox.install_bundle(bundle, &cancel).await?;
    println!(
        "bundle build (first attempt on a fresh grader): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let attempt = |query: &str| AttemptPayload {
        attempt_id: AttemptId(1),
        user_id: UserId(1),
        challenge_id: ChallengeId(1),
        challenge_name: "bench".into(),
        challenge_version: 1,
        version_hash: "bench-v1".into(),
        query: query.into(),
        times_to_run: TIMES_TO_RUN,
        test_case_ids: vec![TestCaseId(1), TestCaseId(2), TestCaseId(3)],
        run_item: None,
    };
    let student = attempt(
        "SELECT i.category, count(*) AS n, sum(i.price) AS total FROM items i WHERE NOT i.price <= 100 GROUP BY 1",
    );
    // The sandbox's query clock adds up every run's measured time (execute
    // + fetch, warm-ups included); the rest of an attempt's wall time is
    // the grader's own. The timed rounds alone are estimated from the
    // reported medians (times_to_run x median per side), so that figure
    // also holds the warm-ups and the spread of the timed runs.
    for (label, limits) in [
        ("rounds until the ratio is precise (the default)", limits),
        (
            "times_to_run rounds only (--precision-time-ms 0)",
            limits.with_precision_time(Duration::ZERO),
        ),
    ] {
        let mut overheads = Vec::new();
        let mut measured = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..ATTEMPTS {
            let clock = sandbox.query_time();
            let started = Instant::now();
            let outcome = run_attempt(
                &sandbox,
                &student,
                Arc::clone(&bundle),
                &limits,
                &cancel,
                None,
                None,
            )
            .await?;
            let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
            let runs_ms = (sandbox.query_time() - clock).as_secs_f64() * 1000.0;
            let mut attempt_runs = 0.0;
            for case in &outcome.cases {
                anyhow::ensure!(
                    case.status == sqlarena_common::CaseStatus::Passed,
                    "attempt not graded as passed: {case:?}"
                );
                attempt_runs += 2.0 + 2.0 * f64::from(case.timing.map_or(0, |t| t.rounds));
            }
            overheads.push(wall_ms - runs_ms);
            measured.push(runs_ms);
            runs.push(attempt_runs);
        }
        let per_run: Vec<f64> = overheads.iter().zip(&runs).map(|(o, r)| o / r).collect();
        println!(
            "{label}: overhead per attempt beyond measured query time ({ATTEMPTS} attempts, 3 cases): \
             median {:.2} ms, p99 {:.2} ms; runs per attempt median {:.0} (warm-ups included); \
             overhead per run median {:.4} ms; measured query time per attempt median {:.2} ms",
            median(&overheads).unwrap_or(0.0),
            percentile(&overheads, 99.0),
            median(&runs).unwrap_or(0.0),
            median(&per_run).unwrap_or(0.0),
            median(&measured).unwrap_or(0.0),
        );
    }

    // Where the overhead goes: one run's wall time (execute() from the
    // caller's side) against the part it reports as measured (from sending
    // BEGIN, the query and ROLLBACK to the last row).
    let database = bundle.databases[&TestCaseId(1)].clone();
    let mut session = sandbox
        .runner_session(&database, SessionKind::Reference)
        .await?;
    let prepared = session.prepare(solution).await?;
    let (mut wall, mut timed) = (Vec::new(), Vec::new());
    for _ in 0..RUN_SAMPLES {
        let started = Instant::now();
        let execution = session.execute(&prepared, &limits, false, &cancel).await?;
        wall.push(started.elapsed().as_secs_f64() * 1000.0);
        timed.push(execution.elapsed.as_secs_f64() * 1000.0);
    }
    let started = Instant::now();
    for _ in 0..RUN_SAMPLES {
        session.prepare(solution).await?;
    }
    let prepare_ms = started.elapsed().as_secs_f64() * 1000.0 / RUN_SAMPLES as f64;
    drop(session);
    println!(
        "one run of the reference ({RUN_SAMPLES} runs): wall median {:.3} ms, measured median {:.3} ms, \
         untimed part median {:.3} ms; one prepare {:.3} ms",
        median(&wall).unwrap_or(0.0),
        median(&timed).unwrap_or(0.0),
        median(&wall.iter().zip(&timed).map(|(w, t)| w - t).collect::<Vec<_>>()).unwrap_or(0.0),
        prepare_ms
    );

    let reference = attempt(solution);
    let mut ratios = Vec::new();
    for _ in 0..REFERENCE_RUNS {
        let outcome = run_attempt(
            &sandbox,
            &reference,
            Arc::clone(&bundle),
            &limits,
            &cancel,
            None,
            None,
        )
        .await?;
        ratios.extend(outcome.cases.iter().filter_map(|c| c.ratio));
    }
    println!(
        "reference as attempt ({REFERENCE_RUNS} runs x 3 cases): ratio min {:.3}, median {:.3}, max {:.3}",
        percentile(&ratios, 0.0),
        median(&ratios).unwrap_or(0.0),
        percentile(&ratios, 100.0)
    );
    decoded_bombs(&sandbox, &bundle, &attempt).await?;
    if std::env::args().any(|arg| arg == "--load") {
        timing_under_load(&sandbox, &bundle, &limits, solution, &attempt).await?;
    }
    drop(bundle);
    sandbox.shutdown().await;
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS sqlarena_bench_owners; DROP ROLE IF EXISTS sqlarena_bench_runner",
        )
        .await?;
    Ok(())
}

/// Submissions per grader and kind in the load test.
const LOAD_SUBMISSIONS: usize = 15;

/// A query that returns the reference's result about five times slower
/// (it sorts the rows by a hash first).
const SLOW_QUERY: &str = "SELECT i.category, count(*) AS n, sum(i.price) AS total \
     FROM (SELECT * FROM items ORDER BY md5(name || md5(name))) i WHERE i.price > 100 GROUP BY 1";

/// Grades the reference and a slower query on two concurrent graders
/// beside two CPU burners; prints the ratios' spread, now and before.
async fn timing_under_load(
    sandbox: &Sandbox,
    bundle: &Arc<sqlarena_grader::sandbox::CachedBundle>,
    limits: &Limits,
    solution: &str,
    attempt: &dyn Fn(&str) -> AttemptPayload,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let cancel = CancellationToken::new();
    let grader = |_: usize| async {
        let mut now = (Vec::new(), Vec::new());
        let mut before = (Vec::new(), Vec::new());
        for _ in 0..LOAD_SUBMISSIONS {
            for (query, slow) in [(solution, false), (SLOW_QUERY, true)] {
                let outcome = run_attempt(
                    sandbox,
                    &attempt(query),
                    Arc::clone(bundle),
                    limits,
                    &cancel,
                    None,
                    None,
                )
                .await?;
                let ratios = outcome.cases.iter().filter_map(|c| c.ratio);
                let old = old_ratios(sandbox, bundle, query, solution, limits, &cancel).await?;
                if slow {
                    now.1.extend(ratios);
                    before.1.extend(old);
                } else {
                    now.0.extend(ratios);
                    before.0.extend(old);
                }
            }
        }
        anyhow::Ok((now, before))
    };
    let (first, second) = tokio::join!(grader(0), grader(1));
    stop.store(true, Ordering::Relaxed);
    for burner in burners {
        let _ = burner.join();
    }
    let (mut first, second) = (first?, second?);
    first.0 .0.extend(second.0 .0);
    first.0 .1.extend(second.0 .1);
    first.1 .0.extend(second.1 .0);
    first.1 .1.extend(second.1 .1);
    let spread = |label: &str, values: &[f64]| {
        let (p10, p50, p90) = (
            percentile(values, 10.0),
            percentile(values, 50.0),
            percentile(values, 90.0),
        );
        println!(
            "  {label}: p10 {p10:.3}, median {p50:.3}, p90 {p90:.3}, p90/p10 {:.3} ({} cases)",
            p90 / p10,
            values.len()
        );
    };
    println!("timing under load (2 CPU burners, 2 graders, {LOAD_SUBMISSIONS} submissions each of the reference and a slower query, 3 cases each):");
    println!(" now (two connections, stalled rounds discarded, rounds until the 95% interval is within 5%):");
    spread("reference as attempt", &first.0 .0);
    spread("slower query", &first.0 .1);
    println!(" before (one connection, median of times_to_run={TIMES_TO_RUN} ratios):");
    spread("reference as attempt", &first.1 .0);
    spread("slower query", &first.1 .1);
    Ok(())
}

/// The ratios of `query` as grading timed them before: the reference
/// prepared on the student's own connection, one warm-up each, then
/// `times_to_run` alternating rounds, the median of the pairwise ratios.
async fn old_ratios(
    sandbox: &Sandbox,
    bundle: &sqlarena_grader::sandbox::CachedBundle,
    query: &str,
    solution: &str,
    limits: &Limits,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    let mut ratios = Vec::new();
    for database in bundle.databases.values() {
        let mut session = sandbox.connect_runner(database).await?;
        let student = session.prepare(query).await?;
        let reference = session.prepare(solution).await?;
        session.execute(&student, limits, false, cancel).await?;
        session.execute(&reference, limits, false, cancel).await?;
        let mut pairs = Vec::new();
        for _ in 0..TIMES_TO_RUN {
            let s = session
                .execute(&student, limits, false, cancel)
                .await?
                .elapsed;
            let r = session
                .execute(&reference, limits, false, cancel)
                .await?
                .elapsed;
            pairs.push(s.as_secs_f64() / r.as_secs_f64().max(1e-9));
        }
        ratios.push(median(&pairs).unwrap_or(0.0));
    }
    Ok(ratios)
}

/// The process's peak resident set size, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Grades queries that are small on the wire and huge once decoded (and one
/// huge value), two at a time as two slots would, and prints the peak RSS.
async fn decoded_bombs(
    sandbox: &Sandbox,
    bundle: &Arc<sqlarena_grader::sandbox::CachedBundle>,
    attempt: &dyn Fn(&str) -> AttemptPayload,
) -> anyhow::Result<()> {
    let limits = Limits::new(Duration::from_secs(10), 100_000, 16 << 20);
    let cancel = CancellationToken::new();
    let before = peak_rss_mib();
    let started = Instant::now();
    let bombs = [
        "SELECT 9e131071::numeric AS n FROM generate_series(1, 2000)",
        "SELECT repeat('x', 200000000) AS huge",
        "SELECT decode(repeat('ab', 4000000), 'hex') AS bytes FROM generate_series(1, 3)",
        "SELECT string_agg(repeat('y', 1000), ',') AS agg FROM generate_series(1, 15000)",
    ];
    for pair in bombs.chunks(2) {
        let payloads: Vec<AttemptPayload> = pair.iter().map(|query| attempt(query)).collect();
        let graded = futures_util::future::join_all(payloads.iter().map(|payload| {
            run_attempt(
                sandbox,
                payload,
                Arc::clone(bundle),
                &limits,
                &cancel,
                None,
                None,
            )
        }))
        .await;
        for (query, outcome) in pair.iter().zip(graded) {
            let outcome = outcome?;
            let error = outcome.cases[0].error.clone().unwrap_or_default();
            println!("  bomb {query:?}: {}", error);
        }
    }
    println!(
        "decoded-size bombs ({} queries, two at a time, 3 cases each): peak RSS {before:.0} MiB before, {:.0} MiB after, {:.1} s",
        bombs.len(),
        peak_rss_mib(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
