//! The cluster as a whole: real coordinator and grader processes, real
//! PostgreSQL, the embedded store and the MongoDB wire-protocol test server.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use sqlarena_e2e::demo::{
    eventually, publish_sample_challenge, register, run_demo, wait_final, DemoCluster, SOLUTION,
};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

fn token() -> String {
    format!("sqc_test_{}", Uuid::new_v4().simple())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A professor and a student on a coordinator.
async fn people(coordinator: &str, label: &str) -> (Api, Api, Api) {
    let api = Api::new(coordinator);
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) = register(
        &api,
        &format!("prof-{label}@example.edu"),
        "Prof",
        "PROF",
        Some(&code),
    )
    .await;
    let (_, student) = register(
        &api,
        &format!("stud-{label}@example.edu"),
        "Stud",
        "STUD",
        None,
    )
    .await;
    (admin, professor, student)
}

fn case_statuses(attempt: &Value) -> Vec<String> {
    attempt["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_flow_grades_every_kind_of_attempt() {
    let cluster = DemoCluster::start("e2e-demo").await;
    let report = run_demo(&cluster, false).await;
    let by_kind = |kind: &str| {
        report
            .attempts
            .iter()
            .find(|(k, _, _)| k == kind)
            .unwrap()
            .2
            .clone()
    };

    let correct = by_kind("correct");
    assert_eq!(correct["status"], "PASSED", "{correct}");
    assert_eq!(case_statuses(&correct), vec!["PASSED"; 3]);
    let wrong = by_kind("wrong");
    assert_eq!(wrong["status"], "FAILED", "{wrong}");
    let visible_wrong = wrong["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["is_visible"] == true)
        .unwrap();
    assert!(
        visible_wrong["diff"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "a visible wrong case shows a diff: {wrong}"
    );
    let hidden_wrong = wrong["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["is_visible"] == false)
        .unwrap();
    for field in ["expected_result", "actual_result", "diff"] {
        assert!(
            hidden_wrong.get(field).is_none_or(Value::is_null),
            "students never see a hidden case's {field}: {hidden_wrong}"
        );
    }
    let slow = by_kind("slow");
    assert_eq!(slow["status"], "PASSED", "{slow}");
    // Case 3 is hidden: its student sees its status only, so compare on
    // the second (visible) case.
    assert!(slow["attempts"][2]["ratio"].is_null(), "{slow}");
    let ratio = |attempt: &Value| attempt["attempts"][1]["ratio"].as_f64().unwrap();
    assert!(
        ratio(&slow) > ratio(&correct),
        "the slow attempt is slower: {} vs {}",
        ratio(&slow),
        ratio(&correct)
    );
    let hostile = by_kind("hostile");
    assert!(
        matches!(hostile["status"].as_str(), Some("ERROR") | Some("FAILED")),
        "{hostile}"
    );
    let message = report.hostile_as_professor.to_string();
    assert!(
        message.contains("read-only") || message.contains("SELECT"),
        "the hostile attempt says why: {message}"
    );

    // The leaderboard: the correct attempt ahead of the slow one; nobody else.
    let board = report.professor_view["top_attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(board.len(), 2, "{board:?}");
    assert_eq!(board[0]["attempt_id"], correct["id"]);
    assert_eq!(board[1]["attempt_id"], slow["id"]);
    // Students never see the solution or hidden test data.
    assert!(
        report
            .student_view
            .get("solution")
            .is_none_or(Value::is_null),
        "{}",
        report.student_view
    );
    let hidden = report.student_view["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["is_visible"] == false)
        .unwrap();
    assert!(hidden.get("data").is_none_or(Value::is_null), "{hidden}");
    assert!(report.professor_view["solution"].as_str().is_some());
    assert_eq!(report.challenge["test_cases"].as_array().unwrap().len(), 3);
    cluster.stop().await;
}

/// A slow but correct query on bigger data, so an attempt takes a while.
const SLOW_CORRECT: &str = "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id CROSS JOIN LATERAL (SELECT count(*) FROM generate_series(1, 2000 + o.id % 2)) AS busy GROUP BY c.id, c.name ORDER BY total DESC, c.name";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grader_killed_mid_attempt_is_replaced_and_the_attempt_graded_once() {
    let token = token();
    let coordinator = start_coordinator(
        "kill-grader-coordinator",
        &temp_store("kill-grader"),
        &token,
        &["--heartbeat-interval-ms", "500"],
    )
    .await;
    let mut first = start_grader(
        "kill-grader-1",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    let (admin, professor, student) = people(coordinator.url(), "killgrader").await;
    let challenge =
        publish_sample_challenge(&professor, "kill a grader", Duration::from_secs(120)).await;
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge["id"], "query": SLOW_CORRECT}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let attempt_id = reply["data"]["id"].as_i64().unwrap();
    eventually(
        "the attempt to run on the first grader",
        Duration::from_secs(60),
        || async {
            let (_, reply) = student.get(&format!("/attempts/{attempt_id}")).await;
            (reply["data"]["status"] == "RUNNING").then_some(())
        },
    )
    .await;
    first.kill().await;
    let mut second = start_grader(
        "kill-grader-2",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    let attempt = wait_final(&student, attempt_id).await;
    assert_eq!(attempt["status"], "PASSED", "{attempt}");
    let (_, jobs) = admin.get("/admin/jobs?lane=fast").await;
    let job = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["attempt_id"] == attempt_id)
        .unwrap()
        .clone();
    assert_eq!(job["state"], "DONE");
    assert_eq!(
        job["tries"], 2,
        "taken back from the killed grader once: {job}"
    );
    let (_, graders) = admin.get("/admin/graders").await;
    let states: Vec<(String, String)> = graders["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("kill-grader-1".into(), "DEAD".into())),
        "{states:?}"
    );
    let metrics = reqwest::get(format!("{}/metrics", coordinator.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sqlarena_requeues_total 1"), "{metrics}");
    second.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_killed_under_load_loses_no_attempt() {
    let token = token();
    let store = temp_store("kill-coordinator");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let extra = [
        "--listen",
        listen.as_str(),
        "--max-unfinished-attempts",
        "100",
    ];
    let mut coordinator = start_coordinator("kill-coordinator-1", &store, &token, &extra).await;
    let url = coordinator.url().to_string();
    let mut graders = Vec::new();
    for index in 1..=2 {
        graders.push(
            start_grader(
                &format!("kill-coordinator-grader-{index}"),
                &url,
                &token,
                &[],
            )
            .await,
        );
    }
    let (_, professor, student) = people(&url, "killcoord").await;
    let challenge =
        publish_sample_challenge(&professor, "kill the coordinator", Duration::from_secs(120))
            .await;
    let mut attempt_ids = Vec::new();
    for _ in 0..30 {
        let (status, reply) = student
            .post(
                "/attempts",
                json!({"challenge_id": challenge["id"], "query": SOLUTION}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        attempt_ids.push(reply["data"]["id"].as_i64().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    coordinator.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let coordinator = start_coordinator("kill-coordinator-2", &store, &token, &extra).await;
    assert_eq!(coordinator.url(), url);
    let admin = Api::new(&url)
        .login("admin@example.com", "admin-password")
        .await;
    for id in &attempt_ids {
        let attempt = wait_final(&admin, *id).await;
        assert_eq!(attempt["status"], "PASSED", "{attempt}");
    }
    let (_, jobs) = admin.get("/admin/jobs?lane=fast&limit=500").await;
    let jobs = jobs["data"].as_array().unwrap();
    assert_eq!(jobs.len(), 30);
    assert!(
        jobs.iter()
            .all(|job| job["state"] == "DONE" && job["applied"] == true),
        "{jobs:?}"
    );
    for grader in &mut graders {
        grader.terminate(Duration::from_secs(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_one_mongodb_grade_every_attempt_once() {
    let token = token();
    let store = sqlarena_e2e::mongo::test_mongodb_uri();
    let first = start_coordinator(
        "mongo-coordinator-1",
        &store,
        &token,
        &["--max-unfinished-attempts", "100"],
    )
    .await;
    let second = start_coordinator(
        "mongo-coordinator-2",
        &store,
        &token,
        &["--max-unfinished-attempts", "100"],
    )
    .await;
    let mut graders = vec![
        start_grader("mongo-grader-1", first.url(), &token, &[]).await,
        start_grader("mongo-grader-2", second.url(), &token, &[]).await,
    ];
    let (admin, professor, student) = people(first.url(), "mongo").await;
    let challenge =
        publish_sample_challenge(&professor, "shared store", Duration::from_secs(120)).await;
    let other = Api::new(second.url()).with_token(student.token.as_deref().unwrap());
    let mut attempt_ids = Vec::new();
    for index in 0..20 {
        let client = if index % 2 == 0 { &student } else { &other };
        let (status, reply) = client
            .post(
                "/attempts",
                json!({"challenge_id": challenge["id"], "query": SOLUTION}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        attempt_ids.push(reply["data"]["id"].as_i64().unwrap());
    }
    assert_eq!(
        attempt_ids.iter().collect::<HashSet<_>>().len(),
        20,
        "ids are unique across coordinators"
    );
    for id in &attempt_ids {
        assert_eq!(wait_final(&student, *id).await["status"], "PASSED");
    }
    let (_, jobs) = admin.get("/admin/jobs?lane=fast&limit=500").await;
    let jobs = jobs["data"].as_array().unwrap();
    assert_eq!(jobs.len(), 20);
    assert!(
        jobs.iter()
            .all(|job| job["state"] == "DONE" && job["tries"] == 1),
        "{jobs:?}"
    );
    let (_, graders_view) = admin.get("/admin/graders").await;
    let done: Vec<u64> = graders_view["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["jobs_done"].as_u64().unwrap())
        .collect();
    assert_eq!(
        done.iter().sum::<u64>(),
        21,
        "20 attempts and one init, each recorded once: {done:?}"
    );
    for grader in &mut graders {
        grader.terminate(Duration::from_secs(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_cancel_expiry_and_init_failure() {
    let token = token();
    let coordinator = start_coordinator("ops-coordinator", &temp_store("ops"), &token, &[]).await;
    let mut grader = start_grader("ops-grader", coordinator.url(), &token, &["--slots", "1"]).await;
    let (admin, professor, student) = people(coordinator.url(), "ops").await;

    // A challenge whose init fails says which test case and why.
    let (status, reply) = professor
        .post(
            "/challenges",
            json!({"name": "broken", "type": "FE", "init": "CREATE TABLE t (a int);", "solution": "SELECT a FROM t",
                   "times_to_run": 1, "expires_at": "2099-01-01T00:00:00Z",
                   "test_cases": [{"data": "INSERT INTO t VALUES (1);", "is_visible": true},
                                  {"data": "INSERT INTO missing_table VALUES (1);", "is_visible": true}]}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let broken_id = reply["data"]["id"].as_i64().unwrap();
    let broken = eventually(
        "the broken challenge to fail",
        Duration::from_secs(60),
        || async {
            let (_, reply) = professor.get(&format!("/challenges/{broken_id}")).await;
            (reply["data"]["state"] == "FAILED").then(|| reply["data"].clone())
        },
    )
    .await;
    let errors = broken["init_errors"].to_string();
    assert!(errors.contains("missing_table"), "{errors}");
    let (status, _) = student
        .post(
            "/attempts",
            json!({"challenge_id": broken_id, "query": "SELECT 1"}),
        )
        .await;
    assert_eq!(status, 409);

    // Cancel a running attempt: the grader is told and the attempt is CANCELLED.
    let challenge = publish_sample_challenge(&professor, "ops", Duration::from_secs(120)).await;
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge["id"], "query": SLOW_CORRECT}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let running_id = reply["data"]["id"].as_i64().unwrap();
    eventually("the attempt to run", Duration::from_secs(60), || async {
        let (_, reply) = student.get(&format!("/attempts/{running_id}")).await;
        (reply["data"]["status"] == "RUNNING").then_some(())
    })
    .await;
    let (status, reply) = student
        .post(&format!("/attempts/{running_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let cancelled = wait_final(&student, running_id).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    // The grader is free again: the next attempt is graded.
    let next =
        sqlarena_e2e::demo::grade(&student, challenge["id"].as_i64().unwrap(), SOLUTION).await;
    assert_eq!(next["status"], "PASSED", "{next}");

    // Drain: the grader takes nothing new.
    let (_, graders) = admin.get("/admin/graders").await;
    let grader_id = graders["data"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = admin
        .post(&format!("/admin/graders/{grader_id}/drain"), json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge["id"], "query": SOLUTION}),
        )
        .await;
    assert_eq!(status, 201);
    let waiting_id = reply["data"]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, reply) = student.get(&format!("/attempts/{waiting_id}")).await;
    assert_eq!(
        reply["data"]["status"], "PENDING",
        "a drained grader leased nothing: {reply}"
    );
    let (_, queues) = admin.get("/admin/queues").await;
    let fast = queues["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["lane"] == "fast")
        .unwrap()
        .clone();
    assert_eq!(fast["queued"], 1, "{queues}");

    // An expired challenge refuses new attempts.
    let (status, reply) = professor
        .post(
            "/challenges",
            json!({"name": "short-lived", "type": "FE", "init": "CREATE TABLE t (a int);", "solution": "SELECT a FROM t",
                   "times_to_run": 1, "expires_at": (chrono_like_now_plus(4)),
                   "test_cases": [{"data": "INSERT INTO t VALUES (1);", "is_visible": true}]}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let short_id = reply["data"]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": short_id, "query": "SELECT a FROM t"}),
        )
        .await;
    assert!(status == 403 || status == 409, "{status} {reply}");
    assert_eq!(reply["status"], "error");
    grader.terminate(Duration::from_secs(15)).await;
}

/// RFC 3339 time `seconds` from now, without a date crate.
fn chrono_like_now_plus(seconds: u64) -> String {
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{seconds} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grader_started_before_the_coordinator_waits_and_joins() {
    let token = token();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut grader = start_grader("early-grader", &url, &token, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        grader.is_running(),
        "the grader waits for the coordinator: {}",
        grader.log()
    );
    let listen = format!("127.0.0.1:{port}");
    let coordinator = start_coordinator(
        "late-coordinator",
        &temp_store("late"),
        &token,
        &["--listen", &listen],
    )
    .await;
    let (admin, professor, student) = people(coordinator.url(), "late").await;
    let challenge = publish_sample_challenge(&professor, "late", Duration::from_secs(120)).await;
    let attempt =
        sqlarena_e2e::demo::grade(&student, challenge["id"].as_i64().unwrap(), SOLUTION).await;
    assert_eq!(attempt["status"], "PASSED");
    let (_, graders) = admin.get("/admin/graders").await;
    assert_eq!(graders["data"][0]["name"], "early-grader");
    grader.terminate(Duration::from_secs(15)).await;
}
