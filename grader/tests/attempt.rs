//! Attempt jobs against the real local PostgreSQL: correct and wrong
//! answers, the reference as an attempt, typed cells, progress and the
//! bundle cache.

mod common;

use std::sync::Arc;

use common::*;
use sqlarena_common::{AttemptId, AttemptPayload, CaseStatus, ChallengeId, TestCaseId, UserId};
use sqlarena_grader::run::run_attempt;
use sqlarena_grader::sandbox::SessionKind;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "sqlarena_t_attempt";

#[tokio::test]
async fn attempt_jobs() {
    let sandbox = start_sandbox(PREFIX).await;
    let payload = people_init(
        "SELECT name, age FROM people WHERE age >= 30",
        &[
            (1, people_data(1000, 0)),
            (2, people_data(1000, 3)),
            (3, people_data(0, 0)),
        ],
        5,
    );
    let bundle = prepare_challenge(&sandbox, &payload, "people-v1").await;

    // Correct, written differently.
    let outcome = attempt(
        &sandbox,
        &bundle,
        "select p.name, p.age from people p where not p.age < 30 order by 2",
        3,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.cases.len(), 3);
    for case in &outcome.cases {
        assert_eq!(case.status, CaseStatus::Passed, "{case:?}");
        assert!(
            case.execution_ms.is_some() && case.min_ms.is_some() && case.reference_ms.is_some()
        );
        assert!(case.min_ms <= case.execution_ms);
        assert!(case.ratio.is_some_and(|r| r.is_finite() && r > 0.0));
        assert!(case
            .actual_result
            .as_ref()
            .is_some_and(|r| r.rows.len() <= 50));
    }

    // Wrong: a subset, with a diff naming the missing rows.
    let outcome = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age FROM people WHERE age > 30",
        3,
    )
    .await;
    let case = &outcome.cases[0];
    assert_eq!(case.status, CaseStatus::Failed);
    let diff = case.diff.as_deref().unwrap();
    assert!(
        diff.contains("missing") && diff.contains("0 unexpected"),
        "{diff}"
    );
    assert!(diff.contains("missing: (\"person"), "{diff}");
    assert_eq!(
        outcome.cases[2].status,
        CaseStatus::Passed,
        "the empty case is still right"
    );
    assert!(
        case.actual_result.as_ref().unwrap().rows.len() == 50,
        "actual result is truncated"
    );

    // Wrong: wrong column type, and a student error.
    let outcome = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age::text FROM people WHERE age >= 30",
        1,
    )
    .await;
    assert!(
        outcome.cases[0]
            .diff
            .as_deref()
            .unwrap()
            .contains("column 2"),
        "{:?}",
        outcome.cases[0]
    );
    let outcome = attempt(&sandbox, &bundle, "SELECT name, agee FROM people", 1).await;
    assert_eq!(outcome.cases[0].status, CaseStatus::Error);
    assert!(outcome.cases[0]
        .error
        .as_deref()
        .unwrap()
        .contains("column \"agee\" does not exist"));

    // The reference itself: ratio near 1.
    let outcome = attempt(&sandbox, &bundle, &payload.solution, 9).await;
    for case in &outcome.cases[..2] {
        assert_eq!(case.status, CaseStatus::Passed);
        let ratio = case.ratio.unwrap();
        assert!((0.5..2.0).contains(&ratio), "reference ratio {ratio}");
    }

    // Progress: one message per case, in order.
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let attempt_payload = AttemptPayload {
        attempt_id: AttemptId(7),
        user_id: UserId(1),
        challenge_id: ChallengeId(1),
        challenge_name: "people".into(),
        challenge_version: 1,
        version_hash: "people-v1".into(),
        query: payload.solution.clone(),
        times_to_run: 1,
        test_case_ids: vec![TestCaseId(2), TestCaseId(1)],
        run_item: None,
    };
    let outcome = run_attempt(
        &sandbox,
        &attempt_payload,
        Arc::clone(&bundle),
        &limits(),
        &CancellationToken::new(),
        Some(&sender),
        None,
    )
    .await
    .unwrap();
    drop(sender);
    let mut seen = Vec::new();
    while let Some(case) = receiver.recv().await {
        seen.push(case.test_case_id);
    }
    assert_eq!(seen, vec![TestCaseId(2), TestCaseId(1)]);
    assert_eq!(outcome.cases.len(), 2);

    // A cancelled job stops.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let result = run_attempt(
        &sandbox,
        &attempt_payload,
        Arc::clone(&bundle),
        &limits(),
        &cancelled,
        None,
        None,
    )
    .await;
    assert_eq!(result.unwrap_err(), sqlarena_grader::JobError::Cancelled);

    // The bundle stays cached; installing it again reuses its databases.
    let again = sandbox
        .install_bundle(bundle.bundle.clone(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&again, &bundle));
    drop(again);
    drop(bundle);
    cleanup(sandbox).await;
}

#[tokio::test]
async fn ordered_challenges_and_typed_cells() {
    let sandbox = start_sandbox("sqlarena_t_ordered").await;
    let payload = people_init(
        "SELECT age, count(*) AS n, avg(score) AS mean, min(joined) AS first, interval '1 day' * age AS span, \
         array[age] AS ages FROM people GROUP BY age ORDER BY age DESC",
        &[(1, people_data(200, 0))],
        3,
    );
    let bundle = prepare_challenge(&sandbox, &payload, "ordered-v1").await;
    let expected = bundle.bundle.test_cases[0].expected.as_ref().unwrap();
    assert!(expected.ordered);
    let types: Vec<&str> = expected
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        ["int4", "int8", "numeric", "date", "interval", "_int4"]
    );
    let first = &expected.rows[0];
    assert!(first[2].is_number(), "numeric is a number: {first:?}");
    assert!(first[3].as_str().unwrap().starts_with("2024-01-01"));
    assert!(first[4].as_str().unwrap().ends_with("days"), "{first:?}");
    assert!(first[5].as_str().unwrap().starts_with('{'), "{first:?}");

    let right = attempt(
        &sandbox,
        &bundle,
        &payload
            .solution
            .replace("avg(score)", "sum(score) / count(score)"),
        1,
    )
    .await;
    assert_eq!(
        right.cases[0].status,
        CaseStatus::Passed,
        "{:?}",
        right.cases[0]
    );
    let wrong_order = attempt(
        &sandbox,
        &bundle,
        &payload.solution.replace("DESC", "ASC"),
        1,
    )
    .await;
    assert_eq!(wrong_order.cases[0].status, CaseStatus::Failed);
    assert!(wrong_order.cases[0]
        .diff
        .as_deref()
        .unwrap()
        .contains("order matters"));
    drop(bundle);
    cleanup(sandbox).await;
}

#[tokio::test]
async fn the_bundle_cache_evicts_whole_bundles() {
    let mut config = sandbox_config("sqlarena_t_cache");
    config.cache_size = 1;
    let sandbox = sqlarena_grader::sandbox::Sandbox::start(&config)
        .await
        .expect("sandbox (see scripts/setup.sh)");
    let payload = people_init(
        "SELECT id FROM people",
        &[(1, people_data(5, 0)), (2, people_data(6, 0))],
        1,
    );
    let first = prepare_challenge(&sandbox, &payload, "cache-a").await;
    let first_databases: Vec<String> = first.databases.values().cloned().collect();
    assert_eq!(sandbox.list_databases().await.unwrap().len(), 3);
    drop(first);
    let second = prepare_challenge(&sandbox, &payload, "cache-b").await;
    let databases = sandbox.list_databases().await.unwrap();
    assert_eq!(databases.len(), 3, "{databases:?}");
    assert!(
        first_databases.iter().all(|name| !databases.contains(name)),
        "evicted bundle's databases are dropped"
    );
    assert!(sandbox.cached_bundle("cache-a").await.is_none());
    assert_eq!(
        attempt(&sandbox, &second, "SELECT id FROM people", 1)
            .await
            .cases[1]
            .status,
        CaseStatus::Passed
    );
    drop(second);
    cleanup(sandbox).await;
}

/// A run's BEGIN, query and ROLLBACK travel in one pipeline: each run must
/// still be its own read-only, repeatable-read transaction with the
/// limits' timeouts, and leave the connection idle for the next one.
#[tokio::test]
async fn every_run_is_its_own_read_only_transaction() {
    let sandbox = start_sandbox("sqlarena_t_runs").await;
    let payload = people_init("SELECT id FROM people", &[(1, people_data(3, 0))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "runs-v1").await;
    let mut session = sandbox
        .runner_session(&bundle.databases[&TestCaseId(1)], SessionKind::Student)
        .await
        .unwrap();
    let probe = session
        .prepare(
            "SELECT current_setting('transaction_isolation') AS isolation, \
             current_setting('transaction_read_only') AS read_only, \
             current_setting('statement_timeout') AS statement_timeout, \
             current_setting('lock_timeout') AS lock_timeout, \
             now()::text AS transaction_start",
        )
        .await
        .unwrap();
    let limits =
        sqlarena_grader::sandbox::Limits::new(std::time::Duration::from_millis(1500), 10, 1 << 20);
    let clock = sandbox.query_time();
    let mut starts = Vec::new();
    for _ in 0..3 {
        let execution = session
            .execute(&probe, &limits, true, &CancellationToken::new())
            .await
            .unwrap();
        let row = &execution.result.unwrap().rows[0];
        let text = |i: usize| row[i].as_str().unwrap().to_owned();
        assert_eq!(text(0), "repeatable read");
        assert_eq!(text(1), "on");
        assert_eq!(text(2), "1500ms");
        assert_eq!(text(3), "1s");
        starts.push(text(4));
    }
    starts.dedup();
    assert_eq!(starts.len(), 3, "each run starts a transaction: {starts:?}");
    assert!(
        sandbox.query_time() > clock,
        "the sandbox's query clock counts the runs"
    );
    assert!(session.is_open());
    drop(session);
    drop(bundle);
    cleanup(sandbox).await;
}

/// Columns read as text go through a wrapper query: a trailing semicolon
/// or comment must not break it, for the reference or for a student. A
/// NUL character is the student's mistake, not a grader failure.
#[tokio::test]
async fn wrapped_queries_survive_semicolons_and_nul_is_rejected() {
    let sandbox = start_sandbox("sqlarena_t_wrap").await;
    let payload = people_init(
        "SELECT id, make_interval(days => age) AS waited FROM people WHERE age >= 30;",
        &[(1, people_data(20, 0))],
        1,
    );
    let bundle = prepare_challenge(&sandbox, &payload, "wrap-v1").await;
    let expected = bundle.bundle.test_cases[0].expected.as_ref().unwrap();
    assert_eq!(expected.columns[1].type_name, "interval");
    assert!(!expected.rows.is_empty());
    let outcome = attempt(
        &sandbox,
        &bundle,
        "select id, make_interval(days => age) as waited from people where not age < 30; -- done",
        1,
    )
    .await;
    assert_eq!(outcome.cases[0].status, CaseStatus::Passed, "{outcome:?}");

    let outcome = attempt(
        &sandbox,
        &bundle,
        "SELECT id FROM people WHERE name = '\0'",
        1,
    )
    .await;
    assert_eq!(outcome.cases[0].status, CaseStatus::Error);
    assert!(
        outcome.cases[0].error.as_deref().unwrap().contains("NUL"),
        "{outcome:?}"
    );
    drop(bundle);
    cleanup(sandbox).await;
}

/// A grader that cannot rebuild a challenge's databases for an attempt
/// reports which statement failed, but not its text or PostgreSQL's
/// message: that error reaches the student, and the data may be hidden.
#[tokio::test]
async fn a_failed_bundle_build_does_not_quote_test_data() {
    let sandbox = start_sandbox("sqlarena_t_build").await;
    let payload = people_init("SELECT name FROM people", &[(1, people_data(3, 0))], 1);
    let outcome = init(&sandbox, &payload).await;
    let mut bundle = bundle_from(&payload, &outcome, "build-v1");
    bundle.test_cases[0].data =
        "INSERT INTO people (name, age) VALUES ('hidden-secret-name', 1); \
         INSERT INTO people (id, name, age) VALUES (1, 'hidden-secret-name', 2), (1, 'hidden-secret-name', 3)"
            .into();
    let message = match sandbox
        .install_bundle(bundle, &CancellationToken::new())
        .await
    {
        Ok(_) => panic!("the bundle built"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains("data statement 2"), "{message}");
    assert!(!message.contains("hidden-secret"), "{message}");
    assert!(!message.contains("(1)"), "{message}");
    cleanup(sandbox).await;
}

/// A correct but slow query whose rounds cannot all fit before the job's
/// deadline still gets its result, from fewer timed rounds, in time.
#[tokio::test]
async fn slow_attempts_run_fewer_rounds_to_finish_by_the_deadline() {
    let sandbox = start_sandbox("sqlarena_t_budget").await;
    let solution = "SELECT count(*) AS n FROM people a, people b, people c";
    // Init times the reference once; the attempt asks for 30 rounds.
    let payload = people_init(solution, &[(1, people_data(200, 0))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "budget-v1").await;
    let job = AttemptPayload {
        attempt_id: AttemptId(9),
        user_id: UserId(1),
        challenge_id: ChallengeId(1),
        challenge_name: "people".into(),
        challenge_version: 1,
        version_hash: "budget-v1".into(),
        query: solution.into(),
        times_to_run: 30,
        test_case_ids: vec![TestCaseId(1)],
        run_item: None,
    };
    // One round (student + reference) of this query takes about half a
    // second here, so 31 rounds take over 10 s; the budget is 1.5 s.
    let started = std::time::Instant::now();
    let outcome = run_attempt(
        &sandbox,
        &job,
        Arc::clone(&bundle),
        &limits(),
        &CancellationToken::new(),
        None,
        Some(started + std::time::Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.cases[0].status, CaseStatus::Passed, "{outcome:?}");
    assert!(outcome.cases[0].ratio.is_some());
    let one_run = outcome.cases[0].reference_ms.unwrap();
    assert!(
        one_run * 2.0 * 31.0 > 6000.0,
        "the query is too fast for this test to mean anything ({one_run} ms)"
    );
    // Rounds slower than the warm-ups (a loaded machine) may overshoot the
    // budget, but nowhere near running all 30.
    assert!(
        took < std::time::Duration::from_millis(3000 + 2 * one_run as u64 + 500),
        "took {took:?} with a 1.5 s budget ({one_run} ms per run)"
    );
    drop(bundle);
    cleanup(sandbox).await;
}

/// Student queries run on a login of the runner role itself, with the
/// role's settings in force, and the role has its connection limit.
#[tokio::test]
async fn runner_connections_log_in_as_the_runner_with_its_settings() {
    let prefix = "sqlarena_t_settings";
    let sandbox = start_sandbox(prefix).await;
    let payload = people_init("SELECT id FROM people", &[(1, people_data(3, 0))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "settings-v1").await;
    let mut session = sandbox
        .runner_session(&bundle.databases[&TestCaseId(1)], SessionKind::Student)
        .await
        .unwrap();
    let names = [
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "temp_file_limit",
        "work_mem",
        "jit",
        "max_parallel_workers_per_gather",
        "default_transaction_read_only",
    ];
    let columns: Vec<String> = names
        .iter()
        .map(|name| format!("current_setting('{name}')"))
        .collect();
    let probe = session
        .prepare(&format!(
            "SELECT session_user::text, current_user::text, {}",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let execution = session
        .execute(&probe, &limits(), true, &CancellationToken::new())
        .await
        .unwrap();
    let row: Vec<String> = execution.result.unwrap().rows[0]
        .iter()
        .map(|cell| cell.as_str().unwrap().to_owned())
        .collect();
    let runner = format!("{prefix}_runner");
    assert_eq!(
        row,
        [
            runner.as_str(),
            runner.as_str(),
            "30s",
            "10min",
            "256MB",
            "16MB",
            "off",
            "0",
            "on"
        ]
    );
    let admin = admin("postgres").await;
    let limit: i32 = admin
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&runner],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 10, "the test sandbox's runner_connection_limit");
    drop(session);
    drop(bundle);
    cleanup(sandbox).await;
}
