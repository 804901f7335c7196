//! Runs and exports at scale, against a real coordinator process:
//!
//! 1. an export of every attempt (`--attempts`, default 1,000,000) as CSV:
//!    rows/s from the export's own times, and the coordinator's peak RSS
//!    (`VmHWM` of `/proc/PID/status`, read before anything else ran);
//! 2. `POST /runs` of `--run-items` (default 10,000) listed students: the
//!    request's wall time (items written and enqueued in bulk);
//! 3. `GET /runs/{id}` of a run of every student (`--students`, default
//!    100,000 items): p50 and p95 over `--requests` calls.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_ops -- \
//!     [--attempts 1000000] [--students 100000] [--run-items 10000] [--requests 200]
//! ```
//!
//! The store is filled directly in its SQLite file (users, one READY
//! challenge, attempts graded PASSED or FAILED with one test case each),
//! since a million graded attempts through the API would take an hour and
//! change nothing the measured paths read. No grader runs, so run items
//! stay queued: the run is measured as it is read while it runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_e2e::harness::Process;
use uuid::Uuid;

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-password-1";

struct Options {
    attempts: usize,
    students: usize,
    run_items: usize,
    requests: usize,
}

fn options() -> Options {
    let mut options = Options {
        attempts: 1_000_000,
        students: 100_000,
        run_items: 10_000,
        requests: 200,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value: usize = pair
            .get(1)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--attempts" => options.attempts = value,
            "--students" => options.students = value,
            "--run-items" => options.run_items = value,
            "--requests" => options.requests = value,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        options.run_items <= options.students,
        "--run-items above --students"
    );
    options
}

/// The `coordinator` binary next to this example's directory.
fn coordinator_binary() -> PathBuf {
    let example = std::env::current_exe().expect("the example's path");
    let profile_dir = example
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target/PROFILE/examples");
    let binary = profile_dir.join("coordinator");
    assert!(
        binary.is_file(),
        "{} is missing: build it (scripts/bench.sh ops does)",
        binary.display()
    );
    binary
}

/// Reads a `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// Users 2.. (students), a READY challenge 1 and `attempts` graded
/// attempts spread over the students, written in one transaction.
fn fill(path: &str, students: usize, attempts: usize) {
    let mut connection = rusqlite::Connection::open(path).expect("open the store file");
    let transaction = connection.transaction().expect("transaction");
    let now = chrono::Utc::now().timestamp_micros();
    {
        let mut user = transaction
            .prepare(
                "INSERT INTO users (email, email_lower, full_name, role, password_hash, created_at) \
                 VALUES (?1, ?1, ?2, 'STUD', 'x', ?3)",
            )
            .expect("user statement");
        for index in 0..students {
            user.execute(rusqlite::params![
                format!("student-{index}@example.edu"),
                format!("Student {index}"),
                now
            ])
            .expect("user");
        }
    }
    transaction
        .execute(
            "INSERT INTO challenges (created_user_id, name, description, challenge_type, init, \
             solution, times_to_run, expires_at, version, state, init_at, created_at) \
             VALUES (1, 'bench', NULL, 'FE', 'create table t (a int)', 'select a from t', 3, ?1, 1, \
             'READY', ?2, ?2)",
            rusqlite::params![now + 86_400_000_000 * 365, now],
        )
        .expect("challenge");
    transaction
        .execute(
            "INSERT INTO test_cases (challenge_id, data, is_visible, expected, created_at, version) \
             VALUES (1, 'insert into t values (1)', 1, NULL, ?1, 1)",
            [now],
        )
        .expect("test case");
    {
        let mut attempt = transaction
            .prepare(
                "INSERT INTO attempts (user_id, challenge_id, challenge_version, query, status, \
                 cases, created_at, finished_at) VALUES (?1, 1, 1, 'select a from t', ?2, ?3, ?4, ?4)",
            )
            .expect("attempt statement");
        for index in 0..attempts {
            let passed = index % 3 != 0;
            let cases = format!(
                "[{{\"test_case_id\":1,\"status\":\"{}\",\"execution_ms\":{}.5,\"reference_ms\":1.0,\"ratio\":1.25}}]",
                if passed { "PASSED" } else { "FAILED" },
                index % 7
            );
            attempt
                .execute(rusqlite::params![
                    2 + (index % students) as i64,
                    if passed { "PASSED" } else { "FAILED" },
                    cases,
                    now + index as i64
                ])
                .expect("attempt");
        }
    }
    transaction.commit().expect("commit");
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = std::env::temp_dir().join(format!("sqlarena-bench-ops-{}", Uuid::new_v4().simple()));
    let path = dir.join("bench.db");
    let store = format!("sqlite://{}", path.display());
    // The coordinator makes the schema (and the admin, user 1), then stops.
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--admin-email",
        ADMIN_EMAIL,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let env = [
        ("SQLARENA_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("RUST_LOG", "warn,sqlarena_coordinator=info"),
    ];
    let mut first =
        Process::start_with_env("bench-ops-setup", &coordinator_binary(), &args, true, &env).await;
    first.terminate(Duration::from_secs(10)).await;
    let filling = Instant::now();
    let fill_path = path.to_string_lossy().to_string();
    let (students, attempts) = (options.students, options.attempts);
    tokio::task::spawn_blocking(move || fill(&fill_path, students, attempts))
        .await
        .expect("fill");
    println!(
        "filled {} students and {} attempts in {:.1} s",
        options.students,
        options.attempts,
        filling.elapsed().as_secs_f64()
    );

    let mut coordinator =
        Process::start_with_env("bench-ops", &coordinator_binary(), &args, true, &env).await;
    let pid = coordinator.pid();
    let api = format!("{}/api/v1", coordinator.url());
    let http = reqwest::Client::new();
    let (status, reply) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/login"),
        None,
        Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let admin = reply["data"]["token"].as_str().unwrap().to_string();
    let rss_start = status_kib(pid, "VmRSS:");

    // 1. The export.
    let (status, reply) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/exports"),
        Some(&admin),
        Some(json!({"kind": "attempts", "format": "csv"})),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let export_id = reply["data"]["id"].as_i64().unwrap();
    let mut peak_sampled = 0;
    let export = loop {
        peak_sampled = peak_sampled.max(status_kib(pid, "VmRSS:"));
        let (_, reply) = call(
            &http,
            reqwest::Method::GET,
            &format!("{api}/exports/{export_id}"),
            Some(&admin),
            None,
        )
        .await;
        if reply["data"]["state"] != "RUNNING" {
            break reply["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(export["state"], "COMPLETED", "{export}");
    let time = |field: &str| -> chrono::DateTime<chrono::Utc> {
        export[field].as_str().unwrap().parse().unwrap()
    };
    let seconds = (time("finished_at") - time("created_at")).num_milliseconds() as f64 / 1000.0;
    let rows = export["rows"].as_u64().unwrap();
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "export: {rows} attempt rows, {:.1} MiB of CSV in {seconds:.2} s = {:.0} rows/s (target >= 50,000)",
        export["bytes"].as_u64().unwrap() as f64 / 1_048_576.0,
        rows as f64 / seconds
    );
    println!(
        "coordinator RSS: at start {:.1} MiB, peak {:.1} MiB (VmHWM; sampled {:.1}) (target < 100 MiB)",
        rss_start as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak_sampled as f64 / 1024.0
    );

    // 2. A run of listed students, created in one request.
    let targets: Vec<i64> = (0..options.run_items as i64)
        .map(|index| 2 + index)
        .collect();
    let started = Instant::now();
    let (status, reply) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/runs"),
        Some(&admin),
        Some(json!({"challenge_id": 1, "targets": targets})),
    )
    .await;
    let created_in = started.elapsed();
    assert_eq!(status, 201, "{reply}");
    println!(
        "POST /runs with {} targets: {:.0} ms, {} items, all enqueued (target <= 1,000 ms)",
        options.run_items,
        created_in.as_secs_f64() * 1000.0,
        reply["data"]["counts"]["total"]
    );
    let listed_id = reply["data"]["id"].as_i64().unwrap();
    call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/runs/{listed_id}/cancel"),
        Some(&admin),
        Some(json!({})),
    )
    .await;

    // 3. A run of every student, read while it runs.
    let started = Instant::now();
    let (status, reply) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/runs"),
        Some(&admin),
        Some(json!({"challenge_id": 1, "targets": "all"})),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    println!(
        "POST /runs with \"all\" ({} items): {:.0} ms",
        reply["data"]["counts"]["total"],
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut times = Vec::with_capacity(options.requests);
    for _ in 0..options.requests {
        let started = Instant::now();
        let (status, reply) = call(
            &http,
            reqwest::Method::GET,
            &format!("{api}/runs/{run_id}"),
            Some(&admin),
            None,
        )
        .await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{reply}");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "GET /runs/{{id}} at {} items: p50 {:.2} ms, p95 {:.2} ms over {} requests (target p50 <= 5 ms)",
        options.students,
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        options.requests
    );
    coordinator.terminate(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
