//! A grading run draining through two real graders, and a live attempt's
//! latency beside it (issue 12): a coordinator process on the embedded
//! store, two graders (`--slots 2`) on the local PostgreSQL, the "scores"
//! challenge (3 cases of 20 rows, `times_to_run` 3), and
//!
//! 1. idle: a student's submit -> graded p50 and p99 over `--live` attempts
//!    one after the other, with nothing else queued;
//! 2. `POST /runs` of every student: `--students` students (default
//!    10,000), each with a graded attempt written straight into the store
//!    file (registering 10,000 students through the API would mostly
//!    measure password hashing): the request's wall time;
//! 3. the same live student's attempts, one after the other, while the run
//!    drains: p50 and p99 against the idle figures (target: p50 within
//!    1.5x), and the run's items graded per second.
//!
//! Run with `scripts/bench.sh drain [--students N] [--live N] [--precision-time-ms N]`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_e2e::bench::{
    final_attempt, flag, flags, percentile, publish_scores_challenge, submit, People, ATTEMPT,
};
use sqlarena_e2e::demo::eventually;
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

/// `count` students, each with one PASSED attempt of the challenge,
/// written into the store file in one transaction.
fn fill(path: &str, challenge_id: i64, version: i64, count: usize) {
    let mut connection = rusqlite::Connection::open(path).expect("open the store file");
    connection
        .busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let transaction = connection.transaction().expect("transaction");
    let now = chrono::Utc::now().timestamp_micros();
    {
        let mut user = transaction
            .prepare(
                "INSERT INTO users (email, email_lower, full_name, role, password_hash, created_at) \
                 VALUES (?1, ?1, ?2, 'STUD', 'x', ?3)",
            )
            .expect("user statement");
        let mut attempt = transaction
            .prepare(
                "INSERT INTO attempts (user_id, challenge_id, challenge_version, query, status, \
                 cases, created_at, finished_at) VALUES (?1, ?2, ?3, ?4, 'PASSED', '[]', ?5, ?5)",
            )
            .expect("attempt statement");
        for index in 0..count {
            user.execute(rusqlite::params![
                format!("drain-{index}@bench.test"),
                format!("Drain Student {index}"),
                now
            ])
            .expect("user");
            attempt
                .execute(rusqlite::params![
                    transaction.last_insert_rowid(),
                    challenge_id,
                    version,
                    ATTEMPT,
                    now
                ])
                .expect("attempt");
        }
    }
    transaction.commit().expect("commit");
}

/// Submit -> graded times of `student`'s attempts, one after the other,
/// `count` of them or until `until` says stop.
async fn live_latencies(
    student: &Api,
    challenge_id: i64,
    count: usize,
    mut until: impl FnMut() -> bool,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    while latencies.len() < count && !until() {
        let (id, sent) = submit(student, challenge_id, ATTEMPT).await;
        let attempt = final_attempt(student, id, Duration::from_millis(1)).await;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(attempt["status"], "PASSED", "{attempt}");
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn summary(latencies: &[f64]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms over {} attempts",
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        latencies.len()
    )
}

#[tokio::main]
async fn main() {
    let flags = flags(&["--students", "--live", "--precision-time-ms"]);
    let students: usize = flag(&flags, "--students", 10_000);
    let live: usize = flag(&flags, "--live", 100);
    let store = temp_store("run-drain");
    let token = format!("sqc_drain_{}", Uuid::new_v4().simple());
    // A fixed address: the coordinator is restarted around the fill (it
    // holds its store file exclusively) and the graders reconnect to it.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let listen = ["--listen", address.as_str()];
    let mut coordinator = start_coordinator("drain-coordinator", &store, &token, &listen).await;
    let mut grader_flags = vec!["--slots", "2"];
    if let Some(precision) = flags.get("--precision-time-ms") {
        grader_flags.extend(["--precision-time-ms", precision.as_str()]);
    }
    let mut graders = Vec::new();
    for index in 1..=2 {
        graders.push(
            start_grader(
                &format!("drain-grader-{index}"),
                coordinator.url(),
                &token,
                &grader_flags,
            )
            .await,
        );
    }
    let api = Api::new(coordinator.url());
    let people = People::sign_up(&api, 1).await;
    let student = &people.students[0];
    let challenge_id = publish_scores_challenge(
        &people.professor,
        "drain",
        20,
        &[7, 11, 13],
        3,
        Duration::from_secs(60),
    )
    .await;
    let (_, challenge) = people
        .professor
        .get(&format!("/challenges/{challenge_id}"))
        .await;
    let version = challenge["data"]["version"].as_i64().expect("version");
    // Both graders build the challenge's databases on first use.
    live_latencies(student, challenge_id, 4, || false).await;
    println!(
        "two graders (--slots 2{}), embedded store; the scores challenge, 3 cases of 20 rows, times_to_run 3",
        flags
            .get("--precision-time-ms")
            .map_or(String::new(), |ms| format!(", --precision-time-ms {ms}"))
    );

    coordinator.terminate(Duration::from_secs(10)).await;
    let path = store.trim_start_matches("sqlite://").to_string();
    let filling = Instant::now();
    tokio::task::spawn_blocking(move || fill(&path, challenge_id, version, students))
        .await
        .expect("fill");
    println!(
        "filled {students} students with a graded attempt each in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let _coordinator = start_coordinator("drain-coordinator-2", &store, &token, &listen).await;
    // The graders are back once an attempt is graded again.
    live_latencies(student, challenge_id, 2, || false).await;

    let idle = live_latencies(student, challenge_id, live, || false).await;
    println!("idle: a live attempt's submit -> graded {}", summary(&idle));

    let started = Instant::now();
    let (status, run) = people
        .professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all"}),
        )
        .await;
    let created_in = started.elapsed();
    assert_eq!(status, 201, "{run}");
    let run_id = run["data"]["id"].as_i64().expect("run id");
    let items = run["data"]["counts"]["total"].as_u64().unwrap_or(0);
    println!(
        "POST /runs of every student: {items} items in {:.0} ms (target <= 1,000 ms for 10,000)",
        created_in.as_secs_f64() * 1000.0
    );

    let draining = Instant::now();
    let run_state = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let watcher = {
        let professor = people.professor.clone();
        let run_state = run_state.clone();
        tokio::spawn(async move {
            eventually("the run to end", Duration::from_secs(3600), || async {
                let (_, reply) = professor.get(&format!("/runs/{run_id}")).await;
                let ended = matches!(
                    reply["data"]["state"].as_str(),
                    Some("COMPLETED" | "FAILED" | "CANCELLED")
                );
                *run_state.lock().unwrap() = reply["data"].clone();
                ended.then_some(())
            })
            .await;
        })
    };
    let during = live_latencies(student, challenge_id, usize::MAX, || watcher.is_finished()).await;
    watcher.await.expect("run watcher");
    let drained = draining.elapsed().as_secs_f64();
    let run = run_state.lock().unwrap().clone();
    println!(
        "run {}: {items} items in {drained:.1} s, {:.1} items graded/s; counts {}",
        run["state"],
        items as f64 / drained,
        run["counts"]
    );
    println!(
        "while it drained: a live attempt's submit -> graded {}",
        summary(&during)
    );
    println!(
        "live p50 while draining / idle p50 = {:.2} (target <= 1.5)",
        percentile(&during, 0.5) / percentile(&idle, 0.5)
    );
}
