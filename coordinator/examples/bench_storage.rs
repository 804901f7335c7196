//! Storage benchmark: store bytes per graded attempt on the embedded store.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_storage -- [--attempts 300]
//! ```
//!
//! An in-process coordinator on a fresh SQLite file and a scripted grader
//! speaking the grader protocol over real HTTP grade `--attempts` attempts
//! of a challenge with 3 test cases: each case's result is posted as
//! progress, then the outcome; one case fails with 50 wide rows (10 text
//! columns of 100 characters, about 50 KiB as JSON). Then the coordinator
//! stops and the file is vacuumed and measured twice: as left, and with
//! the attempts, jobs and leaderboard rows deleted. The difference divided
//! by the attempts is the store's bytes per graded attempt.

use std::time::Duration;

use chrono::Utc;
use rusqlite::Connection;
use serde_json::{json, Value};
use sqlarena_common::{ChallengeType, Column, LeasedJob, QueryResult, Role};
use sqlarena_coordinator::auth;
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{self, InitResult, NewChallenge, NewTestCase, NewUser, Session};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CLUSTER_TOKEN: &str = "bench-cluster-token";

fn attempts() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 300,
        [flag, value] if flag == "--attempts" => value.parse().expect("--attempts N"),
        other => panic!("unknown options {other:?}"),
    }
}

/// Vacuums the store file and returns its size in bytes.
fn vacuumed_size(connection: &Connection) -> u64 {
    connection
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
        .expect("vacuum");
    let pages: u64 = connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .expect("page_count");
    let page_size: u64 = connection
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .expect("page_size");
    pages * page_size
}

#[tokio::main]
async fn main() {
    let attempts = attempts();
    let dir = std::env::temp_dir().join(format!("sqlarena-bench-{}", Uuid::new_v4().simple()));
    let path = dir.join("bench.db");
    let uri = format!("sqlite://{}", path.display());
    let store = store::open(&uri).await.expect("open the store");
    let new_user = |email: &str, role: Role| NewUser {
        email: email.into(),
        full_name: "Bench User".into(),
        role,
        password_hash: "not-a-hash".into(),
    };
    let professor = store
        .create_user(new_user("prof@bench.example", Role::Professor))
        .await
        .expect("professor");
    let student = store
        .create_user(new_user("student@bench.example", Role::Student))
        .await
        .expect("student");
    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: professor.id,
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
                    is_visible: true,
                })
                .collect(),
        })
        .await
        .expect("challenge");
    let one_row = QueryResult {
        columns: vec![Column {
            name: "a".into(),
            type_name: "int4".into(),
        }],
        rows: vec![vec![json!(1)]],
        ordered: false,
    };
    let ready = InitResult::Ready {
        expected: challenge
            .test_cases
            .iter()
            .map(|case| (case.id, one_row.clone(), Some(2.0)))
            .collect(),
        warnings: Vec::new(),
    };
    store
        .set_challenge_init(challenge.id, 1, ready, Utc::now())
        .await
        .expect("init");
    let token = auth::new_token("sqa_");
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: auth::token_hash(&token),
            user_id: student.id,
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
        .await
        .expect("session");

    let mut config = Config::for_store(&uri);
    config.cluster_token = Some(CLUSTER_TOKEN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let state = AppState::new(store, config, CancellationToken::new());
    let server = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
    let http = reqwest::Client::new();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registered: Value = http
        .post(format!("{base}/api/v1/grader/register"))
        .bearer_auth(CLUSTER_TOKEN)
        .json(
            &json!({"name": "bench", "hostname": "bench", "version": "bench",
                      "lanes": ["fast"], "slots": 1}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    let grader = registered["data"]["grader_token"]
        .as_str()
        .expect("grader token")
        .to_string();
    let wide_row: Vec<Value> = (0..10)
        .map(|column| json!(format!("{column:0>100}")))
        .collect();
    let wide = json!({
        "columns": (0..10).map(|column| json!({"name": format!("c{column}"), "type": "text"})).collect::<Vec<_>>(),
        "rows": vec![wide_row; 50],
    });
    let post = |path: String, token: String, body: Value| {
        let http = http.clone();
        async move {
            let response = http
                .post(path)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST");
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.expect("JSON")
        }
    };
    for _ in 0..attempts {
        post(
            format!("{base}/api/v1/attempts"),
            token.clone(),
            json!({"challenge_id": challenge.id, "query": "SELECT a FROM t"}),
        )
        .await;
        let leased = post(
            format!("{base}/api/v1/grader/jobs/lease?wait_ms=5000"),
            grader.clone(),
            json!({}),
        )
        .await;
        let job: LeasedJob = serde_json::from_value(leased["data"].clone()).expect("a job");
        let cases: Vec<Value> = challenge
            .test_cases
            .iter()
            .enumerate()
            .map(|(index, case)| {
                if index == 2 {
                    json!({"test_case_id": case.id, "status": "FAILED", "execution_ms": 3.0,
                           "actual_result": wide, "diff": "row 1: expected 1 column, got 10"})
                } else {
                    json!({"test_case_id": case.id, "status": "PASSED", "execution_ms": 2.0,
                           "min_ms": 1.9, "reference_ms": 2.0, "ratio": 1.0,
                           "actual_result": {"columns": [{"name": "a", "type": "int4"}], "rows": [[1]]}})
                }
            })
            .collect();
        for case in &cases {
            post(
                format!("{base}/api/v1/grader/jobs/{}/progress", job.job_id),
                grader.clone(),
                json!({"lease_id": job.lease_id, "case": case}),
            )
            .await;
        }
        post(
            format!("{base}/api/v1/grader/jobs/{}/complete", job.job_id),
            grader.clone(),
            json!({"lease_id": job.lease_id, "outcome": {"kind": "attempt", "cases": cases}}),
        )
        .await;
    }
    state.shutdown.cancel();
    server.await.expect("server task").expect("server");
    drop(state);

    let connection = Connection::open(&path).expect("reopen the store file");
    let with_attempts = vacuumed_size(&connection);
    connection
        .execute_batch("DELETE FROM attempts; DELETE FROM jobs; DELETE FROM leaderboard;")
        .expect("delete the graded attempts");
    let without = vacuumed_size(&connection);
    println!(
        "{attempts} graded attempts (3 cases, one failing with 50 rows of 10 x 100-character cells): \
         store {with_attempts} bytes, {without} without them: {} bytes per graded attempt",
        (with_attempts - without) / attempts as u64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
