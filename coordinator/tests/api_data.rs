//! The people API's data under abuse, over real HTTP against an in-process
//! coordinator on each store: the per-user cap on unfinished attempts under
//! a burst of parallel submissions, and what students learn of an attempt's
//! error.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlarena_common::{AttemptId, LeasedJob, RegisterGraderResponse, TestCaseId, UserId};
use sqlarena_coordinator::store::Page;

const CLUSTER_TOKEN: &str = "data-test-cluster-token-0123456789";

fn sqlite() -> Option<String> {
    None
}

fn mongodb() -> Option<String> {
    Some(sqlarena_e2e::mongo::test_mongodb_uri())
}

/// Starts a coordinator that accepts graders with [`CLUSTER_TOKEN`].
async fn start(uri: Option<String>) -> TestServer {
    TestServer::start_on(uri, |config| {
        config.cluster_token = Some(CLUSTER_TOKEN.into());
    })
    .await
}

/// Creates a READY challenge (one visible, one hidden case) as `professor`
/// and returns its id.
async fn ready_challenge(server: &TestServer, professor: &str) -> i64 {
    server
        .ready_challenge(
            professor,
            json!({
                "name": "data", "type": "FE", "init": "CREATE TABLE t (a int)",
                "expires_at": "2099-06-01T12:00", "solution": "SELECT a FROM t", "times_to_run": 3,
                "test_cases": [
                    {"data": "INSERT INTO t VALUES (1)", "is_visible": true},
                    {"data": "INSERT INTO t VALUES (42)", "is_visible": false}
                ]
            }),
        )
        .await
}

/// Fires 30 submissions from one student at once: exactly the cap (5) are
/// accepted, the rest get 429 in the envelope with `Retry-After`, and the
/// store holds exactly the accepted ones.
async fn thirty_parallel_attempts_admit_exactly_the_cap(uri: Option<String>) {
    let server = start(uri).await;
    let (_, professor) = server.professor("prof@example.com").await;
    let challenge_id = ready_challenge(&server, &professor).await;
    let (student_id, student) = server.user("student@example.com", None, None).await;
    let cap = server.state.config.max_unfinished_attempts;
    assert_eq!(cap, 5);

    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let http = server.client.http.clone();
        let url = format!("{}/api/v1/attempts", server.base);
        let student = student.clone();
        posts.spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(student)
                .json(&json!({"challenge_id": challenge_id, "query": "SELECT a FROM t"}))
                .send()
                .await
                .expect("POST /attempts");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.expect("a JSON body");
            (status, retry_after, body)
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(reply) = posts.join_next().await {
        let (status, retry_after, body) = reply.expect("request task");
        match status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(body["status"], "error", "{body}");
                assert!(
                    body["message"].as_str().unwrap().contains("at most 5"),
                    "{body}"
                );
                assert!(retry_after.is_some(), "429 without Retry-After");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((accepted, refused), (5, 25));
    let stored = server
        .store()
        .list_user_attempts(UserId(student_id), Page::all())
        .await
        .unwrap();
    assert_eq!(stored.len(), 5, "refused submissions leave nothing behind");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_attempts_admit_exactly_the_cap_on_sqlite() {
    thirty_parallel_attempts_admit_exactly_the_cap(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_attempts_admit_exactly_the_cap_on_mongodb() {
    thirty_parallel_attempts_admit_exactly_the_cap(mongodb()).await;
}

/// Registers a grader on the fast lane (FE attempts) and returns its token.
async fn register_grader(server: &TestServer, name: &str) -> String {
    let reply = server
        .client
        .http
        .post(format!("{}/api/v1/grader/register", server.base))
        .bearer_auth(CLUSTER_TOKEN)
        .json(
            &json!({"name": name, "hostname": format!("{name}.cluster.example.edu"),
                      "version": "test", "lanes": ["fast"], "slots": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let body: Value = reply.json().await.unwrap();
    serde_json::from_value::<RegisterGraderResponse>(body["data"].clone())
        .unwrap()
        .grader_token
}

/// Leases the next job as the grader with `token`.
async fn lease(server: &TestServer, token: &str) -> LeasedJob {
    let reply = server
        .client
        .http
        .post(format!(
            "{}/api/v1/grader/jobs/lease?wait_ms=5000",
            server.base
        ))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "no job to lease");
    let body: Value = reply.json().await.unwrap();
    serde_json::from_value(body["data"].clone()).unwrap()
}

/// Posts to a leased job as its grader.
async fn report(server: &TestServer, token: &str, job: &LeasedJob, call: &str, body: Value) {
    let reply = server
        .client
        .http
        .post(format!(
            "{}/api/v1/grader/jobs/{}/{call}",
            server.base, job.job_id
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "{call} refused");
}

/// Submits an attempt as `student` and returns its id.
async fn submit(server: &TestServer, student: &str, challenge_id: i64, query: &str) -> i64 {
    let reply = server
        .post(
            "/api/v1/attempts",
            Some(student),
            json!({"challenge_id": challenge_id, "query": query}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.data()["id"].as_i64().unwrap()
}

/// What a grader really posts when the reference fails on a database: the
/// text names the grader's database, roles and host.
const GRADER_ERROR: &str = "test case 2: the reference solution failed here: \
     db error: FATAL: role \"lab7_owner_c1_v1\" cannot log in to database \
     \"lab7_c1_v1_case2\" on lab7.cluster.example.edu";

/// Students get a fixed, helpful message per failure class; the
/// challenge's professor and admins get the text. A grader's failure (a
/// real failed job), an admin's cancel (naming the admin) and a rejected
/// query (the student's own, shown as is) are each checked.
async fn students_see_a_fixed_message_per_failure_class(uri: Option<String>) {
    let server = start(uri).await;
    let (_, professor) = server.professor("prof@example.com").await;
    let admin = server.admin_token().await;
    let challenge_id = ready_challenge(&server, &professor).await;
    let (_, student) = server.user("student@example.com", None, None).await;
    let grader = register_grader(&server, "lab7").await;

    // A grader fails the job for good with its own error text.
    let failed = submit(&server, &student, challenge_id, "SELECT a FROM t").await;
    let job = lease(&server, &grader).await;
    report(
        &server,
        &grader,
        &job,
        "fail",
        json!({"lease_id": job.lease_id, "error": GRADER_ERROR, "retryable": false}),
    )
    .await;
    let path = format!("/api/v1/attempts/{failed}");
    let seen = server.get(&path, Some(&student)).await;
    let view = seen.data();
    assert_eq!(view["status"], "ERROR");
    assert_eq!(view["error_kind"], "grading");
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .starts_with("grading failed for a reason outside your query"),
        "{view}"
    );
    let error = view["error"].as_str().unwrap();
    for secret in ["lab7", "example.edu", "role", "database", "reference"] {
        assert!(
            !error.contains(secret),
            "the student sees {secret:?}: {error}"
        );
    }
    for secret in ["lab7", "example.edu"] {
        assert!(!seen.text.contains(secret), "leaked: {}", seen.text);
    }
    for staff in [&professor, &admin] {
        let full = server.get(&path, Some(staff)).await;
        let error = full.data()["error"].as_str().unwrap();
        assert!(
            error.contains(GRADER_ERROR),
            "staff see the detail: {error}"
        );
    }

    // An admin cancels a queued attempt: the reason names the admin.
    let cancelled = submit(&server, &student, challenge_id, "SELECT a FROM t").await;
    let job_id = server
        .store()
        .get_attempt(AttemptId(cancelled))
        .await
        .unwrap()
        .unwrap()
        .job_id
        .unwrap();
    let reply = server
        .post(
            &format!("/api/v1/admin/jobs/{job_id}/cancel"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let path = format!("/api/v1/attempts/{cancelled}");
    let seen = server.get(&path, Some(&student)).await;
    assert_eq!(seen.data()["status"], "CANCELLED");
    assert_eq!(seen.data()["error_kind"], "cancelled");
    assert!(
        !seen.text.contains(common::ADMIN_EMAIL),
        "the student sees the admin's email: {}",
        seen.text
    );
    let full = server.get(&path, Some(&professor)).await;
    assert!(full.data()["error"]
        .as_str()
        .unwrap()
        .contains(common::ADMIN_EMAIL));

    // The grader rejects the query itself: that message is the student's.
    let rejected = submit(&server, &student, challenge_id, "DELETE FROM t").await;
    let job = lease(&server, &grader).await;
    let message = "the query must be a single read-only statement (SELECT, WITH or VALUES)";
    let cases: Vec<Value> = job_case_ids(&job)
        .into_iter()
        .map(|id| json!({"test_case_id": id, "status": "ERROR", "error": message}))
        .collect();
    report(
        &server,
        &grader,
        &job,
        "complete",
        json!({"lease_id": job.lease_id,
               "outcome": {"kind": "attempt", "cases": cases, "error": message}}),
    )
    .await;
    let seen = server
        .get(&format!("/api/v1/attempts/{rejected}"), Some(&student))
        .await;
    assert_eq!(seen.data()["status"], "ERROR");
    assert_eq!(seen.data()["error_kind"], "query");
    assert_eq!(seen.data()["error"], message);
    server.stop().await;
}

fn job_case_ids(job: &LeasedJob) -> Vec<TestCaseId> {
    match &job.payload {
        sqlarena_common::JobPayload::Attempt(attempt) => attempt.test_case_ids.clone(),
        other => panic!("not an attempt job: {other:?}"),
    }
}

#[tokio::test]
async fn students_see_a_fixed_message_per_failure_class_on_sqlite() {
    students_see_a_fixed_message_per_failure_class(sqlite()).await;
}

#[tokio::test]
async fn students_see_a_fixed_message_per_failure_class_on_mongodb() {
    students_see_a_fixed_message_per_failure_class(mongodb()).await;
}

/// Follows `next_cursor` from `path` (which has a query string) `limit` at
/// a time and returns every entry; each page is at most `limit` long and
/// `next_cursor` sits beside `data`, null on the last page.
async fn walk(server: &TestServer, token: &str, path: &str, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}&limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let reply = server.get(&url, Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text);
        let page = reply.data().as_array().unwrap().clone();
        assert!(
            page.len() <= limit as usize,
            "{url}: {} entries",
            page.len()
        );
        entries.extend(page);
        assert!(
            reply.body.get("next_cursor").is_some(),
            "no next_cursor: {}",
            reply.text
        );
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return entries,
        }
    }
}

fn ids(entries: &[Value]) -> Vec<Value> {
    entries.iter().map(|entry| entry["id"].clone()).collect()
}

/// Every list is cursor-paginated over HTTP: walking the pages gives the
/// whole list once, in order; a bad limit or cursor is a 400 in the
/// envelope.
async fn every_list_is_cursor_paginated(uri: Option<String>) {
    let server = start(uri).await;
    let admin = server.admin_token().await;
    let (professor_id, professor) = server.professor("prof@example.com").await;
    let mut challenges = Vec::new();
    for _ in 0..4 {
        challenges.push(ready_challenge(&server, &professor).await);
    }
    let (student_id, student) = server.user("student@example.com", None, None).await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(submit(&server, &student, challenges[0], "SELECT a FROM t").await);
    }
    let mut graders = Vec::new();
    for index in 0..3 {
        let token = register_grader(&server, &format!("g{index}")).await;
        graders.push(token);
    }

    let newest_first: Vec<Value> = challenges.iter().rev().map(|id| json!(id)).collect();
    for path in [
        "/api/v1/challenges?".to_string(),
        format!("/api/v1/challenges-by-user/{professor_id}?"),
    ] {
        let walked = walk(&server, &student, &path, 3).await;
        assert_eq!(ids(&walked), newest_first, "{path}");
        assert!(walked[0].get("solution").is_none(), "views stay shaped");
    }
    let walked = walk(
        &server,
        &student,
        &format!("/api/v1/users/{student_id}/attempts?"),
        2,
    )
    .await;
    let newest_attempts: Vec<Value> = attempts.iter().rev().map(|id| json!(id)).collect();
    assert_eq!(ids(&walked), newest_attempts);

    let jobs = walk(&server, &admin, "/api/v1/admin/jobs?", 2).await;
    assert_eq!(jobs.len(), challenges.len() + attempts.len());
    let fast = walk(&server, &admin, "/api/v1/admin/jobs?lane=fast", 2).await;
    let fast_attempts: Vec<Value> = fast.iter().map(|job| job["attempt_id"].clone()).collect();
    let oldest_attempts: Vec<Value> = attempts.iter().map(|id| json!(id)).collect();
    assert_eq!(
        fast_attempts, oldest_attempts,
        "jobs oldest first, filtered"
    );
    let listed_graders = walk(&server, &admin, "/api/v1/admin/graders?", 2).await;
    let names: Vec<&str> = listed_graders
        .iter()
        .map(|grader| grader["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g2", "g1", "g0"], "graders newest first");

    // Without a limit: the default page (50) holds everything here.
    let all = server.get("/api/v1/challenges", Some(&student)).await;
    assert_eq!(all.data().as_array().unwrap().len(), challenges.len());
    assert!(all.body["next_cursor"].is_null());

    let first_page = server
        .get("/api/v1/challenges?limit=1", Some(&student))
        .await;
    let challenge_cursor = first_page.body["next_cursor"].as_str().unwrap().to_string();
    for (path, word) in [
        ("/api/v1/challenges?limit=0".to_string(), "limit"),
        ("/api/v1/challenges?limit=501".to_string(), "limit"),
        ("/api/v1/challenges?limit=-3".to_string(), "limit"),
        ("/api/v1/challenges?limit=many".to_string(), "limit"),
        ("/api/v1/challenges?cursor=zz".to_string(), "cursor"),
        ("/api/v1/challenges?cursor=%00%ff".to_string(), "cursor"),
        (
            format!("/api/v1/admin/jobs?cursor={challenge_cursor}"),
            "cursor",
        ),
        (
            format!("/api/v1/admin/graders?cursor={challenge_cursor}"),
            "cursor",
        ),
        (
            format!("/api/v1/users/{student_id}/attempts?cursor={challenge_cursor}"),
            "cursor",
        ),
        (
            format!("/api/v1/challenges-by-user/{professor_id}?limit=100000"),
            "limit",
        ),
        ("/api/v1/admin/jobs?limit=0".to_string(), "limit"),
        ("/api/v1/challenges?page=2".to_string(), "page"),
    ] {
        let reply = server.get(&path, Some(&admin)).await;
        let message = reply.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains(word), "{path}: {message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_list_is_cursor_paginated_on_sqlite() {
    every_list_is_cursor_paginated(sqlite()).await;
}

#[tokio::test]
async fn every_list_is_cursor_paginated_on_mongodb() {
    every_list_is_cursor_paginated(mongodb()).await;
}

/// A failing case with `rows` rows of a 600-character cell.
fn wide_failing_case(test_case_id: TestCaseId, rows: usize) -> Value {
    let row = json!(["w".repeat(600)]);
    json!({
        "test_case_id": test_case_id, "status": "FAILED", "execution_ms": 3.0,
        "actual_result": {"columns": [{"name": "a", "type": "text"}], "rows": vec![row; rows]},
        "diff": "row 1: expected 1, got \"www...\""
    })
}

/// A failing case's rows are stored once (in the attempt: not in the
/// job's progress, nor in its outcome once applied), within 50 rows and
/// 16 KiB; a passing case keeps none, and the applied job's payload loses
/// the query.
async fn a_failing_cases_rows_are_stored_once_and_capped(uri: Option<String>) {
    let server = start(uri).await;
    let (_, professor) = server.professor("prof@example.com").await;
    let challenge_id = ready_challenge(&server, &professor).await;
    let (_, student) = server.user("student@example.com", None, None).await;
    let grader = register_grader(&server, "lab1").await;
    let attempt_id = submit(&server, &student, challenge_id, "SELECT a FROM t").await;
    let job = lease(&server, &grader).await;
    let ids = job_case_ids(&job);
    let passing = json!({"test_case_id": ids[0], "status": "PASSED", "ratio": 1.0,
        "actual_result": {"columns": [{"name": "a", "type": "int4"}], "rows": [[1]]}});
    let failing = wide_failing_case(ids[1], 200);
    for case in [&passing, &failing] {
        report(
            &server,
            &grader,
            &job,
            "progress",
            json!({"lease_id": job.lease_id, "case": case}),
        )
        .await;
    }
    let progress = server.store().get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(progress.progress.len(), 2);
    assert!(
        progress
            .progress
            .iter()
            .all(|case| case.actual_result.is_none()),
        "progress keeps no rows"
    );
    report(
        &server,
        &grader,
        &job,
        "complete",
        json!({"lease_id": job.lease_id,
               "outcome": {"kind": "attempt", "cases": [passing, failing]}}),
    )
    .await;
    let applied = server.store().get_job(job.job_id).await.unwrap().unwrap();
    assert!(applied.applied);
    assert_eq!(applied.outcome, None, "the outcome went once applied");
    assert!(applied.progress.is_empty());
    match &applied.payload {
        sqlarena_common::JobPayload::Attempt(payload) => assert_eq!(payload.query, ""),
        other => panic!("{other:?}"),
    }
    let attempt = server
        .store()
        .get_attempt(AttemptId(attempt_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        attempt.cases[0].actual_result, None,
        "a passing case keeps none"
    );
    let rows = attempt.cases[1]
        .actual_result
        .as_ref()
        .expect("the failing rows");
    assert!(!rows.rows.is_empty() && rows.rows.len() <= 50);
    assert!(serde_json::to_vec(rows).unwrap().len() <= 16 * 1024);
    let seen = server
        .get(&format!("/api/v1/attempts/{attempt_id}"), Some(&professor))
        .await;
    assert_eq!(seen.data()["status"], "FAILED");
    server.stop().await;
}

#[tokio::test]
async fn a_failing_cases_rows_are_stored_once_and_capped_on_sqlite() {
    a_failing_cases_rows_are_stored_once_and_capped(sqlite()).await;
}

#[tokio::test]
async fn a_failing_cases_rows_are_stored_once_and_capped_on_mongodb() {
    a_failing_cases_rows_are_stored_once_and_capped(mongodb()).await;
}

/// With `--job-retention 1s`, the background compaction deletes a
/// finished, applied job once it is older than that; queued jobs stay, and
/// the attempt keeps its result.
async fn finished_jobs_past_their_retention_are_compacted(uri: Option<String>) {
    let server = TestServer::start_on(uri, |config| {
        config.cluster_token = Some(CLUSTER_TOKEN.into());
        config.job_retention = std::time::Duration::from_secs(1);
    })
    .await;
    let admin = server.admin_token().await;
    let (_, professor) = server.professor("prof@example.com").await;
    let challenge_id = ready_challenge(&server, &professor).await;
    let (_, student) = server.user("student@example.com", None, None).await;
    let grader = register_grader(&server, "lab1").await;
    let finished = submit(&server, &student, challenge_id, "SELECT a FROM t").await;
    let job = lease(&server, &grader).await;
    let cases: Vec<Value> = job_case_ids(&job)
        .into_iter()
        .map(|id| wide_failing_case(id, 1))
        .collect();
    report(
        &server,
        &grader,
        &job,
        "complete",
        json!({"lease_id": job.lease_id, "outcome": {"kind": "attempt", "cases": cases}}),
    )
    .await;
    let queued = submit(&server, &student, challenge_id, "SELECT a FROM t").await;
    let queued_job = server
        .store()
        .get_attempt(AttemptId(queued))
        .await
        .unwrap()
        .unwrap()
        .job_id
        .unwrap();

    let path = format!("/api/v1/admin/jobs/{}", job.job_id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reply = server.get(&path, Some(&admin)).await;
        if reply.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the finished job was not compacted: {}",
            reply.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(server.store().get_job(queued_job).await.unwrap().is_some());
    let attempt = server
        .get(&format!("/api/v1/attempts/{finished}"), Some(&student))
        .await;
    assert_eq!(attempt.data()["status"], "FAILED");
    server.stop().await;
}

#[tokio::test]
async fn finished_jobs_past_their_retention_are_compacted_on_sqlite() {
    finished_jobs_past_their_retention_are_compacted(sqlite()).await;
}

#[tokio::test]
async fn finished_jobs_past_their_retention_are_compacted_on_mongodb() {
    finished_jobs_past_their_retention_are_compacted(mongodb()).await;
}
