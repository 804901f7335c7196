//! Helpers shared by the grader's integration tests: a sandbox on the real
//! local PostgreSQL, a small challenge, and shortcuts to run init and
//! attempt jobs.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptPayload, BundleCase, ChallengeBundle, ChallengeId,
    InitOutcome, InitPayload, TestCaseData, TestCaseId, UserId,
};
use sqlarena_grader::run::{run_attempt, run_init};
use sqlarena_grader::sandbox::{CachedBundle, Limits, Sandbox, SandboxConfig};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// The admin URL of the test PostgreSQL (one definition for the workspace).
pub use sqlarena_e2e::harness::postgres_url;

/// Sandbox settings for tests under `prefix`.
pub fn sandbox_config(prefix: &str) -> SandboxConfig {
    SandboxConfig {
        admin_url: postgres_url(),
        prefix: prefix.into(),
        runner_connection_limit: 10,
        runner_statement_timeout: Duration::from_secs(10),
        init_timeout: Duration::from_secs(10),
        max_database_bytes: 64 << 20,
        cache_size: 4,
    }
}

/// Starts a sandbox, failing with instructions when PostgreSQL is missing.
pub async fn start_sandbox(prefix: &str) -> Sandbox {
    match Sandbox::start(&sandbox_config(prefix)).await {
        Ok(sandbox) => sandbox,
        Err(error) => panic!(
            "cannot start the sandbox on {} ({error}); run scripts/setup.sh or set SQLARENA_TEST_POSTGRES_URL",
            postgres_url()
        ),
    }
}

/// Connects as the admin to `database`.
pub async fn admin(database: &str) -> Client {
    let mut config: tokio_postgres::Config = postgres_url()
        .parse()
        .expect("valid SQLARENA_TEST_POSTGRES_URL");
    config.dbname(database);
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
        panic!("cannot connect to PostgreSQL ({e}); run scripts/setup.sh or set SQLARENA_TEST_POSTGRES_URL")
    });
    tokio::spawn(connection);
    client
}

/// Drops the sandbox's databases and its roles.
pub async fn cleanup(sandbox: Sandbox) {
    sandbox.shutdown().await;
    let client = admin("postgres").await;
    for role in ["owners", "runner"] {
        client
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS \"{}_{role}\"",
                sandbox.prefix()
            ))
            .await
            .expect("drop test role");
    }
}

/// Default limits of the tests: 1 s, 10,000 rows, 1 MiB.
pub fn limits() -> Limits {
    Limits::new(Duration::from_secs(1), 10_000, 1 << 20)
}

/// The people challenge: its init SQL.
pub const PEOPLE_INIT: &str = "CREATE TABLE people (
    id serial PRIMARY KEY,
    name text NOT NULL,
    age int NOT NULL,
    score numeric(6, 2),
    joined date NOT NULL DEFAULT date '2024-01-01'
);
CREATE INDEX people_age ON people (age);";

/// Data of the people challenge's test cases: `count` rows each.
pub fn people_data(count: usize, seed: usize) -> String {
    if count == 0 {
        return String::new();
    }
    let rows: Vec<String> = (1..=count)
        .map(|i| {
            let score = if i % 7 == 0 {
                "NULL".to_string()
            } else {
                format!("{}.{:02}", (i * 13 + seed) % 100, i % 100)
            };
            format!("({i}, 'person {i}', {}, {score})", 18 + (i * 7 + seed) % 50)
        })
        .collect();
    format!(
        "INSERT INTO people (id, name, age, score) VALUES {};",
        rows.join(", ")
    )
}

/// An init payload for the people challenge.
pub fn people_init(solution: &str, cases: &[(i64, String)], times_to_run: u32) -> InitPayload {
    InitPayload {
        challenge_id: ChallengeId(1),
        challenge_name: "people".into(),
        version: 1,
        init: PEOPLE_INIT.into(),
        solution: solution.into(),
        times_to_run,
        test_cases: cases
            .iter()
            .map(|(id, data)| TestCaseData {
                id: TestCaseId(*id),
                data: data.clone(),
            })
            .collect(),
    }
}

/// Runs an init job with the test limits.
pub async fn init(sandbox: &Sandbox, payload: &InitPayload) -> InitOutcome {
    run_init(sandbox, payload, &limits(), &CancellationToken::new(), None)
        .await
        .expect("init job")
}

/// Builds the bundle an init job describes, as the coordinator would serve it.
pub fn bundle_from(
    payload: &InitPayload,
    outcome: &InitOutcome,
    version_hash: &str,
) -> ChallengeBundle {
    assert!(
        outcome.errors.is_empty(),
        "init failed: {:?}",
        outcome.errors
    );
    ChallengeBundle {
        challenge_id: payload.challenge_id,
        version: payload.version,
        version_hash: version_hash.into(),
        init: payload.init.clone(),
        solution: payload.solution.clone(),
        times_to_run: payload.times_to_run,
        test_cases: payload
            .test_cases
            .iter()
            .map(|case| BundleCase {
                id: case.id,
                data: case.data.clone(),
                expected: outcome
                    .expected
                    .iter()
                    .find(|e| e.test_case_id == case.id)
                    .map(|e| e.result.clone()),
            })
            .collect(),
    }
}

/// Runs init for a payload and installs its bundle.
pub async fn prepare_challenge(
    sandbox: &Sandbox,
    payload: &InitPayload,
    version_hash: &str,
) -> Arc<CachedBundle> {
    let outcome = init(sandbox, payload).await;
    let bundle = bundle_from(payload, &outcome, version_hash);
    sandbox
        .install_bundle(bundle, &CancellationToken::new())
        .await
        .expect("install bundle")
}

/// An attempt payload for `query` on every case of an installed bundle.
pub fn attempt_payload(bundle: &CachedBundle, query: &str) -> AttemptPayload {
    AttemptPayload {
        attempt_id: AttemptId(1),
        user_id: UserId(1),
        challenge_id: bundle.bundle.challenge_id,
        challenge_name: "people".into(),
        challenge_version: bundle.bundle.version,
        version_hash: bundle.bundle.version_hash.clone(),
        query: query.into(),
        times_to_run: bundle.bundle.times_to_run,
        test_case_ids: bundle.bundle.test_cases.iter().map(|c| c.id).collect(),
        run_item: None,
    }
}

/// Grades `query` against an installed bundle.
pub async fn attempt(
    sandbox: &Sandbox,
    bundle: &Arc<CachedBundle>,
    query: &str,
    times_to_run: u32,
) -> AttemptOutcome {
    let payload = AttemptPayload {
        times_to_run,
        ..attempt_payload(bundle, query)
    };
    run_attempt(
        sandbox,
        &payload,
        Arc::clone(bundle),
        &limits(),
        &CancellationToken::new(),
        None,
        None,
    )
    .await
    .expect("attempt job")
}
