//! End-to-end benchmark: a coordinator on the embedded store and two graders
//! (`--slots 2`) as processes on the local PostgreSQL, a trivial challenge
//! with three test cases, and
//!
//! 1. submit -> final result latency, one attempt at a time (p50, p99), the
//!    client polling `GET /attempts/:id` every millisecond;
//! 2. throughput: 500 attempts from 50 students at once (each student keeps
//!    within the per-user in-flight cap, waiting out 429s), from the first
//!    submission to the last final result.
//!
//! Around the throughput part it reads the CPU time spent by the
//! coordinator, the graders, the PostgreSQL backends of the graders'
//! runner role, and this client, and one graded attempt's audit (the
//! rounds each case ran), so each attempt's cost can be broken down.
//!
//! Run with `scripts/bench.sh e2e` (release binaries) or
//! `SQLARENA_BIN_PROFILE=release cargo run --release -p sqlarena-e2e --bin e2e-bench -- [--latency-runs 200] [--students 50] [--attempts 500]`.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use serde_json::{json, Value};
use sqlarena_e2e::demo::{eventually, register, DemoCluster};
use sqlarena_e2e::harness::{postgres_url, Api};

/// The trivial challenge: a small table per case, the reference sorts it.
const INIT: &str =
    "CREATE TABLE scores (id int PRIMARY KEY, player text NOT NULL, points int NOT NULL);";
const SOLUTION: &str =
    "SELECT player, points FROM scores WHERE points > 10 ORDER BY points DESC, player";
const ATTEMPT: &str =
    "SELECT player, points FROM scores WHERE NOT points <= 10 ORDER BY points DESC, player";
const TIMES_TO_RUN: u32 = 3;

struct Options {
    latency_runs: usize,
    students: usize,
    attempts: usize,
}

fn options() -> Options {
    let mut options = Options {
        latency_runs: 200,
        students: 50,
        attempts: 500,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = || {
            pair.get(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", pair[0]))
        };
        match pair[0].as_str() {
            "--latency-runs" => options.latency_runs = value(),
            "--students" => options.students = value(),
            "--attempts" => options.attempts = value(),
            other => {
                panic!("unknown flag {other}; flags: --latency-runs N --students N --attempts N")
            }
        }
    }
    options
}

fn case_data(seed: usize) -> String {
    format!(
        "INSERT INTO scores SELECT g, 'player ' || g, (g * {seed}) % 50 FROM generate_series(1, 20) g;"
    )
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Submits `query`, retrying while the per-user cap answers 429; returns the
/// attempt id and when the accepted submission was sent.
async fn submit(student: &Api, challenge_id: i64, query: &str) -> (i64, Instant) {
    loop {
        let sent = Instant::now();
        let (status, reply) = student
            .post(
                "/attempts",
                json!({"challenge_id": challenge_id, "query": query}),
            )
            .await;
        match status {
            201 => return (reply["data"]["id"].as_i64().expect("attempt id"), sent),
            429 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("submission refused with {status}: {reply}"),
        }
    }
}

/// The id of a student's latest attempt on the challenge.
async fn latest_attempt(student: &Api, challenge_id: i64) -> i64 {
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge_id, "query": ATTEMPT}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["data"]["id"].as_i64().expect("attempt id");
    final_attempt(student, id, Duration::from_millis(5)).await;
    id
}

/// Polls an attempt every `every` until it is final; returns it.
async fn final_attempt(viewer: &Api, attempt_id: i64, every: Duration) -> Value {
    loop {
        let (status, reply) = viewer.get(&format!("/attempts/{attempt_id}")).await;
        assert_eq!(status, 200, "{reply}");
        match reply["data"]["status"].as_str() {
            Some("PENDING" | "RUNNING") => tokio::time::sleep(every).await,
            Some(_) => return reply["data"].clone(),
            None => panic!("attempt {attempt_id} without a status: {reply}"),
        }
    }
}

/// CPU seconds (user + system) a process has used, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of each PostgreSQL backend logged in as one of the bench
/// graders' roles (their runners), by pid.
async fn backend_cpu() -> HashMap<u32, f64> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename LIKE 'sqlarena_bench_grader_%'",
            &[],
        )
        .await
        .expect("list the graders' backends");
    rows.iter()
        .map(|row| {
            let pid = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
            (pid, cpu_seconds(pid))
        })
        .collect()
}

/// CPU seconds of the processes that grade: coordinator, graders, this
/// client, and the graders' PostgreSQL backends.
struct CpuSample {
    coordinator: f64,
    graders: f64,
    client: f64,
    backends: HashMap<u32, f64>,
    machine_busy: f64,
}

/// Busy CPU seconds of the whole machine (every core), from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (ticks.iter().take(8).sum::<f64>() - idle) / 100.0
}

async fn cpu_sample(cluster: &DemoCluster) -> CpuSample {
    CpuSample {
        coordinator: cpu_seconds(cluster.coordinator.pid()),
        graders: cluster.graders.iter().map(|g| cpu_seconds(g.pid())).sum(),
        client: cpu_seconds(std::process::id()),
        backends: backend_cpu().await,
        machine_busy: machine_busy_seconds(),
    }
}

/// Prints the CPU spent between two samples, per attempt.
fn print_cpu(before: &CpuSample, after: &CpuSample, attempts: usize) {
    let per = |seconds: f64| seconds * 1000.0 / attempts as f64;
    let backends: f64 = after
        .backends
        .iter()
        .map(|(pid, end)| end - before.backends.get(pid).copied().unwrap_or(0.0))
        .sum();
    let coordinator = after.coordinator - before.coordinator;
    let graders = after.graders - before.graders;
    let client = after.client - before.client;
    let machine = after.machine_busy - before.machine_busy;
    println!(
        "CPU per attempt: coordinator {:.2} ms, graders {:.2} ms, PostgreSQL backends {:.2} ms \
         ({} backends), bench client {:.2} ms; whole machine busy {:.2} ms (other processes {:.2} ms)",
        per(coordinator),
        per(graders),
        per(backends),
        after.backends.len(),
        per(client),
        per(machine),
        per(machine - coordinator - graders - backends - client)
    );
}

/// Prints the runs one graded attempt made, from its audit.
fn print_runs(attempt: &Value) {
    let cases = attempt["attempts"].as_array().cloned().unwrap_or_default();
    let rounds: Vec<u64> = cases
        .iter()
        .map(|case| {
            // `timing` has them too, for binaries older than the audit.
            case["audit"]["rounds"]
                .as_u64()
                .or_else(|| case["timing"]["rounds"].as_u64())
                .unwrap_or(0)
        })
        .collect();
    // Each case: a warm-up and each round, both sides.
    let runs: u64 = rounds.iter().map(|rounds| 2 * (rounds + 1)).sum();
    println!(
        "one attempt's audit: rounds per case {rounds:?}, {runs} query runs with warm-ups, \
         {} prepares",
        2 * cases.len()
    );
}

#[tokio::main]
async fn main() {
    let options = options();
    let cluster = DemoCluster::start("bench").await;
    let api = Api::new(cluster.coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let code = invite["data"]["code"]
        .as_str()
        .expect("invite code")
        .to_string();
    let (_, professor) = register(&api, "prof@bench.test", "Bench Prof", "PROF", Some(&code)).await;
    let mut students = Vec::new();
    for index in 0..options.students.max(1) {
        let email = format!("student{index}@bench.test");
        students.push(
            register(&api, &email, "Bench Student", "STUD", None)
                .await
                .1,
        );
    }

    let body = json!({
        "name": "bench",
        "description": "players above ten points, best first",
        "type": "FE",
        "init": INIT,
        "solution": SOLUTION,
        "times_to_run": TIMES_TO_RUN,
        "expires_at": "2099-12-31T23:59:59Z",
        "test_cases": [
            {"data": case_data(7), "is_visible": true},
            {"data": case_data(11), "is_visible": true},
            {"data": case_data(13), "is_visible": false},
        ]
    });
    let (status, reply) = professor.post("/challenges", body).await;
    assert_eq!(status, 201, "{reply}");
    let challenge_id = reply["data"]["id"].as_i64().unwrap();
    eventually(
        "the challenge to be READY",
        Duration::from_secs(60),
        || async {
            let (_, reply) = professor.get(&format!("/challenges/{challenge_id}")).await;
            (reply["data"]["state"] == "READY").then_some(())
        },
    )
    .await;
    // Both graders build the challenge's databases on first use: warm them.
    for student in students.iter().take(4) {
        let (id, _) = submit(student, challenge_id, ATTEMPT).await;
        final_attempt(student, id, Duration::from_millis(5)).await;
    }

    println!(
        "two graders (--slots 2), embedded store (sqlite, synchronous=normal), 3 test cases of 20 rows, times_to_run={TIMES_TO_RUN}"
    );
    let mut latencies = Vec::new();
    for run in 0..options.latency_runs {
        let student = &students[run % students.len()];
        let (id, sent) = submit(student, challenge_id, ATTEMPT).await;
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

    let (_, last) = admin
        .get(&format!(
            "/attempts/{}",
            latest_attempt(&students[0], challenge_id).await
        ))
        .await;
    print_runs(&last["data"]);

    let per_student = options.attempts.div_ceil(students.len());
    let cpu_before = cpu_sample(&cluster).await;
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
    print_cpu(&cpu_before, &cpu_sample(&cluster).await, total);
    assert_eq!(passed, total, "every attempt passes");
    println!(
        "{total} attempts from {} students: {:.1} s, {:.1} attempts graded/s",
        students.len(),
        elapsed,
        total as f64 / elapsed
    );
    cluster.stop().await;
}
