//! The sandbox's trust boundaries against the real PostgreSQL: a student
//! never reads the solution, a professor's init SQL never reaches a
//! privileged session, another challenge or the template, builds obey
//! deadlines, cancellation and a size cap, results are capped as decoded,
//! and a killed backend costs one job. After each, honest work still passes.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sqlarena_common::{CaseStatus, ChallengeId, TestCaseId};
use sqlarena_grader::error::JobError;
use sqlarena_grader::run::run_attempt;
use sqlarena_grader::sandbox::{Limits, Sandbox};
use tokio_util::sync::CancellationToken;

/// A marker in the solution's text that no student query contains.
const SOLUTION: &str = "SELECT name, age FROM people WHERE age >= 30 /* solution_marker */";

/// A file that only a PostgreSQL superuser session could create.
fn marker(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sqlarena-trust-{name}"));
    let _ = std::fs::remove_file(&path);
    path
}

/// Fails when any role of the sandbox is a superuser or can create roles
/// or databases.
async fn assert_no_privileged_role(sandbox: &Sandbox) {
    let client = admin("postgres").await;
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(rolname, ', '), '') FROM pg_roles
             WHERE starts_with(rolname, $1) AND (rolsuper OR rolcreaterole OR rolcreatedb)",
            &[&format!("{}_", sandbox.prefix())],
        )
        .await
        .unwrap();
    let privileged: String = row.get(0);
    assert!(privileged.is_empty(), "privileged roles: {privileged}");
}

/// The solution is prepared and run on a connection of its own: even with
/// `pg_prepared_statements` readable, the student's session shows only the
/// student's statement; and it is not readable.
#[tokio::test]
async fn students_never_see_the_reference_solution() {
    let sandbox = start_sandbox("sqlarena_t_trust_solution").await;
    let payload = people_init(SOLUTION, &[(1, people_data(40, 0))], 2);
    let bundle = prepare_challenge(&sandbox, &payload, "trust-solution").await;

    for query in [
        "SELECT name::text, statement::text FROM pg_prepared_statements",
        "SELECT name::text, statement::text FROM pg_catalog.pg_prepared_statement()",
        "SELECT name::text, statement::text FROM pg_cursors",
    ] {
        let outcome = attempt(&sandbox, &bundle, query, 1).await;
        let case = &outcome.cases[0];
        assert_eq!(case.status, CaseStatus::Error, "{query}: {case:?}");
        let error = case.error.clone().unwrap_or_default();
        assert!(error.contains("permission denied"), "{query}: {error}");
        let text = serde_json::to_string(&outcome).unwrap();
        assert!(!text.contains("solution_marker"), "{query}: {text}");
    }

    // Defence in depth aside: grant the catalog back, as a careless
    // operator might, and the student's session still holds nothing else.
    let database = bundle.databases[&TestCaseId(1)].clone();
    admin(&database)
        .await
        .batch_execute(&format!(
            "GRANT SELECT ON pg_catalog.pg_prepared_statements TO {runner};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_prepared_statement() TO {runner}",
            runner = sandbox.runner_role()
        ))
        .await
        .unwrap();
    let spy = "SELECT count(*)::int AS seen FROM pg_prepared_statements \
               WHERE statement LIKE '%' || 'solution' || '_marker%'";
    for _ in 0..2 {
        let outcome = attempt(&sandbox, &bundle, spy, 2).await;
        let case = &outcome.cases[0];
        assert_eq!(case.status, CaseStatus::Failed, "{case:?}");
        let rows = &case.actual_result.as_ref().expect("visible rows").rows;
        assert_eq!(rows, &vec![vec![json!(0)]], "the solution was visible");
    }
    let honest = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age FROM people WHERE 30 <= age",
        2,
    )
    .await;
    assert_eq!(honest.cases[0].status, CaseStatus::Passed);
    // Each passed case says how sure its ratio is.
    let case = &honest.cases[0];
    let timing = case.timing.expect("timing of a passed case");
    let ratio = case.ratio.unwrap();
    assert!(
        timing.ratio_low <= ratio && ratio <= timing.ratio_high,
        "{timing:?} around {ratio}"
    );
    assert!(
        timing.rounds >= 2 && timing.discarded <= timing.rounds / 2,
        "{timing:?}"
    );
    drop(bundle);
    cleanup(sandbox).await;
}

/// Objects an init could plant for a privileged session to call: each one
/// tries to make its caller's role superuser and to run a program.
fn hijacks(marker: &std::path::Path) -> Vec<(&'static str, String)> {
    let body = format!(
        "BEGIN
           BEGIN EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', current_user); EXCEPTION WHEN others THEN NULL; END;
           BEGIN EXECUTE pg_catalog.format('CREATE ROLE %I SUPERUSER', (SELECT name FROM public.trap_owner) || '_pwned'); EXCEPTION WHEN others THEN NULL; END;
           BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {}'''; EXCEPTION WHEN others THEN NULL; END;
           RETURN $1::text OPERATOR(pg_catalog.=) $2::text;
         END",
        marker.display()
    );
    let trap = |name: &str, left: &str, right: &str| {
        format!(
            "CREATE FUNCTION public.{name}(a {left}, b {right}) RETURNS boolean LANGUAGE plpgsql AS $f${body}$f$;"
        )
    };
    let text_body = body.replace(
        "RETURN $1::text OPERATOR(pg_catalog.=) $2::text;",
        "RETURN $1;",
    );
    let text_trap = |name: &str, args: &str| {
        format!(
            "CREATE FUNCTION public.{name}({args}) RETURNS text LANGUAGE plpgsql AS $f${text_body}$f$;"
        )
    };
    vec![
        (
            "operator = (oid, regrole)",
            format!(
                "{} CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = public.trap);",
                trap("trap", "oid", "regrole")
            ),
        ),
        (
            "operator = (name, text)",
            format!(
                "{} CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.trap);",
                trap("trap", "name", "text")
            ),
        ),
        (
            "operator ~ (name, text)",
            format!(
                "{} CREATE OPERATOR public.~ (LEFTARG = name, RIGHTARG = text, FUNCTION = public.trap);",
                trap("trap", "name", "text")
            ),
        ),
        ("public.lower", text_trap("lower", "text")),
        ("public.quote_ident", text_trap("quote_ident", "text")),
        ("public.format", text_trap("format", "text, VARIADIC text[]")),
        (
            "database search_path",
            format!(
                "{} DO $d$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); END $d$;",
                text_trap("lower", "text")
            ),
        ),
        (
            "role search_path",
            format!(
                "{} ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;",
                text_trap("quote_ident", "text")
            ),
        ),
        (
            "role read-only",
            "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on;".to_string(),
        ),
    ]
}

/// No privileged session resolves a name through objects a professor
/// made: operators and functions planted by init SQL are never called by
/// the admin, settings an init leaves behind break nothing, and the next
/// challenge builds and grades as usual.
#[tokio::test]
async fn init_sql_cannot_hijack_a_privileged_session() {
    let sandbox = start_sandbox("sqlarena_t_trust_hijack").await;
    let marker = marker("hijack");
    for (name, planted) in hijacks(&marker) {
        let mut payload = people_init(
            SOLUTION,
            &[(1, people_data(10, 0)), (2, people_data(10, 1))],
            1,
        );
        // The trap leaves a superuser role named after the owner when a
        // superuser calls it: evidence that outlives the owner role.
        payload.init = format!(
            "{PEOPLE_INIT}; CREATE TABLE public.trap_owner AS SELECT current_user::text AS name; {planted}"
        );
        let outcome = init(&sandbox, &payload).await;
        assert!(!marker.exists(), "{name}: a superuser session ran the trap");
        assert_no_privileged_role(&sandbox).await;
        if outcome.errors.is_empty() {
            let bundle = bundle_from(&payload, &outcome, &format!("hijack-{name}"));
            let bundle = sandbox
                .install_bundle(bundle, &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let graded = attempt(
                &sandbox,
                &bundle,
                "SELECT name, age FROM people WHERE age >= 30",
                1,
            )
            .await;
            assert!(!marker.exists(), "{name}: a superuser session ran the trap");
            assert!(
                graded.cases.iter().all(|c| c.status != CaseStatus::Pending),
                "{name}: {graded:?}"
            );
        }
    }
    // After all of them, an honest challenge builds and grades as usual.
    let payload = people_init(SOLUTION, &[(1, people_data(30, 2))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "hijack-honest").await;
    let honest = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age FROM people WHERE 30 <= age",
        1,
    )
    .await;
    assert_eq!(honest.cases[0].status, CaseStatus::Passed, "{honest:?}");
    assert_no_privileged_role(&sandbox).await;
    drop(bundle);
    cleanup(sandbox).await;
}

/// Each challenge version has its own owner: an init cannot drop the
/// template, reach another challenge's database or role, or change how the
/// next version builds.
#[tokio::test]
async fn one_professor_cannot_touch_another_challenge() {
    let sandbox = start_sandbox("sqlarena_t_trust_owner").await;
    let payload = people_init(SOLUTION, &[(1, people_data(30, 0))], 1);
    let victim = prepare_challenge(&sandbox, &payload, "owner-victim").await;
    let victim_database = victim.databases[&TestCaseId(1)].clone();
    let template = format!("{}_template", sandbox.prefix());
    for hostile in [
        format!("DROP DATABASE {template}"),
        format!("ALTER DATABASE {template} CONNECTION LIMIT 0"),
        format!("ALTER DATABASE {victim_database} CONNECTION LIMIT 0"),
        format!("ALTER DATABASE {victim_database} RENAME TO stolen"),
        format!("DROP DATABASE {victim_database}"),
        format!("ALTER ROLE {} NOLOGIN", victim.owner),
        format!("ALTER ROLE {} CONNECTION LIMIT 0", sandbox.runner_role()),
        format!("GRANT {} TO CURRENT_USER", victim.owner),
    ] {
        let mut attacker = people_init(SOLUTION, &[(1, people_data(5, 1))], 1);
        attacker.init = format!("{PEOPLE_INIT}; {hostile}");
        let outcome = init(&sandbox, &attacker).await;
        assert_eq!(outcome.errors.len(), 1, "{hostile}: {:?}", outcome.errors);
        let graded = attempt(
            &sandbox,
            &victim,
            "SELECT name, age FROM people WHERE 30 <= age",
            1,
        )
        .await;
        assert_eq!(
            graded.cases[0].status,
            CaseStatus::Passed,
            "after {hostile}: {graded:?}"
        );
    }
    assert_eq!(
        sandbox.list_databases().await.unwrap(),
        {
            let mut expected = vec![template, victim_database];
            expected.sort();
            expected
        },
        "only the template and the victim's database remain"
    );
    drop(victim);
    cleanup(sandbox).await;
}

/// Init SQL cannot outlast its limits: a statement that SETs its timeout
/// away is cancelled by the client, a cancelled job stops its build at
/// once (holding up no other build), and a database that grows past the
/// cap fails as the professor's error.
#[tokio::test]
async fn builds_obey_deadlines_cancellation_and_the_size_cap() {
    let mut config = sandbox_config("sqlarena_t_trust_build");
    config.init_timeout = Duration::from_secs(1);
    config.max_database_bytes = 16 << 20;
    let sandbox = Sandbox::start(&config).await.expect("sandbox");

    let mut payload = people_init(SOLUTION, &[(1, people_data(5, 0))], 1);
    payload.init = format!(
        "{PEOPLE_INIT}; SET statement_timeout = 0; SELECT count(*) FROM generate_series(1, 100000000000)"
    );
    let started = Instant::now();
    let outcome = init(&sandbox, &payload).await;
    // Unstopped, the init would count for hours; the bound is loose so a
    // busy machine cannot fail it.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    assert!(
        outcome.errors[0].contains("ran longer than the 1000 ms limit"),
        "{:?}",
        outcome.errors
    );

    payload.init = format!(
        "{PEOPLE_INIT}; CREATE TABLE filler AS SELECT md5(g::text) || md5((g * 7)::text) AS pad FROM generate_series(1, 5000000) g"
    );
    let outcome = init(&sandbox, &payload).await;
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    assert!(
        outcome.errors[0].contains("grew past the 16 MiB limit"),
        "{:?}",
        outcome.errors
    );

    cleanup(sandbox).await;
}

/// A build hung in init SQL that SETs its own timeout away stops at once
/// when its job is cancelled, and holds up no other build meanwhile.
#[tokio::test]
async fn a_hung_build_stops_on_cancel_and_blocks_no_other() {
    let mut config = sandbox_config("sqlarena_t_trust_cancel");
    config.init_timeout = Duration::from_secs(600);
    let sandbox = Sandbox::start(&config).await.expect("sandbox");
    let mut hung = people_init(SOLUTION, &[(1, people_data(5, 0))], 1);
    hung.init = format!(
        "{PEOPLE_INIT}; SET statement_timeout = 0; SELECT count(*) FROM generate_series(1, 100000000000)"
    );
    let hung_bundle = sqlarena_common::ChallengeBundle {
        challenge_id: ChallengeId(2),
        version: 1,
        version_hash: "cancel-hung".into(),
        init: hung.init.clone(),
        solution: SOLUTION.into(),
        times_to_run: 1,
        test_cases: vec![sqlarena_common::BundleCase {
            id: TestCaseId(1),
            data: people_data(5, 0),
            expected: None,
        }],
    };
    let cancel = CancellationToken::new();
    let honest = people_init(SOLUTION, &[(1, people_data(20, 0))], 1);
    let (hung, built) = tokio::join!(
        async {
            let result = sandbox.install_bundle(hung_bundle, &cancel).await;
            (result, Instant::now())
        },
        async {
            let bundle = prepare_challenge(&sandbox, &honest, "cancel-honest").await;
            cancel.cancel();
            (bundle, Instant::now())
        }
    );
    let ((hung, stopped), (built, cancelled)) = (hung, built);
    assert!(matches!(hung, Err(JobError::Cancelled)), "{hung:?}");
    // Uncancelled, the build would count for hours: 30 s proves the
    // cancel reached the server even on a busy machine.
    assert!(
        stopped.duration_since(cancelled) < Duration::from_secs(30),
        "stopped {:?} after the cancel",
        stopped.duration_since(cancelled)
    );
    let graded = attempt(
        &sandbox,
        &built,
        "SELECT name, age FROM people WHERE 30 <= age",
        1,
    )
    .await;
    assert_eq!(graded.cases[0].status, CaseStatus::Passed, "{graded:?}");
    let databases = sandbox.list_databases().await.unwrap();
    assert_eq!(
        databases.len(),
        2,
        "the template and the honest build only: {databases:?}"
    );
    drop(built);
    cleanup(sandbox).await;
}

/// Caps apply to decoded data: values tiny on the wire but huge as text,
/// and one huge value, end as the student's error with a clear message.
#[tokio::test]
async fn decoded_size_bombs_are_the_students_error() {
    let sandbox = start_sandbox("sqlarena_t_trust_bombs").await;
    let payload = people_init(SOLUTION, &[(1, people_data(40, 0))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "trust-bombs").await;
    let limits =
        Limits::new(Duration::from_secs(5), 10_000, 1 << 20).with_max_cell_bytes(256 << 10);
    let columns: Vec<String> = (0..200).map(|i| format!("NULL::int AS c{i}")).collect();
    let wide_nulls = format!(
        "SELECT {} FROM generate_series(1, 9000)",
        columns.join(", ")
    );
    for (query, expected) in [
        (
            "SELECT 9e131071::numeric AS n FROM generate_series(1, 2000)",
            "bytes of data (the limit)",
        ),
        ("SELECT repeat('x', 600000) AS big", "(the limit per value)"),
        // Values that carry no bytes still cost memory: 200 NULL columns
        // a row count against the byte cap, long before the row cap.
        (wide_nulls.as_str(), "bytes of data (the limit)"),
        // Whichever comes first stops one 200 MB value: the time limit
        // while PostgreSQL builds and sends it, or the byte cap.
        (
            "SELECT repeat('x', 200000000) AS huge",
            "bytes of data (the limit)|ran longer than the 5 s limit",
        ),
        (
            "SELECT decode(repeat('ab', 200000), 'hex') AS bytes",
            "(the limit per value)",
        ),
    ] {
        let started = Instant::now();
        let outcome = run_attempt(
            &sandbox,
            &attempt_payload(&bundle, query),
            std::sync::Arc::clone(&bundle),
            &limits,
            &CancellationToken::new(),
            None,
            None,
        )
        .await
        .expect("graded");
        let case = &outcome.cases[0];
        assert_eq!(case.status, CaseStatus::Error, "{query}: {case:?}");
        let error = case.error.clone().unwrap_or_default();
        assert!(
            expected.split('|').any(|part| error.contains(part)),
            "{query}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query}: {:?}",
            started.elapsed()
        );
        let posted = serde_json::to_vec(&outcome).unwrap().len();
        assert!(posted < 64 << 10, "{query}: outcome of {posted} bytes");
    }
    let honest = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age FROM people WHERE 30 <= age",
        1,
    )
    .await;
    assert_eq!(honest.cases[0].status, CaseStatus::Passed);
    drop(bundle);
    cleanup(sandbox).await;
}

/// A PostgreSQL backend killed mid-attempt costs that attempt one try (a
/// retryable error); the grader's next attempts, and others running at
/// the same time, are graded as usual.
#[tokio::test]
async fn a_killed_backend_costs_only_its_job() {
    let sandbox = start_sandbox("sqlarena_t_trust_kill").await;
    let payload = people_init(SOLUTION, &[(1, people_data(300, 0))], 1);
    let bundle = prepare_challenge(&sandbox, &payload, "trust-kill").await;
    let other_payload = people_init("SELECT id FROM people", &[(7, people_data(30, 1))], 1);
    let other = prepare_challenge(&sandbox, &other_payload, "trust-kill-other").await;
    let database = bundle.databases[&TestCaseId(1)].clone();
    let limits = Limits::new(Duration::from_secs(30), 10_000, 1 << 20);
    let slow = "SELECT a.name, a.age FROM people a, people b, people c \
                WHERE a.age >= 30 AND b.id = c.id AND a.id = b.id AND (a.age + b.age + c.age) >= 0 \
                AND (SELECT count(*) FROM people d, people e, people f) >= 0";
    let (victim_payload, never) = (attempt_payload(&bundle, slow), CancellationToken::new());
    let victim = run_attempt(
        &sandbox,
        &victim_payload,
        std::sync::Arc::clone(&bundle),
        &limits,
        &never,
        None,
        None,
    );
    let killer = async {
        let client = admin("postgres").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let killed = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = $1 AND usename = $2 AND state = 'active' AND query LIKE '%people d%'",
                    &[&database, &sandbox.runner_role()],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
            if killed > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the slow query never showed up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Meanwhile another challenge's attempt is graded as usual.
        attempt(&sandbox, &other, "SELECT id FROM people", 1).await
    };
    let (victim, unaffected) = tokio::join!(victim, killer);
    match victim {
        Err(JobError::Retryable(message)) => {
            assert!(message.contains("connection"), "{message}")
        }
        other => panic!("expected a retryable connection error, got {other:?}"),
    }
    assert_eq!(
        unaffected.cases[0].status,
        CaseStatus::Passed,
        "{unaffected:?}"
    );
    let again = attempt(
        &sandbox,
        &bundle,
        "SELECT name, age FROM people WHERE 30 <= age",
        1,
    )
    .await;
    assert_eq!(again.cases[0].status, CaseStatus::Passed, "{again:?}");
    drop((bundle, other));
    cleanup(sandbox).await;
}
