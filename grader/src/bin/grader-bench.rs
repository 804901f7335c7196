//! Benchmarks the grader's execution path against the local PostgreSQL.
//!
//! Creates a challenge with 3 test cases of 1,000 rows and times_to_run=5,
//! runs its init job (prints the init time), then grades 50 attempts with
//! the databases cached and prints the overhead per attempt beyond the sum
//! of the measured query times (median, p99), and the ratio reported when
//! the reference is submitted as an attempt over 20 runs.
//!
//! Run: `cargo run --release -p sqlarena-grader --bin grader-bench`
//! (`SQLARENA_TEST_POSTGRES_URL` overrides the admin URL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlarena_common::{AttemptPayload, BundleCase, ChallengeBundle, InitPayload, TestCaseData};
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
        runner_connection_limit: 8,
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
        challenge_id: 1,
        challenge_name: "bench".into(),
        version: 1,
        init: "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, category int NOT NULL, price numeric(8,2));"
            .into(),
        solution: solution.into(),
        times_to_run: TIMES_TO_RUN,
        test_cases: (1..=3).map(|id| TestCaseData { id, data: case_data(id as usize) }).collect(),
    };

    let started = Instant::now();
    let init = run_init(&sandbox, &payload, &limits, &cancel, None).await?;
    let init_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(init.errors.is_empty(), "init failed: {:?}", init.errors);
    println!("init: {init_ms:.1} ms (3 test cases x 1,000 rows, times_to_run={TIMES_TO_RUN})");

    let bundle = ChallengeBundle {
        challenge_id: 1,
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
        attempt_id: 1,
        user_id: 1,
        challenge_id: 1,
        challenge_name: "bench".into(),
        challenge_version: 1,
        version_hash: "bench-v1".into(),
        query: query.into(),
        times_to_run: TIMES_TO_RUN,
        test_case_ids: vec![1, 2, 3],
    };
    let student = attempt(
        "SELECT i.category, count(*) AS n, sum(i.price) AS total FROM items i WHERE NOT i.price <= 100 GROUP BY 1",
    );
    // The sandbox's query clock adds up every run's measured time (execute
    // + fetch, warm-ups included); the rest of an attempt's wall time is
    // the grader's own. The timed rounds alone are estimated from the
    // reported medians (times_to_run x median per side), so that figure
    // also holds the warm-ups and the spread of the timed runs.
    let mut overheads = Vec::new();
    let mut beyond_timed = Vec::new();
    let mut measured = Vec::new();
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
        let timed_ms: f64 = outcome
            .cases
            .iter()
            .map(|c| {
                anyhow::ensure!(
                    c.status == sqlarena_common::CaseStatus::Passed,
                    "attempt not graded as passed: {c:?}"
                );
                Ok(f64::from(TIMES_TO_RUN)
                    * (c.execution_ms.unwrap_or(0.0) + c.reference_ms.unwrap_or(0.0)))
            })
            .sum::<anyhow::Result<f64>>()?;
        overheads.push(wall_ms - runs_ms);
        beyond_timed.push(wall_ms - timed_ms);
        measured.push(runs_ms);
    }
    println!(
        "overhead per attempt beyond measured query time ({ATTEMPTS} attempts, 3 cases, {} runs each with warm-ups): median {:.2} ms, p99 {:.2} ms",
        2 * TIMES_TO_RUN + 2,
        median(&overheads).unwrap_or(0.0),
        percentile(&overheads, 99.0)
    );
    println!(
        "the first attempt after the bundle build: {:.2} ms",
        overheads[0]
    );
    println!(
        "measured query time per attempt (student + reference, every run): median {:.2} ms",
        median(&measured).unwrap_or(0.0)
    );
    println!(
        "wall time beyond the timed rounds only (times_to_run x median per side): median {:.2} ms, p99 {:.2} ms",
        median(&beyond_timed).unwrap_or(0.0),
        percentile(&beyond_timed, 99.0)
    );

    // Where the overhead goes: one run's wall time (execute() from the
    // caller's side) against the part it reports as measured (from sending
    // BEGIN, the query and ROLLBACK to the last row).
    let database = bundle.databases[&1].clone();
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
