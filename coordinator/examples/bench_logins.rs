//! Login-flood benchmark: the real `coordinator` binary (a process of its
//! own, so its memory is measured alone) on a fresh SQLite store, hit by C
//! concurrent clients posting bogus logins (unknown emails, wrong
//! passwords) for S seconds, while a signed-in student reads
//! `GET /challenges/:id` in a loop.
//!
//! ```text
//! scripts/bench.sh logins [--clients 300] [--seconds 10] [-- COORDINATOR FLAGS...]
//! target/release/examples/bench_logins --clients 300 --seconds 10 \
//!     -- --auth-client-burst 1000000 --auth-client-per-minute 1000000
//! ```
//!
//! Flags after `--` go to the coordinator (e.g. lifting the per-client
//! limit, so that only the bound on concurrent hashing holds the flood).
//! Prints the coordinator's peak RSS (VmHWM) and RSS at the end, the
//! student's read latency p50/p99/max during the flood, and the flood's
//! replies by status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_e2e::harness::Process;
use uuid::Uuid;

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-password-1";

struct Options {
    clients: usize,
    seconds: u64,
    coordinator_args: Vec<String>,
}

fn options() -> Options {
    let mut options = Options {
        clients: 300,
        seconds: 10,
        coordinator_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clients" => options.clients = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--seconds" => options.seconds = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--" => options.coordinator_args = args.by_ref().collect(),
            other => panic!("unknown flag {other}: see the example's doc comment"),
        }
    }
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
        "{} is missing: build it (scripts/bench.sh logins does)",
        binary.display()
    );
    binary
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start past the last ')'.
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
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
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
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn login(http: &reqwest::Client, api: &str, email: &str, password: &str) -> String {
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        &format!("{api}/login"),
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(status, 200, "login {email}: {body}");
    body["data"]["token"].as_str().unwrap().to_string()
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir =
        std::env::temp_dir().join(format!("sqlarena-bench-logins-{}", Uuid::new_v4().simple()));
    let store = format!("sqlite://{}/bench.db", dir.display());
    let mut args: Vec<String> = [
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
    args.extend(options.coordinator_args.iter().cloned());
    let mut coordinator = Process::start_with_env(
        "bench-logins",
        &coordinator_binary(),
        &args,
        true,
        &[
            ("SQLARENA_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("RUST_LOG", "warn,sqlarena_coordinator=info"),
        ],
    )
    .await;
    let pid = coordinator.pid();
    let base = coordinator.url().to_string();
    let api = format!("{base}/api/v1");
    let http = reqwest::Client::new();

    // A professor's challenge and a signed-in student.
    let admin = login(&http, &api, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, invite) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/invites"),
        Some(&admin),
        Some(json!({"role": "PROF"})),
    )
    .await;
    let code = invite["data"]["code"].as_str().unwrap();
    let (status, _) = call(&http, reqwest::Method::POST, &format!("{api}/register"), None, Some(json!({"email": "prof@example.com", "full_name": "Prof", "password": "password-123", "invite": code}))).await;
    assert_eq!(status, 201);
    let professor = login(&http, &api, "prof@example.com", "password-123").await;
    let challenge = json!({
        "name": "bench", "type": "FE", "init": "create table t (a int)", "solution": "select a from t",
        "times_to_run": 3, "expires_at": "2099-01-01T00:00:00Z",
        "test_cases": [{"data": "insert into t values (1)", "is_visible": true}]
    });
    let (status, created) = call(
        &http,
        reqwest::Method::POST,
        &format!("{api}/challenges"),
        Some(&professor),
        Some(challenge),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let challenge_id = created["data"]["id"].as_i64().unwrap();
    let (status, _) = call(&http, reqwest::Method::POST, &format!("{api}/register"), None, Some(json!({"email": "student@example.com", "full_name": "Student", "password": "password-123"}))).await;
    assert_eq!(status, 201);
    let student = login(&http, &api, "student@example.com", "password-123").await;
    let rss_before = status_kib(pid, "VmRSS:");
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let generator_cpu_before = cpu_seconds(std::process::id());

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let flood_http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .build()
        .unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for client in 0..options.clients {
        let (http, api, stop, statuses) = (
            flood_http.clone(),
            api.clone(),
            stop.clone(),
            statuses.clone(),
        );
        flood.spawn(async move {
            let mut attempt = 0u64;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let body = json!({"email": format!("nobody-{client}-{attempt}@example.com"), "password": "guess-123456"});
                let (status, _) = call(&http, reqwest::Method::POST, &format!("{api}/login"), None, Some(body)).await;
                *statuses.lock().unwrap().entry(status).or_default() += 1;
            }
        });
    }

    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut read_errors = 0;
    let mut peak_sampled = 0;
    while started.elapsed() < Duration::from_secs(options.seconds) {
        let sent = Instant::now();
        let (status, _) = call(
            &http,
            reqwest::Method::GET,
            &format!("{api}/challenges/{challenge_id}"),
            Some(&student),
            None,
        )
        .await;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            read_errors += 1;
        }
        peak_sampled = peak_sampled.max(status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let cpu_used = cpu_seconds(pid) - cpu_before;
    let generator_cpu = cpu_seconds(std::process::id()) - generator_cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_peak = status_kib(pid, "VmHWM:");
    let rss_end = status_kib(pid, "VmRSS:");
    latencies.sort_by(|a, b| a.total_cmp(b));

    println!(
        "coordinator flags: {}",
        if options.coordinator_args.is_empty() {
            "(defaults)".to_string()
        } else {
            options.coordinator_args.join(" ")
        }
    );
    println!(
        "flood: {} clients of bogus logins for {} s; load average before: {}",
        options.clients,
        options.seconds,
        load_before.trim()
    );
    let statuses = statuses.lock().unwrap().clone();
    let total: u64 = statuses.values().sum();
    let by_status: Vec<String> = statuses
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!(
        "flood replies: {total} ({:.0}/s) by status {{{}}}",
        total as f64 / options.seconds as f64,
        by_status.join(", ")
    );
    println!(
        "student GET /challenges/{challenge_id}: {} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {read_errors} not 200",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "coordinator RSS: before {:.1} MiB, peak {:.1} MiB (VmHWM; sampled {:.1}), end {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        peak_sampled as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!(
        "CPU in {elapsed:.1} s: coordinator {cpu_used:.1} s ({:.0}% of one core), this benchmark {generator_cpu:.1} s",
        cpu_used / elapsed * 100.0,
    );
    coordinator.terminate(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}
