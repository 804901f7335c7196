//! Console benchmark: the server time of each list page and of the
//! overview with 1,000,000 jobs and 100,000 attempts in the store, over
//! real HTTP against an in-process coordinator.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_console -- \
//!     [--jobs 1000000] [--attempts 100000] [--requests 200] [--store sqlite://PATH]
//! ```
//!
//! Jobs and attempts are made through the `Store` trait (as the API makes
//! them), then most are marked finished with one SQL statement each (DONE
//! jobs, PASSED or FAILED attempts): leasing and completing a million jobs
//! one by one would take longer than the measurement and changes nothing the
//! pages read. Jobs spread over 100 challenge ids and the three lanes.
//! Each page is requested `--requests` times in turn by a signed-in admin,
//! professor or student; p50 and p95 are printed with the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlarena_common::{
    AttemptId, AttemptPayload, ChallengeId, ChallengeType, JobPayload, Lane, Role, TestCaseId,
    UserId,
};
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::console;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{
    self, NewAttempt, NewChallenge, NewJob, NewTestCase, NewUser, Session, Store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Options {
    jobs: usize,
    attempts: usize,
    requests: usize,
    store: String,
}

fn options() -> Options {
    let mut options = Options {
        jobs: 1_000_000,
        attempts: 100_000,
        requests: 200,
        store: format!(
            "sqlite://{}/bench.db",
            std::env::temp_dir()
                .join(format!(
                    "sqlarena-bench-console-{}",
                    Uuid::new_v4().simple()
                ))
                .display()
        ),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--jobs" => options.jobs = value.parse().expect("--jobs N"),
            "--attempts" => options.attempts = value.parse().expect("--attempts N"),
            "--requests" => options.requests = value.parse().expect("--requests N"),
            "--store" => options.store = value,
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        options.store.starts_with("sqlite://"),
        "--store: sqlite://PATH only"
    );
    options
}

async fn user(store: &Arc<dyn Store>, email: String, role: Role) -> UserId {
    store
        .create_user(NewUser {
            email,
            full_name: "Bench User".into(),
            role,
            password_hash: "not-a-hash".into(),
        })
        .await
        .expect("create user")
        .id
}

/// A console session for `user_id`: the cookie's value.
async fn console_session(store: &Arc<dyn Store>, user_id: UserId) -> String {
    let secret = format!("sqw_bench_{}", Uuid::new_v4().simple());
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: console::session_hash(&secret),
            user_id,
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(2),
        })
        .await
        .expect("session");
    secret
}

fn attempt_job(index: usize) -> NewJob {
    let lane = [Lane::Fast, Lane::Slow, Lane::Fast][index % 3];
    NewJob {
        lane,
        payload: JobPayload::Attempt(AttemptPayload {
            run_item: None,
            attempt_id: AttemptId(index as i64 + 1),
            user_id: UserId(1),
            challenge_id: ChallengeId((index % 100) as i64 + 1),
            challenge_name: "bench".into(),
            challenge_version: 1,
            version_hash: "bench".into(),
            query: String::new(),
            times_to_run: 3,
            test_case_ids: vec![TestCaseId(1)],
        }),
        max_tries: 3,
        timeout_ms: 30_000,
    }
}

/// Runs `work(worker)` on 4 tasks at once.
async fn in_parallel<F, Fut>(work: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        tasks.spawn(work(worker));
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("filling task");
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    let store = store::open(&options.store).await.expect("open the store");
    let admin = user(&store, "admin@bench.example".into(), Role::Admin).await;
    let professor = user(&store, "prof@bench.example".into(), Role::Professor).await;
    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: professor,
            name: "bench".into(),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t (a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 3,
            expires_at: Utc::now() + chrono::Duration::days(30),
            test_cases: vec![NewTestCase {
                data: "insert into t values (1)".into(),
                is_visible: true,
            }],
        })
        .await
        .expect("create challenge");
    let mut students = Vec::new();
    for index in 0..1_000 {
        students.push(user(&store, format!("s{index}@bench.example"), Role::Student).await);
    }

    let fill = Instant::now();
    let jobs = options.jobs;
    in_parallel(|worker| {
        let store = store.clone();
        async move {
            for index in (worker..jobs).step_by(4) {
                store
                    .enqueue_job(attempt_job(index))
                    .await
                    .expect("enqueue");
            }
        }
    })
    .await;
    let attempts = options.attempts;
    let students = Arc::new(students);
    in_parallel(|worker| {
        let store = store.clone();
        let students = students.clone();
        async move {
            for index in (worker..attempts).step_by(4) {
                store
                    .create_attempt(NewAttempt {
                        user_id: students[index % students.len()],
                        challenge_id: challenge.id,
                        challenge_version: 1,
                        query: "select a from t".into(),
                    })
                    .await
                    .expect("create attempt");
            }
        }
    })
    .await;
    // Most jobs and attempts are finished in a real store: written with the
    // store closed (it holds the file while open), then opened again.
    drop(store);
    let path = options.store.trim_start_matches("sqlite://").to_string();
    let finished = Utc::now().timestamp_micros();
    tokio::task::spawn_blocking(move || {
        let connection = rusqlite::Connection::open(path).expect("open the file");
        connection
            .busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        connection
            .execute_batch(&format!(
                "UPDATE jobs SET state = 'DONE', applied = 1, tries = 1, leased_at = created_at, \
                 finished_at = {finished} WHERE seq % 50 <> 0; \
                 UPDATE attempts SET status = CASE WHEN id % 3 = 0 THEN 'FAILED' ELSE 'PASSED' END, \
                 finished_at = {finished} WHERE id % 40 <> 0;"
            ))
            .expect("finishing jobs and attempts");
    })
    .await
    .expect("finishing task");
    let store = store::open(&options.store)
        .await
        .expect("open the store again");
    println!(
        "filled {} jobs and {} attempts in {:.1} s",
        options.jobs,
        options.attempts,
        fill.elapsed().as_secs_f64()
    );

    // A full hour of history (what the coordinator writes once a minute).
    let this_minute = store::history::minute_of(Utc::now());
    for minutes_ago in 0..60 {
        for lane in Lane::ALL {
            store
                .record_minute(store::history::MinuteSample {
                    minute: this_minute - chrono::Duration::minutes(minutes_ago),
                    lane,
                    completed: 300,
                    failed: 2,
                    latency_ms_sum: 302 * 850,
                    latency_count: 302,
                    queue_depth: Some(40),
                })
                .await
                .expect("history");
        }
    }
    let admin_cookie = console_session(&store, admin).await;
    let professor_cookie = console_session(&store, professor).await;
    let student_cookie = console_session(&store, students[7]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let state = AppState::new(
        store.clone(),
        Config::for_store(&options.store),
        CancellationToken::new(),
    );
    let server = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
    // Redirects are not followed: a page that sent us to sign in failed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let id = challenge.id;
    let some_job = store
        .list_jobs_matching(store::console::JobQuery {
            limit: 1,
            after: Some(500_000),
            ..Default::default()
        })
        .await
        .expect("a job")
        .remove(0)
        .id;
    let middle = (Utc::now() - chrono::Duration::seconds(30)).format("%Y-%m-%dT%H:%M:%S");
    let pages: Vec<(String, &str, f64)> = vec![
        ("/admin".into(), &admin_cookie, 50.0),
        ("/admin/jobs".into(), &admin_cookie, 100.0),
        ("/admin/jobs?state=QUEUED".into(), &admin_cookie, 100.0),
        (
            "/admin/jobs?state=DONE&lane=slow".into(),
            &admin_cookie,
            100.0,
        ),
        ("/admin/jobs?challenge_id=7".into(), &admin_cookie, 100.0),
        (
            "/admin/jobs?state=QUEUED&challenge_id=7".into(),
            &admin_cookie,
            100.0,
        ),
        (
            format!("/admin/jobs?queued_from={middle}"),
            &admin_cookie,
            100.0,
        ),
        (
            format!("/professor/challenges/{id}/attempts"),
            &professor_cookie,
            100.0,
        ),
        (
            format!("/professor/challenges/{id}/attempts?status=PENDING"),
            &professor_cookie,
            100.0,
        ),
        (
            format!(
                "/professor/challenges/{id}/attempts?user_id={}",
                students[7]
            ),
            &professor_cookie,
            100.0,
        ),
        (
            format!("/admin/jobs?challenge_id=7&queued_from={middle}"),
            &admin_cookie,
            100.0,
        ),
        (format!("/admin/jobs/{some_job}"), &admin_cookie, 100.0),
        ("/admin/users".into(), &admin_cookie, 100.0),
        ("/professor/runs".into(), &professor_cookie, 100.0),
        ("/professor/assessments".into(), &professor_cookie, 100.0),
        ("/professor/challenges".into(), &professor_cookie, 100.0),
        ("/challenges".into(), &student_cookie, 100.0),
        ("/attempts".into(), &student_cookie, 100.0),
        (format!("/challenges/{id}"), &student_cookie, 100.0),
    ];
    println!("| page | p50 ms | p95 ms | target ms |");
    println!("|---|---|---|---|");
    let mut over = 0;
    for (path, cookie, target) in &pages {
        let get = || async {
            let response = http
                .get(format!("{base}{path}"))
                .header("cookie", format!("{}={cookie}", console::SESSION_COOKIE))
                .send()
                .await
                .expect("GET");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.text().await.expect("body").len()
        };
        for _ in 0..5 {
            get().await;
        }
        let mut samples: Vec<Duration> = Vec::with_capacity(options.requests);
        for _ in 0..options.requests {
            let started = Instant::now();
            get().await;
            samples.push(started.elapsed());
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        let p95 = at(0.95);
        if p95 > *target {
            over += 1;
        }
        println!("| `{path}` | {:.1} | {p95:.1} | {target} |", at(0.5));
    }
    println!("{over} page(s) over their target");
    state.shutdown.cancel();
    let _ = server.await;
}
