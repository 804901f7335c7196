//! Hostile submissions against the real sandbox. Each must be contained
//! with a clear message; afterwards the data is intact, the runner role is
//! still unprivileged, and an honest attempt is graded correctly.

mod common;

use common::*;
use sqlarena_common::{CaseStatus, TestCaseId};

const PREFIX: &str = "sqlarena_t_security";

/// A hostile query and what its error message must say (any of the parts).
struct Hostile {
    name: &'static str,
    query: String,
    message: &'static [&'static str],
}

fn hostile(name: &'static str, query: &str, message: &'static [&'static str]) -> Hostile {
    Hostile {
        name,
        query: query.to_string(),
        message,
    }
}

const SINGLE: &[&str] = &["only a single SELECT statement is allowed"];
const DENIED: &[&str] = &["permission denied"];
const TIMEOUT: &[&str] = &["ran longer than the 1 s limit"];
/// A function scan materializes its rows: whichever limit it hits first,
/// time or temp_file_limit, stops it.
const TIME_OR_SPACE: &[&str] = &[
    "ran longer than the 1 s limit",
    "used too much temporary space",
];

fn submissions(other_database: &str) -> Vec<Hostile> {
    vec![
        hostile("two statements", "SELECT 1; SELECT 2", SINGLE),
        hostile("hidden second statement", "select 1 /* ; */; delete from people", SINGLE),
        hostile("rollback chain", "ROLLBACK; BEGIN READ WRITE; ALTER ROLE CURRENT_USER SUPERUSER", SINGLE),
        hostile("commit then delete", "select 1; commit; delete from people", SINGLE),
        hostile("begin read write", "BEGIN TRANSACTION READ WRITE", &["found BEGIN"]),
        hostile("alter role", "ALTER ROLE CURRENT_USER SUPERUSER", &["found ALTER"]),
        hostile("set role", "SET ROLE postgres", &["found SET"]),
        hostile("reset role", "RESET ROLE", &["found RESET"]),
        hostile("session authorization", "SET SESSION AUTHORIZATION postgres", &["found SET"]),
        hostile("set_config role", "SELECT set_config('role', 'postgres', false)", DENIED),
        hostile("set statement_timeout", "SET statement_timeout = 0", &["found SET"]),
        hostile(
            "set_config statement_timeout",
            "SELECT set_config('statement_timeout', '0', true), count(*) FROM generate_series(1, 100000000000)",
            DENIED,
        ),
        hostile("pg_sleep", "SELECT pg_sleep(10)", DENIED),
        hostile("pg_sleep_for", "SELECT pg_sleep_for('10 seconds')", DENIED),
        hostile("generate_series bomb", "SELECT count(*) FROM generate_series(1, 100000000000)", TIME_OR_SPACE),
        hostile(
            "recursive CTE bomb",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            &["ran longer than the 1 s limit", "temporary space"],
        ),
        hostile("cross join bomb", "SELECT count(*) FROM people a, people b, people c, people d, people e, people f, people g", TIMEOUT),
        hostile("huge rows", "SELECT repeat('x', 400000) FROM generate_series(1, 5)", &["bytes of data (the limit)"]),
        hostile("huge result set", "SELECT g FROM generate_series(1, 200000) g", &["more than 10000 rows"]),
        hostile("pg_read_file", "SELECT pg_read_file('/etc/passwd')", DENIED),
        hostile("pg_ls_dir", "SELECT pg_ls_dir('.')", DENIED),
        hostile("lo_import", "SELECT lo_import('/etc/passwd')", DENIED),
        hostile("copy to program", "COPY people TO PROGRAM 'touch /tmp/sqlarena-pwned'", &["found COPY"]),
        hostile("copy to stdout", "COPY people TO STDOUT", &["found COPY"]),
        hostile("copy inside select", "SELECT 1; COPY (SELECT 1) TO PROGRAM 'id'", SINGLE),
        hostile("dblink", "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)", &["does not exist", "permission denied"]),
        hostile(
            "other challenge's database",
            &format!("SELECT * FROM {other_database}.public.people"),
            &["cross-database references are not implemented"],
        ),
        hostile("pg_stat_activity", "SELECT query FROM pg_stat_activity", DENIED),
        hostile("pg_stat_get_activity", "SELECT * FROM pg_stat_get_activity(NULL)", DENIED),
        hostile("pg_settings", "SELECT name, setting FROM pg_settings", DENIED),
        hostile("pg_roles", "SELECT rolname FROM pg_roles", DENIED),
        hostile("pg_database", "SELECT datname FROM pg_database", DENIED),
        hostile("pg_cancel_backend", "SELECT pg_cancel_backend(pg_backend_pid())", DENIED),
        hostile("pg_terminate_backend", "SELECT pg_terminate_backend(1)", DENIED),
        hostile("advisory lock", "SELECT pg_advisory_lock(42)", DENIED),
        hostile("try advisory lock", "SELECT pg_try_advisory_xact_lock(42)", DENIED),
        hostile("DO block", "DO $$ BEGIN DELETE FROM people; END $$", &["found DO"]),
        hostile("listen", "LISTEN sqlarena", &["found LISTEN"]),
        hostile("notify", "NOTIFY sqlarena, 'x'", &["found NOTIFY"]),
        hostile("pg_notify", "SELECT pg_notify('sqlarena', 'x')", DENIED),
        hostile("prepare transaction", "PREPARE TRANSACTION 'sqlarena'", &["found PREPARE"]),
        hostile(
            "data-modifying CTE",
            "WITH gone AS (DELETE FROM people RETURNING *) SELECT count(*) FROM gone",
            &["read-only", "permission denied"],
        ),
        hostile(
            "update through CTE",
            "WITH changed AS (UPDATE people SET age = 0 RETURNING id) SELECT id FROM changed",
            &["read-only", "permission denied"],
        ),
        hostile("select into", "SELECT * INTO stolen FROM people", &["at least one column"]),
        hostile("select into temp", "SELECT * INTO TEMP stolen FROM people", &["at least one column"]),
        hostile("temp table", "CREATE TEMP TABLE scratch AS SELECT 1", &["found CREATE"]),
        hostile("nextval", "SELECT nextval('people_id_seq')", &["permission denied", "read-only"]),
        hostile("lock table", "LOCK TABLE people IN ACCESS EXCLUSIVE MODE", &["found LOCK"]),
        hostile("for update", "SELECT * FROM people FOR UPDATE", &["permission denied", "read-only"]),
        hostile("create function", "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql", &["found CREATE"]),
        hostile("query_to_xml", "SELECT query_to_xml('DELETE FROM people RETURNING 1', true, true, '')", DENIED),
        hostile("txid_current", "SELECT txid_current()", DENIED),
        hostile("explain analyze", "EXPLAIN ANALYZE SELECT * FROM people", &["found EXPLAIN"]),
        hostile("plain delete", "DELETE FROM people", &["found DELETE"]),
        hostile("no columns", "SELECT FROM people", &["at least one column"]),
        hostile("empty", "  -- nothing here\n", &["the query is empty"]),
    ]
}

/// Row count and checksum of the people table, read as the admin.
async fn fingerprint(database: &str) -> (i64, i64, i64) {
    let client = admin(database).await;
    let row = client
        .query_one(
            "SELECT count(*), sum(id)::int8, sum(age)::int8 FROM people",
            &[],
        )
        .await
        .expect("people table is intact");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn hostile_submissions_are_contained() {
    let sandbox = start_sandbox(PREFIX).await;
    let payload = people_init(
        "SELECT name, age FROM people WHERE age < 25",
        &[(1, people_data(20, 0))],
        1,
    );
    let bundle = prepare_challenge(&sandbox, &payload, "security-v1").await;
    let other = prepare_challenge(
        &sandbox,
        &people_init("SELECT id FROM people", &[(9, people_data(3, 1))], 1),
        "security-other",
    )
    .await;
    let database = bundle.databases[&TestCaseId(1)].clone();
    let other_database = other.databases[&TestCaseId(9)].clone();
    let before = fingerprint(&database).await;
    let hostile = submissions(&other_database);
    assert!(hostile.len() >= 25);

    let mut failures = Vec::new();
    for submission in &hostile {
        let outcome = attempt(&sandbox, &bundle, &submission.query, 1).await;
        let case = &outcome.cases[0];
        let message = case.error.clone().unwrap_or_default();
        if case.status != CaseStatus::Error
            || !submission.message.iter().any(|part| message.contains(part))
        {
            failures.push(format!(
                "{}: status {:?}, message {message:?}, expected {:?}",
                submission.name, case.status, submission.message
            ));
            continue;
        }
        if fingerprint(&database).await != before {
            failures.push(format!("{}: the data changed", submission.name));
        }
        let honest = attempt(
            &sandbox,
            &bundle,
            "SELECT name, age FROM people WHERE 25 > age",
            1,
        )
        .await;
        if honest.cases[0].status != CaseStatus::Passed {
            failures.push(format!(
                "{}: the next honest attempt was not graded correctly: {:?}",
                submission.name, honest.cases[0]
            ));
        }
    }

    // The sandbox is still healthy: no leftovers, the runner is still unprivileged.
    let client = admin(&database).await;
    let leftovers = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ('stolen', 'scratch')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(leftovers.get::<_, i64>(0), 0, "no table was created");
    let runner = client
        .query_one(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = $1",
            &[&sandbox.runner_role()],
        )
        .await
        .unwrap();
    assert!(!runner.get::<_, bool>(0), "the runner gained privileges");
    assert!(!std::path::Path::new("/tmp/sqlarena-pwned").exists());
    drop((bundle, other));
    cleanup(sandbox).await;
    assert!(
        failures.is_empty(),
        "{} of {} hostile submissions were not contained:\n{}",
        failures.len(),
        hostile.len(),
        failures.join("\n")
    );
}
