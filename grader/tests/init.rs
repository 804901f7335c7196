//! Init jobs against the real local PostgreSQL: expected results, precise
//! failure reports, ORDER BY detection and the unfixed-order warning.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sqlarena_common::{InitPayload, TestCaseId};
use sqlarena_grader::run::run_init;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "sqlarena_t_init";

#[tokio::test]
async fn init_jobs() {
    let sandbox = start_sandbox(PREFIX).await;

    // Success: expected results per case, typed cells, ordered by the ORDER BY.
    let payload = people_init(
        "SELECT id, name, score FROM people WHERE age > 40 ORDER BY id",
        &[(1, people_data(10, 0)), (2, people_data(30, 5))],
        3,
    );
    let outcome = init(&sandbox, &payload).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(outcome.expected.len(), 2);
    let first = &outcome.expected[0];
    assert_eq!(first.test_case_id, TestCaseId(1));
    assert!(first.result.ordered);
    assert!(first.reference_ms.is_some_and(|ms| ms >= 0.0));
    let types: Vec<&str> = first
        .result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(types, ["int4", "text", "numeric"]);
    let ids: Vec<i64> = first
        .result
        .rows
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(!ids.is_empty());
    assert!(outcome.expected[1].result.rows.len() > first.result.rows.len());
    let seven = outcome.expected[1]
        .result
        .rows
        .iter()
        .find(|r| r[0] == json!(7));
    if let Some(row) = seven {
        assert_eq!(
            row[2],
            serde_json::Value::Null,
            "score of every 7th row is NULL"
        );
    }
    assert_eq!(
        sandbox.list_databases().await.unwrap(),
        vec![format!("{PREFIX}_template")],
        "init drops its databases"
    );

    // ORDER BY only inside a subquery or window: unordered.
    for solution in [
        "SELECT id FROM (SELECT id FROM people ORDER BY id) q",
        "SELECT id, row_number() OVER (ORDER BY age) FROM people",
        "SELECT id FROM people -- ORDER BY id",
    ] {
        let outcome = init(
            &sandbox,
            &people_init(solution, &[(1, people_data(5, 0))], 1),
        )
        .await;
        assert!(!outcome.expected[0].result.ordered, "{solution}");
    }

    // An ORDER BY that leaves ties: a warning naming the case.
    let outcome = init(
        &sandbox,
        &people_init(
            "SELECT age, name FROM people ORDER BY age",
            &[(4, people_data(60, 0))],
            1,
        ),
    )
    .await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(outcome.expected[0].result.ordered);
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(
        outcome.warnings[0].contains("test case 4")
            && outcome.warnings[0].contains("does not fix the order")
    );
    let fixed = init(
        &sandbox,
        &people_init(
            "SELECT age, name FROM people ORDER BY age, name",
            &[(4, people_data(60, 0))],
            1,
        ),
    )
    .await;
    assert!(fixed.warnings.is_empty(), "{:?}", fixed.warnings);

    // A failing init statement: named once, with PostgreSQL's message and position.
    let mut broken = people_init(
        "SELECT id FROM people",
        &[(1, people_data(3, 0)), (2, people_data(3, 0))],
        1,
    );
    broken.init =
        format!("{PEOPLE_INIT}\nCREATE TABLE other (id int);\nCREAT TABLE oops (id int);");
    let outcome = init(&sandbox, &broken).await;
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let error = &outcome.errors[0];
    assert!(error.contains("init SQL, statement 4"), "{error}");
    assert!(
        error.contains("syntax error at or near \"CREAT\"") && error.contains("at character"),
        "{error}"
    );
    assert!(outcome.expected.is_empty());

    // A failing data statement: names the test case and statement; other cases still checked.
    let bad_data = people_init(
        "SELECT id FROM people",
        &[
            (1, people_data(3, 0)),
            (
                2,
                format!(
                    "{}\nINSERT INTO people (id, name, age) VALUES (1, 'duplicate', 30);",
                    people_data(3, 0)
                ),
            ),
            (
                3,
                "INSERT INTO people (id, name) VALUES (9, 'no age');".into(),
            ),
        ],
        1,
    );
    let outcome = init(&sandbox, &bad_data).await;
    assert_eq!(outcome.errors.len(), 2, "{:?}", outcome.errors);
    assert!(
        outcome.errors[0].starts_with("test case 2, data statement 2"),
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome.errors[0].contains("duplicate key value"),
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome.errors[1].starts_with("test case 3, data statement 1"),
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome.errors[1].contains("null value in column \"age\""),
        "{:?}",
        outcome.errors
    );

    // A failing solution.
    let outcome = init(
        &sandbox,
        &people_init("SELECT nope FROM people", &[(1, people_data(3, 0))], 1),
    )
    .await;
    assert!(
        outcome.errors[0].contains("test case 1: the solution failed")
            && outcome.errors[0].contains("nope"),
        "{:?}",
        outcome.errors
    );
    assert!(outcome.expected.is_empty());
    let outcome = init(
        &sandbox,
        &people_init("DELETE FROM people", &[(1, people_data(3, 0))], 1),
    )
    .await;
    assert!(
        outcome.errors[0].contains("single SELECT"),
        "{:?}",
        outcome.errors
    );

    assert_eq!(
        sandbox.list_databases().await.unwrap(),
        vec![format!("{PREFIX}_template")],
        "failed builds are dropped"
    );
    cleanup(sandbox).await;
}

#[tokio::test]
async fn a_runner_role_with_memberships_is_refused() {
    let prefix = "sqlarena_t_badrunner";
    let client = admin("postgres").await;
    client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {prefix}_runner; DROP ROLE IF EXISTS {prefix}_powerful;
             CREATE ROLE {prefix}_powerful CREATEDB; CREATE ROLE {prefix}_runner;
             GRANT {prefix}_powerful TO {prefix}_runner;"
        ))
        .await
        .unwrap();
    let error = sqlarena_grader::sandbox::Sandbox::start(&sandbox_config(prefix))
        .await
        .unwrap_err()
        .to_string();
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {prefix}_template"))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "DROP ROLE {prefix}_runner; DROP ROLE {prefix}_powerful; DROP ROLE IF EXISTS {prefix}_owners;"
        ))
        .await
        .unwrap();
    assert!(
        error.contains("refusing to run") && error.contains("member of other roles"),
        "{error}"
    );
}

/// Init SQL is the professor's and may be hostile: it runs on a connection
/// that logs in as the version's own owner role, so RESET ROLE or SET
/// SESSION AUTHORIZATION give nothing back, and superuser powers stay out
/// of reach.
#[tokio::test]
async fn init_sql_runs_as_the_owner_login_and_cannot_escalate() {
    let prefix = "sqlarena_t_init_owner";
    let sandbox = start_sandbox(prefix).await;
    let mut payload = people_init("SELECT login, acting FROM who", &[(1, String::new())], 1);
    payload.init = "RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; \
                    CREATE TABLE who AS SELECT session_user::text AS login, current_user::text AS acting"
        .into();
    let outcome = init(&sandbox, &payload).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let row = &outcome.expected[0].result.rows[0];
    assert_eq!(row[0], row[1], "logged in as the role it acts as");
    let owner = row[0].as_str().unwrap();
    assert!(
        owner.starts_with(&format!("{prefix}_o_")),
        "a version's own owner: {owner}"
    );

    let marker = std::env::temp_dir().join(format!("{prefix}_escaped"));
    let _ = std::fs::remove_file(&marker);
    for hostile in [
        format!("RESET ROLE; ALTER ROLE {prefix}_runner SUPERUSER"),
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', current_user); END $$".to_string(),
        "SET SESSION AUTHORIZATION postgres".to_string(),
        "SET ROLE postgres".to_string(),
        format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", marker.display()),
        "CREATE DATABASE sqlarena_t_escaped".to_string(),
    ] {
        payload.init = format!("CREATE TABLE who (login text, acting text); {hostile}");
        let outcome = init(&sandbox, &payload).await;
        assert_eq!(outcome.errors.len(), 1, "{hostile}: {:?}", outcome.errors);
        assert!(
            outcome.errors[0].contains("statement"),
            "{hostile}: {:?}",
            outcome.errors
        );
    }
    assert!(!marker.exists(), "COPY TO PROGRAM ran");
    let admin = admin("postgres").await;
    let row = admin
        .query_one(
            "SELECT bool_or(rolsuper) FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&format!("{prefix}_")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<bool>>(0), Some(false));
    let escaped = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = 'sqlarena_t_escaped'",
            &[],
        )
        .await
        .unwrap();
    assert!(escaped.is_none());
    cleanup(sandbox).await;
}

/// A slow reference with many timed runs still finishes its init before
/// the job's deadline, timed on fewer runs.
#[tokio::test]
async fn slow_references_run_fewer_times_to_finish_by_the_deadline() {
    let sandbox = start_sandbox("sqlarena_t_init_budget").await;
    let mut payload = people_init(
        "SELECT count(*) AS n FROM people a, people b, people c",
        &[(1, people_data(200, 0)), (2, people_data(200, 1))],
        1,
    );
    let run = |payload: InitPayload, budget: Option<Duration>| {
        let sandbox = &sandbox;
        async move {
            let started = Instant::now();
            let outcome = run_init(
                sandbox,
                &payload,
                &limits(),
                &CancellationToken::new(),
                budget.map(|budget| started + budget),
            )
            .await
            .unwrap();
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
            assert_eq!(outcome.expected.len(), 2);
            (outcome.expected[0].reference_ms.unwrap(), started.elapsed())
        }
    };
    // Building the databases and two runs per case: what no budget saves.
    let (one_run, baseline) = run(payload.clone(), None).await;
    assert!(
        one_run * 2.0 * 29.0 > 4000.0,
        "the query is too fast for this test to mean anything ({one_run} ms)"
    );
    // 30 timed runs per case would add over 4 s; the budget allows 1.5 s.
    payload.times_to_run = 30;
    let (_, took) = run(payload, Some(baseline + Duration::from_millis(1500))).await;
    let bound = baseline + Duration::from_millis(2500 + 2 * one_run as u64);
    assert!(
        took < bound,
        "took {took:?}, expected under {bound:?} ({one_run} ms per run, {baseline:?} without timed runs)"
    );
    cleanup(sandbox).await;
}
