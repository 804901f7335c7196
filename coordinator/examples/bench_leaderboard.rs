//! Leaderboard benchmark: `GET /challenges/:id` (with `top_attempts`) on a
//! challenge with many passing attempts, over real HTTP against an
//! in-process coordinator.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_leaderboard -- \
//!     [--attempts 100000] [--users 1000] [--requests 1000] [--store sqlite://PATH|mongodb://...]
//! ```
//!
//! Fills the store through the `Store` trait as graders would (each attempt
//! created, then finished PASSED with its cases' ratios, which keeps the
//! leaderboard), then times sequential requests of a signed-in student and
//! prints p50/p99 and the top of the board (checked for order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use sqlarena_common::{
    AttemptStatus, CaseResult, CaseStatus, ChallengeType, Column, QueryResult, Role, TestCaseId,
    UserId,
};
use sqlarena_coordinator::auth;
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{
    self, AttemptUpdate, InitResult, NewAttempt, NewChallenge, NewTestCase, NewUser, Session, Store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Options {
    attempts: usize,
    users: usize,
    requests: usize,
    store: String,
}

fn options() -> Options {
    let mut options = Options {
        attempts: 100_000,
        users: 1_000,
        requests: 1_000,
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
            "--attempts" => options.attempts = value.parse().expect("--attempts N"),
            "--users" => options.users = value.parse().expect("--users N"),
            "--requests" => options.requests = value.parse().expect("--requests N"),
            "--store" => options.store = value,
            other => panic!("unknown option {other}"),
        }
    }
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

/// A deterministic spread of ratios in (0.5, 2.5).
fn ratio(attempt: usize, case: usize) -> f64 {
    0.5 + ((attempt * 7919 + case * 104_729) % 2000) as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let options = options();
    let store = store::open(&options.store).await.expect("open the store");
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

    let mut users = Vec::with_capacity(options.users);
    for index in 0..options.users {
        users.push(user(&store, format!("s{index}@bench.example"), Role::Student).await);
    }
    let fill = Instant::now();
    let workers = 4;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        let users = users.clone();
        let case_ids: Vec<TestCaseId> = challenge.test_cases.iter().map(|case| case.id).collect();
        let attempts = options.attempts;
        tasks.spawn(async move {
            for attempt in (worker..attempts).step_by(workers) {
                let created = store
                    .create_attempt(NewAttempt {
                        user_id: users[attempt % users.len()],
                        challenge_id: challenge.id,
                        challenge_version: 1,
                        query: "select a from t".into(),
                    })
                    .await
                    .expect("create attempt");
                let cases = case_ids
                    .iter()
                    .enumerate()
                    .map(|(index, id)| CaseResult {
                        test_case_id: *id,
                        status: CaseStatus::Passed,
                        execution_ms: Some(2.0 * ratio(attempt, index)),
                        min_ms: None,
                        reference_ms: Some(2.0),
                        ratio: Some(ratio(attempt, index)),
                        actual_result: None,
                        diff: None,
                        error: None,
                        timing: None,
                        audit: None,
                    })
                    .collect();
                store
                    .update_attempt(
                        created.id,
                        AttemptUpdate {
                            status: Some(AttemptStatus::Passed),
                            cases: Some(cases),
                            finished_at: Some(Utc::now()),
                            ..AttemptUpdate::default()
                        },
                    )
                    .await
                    .expect("finish attempt");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("filling task");
    }
    println!(
        "filled {} passing attempts of {} users in {:.1} s",
        options.attempts,
        options.users,
        fill.elapsed().as_secs_f64()
    );

    let token = auth::new_token("sqa_");
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: auth::token_hash(&token),
            user_id: users[0],
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
        .await
        .expect("session");
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
    let url = format!("{base}/api/v1/challenges/{}", challenge.id);
    let get = || async {
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert!(response.status().is_success(), "{}", response.status());
        response.json::<Value>().await.expect("JSON")
    };
    for _ in 0..20 {
        get().await;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(options.requests);
    let mut last = Value::Null;
    for _ in 0..options.requests {
        let started = Instant::now();
        last = get().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "GET /challenges/:id with {} passing attempts: p50 {:.3} ms p99 {:.3} ms ({} requests)",
        options.attempts,
        at(0.5),
        at(0.99),
        options.requests
    );
    let board = last["data"]["top_attempts"]
        .as_array()
        .expect("top_attempts");
    let scores: Vec<f64> = board
        .iter()
        .map(|entry| entry["score"].as_f64().expect("score"))
        .collect();
    assert_eq!(board.len(), 10.min(options.users), "a full board");
    assert!(
        scores.windows(2).all(|pair| pair[0] <= pair[1]),
        "FE: lowest first: {scores:?}"
    );
    let users_on_board: std::collections::HashSet<i64> = board
        .iter()
        .map(|entry| entry["user_id"].as_i64().expect("user"))
        .collect();
    assert_eq!(users_on_board.len(), board.len(), "one row per user");
    println!("top scores: {scores:.4?}");
    state.shutdown.cancel();
    let _ = server.await;
}
