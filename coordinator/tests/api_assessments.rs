//! Timed assessments over real HTTP against an in-process coordinator:
//! validation and the freeze once a session starts, the deadline and the
//! per-question limits, staff time changes, who may see and do what, and
//! scores. The test plays the grader's part by finishing attempts in the
//! store (the end-to-end test `tests/tests/assessments.rs` grades for real).

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlarena_common::{AttemptId, ChallengeId, UserId};
use sqlarena_common::{AttemptStatus, CaseResult, CaseStatus};
use sqlarena_coordinator::store::assessments::Submission;
use sqlarena_coordinator::store::AttemptUpdate;

fn mongodb() -> Option<String> {
    Some(sqlarena_e2e::mongo::test_mongodb_uri())
}

/// Creates a READY challenge as `professor` and returns its id.
async fn ready_challenge(server: &TestServer, professor: &str, name: &str) -> i64 {
    server
        .ready_challenge(
            professor,
            json!({
                "name": name, "type": "FE", "init": "CREATE TABLE t (a int)",
                "expires_at": "2099-06-01T12:00", "solution": "SELECT a FROM t", "times_to_run": 3,
                "test_cases": [{"data": "INSERT INTO t VALUES (1)", "is_visible": true}]
            }),
        )
        .await
}

fn time(offset_s: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(offset_s)).to_rfc3339()
}

/// A spec over `pool` (pick 1 of it, 10 points), open now, closing in an
/// hour, with `changes` merged in.
fn spec(pool: &[i64], changes: Value) -> Value {
    let mut spec = json!({
        "name": "Midterm", "zones": [{"pool": pool, "pick": 1, "points": 10.0}],
        "selection": "random", "time_limit_s": 3600,
        "opens_at": time(-60), "closes_at": time(3600),
        "feedback": "immediate", "scoreboard": "hidden"
    });
    for (key, value) in changes.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

async fn create(server: &TestServer, token: &str, spec: Value) -> i64 {
    let reply = server.post("/api/v1/assessments", Some(token), spec).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.data()["id"].as_i64().unwrap()
}

fn code(reply: &sqlarena_e2e::client::Reply) -> &str {
    reply.body["code"].as_str().unwrap_or("")
}

/// Starts `token`'s session and returns it.
async fn start_session(server: &TestServer, token: &str, assessment: i64) -> Value {
    let reply = server
        .post(
            &format!("/api/v1/assessments/{assessment}/sessions"),
            Some(token),
            json!({}),
        )
        .await;
    assert!(
        reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
        "{}",
        reply.text
    );
    reply.data().clone()
}

async fn submit(
    server: &TestServer,
    token: &str,
    session: i64,
    question: u32,
) -> sqlarena_e2e::client::Reply {
    server
        .post(
            &format!("/api/v1/sessions/{session}/questions/{question}/attempts"),
            Some(token),
            json!({"query": "SELECT a FROM t"}),
        )
        .await
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finishes an attempt as a grader would: PASSED with `ratio` per case, or FAILED.
async fn grade(server: &TestServer, attempt_id: i64, passed: bool, ratio: f64) {
    let attempt = server
        .store()
        .get_attempt(AttemptId(attempt_id))
        .await
        .unwrap()
        .unwrap();
    let challenge = server
        .store()
        .get_challenge(attempt.challenge_id)
        .await
        .unwrap()
        .unwrap();
    let status = if passed {
        CaseStatus::Passed
    } else {
        CaseStatus::Failed
    };
    let cases = challenge
        .test_cases
        .iter()
        .map(|case| CaseResult {
            test_case_id: case.id,
            status,
            execution_ms: Some(2.0 * ratio),
            min_ms: None,
            reference_ms: Some(2.0),
            ratio: Some(ratio),
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: None,
        })
        .collect();
    server
        .store()
        .update_attempt(
            AttemptId(attempt_id),
            AttemptUpdate {
                status: Some(if passed {
                    AttemptStatus::Passed
                } else {
                    AttemptStatus::Failed
                }),
                cases: Some(cases),
                finished_at: Some(Utc::now()),
                ..AttemptUpdate::default()
            },
        )
        .await
        .unwrap();
}

/// Bad specs are refused in the envelope and create nothing; another
/// professor's challenges and students are refused; an assessment can be
/// edited until its first session starts, then never (409
/// `assessment_started`), and starting is idempotent.
async fn assessments_are_validated_then_frozen_once_started(uri: Option<String>) {
    let server = TestServer::start_on(uri, |_| {}).await;
    let (_, professor) = server.professor("assess-prof@example.com").await;
    let (_, other) = server.professor("assess-other@example.com").await;
    let (_, student) = server.user("assess-stud@example.com", None, None).await;
    let first = ready_challenge(&server, &professor, "one").await;
    let second = ready_challenge(&server, &professor, "two").await;
    let theirs = ready_challenge(&server, &other, "theirs").await;

    let bad = [
        (
            spec(
                &[first],
                json!({"zones": [{"pool": [first], "pick": 2, "points": 1.0}]}),
            ),
            "pick",
        ),
        (
            spec(
                &[first],
                json!({"zones": [
                {"pool": [first, second], "pick": 2, "points": 1.0},
                {"pool": [second], "pick": 1, "points": 1.0}]}),
            ),
            "zones must not share",
        ),
        (
            spec(&[first], json!({"closes_at": time(-120)})),
            "closes_at",
        ),
        (spec(&[first, 999_999], json!({})), "no challenge 999999"),
        (spec(&[first], json!({"time_limit_s": 0})), "time_limit_s"),
        (
            spec(&[first], json!({"performance_credit": 2.0})),
            "performance_credit",
        ),
        (spec(&[first], json!({"name": "  "})), "name"),
    ];
    for (body, expected) in bad {
        let reply = server
            .post("/api/v1/assessments", Some(&professor), body)
            .await;
        let message = reply.expect_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let reply = server
        .post(
            "/api/v1/assessments",
            Some(&professor),
            spec(&[theirs], json!({})),
        )
        .await;
    assert!(reply
        .expect_error(StatusCode::FORBIDDEN)
        .contains("not yours"));
    let reply = server
        .post(
            "/api/v1/assessments",
            Some(&student),
            spec(&[first], json!({})),
        )
        .await;
    reply.expect_error(StatusCode::FORBIDDEN);

    let id = create(&server, &professor, spec(&[first, second], json!({}))).await;
    let reply = server
        .get(&format!("/api/v1/assessments/{}", id + 1), Some(&professor))
        .await;
    reply.expect_error(StatusCode::NOT_FOUND);

    let path = format!("/api/v1/assessments/{id}");
    let reply = server
        .call(
            Method::PATCH,
            &path,
            Some(&other),
            Some(json!({"name": "Mine now"})),
        )
        .await;
    reply.expect_error(StatusCode::FORBIDDEN);
    let reply = server
        .call(
            Method::PATCH,
            &path,
            Some(&professor),
            Some(json!({"name": "Final", "time_limit_s": 1800})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.data()["spec"]["name"], "Final");
    assert_eq!(reply.data()["started"], false);

    // Not open yet, or closed already: refused, and no session is made.
    for (window, status, expected) in [
        (
            json!({"opens_at": time(600), "closes_at": time(1200)}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            json!({"opens_at": time(-1200), "closes_at": time(-600)}),
            StatusCode::FORBIDDEN,
            "deadline_passed",
        ),
    ] {
        let other_id = create(&server, &professor, spec(&[first], window)).await;
        let reply = server
            .post(
                &format!("/api/v1/assessments/{other_id}/sessions"),
                Some(&student),
                json!({}),
            )
            .await;
        reply.expect_error(status);
        assert_eq!(code(&reply), expected);
        assert!(server
            .store()
            .list_assessment_sessions(other_id)
            .await
            .unwrap()
            .is_empty());
        let view = server
            .get(&format!("/api/v1/assessments/{other_id}"), Some(&professor))
            .await;
        assert_eq!(view.data()["started"], false);
    }

    let session = start_session(&server, &student, id).await;
    let again = start_session(&server, &student, id).await;
    assert_eq!(session["id"], again["id"], "starting is idempotent");
    assert_eq!(session["questions"], again["questions"]);
    assert_eq!(session["questions"].as_array().unwrap().len(), 1);
    assert_eq!(session["state"], "ACTIVE");
    let started: DateTime<Utc> = session["started_at"].as_str().unwrap().parse().unwrap();
    let deadline: DateTime<Utc> = session["deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        (deadline - started).num_seconds(),
        1800,
        "the deadline is said"
    );

    let reply = server
        .call(
            Method::PATCH,
            &path,
            Some(&professor),
            Some(json!({"name": "Too late"})),
        )
        .await;
    reply.expect_error(StatusCode::CONFLICT);
    assert_eq!(code(&reply), "assessment_started");
    let reply = server.get(&path, Some(&professor)).await;
    assert_eq!(reply.data()["spec"]["name"], "Final", "nothing changed");
    assert_eq!(reply.data()["started"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assessments_are_validated_then_frozen_once_started_on_sqlite() {
    assessments_are_validated_then_frozen_once_started(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assessments_are_validated_then_frozen_once_started_on_mongodb() {
    assessments_are_validated_then_frozen_once_started(mongodb()).await;
}

/// A short session: a second submission within `min_interval_s` is 429
/// `too_soon` with `Retry-After`, one past `max_submissions` is 409
/// `submission_limit`; the session closes by the clock alone (nobody calls
/// at the deadline), a submission after it is 403 `deadline_passed`, and
/// the session is FINALIZED once its submissions are graded.
async fn sessions_enforce_the_deadline_and_the_limits(uri: Option<String>) {
    let server = TestServer::start_on(uri, |_| {}).await;
    let (_, professor) = server.professor("limits-prof@example.com").await;
    let (_, student) = server.user("limits-stud@example.com", None, None).await;
    let challenge = ready_challenge(&server, &professor, "limits").await;
    let id = create(
        &server,
        &professor,
        spec(
            &[challenge],
            json!({"time_limit_s": 4, "max_submissions": 2, "min_interval_s": 1}),
        ),
    )
    .await;
    let session = start_session(&server, &student, id).await;
    let session_id = session["id"].as_i64().unwrap();

    let first = submit(&server, &student, session_id, 1).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let first_attempt = first.data()["attempt_id"].as_i64().unwrap();
    let too_soon = submit(&server, &student, session_id, 1).await;
    too_soon.expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&too_soon), "too_soon");
    assert!(too_soon.headers.get("retry-after").is_some());
    let reply = submit(&server, &student, session_id, 2).await;
    reply.expect_error(StatusCode::NOT_FOUND);

    // Retried until the interval has passed: each early try is `too_soon`.
    let patience = tokio::time::Instant::now() + Duration::from_secs(3);
    let second_attempt = loop {
        let reply = submit(&server, &student, session_id, 1).await;
        if reply.status == StatusCode::CREATED {
            break reply.data()["attempt_id"].as_i64().unwrap();
        }
        assert_eq!(code(&reply), "too_soon", "{}", reply.text);
        assert!(
            tokio::time::Instant::now() < patience,
            "the interval never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The limit is checked before the interval: refused at once.
    let over = submit(&server, &student, session_id, 1).await;
    over.expect_error(StatusCode::CONFLICT);
    assert_eq!(code(&over), "submission_limit");

    let path = format!("/api/v1/sessions/{session_id}");
    eventually(Duration::from_secs(8), "the deadline passes", || async {
        let reply = server.get(&path, Some(&student)).await;
        reply.data()["state"] != "ACTIVE"
    })
    .await;
    let view = server.get(&path, Some(&student)).await;
    assert_eq!(
        view.data()["state"],
        "CLOSED",
        "two submissions are being graded"
    );
    assert_eq!(view.data()["remaining_s"], 0.0);
    let late = submit(&server, &student, session_id, 1).await;
    late.expect_error(StatusCode::FORBIDDEN);
    assert_eq!(code(&late), "deadline_passed");
    let submissions = &view.data()["questions"][0]["submissions"];
    assert_eq!(
        submissions.as_array().unwrap().len(),
        2,
        "{view:?}",
        view = view.text
    );

    grade(&server, first_attempt, false, 1.0).await;
    grade(&server, second_attempt, true, 1.0).await;
    let view = server.get(&path, Some(&student)).await;
    assert_eq!(view.data()["state"], "FINALIZED");
    let log = server.get(&format!("{path}/log"), Some(&student)).await;
    let kinds: Vec<&str> = log
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["started", "submitted", "submitted", "closed"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_enforce_the_deadline_and_the_limits_on_sqlite() {
    sessions_enforce_the_deadline_and_the_limits(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_enforce_the_deadline_and_the_limits_on_mongodb() {
    sessions_enforce_the_deadline_and_the_limits(mongodb()).await;
}

fn deadline_of(reply: &sqlarena_e2e::client::Reply) -> DateTime<Utc> {
    reply.data()["deadline"].as_str().unwrap().parse().unwrap()
}

/// Staff change time: an override (scale, extra, own close date) and an
/// extension show in the student's next GET at once; a finished session
/// is reopened; the log says who did what. Students and other professors
/// are refused, and a refused change changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staff_extend_override_and_reopen_and_others_are_refused() {
    let server = TestServer::start().await;
    let (professor_id, professor) = server.professor("time-prof@example.com").await;
    let (_, other) = server.professor("time-other@example.com").await;
    let (student_id, student) = server.user("time-stud@example.com", None, None).await;
    let (_, classmate) = server.user("time-mate@example.com", None, None).await;
    let challenge = ready_challenge(&server, &professor, "time").await;
    let id = create(
        &server,
        &professor,
        spec(&[challenge], json!({"time_limit_s": 600})),
    )
    .await;
    let session = start_session(&server, &student, id).await;
    let session_id = session["id"].as_i64().unwrap();
    let path = format!("/api/v1/sessions/{session_id}");
    let started: DateTime<Utc> = session["started_at"].as_str().unwrap().parse().unwrap();

    // Refusals first: nothing they try changes the deadline.
    let before = deadline_of(&server.get(&path, Some(&student)).await);
    server
        .get(&path, Some(&classmate))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    server
        .get(&format!("{path}/log"), Some(&classmate))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    for token in [&student, &other] {
        server
            .post(&format!("{path}/time"), Some(token), json!({"delta_s": 60}))
            .await
            .expect_error(StatusCode::FORBIDDEN);
        server
            .post(
                &format!("{path}/reopen"),
                Some(token),
                json!({"duration_s": 60}),
            )
            .await
            .expect_error(StatusCode::FORBIDDEN);
        server
            .post(
                &format!("/api/v1/assessments/{id}/time"),
                Some(token),
                json!({"delta_s": 60}),
            )
            .await
            .expect_error(StatusCode::FORBIDDEN);
        server
            .call(
                Method::PUT,
                &format!("/api/v1/assessments/{id}/overrides"),
                Some(token),
                Some(json!({"user_id": student_id, "extra_s": 60})),
            )
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }
    server
        .post(
            &format!("{path}/time"),
            Some(&professor),
            json!({"delta_s": -60}),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    server
        .post(
            &format!("{path}/questions/1/attempts"),
            Some(&classmate),
            json!({"query": "SELECT 1"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(
        deadline_of(&server.get(&path, Some(&student)).await),
        before
    );
    let assessment = server
        .get(&format!("/api/v1/assessments/{id}"), Some(&student))
        .await;
    assert!(
        assessment.data().get("overrides").is_none(),
        "students do not see accommodations"
    );

    // An override applies to the running session at once.
    let reply = server
        .call(
            Method::PUT,
            &format!("/api/v1/assessments/{id}/overrides"),
            Some(&professor),
            Some(json!({"user_id": student_id, "extra_s": 30, "time_scale": 1.5})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let deadline = deadline_of(&server.get(&path, Some(&student)).await);
    assert_eq!((deadline - started).num_seconds(), 900 + 30);
    // Extensions: this session, then everyone.
    let reply = server
        .post(
            &format!("{path}/time"),
            Some(&professor),
            json!({"delta_s": 120}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        (deadline_of(&server.get(&path, Some(&student)).await) - started).num_seconds(),
        1050
    );
    let reply = server
        .post(
            &format!("/api/v1/assessments/{id}/time"),
            Some(&professor),
            json!({"delta_s": 60}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        (deadline_of(&server.get(&path, Some(&student)).await) - started).num_seconds(),
        1110
    );

    // Finish, then reopen.
    let reply = server
        .post(&format!("{path}/finish"), Some(&student), json!({}))
        .await;
    assert_eq!(reply.data()["state"], "FINALIZED", "nothing was submitted");
    submit(&server, &student, session_id, 1)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    let reply = server
        .post(
            &format!("{path}/reopen"),
            Some(&professor),
            json!({"duration_s": 300}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.data()["state"], "ACTIVE");
    let reply = submit(&server, &student, session_id, 1).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    let log = server.get(&format!("{path}/log"), Some(&professor)).await;
    let entries: Vec<(String, Option<i64>)> = log
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap().to_string(),
                entry["actor_id"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("started".to_string(), Some(student_id)),
            ("extended".to_string(), Some(professor_id)),
            ("extended".to_string(), Some(professor_id)),
            ("finished".to_string(), Some(student_id)),
            ("reopened".to_string(), Some(professor_id)),
            ("submitted".to_string(), Some(student_id)),
        ]
    );
    server.stop().await;
}

/// Scores: under `feedback: after_close` the student sees only SUBMITTED
/// and no score until the assessment closes; staff see everything; the
/// best passing submission counts, with performance credit from the
/// ratio; a hidden scoreboard stays hidden; manual scores replace the
/// computed one with who, when and why; the seed's `POST /scores`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_follow_the_policy_feedback_and_manual_scores() {
    let server = TestServer::start().await;
    let (professor_id, professor) = server.professor("score-prof@example.com").await;
    let (_, other) = server.professor("score-other@example.com").await;
    let (student_id, student) = server.user("score-stud@example.com", None, None).await;
    let (mate_id, mate) = server.user("score-mate@example.com", None, None).await;
    let challenge = ready_challenge(&server, &professor, "score").await;
    let id = create(
        &server,
        &professor,
        spec(
            &[challenge],
            json!({
        "time_limit_s": 600, "closes_at": time(4), "feedback": "after_close",
        "performance_credit": 0.5, "policy": "best"}),
        ),
    )
    .await;
    let session_id = start_session(&server, &student, id).await["id"]
        .as_i64()
        .unwrap();
    let mate_session = start_session(&server, &mate, id).await["id"]
        .as_i64()
        .unwrap();
    let slow = submit(&server, &student, session_id, 1).await;
    assert_eq!(slow.data()["status"], "SUBMITTED");
    assert!(slow.data()["attempt_id"].is_null(), "{}", slow.text);
    let slow_id = server
        .store()
        .list_user_attempts(UserId(student_id), sqlarena_coordinator::store::Page::all())
        .await
        .unwrap()[0]
        .id
        .0;
    grade(&server, slow_id, true, 2.0).await;
    let fast = submit(&server, &student, session_id, 1).await;
    assert_eq!(fast.status, StatusCode::CREATED, "{}", fast.text);
    let fast_id = server
        .store()
        .list_user_attempts(UserId(student_id), sqlarena_coordinator::store::Page::all())
        .await
        .unwrap()[0]
        .id
        .0;
    grade(&server, fast_id, true, 1.0).await;
    let mate_reply = submit(&server, &mate, mate_session, 1).await;
    assert_eq!(mate_reply.status, StatusCode::CREATED);
    let mate_attempt = server
        .store()
        .list_user_attempts(UserId(mate_id), sqlarena_coordinator::store::Page::all())
        .await
        .unwrap()[0]
        .id
        .0;
    grade(&server, mate_attempt, false, 1.0).await;

    let view = server
        .get(&format!("/api/v1/sessions/{session_id}"), Some(&student))
        .await;
    let statuses: Vec<&Value> = view.data()["questions"][0]["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["status"])
        .collect();
    assert_eq!(
        statuses,
        vec!["SUBMITTED", "SUBMITTED"],
        "results withheld until close"
    );
    // Nor around the session: the attempts API and the leaderboard.
    let attempt = server
        .get(&format!("/api/v1/attempts/{fast_id}"), Some(&student))
        .await;
    assert_eq!(attempt.data()["status"], "PENDING", "{}", attempt.text);
    assert_eq!(attempt.data()["attempts"], json!([]));
    let listed = server
        .get(
            &format!("/api/v1/users/{student_id}/attempts"),
            Some(&student),
        )
        .await;
    assert!(listed
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["status"] == "PENDING"));
    let one = server
        .get(
            &format!("/api/v1/users/{student_id}/attempts/{fast_id}"),
            Some(&student),
        )
        .await;
    assert_eq!(one.data()["status"], "PENDING");
    let board = |token: String| {
        let server = &server;
        async move {
            let reply = server
                .get(&format!("/api/v1/challenges/{challenge}"), Some(&token))
                .await;
            reply.data()["top_attempts"].as_array().unwrap().len()
        }
    };
    assert_eq!(
        board(student.clone()).await,
        0,
        "the leaderboard withholds it"
    );
    assert_eq!(board(professor.clone()).await, 1, "staff see it");
    let staff_attempt = server
        .get(&format!("/api/v1/attempts/{fast_id}"), Some(&professor))
        .await;
    assert_eq!(staff_attempt.data()["status"], "PASSED");

    let scores_path = format!("/api/v1/assessments/{id}/scores");
    let hidden = server.get(&scores_path, Some(&student)).await;
    assert_eq!(hidden.data()["scores"], json!([]));
    assert!(hidden.data()["scoreboard"].is_null());
    let staff = server.get(&scores_path, Some(&professor)).await;
    let rows = staff.data()["scores"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let own = rows
        .iter()
        .find(|row| row["user_id"] == student_id)
        .unwrap();
    assert_eq!(own["score"], 10.0, "the faster pass counts (best)");
    assert_eq!(own["questions"][0]["counted_attempt_id"], fast_id);
    let mate_row = rows.iter().find(|row| row["user_id"] == mate_id).unwrap();
    assert_eq!(mate_row["score"], 0.0);
    server.get(&scores_path, Some(&other)).await; // another professor: only their own (none)
    let other_view = server.get(&scores_path, Some(&other)).await;
    assert_eq!(other_view.data()["scores"], json!([]));
    assert!(other_view.data()["scoreboard"].is_null());

    // After the close, the student sees results, their own score only.
    eventually(Duration::from_secs(8), "the assessment closes", || async {
        let reply = server
            .get(&format!("/api/v1/sessions/{session_id}"), Some(&student))
            .await;
        reply.data()["results_visible"] == true
    })
    .await;
    let view = server
        .get(&format!("/api/v1/sessions/{session_id}"), Some(&student))
        .await;
    assert_eq!(
        view.data()["questions"][0]["submissions"][0]["status"],
        "PASSED"
    );
    let attempt = server
        .get(&format!("/api/v1/attempts/{fast_id}"), Some(&student))
        .await;
    assert_eq!(attempt.data()["status"], "PASSED");
    assert_eq!(board(student.clone()).await, 1);
    let visible = server.get(&scores_path, Some(&student)).await;
    let own_rows = visible.data()["scores"].as_array().unwrap();
    assert_eq!(own_rows.len(), 1);
    assert_eq!(own_rows[0]["user_id"], student_id);
    assert!(
        visible.data()["scoreboard"].is_null(),
        "the scoreboard is hidden"
    );
    let mine = server
        .get(
            &format!("/api/v1/users/{student_id}/scores"),
            Some(&student),
        )
        .await;
    assert_eq!(mine.data()[0]["score"], 10.0);
    server
        .get(&format!("/api/v1/users/{mate_id}/scores"), Some(&student))
        .await
        .expect_error(StatusCode::FORBIDDEN);

    // Manual scores: refused for others, kept with who and why.
    let override_path = format!("/api/v1/scores/{id}/{mate_id}/override");
    for token in [&student, &other] {
        server
            .call(
                Method::PUT,
                &override_path,
                Some(token),
                Some(json!({"score": 5.0, "reason": "regrade"})),
            )
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }
    server
        .call(
            Method::PUT,
            &override_path,
            Some(&professor),
            Some(json!({"score": 50.0, "reason": "too much"})),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    let reply = server
        .call(
            Method::PUT,
            &override_path,
            Some(&professor),
            Some(json!({"score": 7.5, "reason": "partial credit: right idea"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.data()["created_by"], professor_id);
    let staff = server.get(&scores_path, Some(&professor)).await;
    let mate_row = staff.data()["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["user_id"] == mate_id)
        .unwrap()
        .clone();
    assert_eq!(mate_row["score"], 7.5);
    assert_eq!(mate_row["computed"], 0.0);
    assert_eq!(mate_row["manual"]["reason"], "partial credit: right idea");

    let reply = server
        .post(
            "/api/v1/scores",
            Some(&professor),
            json!({"user_id": student_id, "assessment_id": id, "score": 9.0, "reason": "seed"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    for field in ["id", "user", "score", "date_submitted"] {
        assert!(!reply.data()[field].is_null(), "{field}: {}", reply.text);
    }
    assert_eq!(reply.data()["user"], student_id);
    server
        .post(
            "/api/v1/scores",
            Some(&professor),
            json!({"user_id": 999_999, "assessment_id": id, "score": 9.0, "reason": "seed"}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    server.post("/api/v1/scores", Some(&professor),
        json!({"user_id": student_id, "assessment_id": 999_999, "score": 9.0, "reason": "seed"})).await
        .expect_error(StatusCode::NOT_FOUND);
    let mine = server
        .get(
            &format!("/api/v1/users/{student_id}/scores"),
            Some(&student),
        )
        .await;
    assert_eq!(mine.data()[0]["score"], 9.0);
    assert_eq!(mine.data()[0]["computed"], 10.0);
    server.stop().await;
}

/// With `scoreboard: live` a student sees everyone's scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_scoreboard_is_shown_to_students() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("live-prof@example.com").await;
    let (_, student) = server.user("live-stud@example.com", None, None).await;
    let (mate_id, mate) = server.user("live-mate@example.com", None, None).await;
    let challenge = ready_challenge(&server, &professor, "live").await;
    let id = create(
        &server,
        &professor,
        spec(&[challenge], json!({"scoreboard": "live"})),
    )
    .await;
    start_session(&server, &student, id).await;
    let mate_session = start_session(&server, &mate, id).await["id"]
        .as_i64()
        .unwrap();
    let reply = submit(&server, &mate, mate_session, 1).await;
    grade(
        &server,
        reply.data()["attempt_id"].as_i64().unwrap(),
        true,
        1.0,
    )
    .await;
    let scores = server
        .get(&format!("/api/v1/assessments/{id}/scores"), Some(&student))
        .await;
    let board = scores.data()["scoreboard"].as_array().unwrap();
    assert_eq!(board.len(), 2);
    assert_eq!(board[0]["user_id"], mate_id);
    assert_eq!(board[0]["score"], 10.0);
    assert_eq!(
        scores.data()["scores"].as_array().unwrap().len(),
        1,
        "details: own only"
    );
    server.stop().await;
}

/// A submission accepted but cut off before its attempt was queued (the
/// coordinator stopped in between) is not lost: the next read of its
/// session queues its attempt from the stored query, so it still gets a
/// final state, never an unknown one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_cut_off_before_its_attempt_is_queued_again() {
    let server = TestServer::start().await;
    let (_, professor) = server.professor("orphan-prof@example.com").await;
    let (student_id, student) = server.user("orphan-stud@example.com", None, None).await;
    let challenge = ready_challenge(&server, &professor, "orphan").await;
    let id = create(&server, &professor, spec(&[challenge], json!({}))).await;
    let session_id = start_session(&server, &student, id).await["id"]
        .as_i64()
        .unwrap();
    let mut session = server
        .store()
        .get_assessment_session(session_id)
        .await
        .unwrap()
        .unwrap();
    // As the store holds it after a crash between accepting and queueing.
    session.submissions.push(Submission {
        number: 1,
        question: 1,
        received_at: Utc::now() - chrono::Duration::minutes(10),
        query: "SELECT a FROM t".into(),
        attempt_id: None,
        error: None,
    });
    assert!(server
        .store()
        .replace_assessment_session(&session)
        .await
        .unwrap());
    let view = server
        .get(&format!("/api/v1/sessions/{session_id}"), Some(&student))
        .await;
    let submission = &view.data()["questions"][0]["submissions"][0];
    assert_eq!(submission["status"], "PENDING", "{}", view.text);
    let attempt_id = submission["attempt_id"]
        .as_i64()
        .expect("an attempt was queued");
    let attempt = server
        .store()
        .get_attempt(AttemptId(attempt_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (attempt.user_id, attempt.challenge_id),
        (UserId(student_id), ChallengeId(challenge))
    );
    assert_eq!(attempt.query, "SELECT a FROM t");
    grade(&server, attempt_id, true, 1.0).await;
    let finished = server
        .post(
            &format!("/api/v1/sessions/{session_id}/finish"),
            Some(&student),
            json!({}),
        )
        .await;
    assert_eq!(finished.data()["state"], "FINALIZED");
    server.stop().await;
}
