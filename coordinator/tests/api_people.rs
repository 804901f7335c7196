//! The people API over real HTTP against an in-process coordinator on a
//! fresh SQLite store: accounts and tokens, professor invites, challenge
//! visibility, attempts and their jobs, the leaderboard, a table of bad
//! requests that must change nothing, and the OpenAPI document.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlarena_common::{
    AttemptId, AttemptStatus, CaseResult, CaseStatus, ChallengeId, JobKind, JobPayload, JobState,
    Lane, TestCaseId, UserId,
};
use sqlarena_coordinator::store::{
    AttemptUpdate, Challenge, InitResult, Job, JobFilter, NewAttempt, Page,
};
use sqlarena_e2e::client::Reply;

const PASSWORD: &str = "password-123";

/// A challenge body in the seed's shape, with one visible and one hidden case.
fn challenge_body(name: &str, challenge_type: &str) -> Value {
    json!({
        "name": name,
        "description": "find the answer",
        "type": challenge_type,
        "init": "CREATE TABLE t (a int)",
        "expires_at": "2099-06-01T12:00",
        "solution": "SELECT a FROM t",
        "times_to_run": 3,
        "test_cases": [
            {"data": "INSERT INTO t VALUES (1)", "is_visible": true},
            {"data": "INSERT INTO t VALUES (42) -- secret", "is_visible": false}
        ]
    })
}

/// Creates a challenge as `token` and returns its JSON.
async fn create_challenge(server: &TestServer, token: &str, body: Value) -> Value {
    let reply = server.post("/api/v1/challenges", Some(token), body).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "create challenge: {}",
        reply.text
    );
    reply.data().clone()
}

/// Plays the init job's part: the challenge becomes READY with expected results.
async fn make_ready(server: &TestServer, challenge: &Value) {
    server
        .make_ready(challenge, |index| index as i64 + 1, &["solution warning"])
        .await;
}

/// Changes challenge `id` as `token`; returns the reply.
async fn update_challenge(server: &TestServer, token: &str, id: i64, body: Value) -> Reply {
    server
        .call(
            Method::PATCH,
            &format!("/api/v1/challenges/{id}"),
            Some(token),
            Some(body),
        )
        .await
}

/// Returns the ids of a challenge's test cases, from its JSON.
fn case_ids(challenge: &Value) -> Vec<i64> {
    challenge["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["id"].as_i64().unwrap())
        .collect()
}

/// Submits an attempt as `token` and returns its id.
async fn submit(server: &TestServer, token: &str, challenge_id: i64) -> i64 {
    let reply = server
        .post(
            "/api/v1/attempts",
            Some(token),
            json!({"challenge_id": challenge_id, "query": "SELECT a FROM t"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "attempt: {}", reply.text);
    reply.data()["id"].as_i64().unwrap()
}

/// Plays the grader's part: the attempt passed every case of `case_ids`.
async fn pass(server: &TestServer, attempt_id: i64, case_ids: &[i64]) {
    let cases = case_ids
        .iter()
        .map(|case_id| CaseResult {
            test_case_id: TestCaseId(*case_id),
            status: CaseStatus::Passed,
            execution_ms: Some(2.0),
            min_ms: None,
            reference_ms: Some(2.0),
            ratio: Some(1.0),
            actual_result: Some(common::int_result(*case_id)),
            diff: None,
            error: None,
            timing: None,
            audit: None,
        })
        .collect();
    let update = AttemptUpdate {
        status: Some(AttemptStatus::Passed),
        cases: Some(cases),
        finished_at: Some(Utc::now()),
        ..AttemptUpdate::default()
    };
    server
        .store()
        .update_attempt(AttemptId(attempt_id), update)
        .await
        .unwrap();
}

/// The attempt ids on a challenge's leaderboard, as `token` sees it.
async fn leaderboard(server: &TestServer, token: &str, challenge_id: i64) -> Vec<i64> {
    server
        .get(&format!("/api/v1/challenges/{challenge_id}"), Some(token))
        .await
        .data()["top_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["attempt_id"].as_i64().unwrap())
        .collect()
}

async fn all_jobs(server: &TestServer) -> Vec<Job> {
    server
        .store()
        .list_jobs(JobFilter {
            state: None,
            lane: None,
            limit: 1000,
            after: None,
        })
        .await
        .unwrap()
}

/// A bad request: name, method, path, token, body, expected status, and a
/// word its message must contain.
type BadRequest<'a> = (
    &'a str,
    Method,
    String,
    Option<&'a str>,
    Value,
    StatusCode,
    &'a str,
);

/// Everything a bad request must leave untouched.
#[derive(Debug, PartialEq)]
struct Counts {
    challenges: Vec<Challenge>,
    jobs: usize,
    attempts: usize,
    next_user_exists: bool,
}

async fn counts(server: &TestServer, student_id: i64) -> Counts {
    Counts {
        challenges: server
            .store()
            .list_challenges(None, Page::all())
            .await
            .unwrap(),
        jobs: all_jobs(server).await.len(),
        attempts: server
            .store()
            .list_user_attempts(UserId(student_id), Page::all())
            .await
            .unwrap()
            .len(),
        next_user_exists: server
            .store()
            .get_user(UserId(student_id + 1))
            .await
            .unwrap()
            .is_some(),
    }
}

fn assert_no_secret(reply: &Reply) {
    for secret in ["$argon2", "password", PASSWORD, "password_hash"] {
        assert!(
            !reply.text.contains(secret),
            "a response shows {secret:?}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn register_login_and_tokens() {
    let server = TestServer::start().await;
    let reply = server
        .post(
            "/api/v1/register",
            None,
            json!({"email": "Dexter@Example.com", "full_name": "Dexter", "unsafe_password": PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_no_secret(&reply);
    let user = reply.data().clone();
    assert_eq!(user["email"], "Dexter@Example.com");
    assert_eq!(user["full_name"], "Dexter");
    assert_eq!(user["role"], "STUD");
    assert!(user["created_at"].as_str().unwrap().contains('T'));
    let id = user["id"].as_i64().unwrap();
    let stored = server.store().get_user(UserId(id)).await.unwrap().unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2"),
        "the password is kept hashed"
    );

    // Login with the alias, with a differently cased email.
    let login = server
        .post(
            "/api/v1/login",
            None,
            json!({"email": "dexter@example.com", "unsafe_password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    assert_no_secret(&login);
    assert_eq!(login.data()["id"], id);
    let token = login.data()["token"].as_str().unwrap().to_string();
    assert!(token.len() > 40);

    let me = server
        .get(&format!("/api/v1/users/{id}"), Some(&token))
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.data()["email"], "Dexter@Example.com");
    assert_no_secret(&me);

    // Wrong password and unknown email: the same 401.
    let wrong = server
        .post(
            "/api/v1/login",
            None,
            json!({"email": "dexter@example.com", "password": "nope-nope"}),
        )
        .await;
    let unknown = server
        .post(
            "/api/v1/login",
            None,
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        wrong.expect_error(StatusCode::UNAUTHORIZED),
        unknown.expect_error(StatusCode::UNAUTHORIZED)
    );

    // Tokens: missing, unknown, someone else's record, admin.
    server
        .get(&format!("/api/v1/users/{id}"), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    server
        .get(&format!("/api/v1/users/{id}"), Some("sqa_not-a-token"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    let (other_id, other_token) = server.user("other@example.com", None, None).await;
    server
        .get(&format!("/api/v1/users/{id}"), Some(&other_token))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    let admin = server.admin_token().await;
    let seen = server
        .get(&format!("/api/v1/users/{other_id}"), Some(&admin))
        .await;
    assert_eq!(seen.data()["email"], "other@example.com");
    server
        .get("/api/v1/users/99999", Some(&admin))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn professors_need_an_invite_or_the_signup_flag() {
    let server = TestServer::start().await;
    let body = |email: &str, role: &str| json!({"email": email, "full_name": "P", "password": PASSWORD, "role": role});
    let message = server
        .post("/api/v1/register", None, body("p@example.com", "PROF"))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert!(message.contains("invite"), "{message}");
    server
        .post("/api/v1/register", None, body("a@example.com", "ADMIN"))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    for email in ["p@example.com", "a@example.com"] {
        assert!(
            server
                .store()
                .get_user_by_email(email)
                .await
                .unwrap()
                .is_none(),
            "{email} was created"
        );
    }

    // Only admins invite.
    let (_, student) = server.user("s@example.com", None, None).await;
    server
        .post("/api/v1/invites", Some(&student), json!({"role": "PROF"}))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    let admin = server.admin_token().await;
    let invite = server
        .post("/api/v1/invites", Some(&admin), json!({}))
        .await;
    assert_eq!(invite.status, StatusCode::CREATED, "{}", invite.text);
    assert_eq!(invite.data()["role"], "PROF");
    let code = invite.data()["code"].as_str().unwrap().to_string();

    let mut with_invite = body("p@example.com", "PROF");
    with_invite["invite"] = json!(code);
    let reply = server
        .post("/api/v1/register", None, with_invite.clone())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.data()["role"], "PROF");

    // An invite works once; an unknown one never.
    with_invite["email"] = json!("p2@example.com");
    server
        .post("/api/v1/register", None, with_invite.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN);
    with_invite["invite"] = json!("sqi_made-up");
    server
        .post("/api/v1/register", None, with_invite)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert!(server
        .store()
        .get_user_by_email("p2@example.com")
        .await
        .unwrap()
        .is_none());
    server.stop().await;

    let open = TestServer::start_with(|config| config.allow_professor_signup = true).await;
    let reply = open
        .post("/api/v1/register", None, body("p@example.com", "PROF"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.data()["role"], "PROF");
    open.post("/api/v1/register", None, body("a@example.com", "ADMIN"))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    open.stop().await;
}

#[tokio::test]
async fn challenges_queue_an_init_job_and_hide_solutions_and_hidden_data() {
    let server = TestServer::start().await;
    let (professor_id, professor) = server.professor("prof@example.com").await;
    let (_, other_professor) = server.professor("prof2@example.com").await;
    let (_, student) = server.user("student@example.com", None, None).await;

    let mut body = challenge_body("Fabian Pascal", "FE");
    body["user_id"] = json!(professor_id);
    let challenge = create_challenge(&server, &professor, body).await;
    let id = challenge["id"].as_i64().unwrap();
    assert_eq!(challenge["state"], "PENDING");
    assert_eq!(challenge["created_user_id"], professor_id);
    assert_eq!(challenge["solution"], "SELECT a FROM t");
    assert_eq!(challenge["expires_at"], "2099-06-01T12:00:00Z");
    assert_eq!(challenge["type"], "FE");
    assert_eq!(challenge["test_cases"].as_array().unwrap().len(), 2);

    // One init job, on the init lane, carrying the challenge.
    let jobs = all_jobs(&server).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].lane, jobs[0].kind, jobs[0].state),
        (Lane::Init, JobKind::Init, JobState::Queued)
    );
    let JobPayload::Init(payload) = &jobs[0].payload else {
        panic!("not an init payload")
    };
    assert_eq!(
        (payload.challenge_id, payload.version),
        (ChallengeId(id), 1)
    );
    assert_eq!(payload.solution, "SELECT a FROM t");
    assert_eq!(payload.times_to_run, 3);
    let case_ids: Vec<i64> = challenge["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        payload
            .test_cases
            .iter()
            .map(|case| case.id.0)
            .collect::<Vec<_>>(),
        case_ids
    );
    assert_eq!(
        payload.test_cases[1].data,
        "INSERT INTO t VALUES (42) -- secret"
    );

    make_ready(&server, &challenge).await;
    for token in [&student, &other_professor] {
        for reply in [
            server
                .get(&format!("/api/v1/challenges/{id}"), Some(token))
                .await,
            server.get("/api/v1/challenges", Some(token)).await,
            server
                .get(
                    &format!("/api/v1/challenges-by-user/{professor_id}"),
                    Some(token),
                )
                .await,
        ] {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            assert!(
                !reply.text.contains("secret"),
                "hidden data leaked: {}",
                reply.text
            );
            assert!(
                !reply.text.contains("SELECT a FROM t"),
                "solution leaked: {}",
                reply.text
            );
            assert!(
                !reply.text.contains("solution warning"),
                "warnings leaked: {}",
                reply.text
            );
        }
        let view = server
            .get(&format!("/api/v1/challenges/{id}"), Some(token))
            .await
            .data()
            .clone();
        assert_eq!(view["state"], "READY");
        assert_eq!(view["test_cases"][0]["data"], "INSERT INTO t VALUES (1)");
        assert_eq!(
            view["test_cases"][0]["expected_result"]["rows"],
            json!([[1]])
        );
        assert!(view["test_cases"][1]["data"].is_null());
        assert!(view["test_cases"][1]["expected_result"].is_null());
        assert_eq!(view["top_attempts"], json!([]));
    }
    let own = server
        .get(&format!("/api/v1/challenges/{id}"), Some(&professor))
        .await;
    assert!(own.text.contains("secret") && own.text.contains("SELECT a FROM t"));
    assert_eq!(
        own.data()["test_cases"][1]["expected_result"]["rows"],
        json!([[2]])
    );
    assert_eq!(own.data()["init_warnings"], json!(["solution warning"]));
    let admin = server.admin_token().await;
    assert!(server
        .get("/api/v1/challenges", Some(&admin))
        .await
        .text
        .contains("secret"));

    let mine = server
        .get(
            &format!("/api/v1/challenges-by-user/{professor_id}"),
            Some(&student),
        )
        .await;
    assert_eq!(mine.data().as_array().unwrap().len(), 1);
    let none = server
        .get(
            &format!("/api/v1/challenges-by-user/{}", professor_id + 1),
            Some(&student),
        )
        .await;
    assert_eq!(none.data(), &json!([]));
    server.stop().await;
}

#[tokio::test]
async fn attempts_need_a_ready_unexpired_challenge_and_queue_on_its_lane() {
    let server = TestServer::start_with(|config| config.max_unfinished_attempts = 2).await;
    let (_, professor) = server.professor("prof@example.com").await;
    let (student_id, student) = server.user("student@example.com", None, None).await;
    let fe = create_challenge(&server, &professor, challenge_body("fast one", "FE")).await;
    let fe_id = fe["id"].as_i64().unwrap();
    let attempt = json!({"challenge_id": fe_id, "query": "SELECT a FROM t", "user_id": student_id});

    let message = server
        .post("/api/v1/attempts", Some(&student), attempt.clone())
        .await
        .expect_error(StatusCode::CONFLICT);
    assert!(message.contains("not ready"), "{message}");
    assert!(server
        .store()
        .list_user_attempts(UserId(student_id), Page::all())
        .await
        .unwrap()
        .is_empty());

    make_ready(&server, &fe).await;
    let reply = server
        .post("/api/v1/attempts", Some(&student), attempt.clone())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let created = reply.data().clone();
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["user_id"], student_id);
    assert_eq!(created["challenge_version"], 1);
    let statuses: Vec<&Value> = created["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| &case["status"])
        .collect();
    assert_eq!(statuses, vec!["PENDING", "PENDING"]);
    let attempt_id = created["id"].as_i64().unwrap();

    let job = all_jobs(&server)
        .await
        .into_iter()
        .find(|job| job.kind == JobKind::Attempt)
        .expect("an attempt job");
    assert_eq!((job.lane, job.state), (Lane::Fast, JobState::Queued));
    let JobPayload::Attempt(payload) = &job.payload else {
        panic!("not an attempt payload")
    };
    assert_eq!(
        (payload.attempt_id, payload.user_id, payload.challenge_id),
        (
            AttemptId(attempt_id),
            UserId(student_id),
            ChallengeId(fe_id)
        )
    );
    assert_eq!(payload.query, "SELECT a FROM t");
    assert_eq!(payload.test_case_ids.len(), 2);
    assert_eq!(
        server
            .store()
            .get_attempt(AttemptId(attempt_id))
            .await
            .unwrap()
            .unwrap()
            .job_id,
        Some(job.id)
    );

    // The cap on unfinished attempts.
    let second = server
        .post("/api/v1/attempts", Some(&student), attempt.clone())
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let third = server
        .post("/api/v1/attempts", Some(&student), attempt.clone())
        .await;
    third.expect_error(StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = third.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    assert_eq!(
        server
            .store()
            .list_user_attempts(UserId(student_id), Page::all())
            .await
            .unwrap()
            .len(),
        2
    );

    // Cancelling frees a slot; a second cancel is a conflict.
    let cancelled = server
        .post(
            &format!("/api/v1/attempts/{attempt_id}/cancel"),
            Some(&student),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.data()["status"], "CANCELLED");
    assert_eq!(
        server.store().get_job(job.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    server
        .post(
            &format!("/api/v1/attempts/{attempt_id}/cancel"),
            Some(&student),
            json!({}),
        )
        .await
        .expect_error(StatusCode::CONFLICT);

    // SE attempts go to the slow lane.
    let (_, student2) = server.user("student2@example.com", None, None).await;
    let se = create_challenge(&server, &professor, challenge_body("slow one", "SE")).await;
    make_ready(&server, &se).await;
    let reply = server
        .post(
            "/api/v1/attempts",
            Some(&student2),
            json!({"challenge_id": se["id"], "query": "SELECT 1"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let se_attempt = reply.data()["id"].as_i64().unwrap();
    let job = all_jobs(&server)
        .await
        .into_iter()
        .find(|job| matches!(&job.payload, JobPayload::Attempt(p) if p.attempt_id == AttemptId(se_attempt)))
        .expect("the SE attempt's job");
    assert_eq!(job.lane, Lane::Slow);

    // An expired challenge refuses attempts.
    let mut soon = challenge_body("expiring", "FE");
    soon["expires_at"] = json!((Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339());
    let expiring = create_challenge(&server, &professor, soon).await;
    make_ready(&server, &expiring).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let message = server
        .post(
            "/api/v1/attempts",
            Some(&student2),
            json!({"challenge_id": expiring["id"], "query": "SELECT 1"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert!(message.contains("expired"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn attempt_results_hide_hidden_cases_from_students_only() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("prof@example.com").await;
    let (student_id, student) = server.user("student@example.com", None, None).await;
    let (_, stranger) = server.user("stranger@example.com", None, None).await;
    let challenge = create_challenge(&server, &professor, challenge_body("c", "FE")).await;
    make_ready(&server, &challenge).await;
    let reply = server
        .post(
            "/api/v1/attempts",
            Some(&student),
            json!({"challenge_id": challenge["id"], "query": "SELECT a FROM t"}),
        )
        .await;
    let attempt_id = reply.data()["id"].as_i64().unwrap();
    let case_ids: Vec<i64> = challenge["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();

    // The grader's part: a visible pass and a hidden wrong answer.
    let case = |test_case_id: i64, status: CaseStatus, actual: i64| CaseResult {
        test_case_id: TestCaseId(test_case_id),
        status,
        execution_ms: Some(3.0),
        min_ms: Some(2.5),
        reference_ms: Some(2.0),
        ratio: Some(1.5),
        actual_result: Some(common::int_result(actual)),
        diff: (status == CaseStatus::Failed).then(|| "row 1: expected 777, got 41".to_string()),
        error: (status == CaseStatus::Failed).then(|| "wrong answer: expected 777".to_string()),
        timing: None,
        audit: None,
    };
    let update = AttemptUpdate {
        status: Some(AttemptStatus::Failed),
        cases: Some(vec![
            case(case_ids[0], CaseStatus::Passed, 1),
            case(case_ids[1], CaseStatus::Failed, 41),
        ]),
        finished_at: Some(Utc::now()),
        ..AttemptUpdate::default()
    };
    server
        .store()
        .update_attempt(AttemptId(attempt_id), update)
        .await
        .unwrap();

    for path in [
        format!("/api/v1/attempts/{attempt_id}"),
        format!("/api/v1/users/{student_id}/attempts/{attempt_id}"),
    ] {
        let mine = server.get(&path, Some(&student)).await;
        assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
        // "41" alone could match a timestamp, so look for the hidden row's
        // value where it would appear: in a result or in the diff.
        assert!(
            !mine.text.contains("777")
                && !mine.text.contains("got 41")
                && !mine.text.contains("[[41]]"),
            "hidden result leaked: {}",
            mine.text
        );
        let view = mine.data();
        assert_eq!(view["status"], "FAILED");
        assert_eq!(view["attempts"][0]["actual_result"]["rows"], json!([[1]]));
        let hidden = &view["attempts"][1];
        assert_eq!(
            (hidden["is_visible"].clone(), hidden["status"].clone()),
            (json!(false), json!("FAILED"))
        );
        // Status only: timings, error text and rows can all leak hidden data.
        for field in ["execution_ms", "min_ms", "reference_ms", "ratio", "error"] {
            assert!(hidden[field].is_null(), "hidden {field} shown: {hidden}");
        }
        assert!(hidden.get("diff").is_none() && hidden.get("actual_result").is_none());
        assert_eq!(
            view["attempts"][0]["ratio"], 1.5,
            "visible cases keep timings"
        );

        let theirs = server.get(&path, Some(&professor)).await;
        assert_eq!(
            theirs.data()["attempts"][1]["diff"],
            "row 1: expected 777, got 41"
        );
        assert_eq!(theirs.data()["attempts"][1]["ratio"], 1.5);
        assert_eq!(theirs.data()["attempts"][1]["execution_ms"], 3.0);
        let admin = server.admin_token().await;
        let full = server.get(&path, Some(&admin)).await;
        assert_eq!(full.data()["attempts"][1]["min_ms"], 2.5);
        assert_eq!(
            full.data()["attempts"][1]["error"],
            "wrong answer: expected 777"
        );
        server
            .get(&path, Some(&stranger))
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }
    let listed = server
        .get(
            &format!("/api/v1/users/{student_id}/attempts"),
            Some(&student),
        )
        .await;
    assert_eq!(listed.data().as_array().unwrap().len(), 1);
    assert!(!listed.text.contains("777"));
    server
        .get(
            &format!("/api/v1/users/{student_id}/attempts"),
            Some(&stranger),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    server
        .get(
            &format!("/api/v1/users/{student_id}/attempts/{}", attempt_id + 1),
            Some(&student),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    server
        .post(
            &format!("/api/v1/attempts/{attempt_id}/cancel"),
            Some(&stranger),
            json!({}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn the_leaderboard_ranks_each_users_best_passing_attempt() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("prof@example.com").await;
    let challenge = create_challenge(&server, &professor, challenge_body("race", "FE")).await;
    make_ready(&server, &challenge).await;
    let case_ids: Vec<i64> = challenge["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();

    // (student, ratios, passed?) in submission order.
    let plan: [(usize, [f64; 2], bool); 5] = [
        (0, [2.0, 8.0], true),
        (1, [1.0, 1.0], true),
        (0, [0.5, 2.0], true),
        (2, [0.1, 0.1], false),
        (2, [3.0, 3.0], true),
    ];
    let mut students = Vec::new();
    for index in 0..3 {
        students.push(
            server
                .user(&format!("s{index}@example.com"), None, None)
                .await,
        );
    }
    let mut attempt_ids = Vec::new();
    for (student, ratios, passed) in plan {
        let reply = server
            .post(
                "/api/v1/attempts",
                Some(&students[student].1),
                json!({"challenge_id": challenge["id"], "query": "SELECT a FROM t"}),
            )
            .await;
        let id = reply.data()["id"].as_i64().unwrap();
        attempt_ids.push(id);
        let status = if passed {
            CaseStatus::Passed
        } else {
            CaseStatus::Failed
        };
        let cases = case_ids
            .iter()
            .zip(ratios)
            .map(|(case_id, ratio)| CaseResult {
                test_case_id: TestCaseId(*case_id),
                status,
                execution_ms: Some(ratio * 10.0),
                min_ms: None,
                reference_ms: Some(10.0),
                ratio: Some(ratio),
                actual_result: None,
                diff: None,
                error: None,
                timing: None,
                audit: None,
            })
            .collect();
        let update = AttemptUpdate {
            status: Some(if passed {
                AttemptStatus::Passed
            } else {
                AttemptStatus::Failed
            }),
            cases: Some(cases),
            finished_at: Some(Utc::now()),
            ..AttemptUpdate::default()
        };
        server
            .store()
            .update_attempt(AttemptId(id), update)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let view = server
        .get(
            &format!("/api/v1/challenges/{}", challenge["id"]),
            Some(&students[0].1),
        )
        .await;
    let board = view.data()["top_attempts"].as_array().unwrap().clone();
    // s0's best is 1.0 (attempt 3) tied with s1's 1.0 (attempt 2, earlier); s2 only passed with 3.0.
    let order: Vec<i64> = board
        .iter()
        .map(|entry| entry["attempt_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![attempt_ids[1], attempt_ids[2], attempt_ids[4]],
        "{board:?}"
    );
    assert_eq!(board[0]["rank"], 1);
    assert_eq!(board[0]["user_id"], students[1].0);
    assert_eq!(board[0]["user_full_name"], "Name of s1@example.com");
    assert!(board[0]["time_of_attempt"].is_string());
    // Score and time add up hidden cases too: a student sees the ranking
    // only, the professor the figures.
    assert!(
        board
            .iter()
            .all(|entry| entry.get("score").is_none() && entry.get("completion_time_ms").is_none()),
        "{board:?}"
    );
    let professor_view = server
        .get(
            &format!("/api/v1/challenges/{}", challenge["id"]),
            Some(&professor),
        )
        .await;
    let board = professor_view.data()["top_attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert!((board[2]["score"].as_f64().unwrap() - 3.0).abs() < 1e-9);
    assert!((board[2]["completion_time_ms"].as_f64().unwrap() - 60.0).abs() < 1e-9);
    server.stop().await;
}

#[tokio::test]
async fn metadata_changes_in_place_and_only_the_creator_or_an_admin_may_change() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("prof@example.com").await;
    let (_, stranger) = server.professor("stranger@example.com").await;
    let (_, student) = server.user("student@example.com", None, None).await;
    let challenge = create_challenge(&server, &professor, challenge_body("first name", "FE")).await;
    let id = challenge["id"].as_i64().unwrap();
    make_ready(&server, &challenge).await;
    let jobs_before = all_jobs(&server).await;

    for token in [&stranger, &student] {
        let message = update_challenge(&server, token, id, json!({"name": "mine now"}))
            .await
            .expect_error(StatusCode::FORBIDDEN);
        assert!(!message.is_empty());
    }
    let stored = server
        .store()
        .get_challenge(ChallengeId(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.name, "first name",
        "a refused update changes nothing"
    );

    let reply = update_challenge(
        &server,
        &professor,
        id,
        json!({
            "name": "  second name ",
            "description": "",
            "times_to_run": 5,
            "expires_at": "2098-01-01T00:00",
            // The same solution and test cases: nothing to re-initialize.
            "solution": "SELECT a FROM t",
            "test_cases": challenge["test_cases"].as_array().unwrap().iter()
                .map(|case| json!({"data": case["data"], "is_visible": case["is_visible"]}))
                .collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let updated = reply.data().clone();
    assert_eq!(updated["name"], "second name");
    assert!(
        updated["description"].is_null(),
        "a blank description is removed"
    );
    assert_eq!(updated["times_to_run"], 5);
    assert_eq!(updated["expires_at"], "2098-01-01T00:00:00Z");
    assert_eq!(
        (updated["version"].clone(), updated["state"].clone()),
        (json!(1), json!("READY"))
    );
    assert_eq!(case_ids(&updated), case_ids(&challenge));
    assert_eq!(
        updated["test_cases"][0]["expected_result"]["rows"],
        json!([[1]])
    );
    assert_eq!(updated["top_attempts"], json!([]));
    let get = server
        .get(&format!("/api/v1/challenges/{id}"), Some(&professor))
        .await;
    assert_eq!(
        &updated,
        get.data(),
        "the reply is the challenge as GET shows it"
    );
    assert_eq!(
        all_jobs(&server).await,
        jobs_before,
        "no init job for metadata"
    );

    // An admin may change anyone's challenge.
    let admin = server.admin_token().await;
    let reply = update_challenge(&server, &admin, id, json!({"description": "by the admin"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.data()["description"], "by the admin");
    assert_eq!(reply.data()["version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_new_solution_makes_a_new_version_that_is_reinitialized() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("prof@example.com").await;
    let (_, student) = server.user("student@example.com", None, None).await;
    let (_, other) = server.user("other@example.com", None, None).await;
    let challenge = create_challenge(&server, &professor, challenge_body("evolving", "FE")).await;
    let id = challenge["id"].as_i64().unwrap();
    make_ready(&server, &challenge).await;
    let old_ids = case_ids(&challenge);

    // A graded attempt on version 1 leads the board; another is still queued.
    let graded = submit(&server, &student, id).await;
    pass(&server, graded, &old_ids).await;
    let queued = submit(&server, &other, id).await;
    assert_eq!(leaderboard(&server, &student, id).await, vec![graded]);
    // What a submission racing the change read: version 1.
    let read_before_change = server
        .store()
        .get_challenge(ChallengeId(id))
        .await
        .unwrap()
        .unwrap();

    let reply = update_challenge(
        &server,
        &professor,
        id,
        json!({"solution": "SELECT a FROM t ORDER BY a"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let updated = reply.data().clone();
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["state"], "PENDING");
    assert!(updated["init_errors"].is_null() && updated["init_at"].is_null());
    assert_eq!(updated["solution"], "SELECT a FROM t ORDER BY a");
    assert_eq!(updated["name"], "evolving", "the rest stays");
    let new_ids = case_ids(&updated);
    assert_eq!(new_ids.len(), 2);
    assert!(
        new_ids.iter().all(|case_id| !old_ids.contains(case_id)),
        "new test case ids: {new_ids:?} after {old_ids:?}"
    );
    assert_eq!(
        updated["test_cases"][1]["data"],
        "INSERT INTO t VALUES (42) -- secret"
    );
    assert!(updated["test_cases"][0]["expected_result"].is_null());
    assert_eq!(
        updated["top_attempts"],
        json!([]),
        "version 1 attempts leave the board"
    );

    // The store holds version 2 and a queued init job for it.
    let stored = server
        .store()
        .get_challenge(ChallengeId(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.version, stored.solution.as_str()),
        (2, "SELECT a FROM t ORDER BY a")
    );
    let inits: Vec<Job> = all_jobs(&server)
        .await
        .into_iter()
        .filter(|job| job.kind == JobKind::Init)
        .collect();
    assert_eq!(inits.len(), 2, "the first init job and the new one");
    // The first init job was still queued (make_ready skipped the grader):
    // it is for a version nobody needs any more.
    assert_eq!(
        (inits[0].state, inits[0].error.as_deref()),
        (
            JobState::Cancelled,
            Some(format!("challenge {id} moved on to version 2").as_str())
        )
    );
    let JobPayload::Init(payload) = &inits[1].payload else {
        panic!("not an init payload")
    };
    assert_eq!(
        (inits[1].lane, inits[1].state),
        (Lane::Init, JobState::Queued)
    );
    assert_eq!(
        (payload.challenge_id, payload.version),
        (ChallengeId(id), 2)
    );
    assert_eq!(payload.solution, "SELECT a FROM t ORDER BY a");
    assert_eq!(
        payload
            .test_cases
            .iter()
            .map(|case| case.id.0)
            .collect::<Vec<_>>(),
        new_ids
    );

    // The queued attempt could only be graded against version 1: cancelled.
    let cancelled = server
        .get(&format!("/api/v1/attempts/{queued}"), Some(&other))
        .await;
    assert_eq!(
        cancelled.data()["status"],
        "CANCELLED",
        "{}",
        cancelled.text
    );
    let error = cancelled.data()["error"].as_str().unwrap();
    assert!(error.contains("challenge changed"), "{error}");
    let job_id = server
        .store()
        .get_attempt(AttemptId(queued))
        .await
        .unwrap()
        .unwrap()
        .job_id
        .unwrap();
    assert_eq!(
        server.store().get_job(job_id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    // A submission that read version 1 but was stored after the change's
    // sweep is cancelled once it sees the new version.
    let late = server
        .store()
        .create_attempt(NewAttempt {
            user_id: read_before_change.created_user_id,
            challenge_id: ChallengeId(id),
            challenge_version: 1,
            query: "SELECT a FROM t".into(),
        })
        .await
        .unwrap();
    let (late, late_job) = server
        .state
        .jobs
        .enqueue_attempt(&read_before_change, &late)
        .await
        .unwrap();
    let late = server.state.jobs.cancel_if_outdated(late).await.unwrap();
    assert_eq!(late.status, AttemptStatus::Cancelled);
    assert!(late
        .error
        .as_deref()
        .is_some_and(|error| error.contains("challenge changed (now version 2)")));
    assert_eq!(
        server
            .store()
            .get_job(late_job.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Cancelled
    );

    // Jobs made for version 1 cannot be retried: there is nothing left to
    // grade them against.
    let admin = server.admin_token().await;
    for job in [job_id, inits[0].id] {
        let message = server
            .post(
                &format!("/api/v1/admin/jobs/{job}/retry"),
                Some(&admin),
                json!({}),
            )
            .await
            .expect_error(StatusCode::CONFLICT);
        assert!(
            message.contains("version 1") && message.contains("cannot be retried"),
            "{message}"
        );
        assert_eq!(
            server.store().get_job(job).await.unwrap().unwrap().state,
            JobState::Cancelled
        );
    }
    assert_eq!(
        server
            .store()
            .get_attempt(AttemptId(queued))
            .await
            .unwrap()
            .unwrap()
            .status,
        AttemptStatus::Cancelled
    );

    // PENDING again: no attempts until the new version is READY.
    let message = server
        .post(
            "/api/v1/attempts",
            Some(&student),
            json!({"challenge_id": id, "query": "SELECT a FROM t"}),
        )
        .await
        .expect_error(StatusCode::CONFLICT);
    assert!(message.contains("not ready"), "{message}");

    // The old attempt stays viewable, with version 1's test cases.
    for token in [&student, &professor] {
        let old = server
            .get(&format!("/api/v1/attempts/{graded}"), Some(token))
            .await;
        assert_eq!(old.status, StatusCode::OK, "{}", old.text);
        let view = old.data();
        assert_eq!(
            (view["status"].clone(), view["challenge_version"].clone()),
            (json!("PASSED"), json!(1))
        );
        let shown: Vec<i64> = view["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| case["test_case_id"].as_i64().unwrap())
            .collect();
        assert_eq!(shown, old_ids);
        assert_eq!(view["attempts"][0]["is_visible"], true);
        assert_eq!(view["attempts"][0]["expected_result"]["rows"], json!([[1]]));
    }
    let student_view = server
        .get(&format!("/api/v1/attempts/{graded}"), Some(&student))
        .await;
    assert_eq!(student_view.data()["attempts"][1]["is_visible"], false);
    assert!(student_view.data()["attempts"][1]
        .get("expected_result")
        .is_none());
    let listed = server
        .get(
            &format!("/api/v1/users/{}/attempts", student_view.data()["user_id"]),
            Some(&student),
        )
        .await;
    assert_eq!(listed.data()[0]["attempts"][0]["test_case_id"], old_ids[0]);

    // Version 2 becomes READY; only its attempts rank.
    make_ready(&server, &updated).await;
    assert!(leaderboard(&server, &student, id).await.is_empty());
    let fresh = submit(&server, &other, id).await;
    pass(&server, fresh, &new_ids).await;
    assert_eq!(leaderboard(&server, &student, id).await, vec![fresh]);

    // An init result for version 1 arriving late changes nothing.
    assert!(!server
        .store()
        .set_challenge_init(
            ChallengeId(id),
            1,
            InitResult::Failed {
                errors: vec!["late".into()]
            },
            Utc::now()
        )
        .await
        .unwrap());
    assert_eq!(
        server
            .store()
            .get_challenge(ChallengeId(id))
            .await
            .unwrap()
            .unwrap()
            .state,
        sqlarena_common::ChallengeState::Ready
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_envelope_and_change_nothing() {
    let server = TestServer::start_with(|config| config.max_body_bytes = 512 * 1024).await;
    let (_, professor) = server.professor("prof@example.com").await;
    let (student_id, student) = server.user("student@example.com", None, None).await;
    let ready = create_challenge(&server, &professor, challenge_body("ready", "FE")).await;
    make_ready(&server, &ready).await;
    let ready_id = ready["id"].as_i64().unwrap();
    let before = counts(&server, student_id).await;

    let register = |change: &dyn Fn(&mut Value)| {
        let mut body =
            json!({"email": "new@example.com", "full_name": "New", "password": PASSWORD});
        change(&mut body);
        body
    };
    let challenge = |change: &dyn Fn(&mut Value)| {
        let mut body = challenge_body("bad", "FE");
        change(&mut body);
        body
    };
    let big = "x".repeat(257 * 1024);
    let fifty_one: Vec<Value> = (0..51)
        .map(|_| json!({"data": "", "is_visible": true}))
        .collect();
    let json_cases: Vec<BadRequest> = vec![
        (
            "register: wrong type",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["email"] = json!(5)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (
            "register: missing field",
            Method::POST,
            "/api/v1/register".into(),
            None,
            json!({"email": "new@example.com"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "full_name",
        ),
        (
            "register: unknown field",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["is_admin"] = json!(true)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is_admin",
        ),
        (
            "register: bad email",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["email"] = json!("not-an-email")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (
            "register: short password",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["password"] = json!("short")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
        ),
        (
            "register: no password",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| {
                b.as_object_mut().unwrap().remove("password");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
        ),
        (
            "register: empty name",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["full_name"] = json!("  ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "full_name",
        ),
        (
            "register: unknown role",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["role"] = json!("KING")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "KING",
        ),
        (
            "register: duplicate email",
            Method::POST,
            "/api/v1/register".into(),
            None,
            register(&|b| b["email"] = json!("STUDENT@example.com")),
            StatusCode::CONFLICT,
            "already registered",
        ),
        (
            "login: missing password",
            Method::POST,
            "/api/v1/login".into(),
            None,
            json!({"email": "student@example.com"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
        ),
        (
            "challenge: no token",
            Method::POST,
            "/api/v1/challenges".into(),
            None,
            challenge(&|_| {}),
            StatusCode::UNAUTHORIZED,
            "Bearer",
        ),
        (
            "challenge: bad token",
            Method::POST,
            "/api/v1/challenges".into(),
            Some("sqa_bogus"),
            challenge(&|_| {}),
            StatusCode::UNAUTHORIZED,
            "sign in",
        ),
        (
            "challenge: student",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&student),
            challenge(&|_| {}),
            StatusCode::FORBIDDEN,
            "PROF",
        ),
        (
            "challenge: bad type",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["type"] = json!("XX")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "XX",
        ),
        (
            "challenge: NUL in the solution",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["solution"] = json!("SELECT '\u{0}'")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "solution: must not contain NUL",
        ),
        (
            "challenge: times_to_run 0",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["times_to_run"] = json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "times_to_run",
        ),
        (
            "challenge: times_to_run 101",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["times_to_run"] = json!(101)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "times_to_run",
        ),
        (
            "challenge: negative times",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["times_to_run"] = json!(-3)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "times_to_run",
        ),
        (
            "challenge: empty name",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["name"] = json!("")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "challenge: long name",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["name"] = json!("n".repeat(201))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "challenge: no cases",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["test_cases"] = json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_cases",
        ),
        (
            "challenge: 51 cases",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["test_cases"] = json!(fifty_one)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_cases",
        ),
        (
            "challenge: huge init",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["init"] = json!(big)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "init",
        ),
        (
            "challenge: huge case",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["test_cases"][0]["data"] = json!(big)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_cases[0].data",
        ),
        (
            "challenge: past expiry",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["expires_at"] = json!("2001-01-01T00:00")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at",
        ),
        (
            "challenge: bad expiry",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["expires_at"] = json!("soon")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at",
        ),
        (
            "challenge: empty solution",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["solution"] = json!(" ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "solution",
        ),
        (
            "challenge: missing solution",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| {
                b.as_object_mut().unwrap().remove("solution");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "solution",
        ),
        (
            "challenge: unknown field",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["state"] = json!("READY")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "state",
        ),
        (
            "challenge: someone else's user_id",
            Method::POST,
            "/api/v1/challenges".into(),
            Some(&professor),
            challenge(&|b| b["user_id"] = json!(student_id)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id",
        ),
        (
            "update: student",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&student),
            json!({"name": "mine"}),
            StatusCode::FORBIDDEN,
            "PROF",
        ),
        (
            "update: no token",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            None,
            json!({"name": "mine"}),
            StatusCode::UNAUTHORIZED,
            "Bearer",
        ),
        (
            "update: unknown challenge",
            Method::PATCH,
            "/api/v1/challenges/9999".into(),
            Some(&professor),
            json!({"name": "x"}),
            StatusCode::NOT_FOUND,
            "9999",
        ),
        (
            "update: unknown field",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"type": "SE"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "type",
        ),
        (
            "update: wrong type",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"name": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "update: empty name",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "update: times_to_run 0",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"times_to_run": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "times_to_run",
        ),
        (
            "update: empty solution",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"solution": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "solution",
        ),
        (
            "update: huge init",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"init": big}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "init",
        ),
        (
            "update: no cases",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"test_cases": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_cases",
        ),
        (
            "update: huge case",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"test_cases": [{"data": big}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_cases[0].data",
        ),
        (
            "update: past expiry",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"expires_at": "2001-01-01T00:00"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at",
        ),
        (
            "update: a valid name with a bad solution",
            Method::PATCH,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            json!({"name": "fine", "solution": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "solution",
        ),
        (
            "attempt: unknown challenge",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": 9999, "query": "SELECT 1"}),
            StatusCode::NOT_FOUND,
            "9999",
        ),
        (
            "attempt: text challenge id",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": "one", "query": "SELECT 1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "challenge_id",
        ),
        (
            "attempt: empty query",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": ready_id, "query": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "query",
        ),
        (
            "attempt: huge query",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": ready_id, "query": "x".repeat(65 * 1024)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "query",
        ),
        (
            "wrong method",
            Method::PUT,
            format!("/api/v1/challenges/{ready_id}"),
            Some(&student),
            json!({}),
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take PUT",
        ),
        (
            "attempt: NUL in the query",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": ready_id, "query": "SELECT '\u{0}'"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "NUL",
        ),
        (
            "attempt: unknown field",
            Method::POST,
            "/api/v1/attempts".into(),
            Some(&student),
            json!({"challenge_id": ready_id, "query": "SELECT 1", "priority": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            "attempt: no token",
            Method::POST,
            "/api/v1/attempts".into(),
            None,
            json!({"challenge_id": ready_id, "query": "SELECT 1"}),
            StatusCode::UNAUTHORIZED,
            "Bearer",
        ),
        (
            "invite: professor",
            Method::POST,
            "/api/v1/invites".into(),
            Some(&professor),
            json!({"role": "PROF"}),
            StatusCode::FORBIDDEN,
            "ADMIN",
        ),
        (
            "cancel: unknown attempt",
            Method::POST,
            "/api/v1/attempts/9999/cancel".into(),
            Some(&student),
            json!({}),
            StatusCode::NOT_FOUND,
            "9999",
        ),
    ];
    for (name, method, path, token, body, status, needle) in json_cases {
        let reply = server.call(method, &path, token, Some(body)).await;
        let message = reply.expect_error(status);
        assert!(
            message.contains(needle),
            "{name}: message {message:?} does not mention {needle:?}"
        );
        assert_eq!(
            counts(&server, student_id).await,
            before,
            "{name} changed something"
        );
    }

    let get_cases: Vec<(&str, String, Option<&str>, StatusCode)> = vec![
        (
            "unknown challenge",
            "/api/v1/challenges/9999".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "text challenge id",
            "/api/v1/challenges/abc".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown attempt",
            "/api/v1/attempts/9999".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "text attempt id",
            "/api/v1/attempts/abc".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "text user id",
            "/api/v1/users/abc".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown creator",
            "/api/v1/challenges-by-user/9999".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
        (
            "list without token",
            "/api/v1/challenges".into(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown route",
            "/api/v1/nothing-here".into(),
            Some(&student),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, path, token, status) in get_cases {
        let reply = server.get(&path, token).await;
        reply.expect_error(status);
        assert_eq!(
            counts(&server, student_id).await,
            before,
            "{name} changed something"
        );
    }

    // Bodies that are not JSON at all, or too large.
    let malformed = server
        .call_raw(Method::POST, "/api/v1/register", None, "{\"email\": ")
        .await;
    assert!(malformed
        .expect_error(StatusCode::BAD_REQUEST)
        .contains("malformed JSON"));
    let malformed = server
        .call_raw(
            Method::POST,
            "/api/v1/challenges",
            Some(&professor),
            "not json",
        )
        .await;
    malformed.expect_error(StatusCode::BAD_REQUEST);
    let malformed = server
        .call_raw(
            Method::PATCH,
            &format!("/api/v1/challenges/{ready_id}"),
            Some(&professor),
            "{\"name\": ",
        )
        .await;
    assert!(malformed
        .expect_error(StatusCode::BAD_REQUEST)
        .contains("malformed JSON"));
    let text = server
        .client
        .http
        .post(format!("{}/api/v1/register", server.base))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::BAD_REQUEST);
    let mut huge = challenge_body("huge", "FE");
    huge["description"] = json!("d".repeat(600 * 1024));
    let too_large = server
        .call_raw(
            Method::POST,
            "/api/v1/challenges",
            Some(&professor),
            huge.to_string(),
        )
        .await;
    too_large.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        counts(&server, student_id).await,
        before,
        "a bad body changed something"
    );
    assert!(server
        .store()
        .get_user_by_email("new@example.com")
        .await
        .unwrap()
        .is_none());
    server.stop().await;
}

/// The document is generated from the router (utoipa-axum registers each
/// route with its documentation, so every route is in it by construction):
/// here, what the generation must add on top, and the docs page.
#[tokio::test]
async fn the_openapi_document_is_generated_with_errors_security_and_rules() {
    let server = TestServer::start().await;
    let reply = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let document = reply.body.clone();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "not OpenAPI 3.1"
    );
    for scheme in ["session", "grader", "cluster", "metrics"] {
        assert_eq!(
            document["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "no bearer scheme {scheme}"
        );
    }
    let codes = &document["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "not_found",
        "validation_failed",
        "unavailable",
        "rate_limited",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&json!(code)),
            "{code} missing from {codes}"
        );
    }
    let paths = document["paths"].as_object().expect("paths");
    // Operations endpoints at their real paths, nothing else outside /api/v1.
    for path in ["/healthz", "/readyz", "/metrics", "/docs"] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    for path in paths.keys() {
        assert!(
            path.starts_with("/api/v1/")
                || ["/healthz", "/readyz", "/metrics", "/docs"].contains(&path.as_str()),
            "{path} is documented where it is not served"
        );
    }
    assert!(paths.len() >= 35, "only {} paths", paths.len());
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["summary"].is_string(),
                "{method} {path} has no summary"
            );
            let responses = operation["responses"].as_object().unwrap();
            for status in ["500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            let secured = operation["security"]
                .as_array()
                .is_some_and(|security| security.iter().all(|scheme| scheme != &json!({})));
            if secured {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
        }
    }
    // Validation rules appear as the handlers enforce them.
    let limit = document["paths"]["/api/v1/admin/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .expect("limit")
        .clone();
    assert_eq!(
        limit["schema"]["maximum"],
        json!(sqlarena_coordinator::http::pagination::MAX_LIMIT)
    );
    assert_eq!(limit["schema"]["minimum"], json!(1));
    let state = document["paths"]["/api/v1/admin/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "state")
        .expect("state")
        .to_string();
    assert!(state.contains("JobState"), "{state}");

    for page in ["/docs", "/api/v1/docs"] {
        let response = server
            .client
            .http
            .get(format!("{}{page}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = response.text().await.unwrap();
        assert!(
            html.contains("/api/v1/openapi.json"),
            "the docs page does not load the document"
        );
        assert!(
            !html.contains("https://") && !html.contains("http://"),
            "the docs page loads something from the network"
        );
    }
    server.stop().await;
}
