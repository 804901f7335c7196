//! End-to-end benchmark: a coordinator on the embedded store and two graders
//! (`--slots 2`) as processes on the local PostgreSQL, a trivial challenge
//! with three test cases, and
//!
//! 1. submit -> final result latency, one attempt at a time (p50, p99), the
//!    client polling `GET /attempts/:id` every millisecond;
//! 2. throughput: 500 attempts from 50 students at once (each student keeps
//!    within the per-user in-flight cap, waiting out 429s), from the first
//!    submission to the last final result, and where its time went: CPU
//!    per attempt of each process and the coordinator's requests per
//!    attempt by route, and one attempt's rounds per case.
//!
//! Run with `scripts/bench.sh e2e` (release binaries) or
//! `SQLARENA_BIN_PROFILE=release cargo run --release -p sqlarena-e2e --bin e2e-bench -- [--latency-runs 200] [--students 50] [--attempts 500] [--precision-time-ms N]`
//! (the graders' `--precision-time-ms`, their default when not given).

use std::time::{Duration, Instant};

use sqlarena_e2e::bench::{
    final_attempt, flag, flags, percentile, publish_scores_challenge, submit, People, ATTEMPT,
};
use sqlarena_e2e::cost::CostSample;
use sqlarena_e2e::demo::DemoCluster;
use sqlarena_e2e::harness::Api;

const TIMES_TO_RUN: u32 = 3;

#[tokio::main]
async fn main() {
    let flags = flags(&[
        "--latency-runs",
        "--students",
        "--attempts",
        "--precision-time-ms",
    ]);
    let latency_runs: usize = flag(&flags, "--latency-runs", 200);
    let attempts: usize = flag(&flags, "--attempts", 500);
    let mut grader_flags = vec!["--slots", "2"];
    let precision = flags.get("--precision-time-ms");
    if let Some(precision) = precision {
        grader_flags.extend(["--precision-time-ms", precision.as_str()]);
    }
    let cluster = DemoCluster::start_with("bench", &[], 2, &grader_flags).await;
    let api = Api::new(cluster.coordinator.url());
    let people = People::sign_up(&api, flag(&flags, "--students", 50)).await;
    let students = people.students;
    let challenge_id = publish_scores_challenge(
        &people.professor,
        "bench",
        20,
        &[7, 11, 13],
        TIMES_TO_RUN,
        Duration::from_secs(60),
    )
    .await;
    // Both graders build the challenge's databases on first use: warm them.
    for student in students.iter().take(4) {
        let (id, _) = submit(student, challenge_id, ATTEMPT).await;
        final_attempt(student, id, Duration::from_millis(5)).await;
    }

    println!(
        "two graders (--slots 2, --precision-time-ms {}), embedded store (sqlite, synchronous=normal), 3 test cases of 20 rows, times_to_run={TIMES_TO_RUN}",
        precision.map_or("default", String::as_str)
    );
    let mut latencies = Vec::new();
    let mut last_graded = 0;
    for run in 0..latency_runs.max(1) {
        let student = &students[run % students.len()];
        let (id, sent) = submit(student, challenge_id, ATTEMPT).await;
        last_graded = id;
        let attempt = final_attempt(student, id, Duration::from_millis(1)).await;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(attempt["status"], "PASSED", "{attempt}");
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "submit -> final result, {} sequential attempts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );

    let (_, graded) = people
        .professor
        .get(&format!("/attempts/{last_graded}"))
        .await;
    let rounds: Vec<u64> = graded["data"]["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|case| case["audit"]["rounds"].as_u64().unwrap_or(0))
        .collect();
    println!(
        "one attempt's rounds per case {rounds:?}: {} query runs with the warm-ups",
        rounds.iter().map(|rounds| 2 * (rounds + 1)).sum::<u64>()
    );

    let per_student = attempts.div_ceil(students.len());
    let cost_before = CostSample::take(&cluster).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for student in students.clone() {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..per_student {
                ids.push(submit(&student, challenge_id, ATTEMPT).await.0);
            }
            let mut passed = 0;
            for id in ids {
                let attempt = final_attempt(&student, id, Duration::from_millis(20)).await;
                passed += usize::from(attempt["status"] == "PASSED");
            }
            passed
        }));
    }
    let mut passed = 0;
    for task in tasks {
        passed += task.await.expect("student task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = per_student * students.len();
    CostSample::take(&cluster)
        .await
        .print_since(&cost_before, total);
    assert_eq!(passed, total, "every attempt passes");
    println!(
        "{total} attempts from {} students: {:.1} s, {:.1} attempts graded/s",
        students.len(),
        elapsed,
        total as f64 / elapsed
    );
    cluster.stop().await;
}
