//! Grading runs end to end: a real coordinator, real graders on real
//! PostgreSQL, a tiny local HTTP receiver for the webhook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlarena_e2e::demo::{
    eventually, publish_sample_challenge, register, submit, wait_final, SOLUTION,
};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

/// A slow but correct query, so an item takes a while.
const SLOW_CORRECT: &str = "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id CROSS JOIN LATERAL (SELECT count(*) FROM generate_series(1, 3000 + o.id % 2)) AS busy GROUP BY c.id, c.name ORDER BY total DESC, c.name";
const WRONG: &str = "SELECT c.name, 0 AS total FROM customers c ORDER BY c.name";

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

/// What the webhook receiver saw: every request's headers and body.
#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<(String, String)>>,
    /// Answers 500 to this many requests first, then 200.
    failures_left: AtomicUsize,
}

/// Starts a webhook receiver on a free port; returns its URL.
async fn start_receiver(receiver: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0_u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..end].to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let body = text[end + 4..end + 4 + length].to_string();
                    receiver.requests.lock().unwrap().push((head, body));
                    let fail = receiver
                        .failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_ok();
                    let status = if fail {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    format!("http://{address}/hook")
}

/// An admin, two professors and `students` students; returns the
/// professors, then the students with their ids.
async fn people(api: &Api, label: &str, students: usize) -> (Api, Api, Api, Vec<(i64, Api)>) {
    let admin = api.login("admin@example.com", "admin-password").await;
    let mut professors = Vec::new();
    for which in ["a", "b"] {
        let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
        assert_eq!(status, 201, "{invite}");
        let code = invite["data"]["code"].as_str().unwrap().to_string();
        let (_, professor) = register(
            api,
            &format!("runs-prof-{which}-{label}@example.edu"),
            "Prof",
            "PROF",
            Some(&code),
        )
        .await;
        professors.push(professor);
    }
    let mut people = Vec::new();
    for index in 0..students {
        people.push(
            register(
                api,
                &format!("runs-stud-{index}-{label}@example.edu"),
                &format!("Student {index}"),
                "STUD",
                None,
            )
            .await,
        );
    }
    let second = professors.pop().unwrap();
    let first = professors.pop().unwrap();
    (admin, first, second, people)
}

/// An RFC 3339 UTC time with its fraction padded to nanoseconds, so that
/// times sort as text (the API writes as many digits as a time needs).
fn sortable_time(time: &str) -> String {
    let time = time.trim_end_matches('Z');
    let (seconds, fraction) = time.split_once('.').unwrap_or((time, ""));
    format!("{seconds}.{fraction:0<9}Z")
}

async fn run_state(viewer: &Api, run_id: i64) -> Value {
    let (status, reply) = viewer.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

async fn wait_run_final(viewer: &Api, run_id: i64) -> Value {
    eventually(
        &format!("run {run_id} to finish"),
        Duration::from_secs(180),
        || async {
            let run = run_state(viewer, run_id).await;
            match run["state"].as_str() {
                Some("COMPLETED" | "COMPLETED_WITH_ERRORS" | "FAILED" | "CANCELLED") => Some(run),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_grades_every_student_once_and_postprocesses_once() {
    let token = token();
    let coordinator = start_coordinator(
        "runs-coordinator",
        &temp_store("runs"),
        &token,
        &["--webhook-backoff-ms", "200"],
    )
    .await;
    let mut grader = start_grader(
        "runs-grader-1",
        coordinator.url(),
        &token,
        &["--slots", "2"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let (_admin, professor, other, students) = people(&api, "main", 4).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: big spenders", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    let queries = [SOLUTION, WRONG, SOLUTION];
    let mut attempts = Vec::new();
    for ((_, student), query) in students.iter().zip(queries) {
        let attempt = submit(student, challenge_id, query).await;
        attempts.push(wait_final(student, attempt).await);
    }
    assert_eq!(attempts[1]["status"], "FAILED");
    let receiver = Arc::new(Receiver {
        failures_left: AtomicUsize::new(1),
        ..Receiver::default()
    });
    let hook = start_receiver(receiver.clone()).await;
    let targets: Vec<i64> = students.iter().map(|(id, _)| *id).collect();
    let body = json!({
        "challenge_id": challenge_id,
        "targets": targets,
        "attempt": "latest",
        "webhook_url": hook,
        "idempotency_key": "runs-main-1",
    });

    // Refusals change nothing.
    let (student_id, student) = &students[0];
    let (status, reply) = student.post("/runs", body.clone()).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    let (status, reply) = other.post("/runs", body.clone()).await;
    assert_eq!(status, 403, "another professor's challenge: {reply}");
    let mut unknown = body.clone();
    unknown["challenge_id"] = json!(999_999);
    let (status, reply) = professor.post("/runs", unknown).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("not_found")),
        "{reply}"
    );
    for (field, value) in [
        ("webhook_url", json!("ftp://example.edu/hook")),
        ("targets", json!([])),
        ("targets", json!([999_999])),
        ("targets", json!([student_id, student_id])),
    ] {
        let mut bad = body.clone();
        bad[field] = value.clone();
        let (status, reply) = professor.post("/runs", bad).await;
        assert_eq!(status, 422, "{field} = {value}: {reply}");
        assert_eq!(reply["status"], "error", "{reply}");
    }

    let (status, reply) = professor.post("/runs", body.clone()).await;
    assert_eq!(status, 201, "{reply}");
    let run = reply["data"].clone();
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(run["counts"]["total"], 4, "{run}");
    let secret = run["webhook_secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_string();
    assert!(secret.starts_with("sqw_"), "{run}");
    let (status, again) = professor.post("/runs", body.clone()).await;
    assert_eq!(status, 200, "the same idempotency key: {again}");
    assert_eq!(again["data"]["id"], run_id);
    assert!(
        again["data"].get("webhook_secret").is_none(),
        "shown once: {again}"
    );

    let (status, reply) = student.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 403, "{reply}");
    let (status, reply) = other.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 403, "{reply}");
    let (status, reply) = other
        .post(&format!("/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 403, "{reply}");

    let finished = wait_run_final(&professor, run_id).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["counts"]["done"], 4, "{finished}");
    assert_eq!(finished["postprocessing"], "DONE", "{finished}");
    let (status, items) = professor.get(&format!("/runs/{run_id}/items")).await;
    assert_eq!(status, 200, "{items}");
    let items = items["data"].as_array().unwrap().clone();
    let statuses: Vec<&str> = items
        .iter()
        .map(|item| item["status"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        statuses,
        vec!["PASSED", "FAILED", "PASSED", "-"],
        "{items:?}"
    );
    assert_eq!(items[0]["score"], 100.0);
    assert_eq!(items[3]["state"], "DONE");
    assert!(
        items[3]["note"].as_str().unwrap().contains("no attempt"),
        "{items:?}"
    );
    assert!(
        items[0]["grader_id"].is_string() && items[0]["tries"] == 1,
        "{items:?}"
    );
    let (status, done_only) = professor
        .get(&format!("/runs/{run_id}/items?state=DONE&limit=2"))
        .await;
    assert_eq!(status, 200, "{done_only}");
    assert_eq!(done_only["data"].as_array().unwrap().len(), 2);
    assert!(done_only["next_cursor"].is_string(), "{done_only}");

    // The gradebook: a header and a row per student.
    let gradebook = professor
        .client
        .call_raw(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{run_id}/gradebook"),
            professor.token.as_deref(),
            Vec::new(),
        )
        .await;
    assert_eq!(gradebook.status, 200, "{}", gradebook.text);
    let gradebook = gradebook.text;
    assert_eq!(gradebook.lines().count(), 5, "{gradebook}");
    assert!(
        gradebook.contains("Student 1") && gradebook.contains("FAILED"),
        "{gradebook}"
    );

    // The webhook: failed once, retried, delivered once, each try listed.
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        2,
        "one failure then one success: {requests:?}"
    );
    for (head, body) in &requests {
        let signature = head
            .lines()
            .find_map(|line| line.strip_prefix("x-sqlarena-signature: sha256="))
            .expect("a signature header");
        assert_eq!(signature.trim().len(), 64, "{head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["run_id"], run_id);
        assert_eq!(body["state"], "COMPLETED");
    }
    let deliveries = finished["webhook_deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{finished}");
    assert_eq!(deliveries[0]["status_code"], 500);
    assert_eq!(deliveries[1]["status_code"], 200);

    // The students' own results are untouched by the run.
    for ((_, student), before) in students.iter().zip(&attempts) {
        let id = before["id"].as_i64().unwrap();
        let (_, now) = student.get(&format!("/attempts/{id}")).await;
        assert_eq!(now["data"]["status"], before["status"]);
        assert_eq!(now["data"]["error"], before["error"]);
        assert_eq!(
            now["data"]["finished_at"], before["finished_at"],
            "run items complete through complete_attempt_job, yet never into the attempt"
        );
    }
    // Nothing is retried in a run without errors; a finished run is not paused.
    let (status, reply) = professor
        .post(&format!("/runs/{run_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 409, "{reply}");
    let (status, reply) = professor
        .post(&format!("/runs/{run_id}/pause"), json!({}))
        .await;
    assert_eq!(status, 409, "{reply}");
    // Still exactly one successful delivery.
    assert_eq!(receiver.requests.lock().unwrap().len(), 2);

    // The event stream of a finished run: its last state, then the end.
    let events = professor
        .client
        .call_raw(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{run_id}/events"),
            professor.token.as_deref(),
            Vec::new(),
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.text);
    assert!(
        events.text.contains("event: run") && events.text.contains("\"state\":\"COMPLETED\""),
        "{}",
        events.text
    );
    let (status, reply) = other.get(&format!("/runs/{run_id}/events")).await;
    assert_eq!(status, 403, "{reply}");

    // Shadow mode: the challenge is fixed (here the reference becomes the
    // query student 1 wrote), every final attempt is graded against the new
    // version beside the published results, the diff names who changes,
    // and publishing makes the shadow results the published ones.
    let (status, reply) = professor
        .call(
            reqwest::Method::PATCH,
            &format!("/challenges/{challenge_id}"),
            Some(json!({"solution": WRONG})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    eventually(
        "the new version to be READY",
        Duration::from_secs(120),
        || async {
            let (_, reply) = professor.get(&format!("/challenges/{challenge_id}")).await;
            (reply["data"]["state"] == "READY").then_some(())
        },
    )
    .await;
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "mode": "shadow"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let shadow_id = reply["data"]["id"].as_i64().unwrap();
    assert_eq!(reply["data"]["published"], false, "{reply}");
    let shadow = wait_run_final(&professor, shadow_id).await;
    assert_eq!(shadow["state"], "COMPLETED", "{shadow}");
    let (status, diff) = professor.get(&format!("/runs/{shadow_id}/diff")).await;
    assert_eq!(status, 200, "{diff}");
    let changes: Vec<(i64, &str, &str)> = diff["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            assert_eq!(
                change["published_from"],
                format!("run {run_id}"),
                "{change}"
            );
            (
                change["user_id"].as_i64().unwrap(),
                change["published_status"].as_str().unwrap(),
                change["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (students[0].0, "PASSED", "FAILED"),
            (students[1].0, "FAILED", "PASSED"),
            (students[2].0, "PASSED", "FAILED"),
        ],
        "{diff}"
    );
    let (status, reply) = other.get(&format!("/runs/{shadow_id}/diff")).await;
    assert_eq!(status, 403, "{reply}");
    let (status, reply) = other
        .post(&format!("/runs/{shadow_id}/publish"), json!({}))
        .await;
    assert_eq!(status, 403, "{reply}");
    let (status, published) = professor
        .post(&format!("/runs/{shadow_id}/publish"), json!({}))
        .await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(published["data"]["published"], true, "{published}");
    let (status, reply) = professor
        .post(&format!("/runs/{shadow_id}/publish"), json!({}))
        .await;
    assert_eq!(status, 409, "published once: {reply}");
    let (status, reply) = professor
        .post(&format!("/runs/{run_id}/publish"), json!({}))
        .await;
    assert_eq!(status, 409, "a publish run is published already: {reply}");
    for ((_, student), before) in students.iter().zip(&attempts) {
        let id = before["id"].as_i64().unwrap();
        let (_, now) = student.get(&format!("/attempts/{id}")).await;
        assert_eq!(
            now["data"]["status"], before["status"],
            "a regrade never touches attempts"
        );
        assert_eq!(
            now["data"]["finished_at"], before["finished_at"],
            "a regrade's results go to its items, never to attempts"
        );
    }

    // Broadway's shape.
    let (status, created) = professor
        .post(
            "/grading_run",
            json!({"challenge_id": challenge_id, "targets": "all"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let broadway_id = created["data"]["id"].as_i64().unwrap();
    let (_, queued) = professor.get(&format!("/grading_run/{broadway_id}")).await;
    let statuses = queued["data"]["student_statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 3, "every student who attempted: {queued}");
    assert!(
        statuses.iter().all(|status| status["status"] == "QUEUED"),
        "{queued}"
    );
    assert_eq!(queued["data"]["postprocessing_status"]["status"], "PENDING");
    let (status, reply) = professor
        .post(&format!("/grading_run/{broadway_id}"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    wait_run_final(&professor, broadway_id).await;
    let (_, finished) = professor.get(&format!("/grading_run/{broadway_id}")).await;
    let statuses = finished["data"]["student_statuses"].as_array().unwrap();
    assert!(
        statuses
            .iter()
            .all(|status| status["status"] == "DONE" && status["job_id"].is_string()),
        "{finished}"
    );
    assert_eq!(finished["data"]["postprocessing_status"]["status"], "DONE");
    grader.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_run_survives_a_restart_and_a_killed_grader_and_still_finishes() {
    let token = token();
    let store = temp_store("runs-pause");
    let listen = format!("127.0.0.1:{}", free_port());
    let extra = [
        "--listen",
        listen.as_str(),
        "--heartbeat-interval-ms",
        "500",
    ];
    let mut coordinator = start_coordinator("runs-pause-coordinator", &store, &token, &extra).await;
    let url = coordinator.url().to_string();
    let mut first = start_grader("runs-pause-grader-1", &url, &token, &["--slots", "1"]).await;
    let api = Api::new(&url);
    let (_admin, professor, _other, students) = people(&api, "pause", 5).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: pause", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for (_, student) in &students {
        let attempt = submit(student, challenge_id, SLOW_CORRECT).await;
        wait_final(student, attempt).await;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "webhook_url": hook}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();

    // Kill the grader while it grades an item; another takes over.
    eventually("an item to run", Duration::from_secs(60), || async {
        let run = run_state(&professor, run_id).await;
        (run["counts"]["running"] == 1).then_some(())
    })
    .await;
    first.kill().await;
    let second = start_grader("runs-pause-grader-2", &url, &token, &["--slots", "1"]).await;

    // Pause: the running item finishes, nothing else is leased.
    let (status, paused) = professor
        .post(&format!("/runs/{run_id}/pause"), json!({}))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["data"]["state"], "PAUSED");
    let settled = eventually(
        "the paused run to hold no lease",
        Duration::from_secs(60),
        || async {
            let run = run_state(&professor, run_id).await;
            (run["counts"]["running"] == 0).then_some(run)
        },
    )
    .await;
    assert!(
        settled["counts"]["queued"].as_u64().unwrap() > 0,
        "{settled}"
    );
    assert_eq!(settled["queue_position"], Value::Null, "{settled}");

    // The pause survives a coordinator restart.
    coordinator.kill().await;
    let coordinator = start_coordinator("runs-pause-coordinator-2", &store, &token, &extra).await;
    let (status, after) = professor.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"]["state"], "PAUSED", "{after}");
    assert_eq!(
        after["data"]["counts"]["done"], settled["counts"]["done"],
        "{after}"
    );
    assert_eq!(after["data"]["counts"]["running"], 0, "{after}");

    let (status, resumed) = professor
        .post(&format!("/runs/{run_id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let finished = wait_run_final(&professor, run_id).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["counts"]["done"], 5, "{finished}");
    let (_, items) = professor.get(&format!("/runs/{run_id}/items")).await;
    let items = items["data"].as_array().unwrap();
    for item in items {
        assert_eq!(item["status"], "PASSED", "{item}");
    }
    assert!(
        items.iter().any(|item| item["tries"] == 2),
        "the killed grader's item was graded again, not lost: {items:?}"
    );
    eventually("the webhook", Duration::from_secs(10), || async {
        (receiver.requests.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        1,
        "postprocessing ran once"
    );
    drop(second);
    drop(coordinator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_attempts_go_first_and_professors_runs_take_turns() {
    let token = token();
    let coordinator = start_coordinator(
        "runs-turns-coordinator",
        &temp_store("runs-turns"),
        &token,
        &[],
    )
    .await;
    let mut grader = start_grader(
        "runs-turns-grader-1",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let (admin, first, second, students) = people(&api, "turns", 6).await;
    let mut challenges = Vec::new();
    for (professor, name) in [(&first, "runs: turns a"), (&second, "runs: turns b")] {
        let challenge = publish_sample_challenge(professor, name, Duration::from_secs(120)).await;
        challenges.push(challenge["id"].as_i64().unwrap());
    }
    for (index, (_, student)) in students.iter().enumerate() {
        let attempt = submit(student, challenges[index % 2], SOLUTION).await;
        wait_final(student, attempt).await;
    }
    // No grader while the queue fills: two runs, then a live attempt.
    grader.terminate(Duration::from_secs(15)).await;
    let mut runs = Vec::new();
    for (professor, challenge_id) in [(&first, challenges[0]), (&second, challenges[1])] {
        let (status, reply) = professor
            .post(
                "/runs",
                json!({"challenge_id": challenge_id, "targets": "all"}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        assert_eq!(reply["data"]["counts"]["total"], 3, "{reply}");
        runs.push(reply["data"]["id"].as_i64().unwrap());
    }
    let (_, live_student) = &students[0];
    let live = submit(live_student, challenges[0], SOLUTION).await;
    let run = run_state(&first, runs[0]).await;
    assert!(run["queue_position"].as_u64().is_some(), "{run}");

    let grader = start_grader(
        "runs-turns-grader-2",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    wait_final(live_student, live).await;
    for (professor, run_id) in [(&first, runs[0]), (&second, runs[1])] {
        let finished = wait_run_final(professor, run_id).await;
        assert_eq!(finished["state"], "COMPLETED", "{finished}");
    }
    let (status, jobs) = admin.get("/admin/jobs?limit=500").await;
    assert_eq!(status, 200, "{jobs}");
    let mut leased: Vec<(String, i64, i64)> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["kind"] == "attempt")
        .filter_map(|job| {
            Some((
                sortable_time(job["leased_at"].as_str()?),
                job["challenge_id"].as_i64()?,
                job["attempt_id"].as_i64()?,
            ))
        })
        .collect();
    leased.sort();
    // The last 7 leases: the live attempt, then the runs' items by turns.
    let order: Vec<(i64, i64)> = leased[leased.len() - 7..]
        .iter()
        .map(|(_, challenge, attempt)| (*challenge, *attempt))
        .collect();
    assert_eq!(
        order[0],
        (challenges[0], live),
        "the live attempt first: {order:?}"
    );
    let turns: Vec<i64> = order[1..].iter().map(|(challenge, _)| *challenge).collect();
    let (a, b) = (challenges[0], challenges[1]);
    assert_eq!(
        turns,
        vec![a, b, a, b, a, b],
        "round-robin between professors: {order:?}"
    );
    drop(grader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_item_out_of_tries_is_an_error_the_run_still_finishes_and_retry_grades_it() {
    let token = token();
    let coordinator = start_coordinator(
        "runs-error-coordinator",
        &temp_store("runs-error"),
        &token,
        &["--max-tries", "1", "--heartbeat-interval-ms", "500"],
    )
    .await;
    let url = coordinator.url().to_string();
    let mut first = start_grader("runs-error-grader-1", &url, &token, &["--slots", "1"]).await;
    let api = Api::new(&url);
    let (_admin, professor, _other, students) = people(&api, "error", 2).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: errors", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    let mut attempts = Vec::new();
    for (_, student) in &students {
        let attempt = submit(student, challenge_id, SLOW_CORRECT).await;
        attempts.push(wait_final(student, attempt).await);
    }
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "on_item_failure": "continue"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    eventually("an item to run", Duration::from_secs(60), || async {
        let run = run_state(&professor, run_id).await;
        (run["counts"]["running"] == 1).then_some(())
    })
    .await;
    // Its grader dies on the item's only try: the item is ERROR, the other
    // item is graded by another grader, and the run finishes.
    first.kill().await;
    let second = start_grader("runs-error-grader-2", &url, &token, &["--slots", "1"]).await;
    let finished = wait_run_final(&professor, run_id).await;
    assert_eq!(finished["state"], "COMPLETED_WITH_ERRORS", "{finished}");
    assert_eq!(finished["counts"]["error"], 1, "{finished}");
    assert_eq!(finished["counts"]["done"], 1, "{finished}");
    assert_eq!(finished["postprocessing"], "DONE", "{finished}");
    let (_, errors) = professor
        .get(&format!("/runs/{run_id}/items?state=ERROR"))
        .await;
    let errors = errors["data"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("gave up"),
        "{errors:?}"
    );
    assert_eq!(
        errors[0]["status"],
        Value::Null,
        "never charged to the student: {errors:?}"
    );
    for ((_, student), before) in students.iter().zip(&attempts) {
        let id = before["id"].as_i64().unwrap();
        let (_, now) = student.get(&format!("/attempts/{id}")).await;
        assert_eq!(now["data"]["status"], "PASSED", "{now}");
        assert_eq!(
            now["data"]["finished_at"], before["finished_at"],
            "an item's end never reaches the attempt: {now}"
        );
    }
    // Retry grades the item in ERROR again; postprocessing runs again.
    let (status, retried) = professor
        .post(&format!("/runs/{run_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["data"]["state"], "RUNNING", "{retried}");
    let finished = wait_run_final(&professor, run_id).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["counts"]["done"], 2, "{finished}");
    assert_eq!(finished["counts"]["error"], 0, "{finished}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_fail_run_an_item_out_of_tries_fails_the_run_and_cancels_the_rest() {
    let token = token();
    let coordinator = start_coordinator(
        "runs-failrun-coordinator",
        &temp_store("runs-failrun"),
        &token,
        &["--max-tries", "1", "--heartbeat-interval-ms", "500"],
    )
    .await;
    let url = coordinator.url().to_string();
    let mut first = start_grader("runs-failrun-grader-1", &url, &token, &["--slots", "1"]).await;
    let api = Api::new(&url);
    let (_admin, professor, _other, students) = people(&api, "failrun", 3).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: fail run", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for (_, student) in &students {
        let attempt = submit(student, challenge_id, SLOW_CORRECT).await;
        wait_final(student, attempt).await;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all",
                   "on_item_failure": "fail_run", "webhook_url": hook}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    eventually("an item to run", Duration::from_secs(60), || async {
        let run = run_state(&professor, run_id).await;
        (run["counts"]["running"] == 1).then_some(())
    })
    .await;
    first.kill().await;
    let finished = wait_run_final(&professor, run_id).await;
    assert_eq!(finished["state"], "FAILED", "{finished}");
    assert_eq!(finished["counts"]["error"], 1, "{finished}");
    assert_eq!(
        finished["counts"]["done"].as_u64().unwrap()
            + finished["counts"]["cancelled"].as_u64().unwrap(),
        2,
        "{finished}"
    );
    assert!(
        finished["counts"]["cancelled"].as_u64().unwrap() >= 1,
        "{finished}"
    );
    // Postprocessing still ran, once.
    assert_eq!(finished["postprocessing"], "DONE", "{finished}");
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].1.contains("\"state\":\"FAILED\""),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_one_mongodb_postprocess_a_run_once() {
    let token = token();
    let store = sqlarena_e2e::mongo::test_mongodb_uri();
    let first = start_coordinator("runs-mongo-coordinator-1", &store, &token, &[]).await;
    let second = start_coordinator("runs-mongo-coordinator-2", &store, &token, &[]).await;
    let graders = vec![
        start_grader("runs-mongo-grader-1", first.url(), &token, &[]).await,
        start_grader("runs-mongo-grader-2", second.url(), &token, &[]).await,
    ];
    let api = Api::new(first.url());
    let (_admin, professor, _other, students) = people(&api, "mongo", 3).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: mongo", Duration::from_secs(180)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for ((_, student), query) in students.iter().zip([SOLUTION, WRONG, SOLUTION]) {
        let attempt = submit(student, challenge_id, query).await;
        wait_final(student, attempt).await;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "webhook_url": hook,
                   "idempotency_key": "mongo-1"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    // The other coordinator knows the key too.
    let other_side = Api::new(second.url())
        .login("runs-prof-a-mongo@example.edu", "demo-password")
        .await;
    let (status, again) = other_side
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "webhook_url": hook,
                   "idempotency_key": "mongo-1"}),
        )
        .await;
    assert_eq!(
        (status, again["data"]["id"].as_i64()),
        (200, Some(run_id)),
        "{again}"
    );
    let finished = wait_run_final(&other_side, run_id).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["counts"]["done"], 3, "{finished}");
    let (_, items) = professor.get(&format!("/runs/{run_id}/items")).await;
    let statuses: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["PASSED", "FAILED", "PASSED"], "{items}");
    let gradebook = professor
        .client
        .call_raw(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{run_id}/gradebook"),
            professor.token.as_deref(),
            Vec::new(),
        )
        .await;
    assert_eq!(gradebook.text.lines().count(), 4, "{}", gradebook.text);
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        1,
        "both coordinators sweep, one postprocesses"
    );
    drop(graders);
}

/// Grader flags for tests about counts, not timings: 2 slots and only the
/// stated timing rounds, so hundreds of attempts grade quickly on a busy
/// machine.
const FAST_GRADER: &[&str] = &["--slots", "2", "--precision-time-ms", "0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_student_run_survives_a_killed_grader_and_a_killed_coordinator() {
    const STUDENTS: usize = 200;
    let token = token();
    let store = temp_store("runs-200");
    let listen = format!("127.0.0.1:{}", free_port());
    let extra = [
        "--listen",
        listen.as_str(),
        "--heartbeat-interval-ms",
        "500",
        "--webhook-backoff-ms",
        "200",
    ];
    let mut coordinator = start_coordinator("runs-200-coordinator", &store, &token, &extra).await;
    let url = coordinator.url().to_string();
    let mut first = start_grader("runs-200-grader-1", &url, &token, FAST_GRADER).await;
    let api = Api::new(&url);
    let (_admin, professor, _other, students) = people(&api, "200", STUDENTS).await;
    let challenge =
        publish_sample_challenge(&professor, "runs: 200 students", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    let mut attempts = Vec::new();
    for (_, student) in &students {
        attempts.push(submit(student, challenge_id, SOLUTION).await);
    }
    for ((_, student), attempt) in students.iter().zip(&attempts) {
        wait_final(student, *attempt).await;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(receiver.clone()).await;
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all", "webhook_url": hook}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    assert_eq!(reply["data"]["counts"]["total"], STUDENTS, "{reply}");

    // A grader dies midway; another takes over.
    eventually(
        "a quarter of the items",
        Duration::from_secs(300),
        || async {
            let run = run_state(&professor, run_id).await;
            (run["counts"]["done"].as_u64() >= Some(50)).then_some(())
        },
    )
    .await;
    first.kill().await;
    let second = start_grader("runs-200-grader-2", &url, &token, FAST_GRADER).await;
    // Then the coordinator dies midway and comes back on the same store.
    eventually("half of the items", Duration::from_secs(300), || async {
        let run = run_state(&professor, run_id).await;
        (run["counts"]["done"].as_u64() >= Some(100)).then_some(())
    })
    .await;
    coordinator.kill().await;
    let coordinator = start_coordinator("runs-200-coordinator-2", &store, &token, &extra).await;

    // 200 items on a loaded machine take longer than `wait_run_final` waits.
    let finished = eventually(
        "the 200-item run to finish",
        Duration::from_secs(900),
        || async {
            let run = run_state(&professor, run_id).await;
            run["state"]
                .as_str()
                .is_some_and(|state| {
                    state.starts_with("COMPLETED") || state == "FAILED" || state == "CANCELLED"
                })
                .then_some(run)
        },
    )
    .await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(
        finished["counts"]["done"], STUDENTS,
        "none lost: {finished}"
    );
    assert_eq!(finished["counts"]["error"], 0, "{finished}");
    assert_eq!(finished["postprocessing"], "DONE", "{finished}");
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/runs/{run_id}/items?limit=500&cursor={cursor}"),
            None => format!("/runs/{run_id}/items?limit=500"),
        };
        let (status, page) = professor.get(&path).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["data"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(items.len(), STUDENTS, "one item per student");
    let mut users: Vec<i64> = items
        .iter()
        .map(|item| {
            assert_eq!(
                (item["state"].as_str(), item["status"].as_str()),
                (Some("DONE"), Some("PASSED")),
                "{item}"
            );
            item["user_id"].as_i64().unwrap()
        })
        .collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), STUDENTS, "no student twice");

    // Postprocessing ran once: one webhook call, one gradebook of 200 rows.
    eventually("the webhook", Duration::from_secs(30), || async {
        (!receiver.requests.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let gradebook = professor
        .client
        .call_raw(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{run_id}/gradebook"),
            professor.token.as_deref(),
            Vec::new(),
        )
        .await;
    assert_eq!(gradebook.status, 200, "{}", gradebook.text);
    let rows: Vec<&str> = gradebook.text.lines().skip(1).collect();
    assert_eq!(rows.len(), STUDENTS, "{}", gradebook.text);
    let mut gradebook_users: Vec<i64> = rows
        .iter()
        .map(|row| row.split(',').next().unwrap().parse().unwrap())
        .collect();
    gradebook_users.sort_unstable();
    assert_eq!(gradebook_users, users, "a row per student, none twice");
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        1,
        "postprocessing ran exactly once"
    );
    drop(second);
    drop(coordinator);
}
