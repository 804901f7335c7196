//! Assessment benchmark: starting many sessions at once, then
//! `GET /assessments/:id/scores` for all those students, over real HTTP
//! against an in-process coordinator.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_assessments -- \
//!     [--students 1000] [--concurrency 50] [--requests 20] [--store sqlite://PATH|mongodb://...]
//! ```
//!
//! Students are signed in through the store (no password hashing). Each
//! starts its session (timed, `--concurrency` at a time), submits once;
//! each attempt is then finished PASSED through the store as a grader
//! would. Prints the session starts per second with p50/p99, and p50/p99
//! of the scores read by the professor (checked: one row per student, each
//! with full points).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use sqlarena_common::assessments::{AssessmentSpec, Feedback, Scoreboard, Selection, Zone};
use sqlarena_common::{
    AttemptStatus, CaseResult, CaseStatus, ChallengeType, Column, QueryResult, Role, UserId,
};
use sqlarena_coordinator::auth;
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{
    self, AttemptUpdate, InitResult, NewChallenge, NewTestCase, NewUser, Session, Store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Options {
    students: usize,
    concurrency: usize,
    requests: usize,
    store: String,
}

fn options() -> Options {
    let mut options = Options {
        students: 1_000,
        concurrency: 50,
        requests: 20,
        store: format!(
            "sqlite://{}/bench.db",
            std::env::temp_dir()
                .join(format!("sqlarena-bench-{}", Uuid::new_v4().simple()))
                .display()
        ),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--students" => options.students = value.parse().expect("--students N"),
            "--concurrency" => options.concurrency = value.parse().expect("--concurrency N"),
            "--requests" => options.requests = value.parse().expect("--requests N"),
            "--store" => options.store = value,
            other => panic!("unknown option {other}"),
        }
    }
    options
}

/// Creates a user with a session and returns (id, token).
async fn signed_in(store: &Arc<dyn Store>, email: String, role: Role) -> (UserId, String) {
    let id = store
        .create_user(NewUser {
            email,
            full_name: "Bench User".into(),
            role,
            password_hash: "not-a-hash".into(),
        })
        .await
        .expect("create user")
        .id;
    let token = auth::new_token("sqa_");
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: auth::token_hash(&token),
            user_id: id,
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(2),
        })
        .await
        .expect("session");
    (id, token)
}

fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let options = options();
    let store = store::open(&options.store).await.expect("open the store");
    let (professor, professor_token) =
        signed_in(&store, "prof@bench.example".into(), Role::Professor).await;
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
            test_cases: (0..3)
                .map(|index| NewTestCase {
                    data: format!("insert into t values ({index})"),
                    is_visible: index == 0,
                })
                .collect(),
        })
        .await
        .expect("create challenge");
    let expected = QueryResult {
        columns: vec![Column {
            name: "a".into(),
            type_name: "int4".into(),
        }],
        rows: vec![vec![1.into()]],
        ordered: false,
    };
    let ready = InitResult::Ready {
        expected: challenge
            .test_cases
            .iter()
            .map(|case| (case.id, expected.clone(), Some(2.0)))
            .collect(),
        warnings: Vec::new(),
    };
    store
        .set_challenge_init(challenge.id, 1, ready, Utc::now())
        .await
        .expect("init");
    let now = Utc::now();
    let assessment = store
        .create_assessment(
            professor,
            AssessmentSpec {
                name: "bench".into(),
                description: None,
                zones: vec![Zone {
                    pool: vec![challenge.id],
                    pick: 1,
                    points: 10.0,
                }],
                selection: Selection::Random,
                time_limit_s: 3600,
                opens_at: now - chrono::Duration::minutes(1),
                closes_at: now + chrono::Duration::hours(2),
                max_submissions: None,
                min_interval_s: None,
                feedback: Feedback::Immediate,
                scoreboard: Scoreboard::Hidden,
                policy: Default::default(),
                performance_credit: 0.0,
            },
        )
        .await
        .expect("assessment");
    let mut students = Vec::with_capacity(options.students);
    for index in 0..options.students {
        students.push(signed_in(&store, format!("s{index}@bench.example"), Role::Student).await);
    }

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
    let http = reqwest::Client::new();

    // Sessions: `concurrency` students at a time, each starting then submitting.
    let started = Instant::now();
    let queue = Arc::new(tokio::sync::Mutex::new(students.clone()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let queue = queue.clone();
        let http = http.clone();
        let base = base.clone();
        let assessment_id = assessment.id;
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let Some((_, token)) = queue.lock().await.pop() else {
                    return samples;
                };
                let begun = Instant::now();
                let reply: Value = http
                    .post(format!(
                        "{base}/api/v1/assessments/{assessment_id}/sessions"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("start")
                    .json()
                    .await
                    .expect("JSON");
                samples.push(begun.elapsed());
                let session = reply["data"]["id"].as_i64().expect("session id");
                let submitted = http
                    .post(format!(
                        "{base}/api/v1/sessions/{session}/questions/1/attempts"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({"query": "select a from t"}))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(submitted.status().as_u16(), 201);
            }
        });
    }
    let mut start_samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        start_samples.extend(done.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} sessions started (and one submission each) in {:.2} s, {} at a time: \
         start p50 {:.2} ms p99 {:.2} ms",
        options.students,
        elapsed,
        options.concurrency,
        percentile(&mut start_samples, 0.5),
        percentile(&mut start_samples, 0.99)
    );

    // Grade every attempt as a grader would.
    for session in store
        .list_assessment_sessions(assessment.id)
        .await
        .expect("sessions")
    {
        let attempt_id = session.submissions[0].attempt_id.expect("attempt");
        let cases = challenge
            .test_cases
            .iter()
            .map(|case| CaseResult {
                test_case_id: case.id,
                status: CaseStatus::Passed,
                execution_ms: Some(2.0),
                min_ms: None,
                reference_ms: Some(2.0),
                ratio: Some(1.0),
                actual_result: None,
                diff: None,
                error: None,
                timing: None,
                audit: None,
            })
            .collect();
        store
            .update_attempt(
                attempt_id,
                AttemptUpdate {
                    status: Some(AttemptStatus::Passed),
                    cases: Some(cases),
                    finished_at: Some(Utc::now()),
                    ..AttemptUpdate::default()
                },
            )
            .await
            .expect("grade");
    }

    let url = format!("{base}/api/v1/assessments/{}/scores", assessment.id);
    let mut samples = Vec::with_capacity(options.requests);
    let mut last = Value::Null;
    for _ in 0..options.requests {
        let begun = Instant::now();
        let response = http
            .get(&url)
            .bearer_auth(&professor_token)
            .send()
            .await
            .expect("GET");
        assert!(response.status().is_success(), "{}", response.status());
        last = response.json().await.expect("JSON");
        samples.push(begun.elapsed());
    }
    let scores = last["data"]["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), options.students, "one row per student");
    assert!(scores.iter().all(|row| row["score"] == 10.0), "full points");
    println!(
        "GET /assessments/:id/scores for {} students: p50 {:.1} ms p99 {:.1} ms ({} requests)",
        options.students,
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
        options.requests
    );
    state.shutdown.cancel();
    let _ = server.await;
}
