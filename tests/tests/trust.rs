//! Issue 9's attacks through the public API of a real coordinator and real
//! graders: a student who reads the prepared statements, a professor whose
//! init plants an operator for a privileged session, a decoded-size bomb.
//! Each is contained, and the grader goes on grading honest attempts.

use std::time::Duration;

use serde_json::json;
use sqlarena_e2e::demo::{
    eventually, grade, publish_sample_challenge, register, DemoCluster, INIT, SOLUTION,
};
use sqlarena_e2e::harness::{postgres_url, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_holds_against_hostile_students_and_professors() {
    let cluster = DemoCluster::start("trust").await;
    let api = Api::new(cluster.coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap();
    let (_, professor) = register(&api, "prof-trust@example.edu", "Prof", "PROF", Some(code)).await;
    let (_, student) = register(&api, "stud-trust@example.edu", "Stud", "STUD", None).await;
    let challenge = publish_sample_challenge(&professor, "trust", Duration::from_secs(120)).await;
    let id = challenge["id"].as_i64().unwrap();

    // 1. The student reads the prepared statements: refused, and nothing
    //    of the solution reaches the attempt.
    let spy = grade(
        &student,
        id,
        "SELECT name::text, statement::text FROM pg_prepared_statements",
    )
    .await;
    let text = spy.to_string();
    assert!(
        !text.contains("sum(o.amount)") && !text.contains("customer_id = c.id"),
        "the solution leaked: {text}"
    );
    assert_ne!(spy["status"], "PASSED", "{spy}");

    // 2. A professor's init plants `=` for (oid, regrole), as a privileged
    //    block after init would call it, with a function that escalates
    //    and runs a program.
    let marker = std::env::temp_dir().join(format!(
        "sqlarena-e2e-hijack-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let trap = format!(
        "{INIT}
         CREATE FUNCTION public.trap(a oid, b regrole) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           BEGIN EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', current_user); EXCEPTION WHEN others THEN NULL; END;
           BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {}'''; EXCEPTION WHEN others THEN NULL; END;
           RETURN a OPERATOR(pg_catalog.=) b::oid;
         END $f$;
         CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = public.trap);",
        marker.display()
    );
    let (status, reply) = professor
        .post(
            "/challenges",
            json!({
                "name": "hijack", "description": "planted operator", "type": "FE",
                "init": trap, "solution": SOLUTION, "times_to_run": 1,
                "expires_at": "2099-12-31T23:59:59Z",
                "test_cases": [{"data": sqlarena_e2e::demo::case_data(5, 1), "is_visible": true}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let hijack = reply["data"]["id"].as_i64().unwrap();
    let state = eventually(
        "the planted challenge's init",
        Duration::from_secs(120),
        || async {
            let (_, reply) = professor.get(&format!("/challenges/{hijack}")).await;
            match reply["data"]["state"].as_str() {
                Some(state @ ("READY" | "FAILED")) => Some(state.to_string()),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(
        state, "READY",
        "the planted objects are harmless to the build"
    );
    let planted = grade(&student, hijack, SOLUTION).await;
    assert_eq!(planted["status"], "PASSED", "{planted}");
    assert!(
        !marker.exists(),
        "a superuser session ran the professor's function"
    );
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("test PostgreSQL");
    tokio::spawn(connection);
    let superusers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sqlarena\\_trust\\_%' AND rolsuper",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(superusers, 0, "a sandbox role became superuser");

    // 3. A result tiny on the wire and huge as text ends promptly as the
    //    student's error.
    let bomb = grade(
        &student,
        id,
        "SELECT 9e131071::numeric AS n FROM generate_series(1, 2000)",
    )
    .await;
    // A student's query error (not the grader's): ERROR, with the message.
    assert_eq!(bomb["status"], "ERROR", "{bomb}");
    assert!(bomb.to_string().contains("(the limit)"), "{bomb}");

    // After all of them, an honest attempt is graded as usual.
    let honest = grade(&student, id, SOLUTION).await;
    assert_eq!(honest["status"], "PASSED", "{honest}");
    cluster.stop().await;
}

/// A coordinator that refuses a grader's posts as too large (here: a
/// 16 KiB body limit) still gets every attempt's outcome promptly: the
/// grader posts it again without the rows shown for display.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_post_never_leaves_a_job_hanging() {
    use sqlarena_e2e::harness::{start_coordinator, start_grader, workspace_root};
    let store = format!(
        "sqlite://{}/sqlarena.db",
        workspace_root()
            .join("target")
            .join("e2e-data")
            .join(format!("refused-{}", uuid::Uuid::new_v4().simple()))
            .display()
    );
    let token = format!("sqc_test_{}", uuid::Uuid::new_v4().simple());
    let mut coordinator = start_coordinator(
        "refused-coordinator",
        &store,
        &token,
        &["--max-body-bytes", "16384"],
    )
    .await;
    let mut grader = start_grader("refused-grader", coordinator.url(), &token, &[]).await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap();
    let (_, professor) =
        register(&api, "prof-refused@example.edu", "Prof", "PROF", Some(code)).await;
    let (_, student) = register(&api, "stud-refused@example.edu", "Stud", "STUD", None).await;
    let (status, reply) = professor
        .post(
            "/challenges",
            json!({
                "name": "small", "description": "small", "type": "FE",
                "init": "CREATE TABLE t (id int)", "solution": "SELECT id FROM t",
                "times_to_run": 1, "expires_at": "2099-12-31T23:59:59Z",
                "test_cases": [{"data": "INSERT INTO t SELECT generate_series(1, 3)", "is_visible": true}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["data"]["id"].as_i64().unwrap();
    eventually(
        "the small challenge to be READY",
        Duration::from_secs(120),
        || async {
            let (_, reply) = professor.get(&format!("/challenges/{id}")).await;
            (reply["data"]["state"] == "READY").then_some(())
        },
    )
    .await;
    // A wrong answer whose shown rows (50 x 2 KB) are far over 16 KiB.
    let started = std::time::Instant::now();
    let wide = grade(
        &student,
        id,
        "SELECT g AS id, repeat('x', 2000) AS pad FROM generate_series(1, 60) g",
    )
    .await;
    assert_ne!(wide["status"], "PENDING", "{wide}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let honest = grade(&student, id, "SELECT id FROM t").await;
    assert_eq!(honest["status"], "PASSED", "{honest}");
    grader.terminate(Duration::from_secs(15)).await;
    coordinator.terminate(Duration::from_secs(10)).await;
}
