//! A timed assessment on the real cluster: coordinator and grader
//! processes, real PostgreSQL. A submission received before the deadline
//! is graded by a grader that only arrives after it, and counts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlarena_e2e::demo::{eventually, publish_sample_challenge, register, SOLUTION};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_before_the_deadline_is_graded_after_it_and_scored() {
    let token = format!("sqc_assess_{}", Uuid::new_v4().simple());
    let mut coordinator =
        start_coordinator("assess-coordinator", &temp_store("assess-e2e"), &token, &[]).await;
    let mut grader = start_grader("assess-grader-1", coordinator.url(), &token, &[]).await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) =
        register(&api, "assess-prof@example.edu", "Prof", "PROF", Some(&code)).await;
    let (student_id, student) =
        register(&api, "assess-stud@example.edu", "Stud", "STUD", None).await;
    let challenge =
        publish_sample_challenge(&professor, "assess-e2e", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();

    // No grader while the session runs: its submission waits in the queue.
    grader.terminate(Duration::from_secs(15)).await;
    let now = Utc::now();
    let (status, reply) = professor
        .post(
            "/assessments",
            json!({
                "name": "Quiz", "zones": [{"pool": [challenge_id], "pick": 1, "points": 10.0}],
                "selection": "stable", "time_limit_s": 3,
                "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "closes_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "feedback": "immediate", "scoreboard": "hidden"
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let assessment_id = reply["data"]["id"].as_i64().unwrap();
    let (status, session) = student
        .post(&format!("/assessments/{assessment_id}/sessions"), json!({}))
        .await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["data"]["id"].as_i64().unwrap();
    let deadline: DateTime<Utc> = session["data"]["deadline"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, submission) = student
        .post(
            &format!("/sessions/{session_id}/questions/1/attempts"),
            json!({"query": SOLUTION}),
        )
        .await;
    assert_eq!(status, 201, "{submission}");
    let attempt_id = submission["data"]["attempt_id"].as_i64().unwrap();
    let received: DateTime<Utc> = submission["data"]["received_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(received < deadline);

    // The deadline passes with nobody calling: CLOSED, the submission pending.
    let path = format!("/sessions/{session_id}");
    eventually("the deadline to pass", Duration::from_secs(10), || async {
        let (_, reply) = student.get(&path).await;
        (reply["data"]["state"] == "CLOSED").then_some(())
    })
    .await;
    let (status, late) = student
        .post(
            &format!("/sessions/{session_id}/questions/1/attempts"),
            json!({"query": SOLUTION}),
        )
        .await;
    assert_eq!(status, 403, "{late}");
    assert_eq!(late["code"], "deadline_passed");

    // A grader arrives after the deadline; the submission is graded and counts.
    let mut grader = start_grader("assess-grader-2", coordinator.url(), &token, &[]).await;
    let session = eventually(
        "the session to be FINALIZED",
        Duration::from_secs(120),
        || async {
            let (_, reply) = student.get(&path).await;
            (reply["data"]["state"] == "FINALIZED").then(|| reply["data"].clone())
        },
    )
    .await;
    let graded = &session["questions"][0]["submissions"][0];
    assert_eq!(graded["status"], "PASSED", "{session}");
    let finished: DateTime<Utc> = graded["attempt"]["finished_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(finished > deadline, "graded after the deadline");
    let (_, scores) = student
        .get(&format!("/assessments/{assessment_id}/scores"))
        .await;
    let own = &scores["data"]["scores"][0];
    assert_eq!(own["user_id"], student_id);
    assert_eq!(own["score"], 10.0, "{scores}");
    assert_eq!(own["state"], "FINALIZED");
    assert_eq!(own["questions"][0]["counted_attempt_id"], attempt_id);

    grader.terminate(Duration::from_secs(15)).await;
    coordinator.terminate(Duration::from_secs(10)).await;
}

/// A coordinator SIGKILLed mid-assessment loses no submission: after a
/// restart on the same store every accepted submission is there with its
/// attempt, and once a grader comes each ends in a final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_mid_assessment_loses_no_submission() {
    let token = format!("sqc_assess_{}", Uuid::new_v4().simple());
    let store = temp_store("assess-sigkill");
    let mut coordinator = start_coordinator("assess-kill-1", &store, &token, &[]).await;
    let mut grader = start_grader("assess-grader-k1", coordinator.url(), &token, &[]).await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) = register(
        &api,
        "assess-kprof@example.edu",
        "Prof",
        "PROF",
        Some(&code),
    )
    .await;
    let (_, student) = register(&api, "assess-kstud@example.edu", "Stud", "STUD", None).await;
    let challenge =
        publish_sample_challenge(&professor, "assess-kill", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    grader.terminate(Duration::from_secs(15)).await;

    let now = Utc::now();
    let (status, reply) = professor
        .post(
            "/assessments",
            json!({
                "name": "Killed", "zones": [{"pool": [challenge_id], "pick": 1, "points": 5.0}],
                "selection": "random", "time_limit_s": 600,
                "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "closes_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "feedback": "immediate", "scoreboard": "hidden"
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let assessment_id = reply["data"]["id"].as_i64().unwrap();
    let (_, session) = student
        .post(&format!("/assessments/{assessment_id}/sessions"), json!({}))
        .await;
    let session_id = session["data"]["id"].as_i64().unwrap();
    let submits: Vec<_> = [SOLUTION, "SELECT 1 AS x", SOLUTION]
        .into_iter()
        .map(|query| {
            let student = student.clone();
            tokio::spawn(async move {
                student
                    .post(
                        &format!("/sessions/{session_id}/questions/1/attempts"),
                        json!({ "query": query }),
                    )
                    .await
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for submit in submits {
        let (status, reply) = submit.await.unwrap();
        assert_eq!(status, 201, "{reply}");
        accepted.push(reply["data"]["attempt_id"].as_i64().unwrap());
    }
    accepted.sort_unstable();

    coordinator.kill().await;
    let mut coordinator = start_coordinator("assess-kill-2", &store, &token, &[]).await;
    let student = Api::new(coordinator.url()).with_token(student.token.as_deref().unwrap());
    let path = format!("/sessions/{session_id}");
    let (status, view) = student.get(&path).await;
    assert_eq!(status, 200, "{view}");
    let mut kept: Vec<i64> = view["data"]["questions"][0]["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|submission| submission["attempt_id"].as_i64().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, accepted, "every acknowledged submission survived");
    let (_, finished) = student.post(&format!("{path}/finish"), json!({})).await;
    assert_eq!(finished["data"]["state"], "CLOSED", "{finished}");

    let mut grader = start_grader("assess-grader-k2", coordinator.url(), &token, &[]).await;
    let session = eventually(
        "every submission to be graded",
        Duration::from_secs(120),
        || async {
            let (_, reply) = student.get(&path).await;
            (reply["data"]["state"] == "FINALIZED").then(|| reply["data"].clone())
        },
    )
    .await;
    let statuses: Vec<&str> = session["questions"][0]["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|submission| submission["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "PASSED").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "FAILED").count(),
        1,
        "{statuses:?}"
    );
    grader.terminate(Duration::from_secs(15)).await;
    coordinator.terminate(Duration::from_secs(10)).await;
}

/// 300 students start their sessions at once on the real cluster. Each
/// submits 1 s before its own deadline (accepted, then graded by a real
/// grader) and 1 s after it (refused with `deadline_passed`). Per-student
/// extra time (0-5 s) spreads the deadlines, as accommodations do in a
/// real class, and shows the override is honoured to the second too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_students_start_at_once_and_each_deadline_holds() {
    const STUDENTS: usize = 300;
    const LIMIT_S: i64 = 10;
    let token = format!("sqc_assess_{}", Uuid::new_v4().simple());
    let mut coordinator =
        start_coordinator("assess-crowd", &temp_store("assess-crowd"), &token, &[]).await;
    // Timing precision is not what this test is about: the stated rounds
    // only, so 300 attempts grade quickly on a busy machine.
    let mut grader = start_grader(
        "assess-crowd-grader",
        coordinator.url(),
        &token,
        &["--precision-time-ms", "0", "--slots", "4"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) = register(
        &api,
        "assess-crowd-prof@example.edu",
        "Prof",
        "PROF",
        Some(&code),
    )
    .await;
    let challenge =
        publish_sample_challenge(&professor, "assess-crowd", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    let students = register_students(&api, STUDENTS).await;

    let now = Utc::now();
    let (status, reply) = professor
        .post(
            "/assessments",
            json!({
                "name": "Crowd", "zones": [{"pool": [challenge_id], "pick": 1, "points": 1.0}],
                "selection": "random", "time_limit_s": LIMIT_S,
                "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "closes_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "feedback": "immediate", "scoreboard": "hidden"
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let assessment_id = reply["data"]["id"].as_i64().unwrap();
    for (index, (user_id, _)) in students.iter().enumerate() {
        let (status, reply) = professor
            .call(
                reqwest::Method::PUT,
                &format!("/assessments/{assessment_id}/overrides"),
                Some(json!({"user_id": user_id, "extra_s": index % 6})),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
    }

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(STUDENTS));
    let tasks: Vec<_> = students
        .into_iter()
        .enumerate()
        .map(|(index, (_, student))| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let (status, session) = student
                    .post(&format!("/assessments/{assessment_id}/sessions"), json!({}))
                    .await;
                assert_eq!(status, 201, "{session}");
                let session = &session["data"];
                let started = time_of(&session["started_at"]);
                let deadline = time_of(&session["deadline"]);
                let extra = i64::try_from(index % 6).unwrap();
                assert_eq!((deadline - started).num_seconds(), LIMIT_S + extra);
                let id = session["id"].as_i64().unwrap();
                let path = format!("/sessions/{id}/questions/1/attempts");
                sleep_until_time(deadline - chrono::Duration::seconds(1)).await;
                let early = student.post(&path, json!({"query": SOLUTION})).await;
                sleep_until_time(deadline + chrono::Duration::seconds(1)).await;
                let late = student.post(&path, json!({"query": SOLUTION})).await;
                assert_eq!(early.0, 201, "1 s before the deadline: {}", early.1);
                assert_eq!(late.0, 403, "1 s after the deadline: {}", late.1);
                assert_eq!(late.1["code"], "deadline_passed");
                (student, id)
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(task.await.unwrap());
    }

    // Every accepted submission is graded by the real grader, and counts.
    for (student, id) in &sessions {
        let path = format!("/sessions/{id}");
        let session = eventually(
            "the session to be FINALIZED",
            Duration::from_secs(300),
            || async {
                let (_, reply) = student.get(&path).await;
                (reply["data"]["state"] == "FINALIZED").then(|| reply["data"].clone())
            },
        )
        .await;
        let submissions = session["questions"][0]["submissions"].as_array().unwrap();
        assert_eq!(submissions.len(), 1, "{session}");
        assert_eq!(submissions[0]["status"], "PASSED", "{session}");
    }
    let (_, scores) = professor
        .get(&format!("/assessments/{assessment_id}/scores"))
        .await;
    let scores = scores["data"]["scores"].as_array().unwrap();
    assert_eq!(scores.len(), STUDENTS);
    assert!(scores.iter().all(|score| score["score"] == 1.0));

    grader.terminate(Duration::from_secs(15)).await;
    coordinator.terminate(Duration::from_secs(10)).await;
}

/// Registers `count` students, eight at a time (each is two password
/// hashes), and returns their ids and signed-in clients.
async fn register_students(api: &Api, count: usize) -> Vec<(i64, Api)> {
    let mut students = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(8) {
        let registered = batch.iter().map(|index| {
            let api = api.clone();
            let email = format!("assess-crowd-{index}@example.edu");
            tokio::spawn(async move { register(&api, &email, "Student", "STUD", None).await })
        });
        for task in registered.collect::<Vec<_>>() {
            students.push(task.await.unwrap());
        }
    }
    students
}

fn time_of(value: &serde_json::Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// Sleeps until the wall-clock time `at` (at once if it has passed).
async fn sleep_until_time(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}
