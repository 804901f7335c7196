//! A grader process that dies (SIGKILL: no deregistration, the kernel
//! closes its sockets) has its leases taken back within 2 s, well before
//! its missed heartbeats would tell (6 s with the default 2 s interval).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_e2e::demo::{eventually, publish_sample_challenge, register, wait_final};
use sqlarena_e2e::harness::{start_coordinator, start_grader, workspace_root, Api};
use uuid::Uuid;

/// A slow but correct query on bigger data, so an attempt takes a while.
const SLOW_CORRECT: &str = "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id CROSS JOIN LATERAL (SELECT count(*) FROM generate_series(1, 2000 + o.id % 2)) AS busy GROUP BY c.id, c.name ORDER BY total DESC, c.name";

/// The bound on taking back a dead grader's lease and leasing the job to
/// the waiting grader (the presence grace is 1 s; the heartbeat timeout is
/// 6 s, so the code before the presence stream cannot pass).
const REQUEUE_BOUND: Duration = Duration::from_secs(2);

fn temp_store(label: &str) -> String {
    let dir = workspace_root()
        .join("target")
        .join("e2e-data")
        .join(format!("{label}-{}", Uuid::new_v4().simple()));
    format!("sqlite://{}/sqlarena.db", dir.display())
}

/// The admin's view of the job of `attempt_id`.
async fn attempt_job(admin: &Api, attempt_id: i64) -> Option<Value> {
    let (_, jobs) = admin.get("/admin/jobs?lane=fast").await;
    jobs["data"]
        .as_array()?
        .iter()
        .find(|job| job["attempt_id"] == attempt_id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_graders_job_is_leased_again_within_two_seconds() {
    let token = format!("sqc_test_{}", Uuid::new_v4().simple());
    let coordinator = start_coordinator(
        "death-coordinator",
        &temp_store("grader-death"),
        &token,
        &["--heartbeat-interval-ms", "2000"],
    )
    .await;
    let mut first = start_grader(
        "death-grader-1",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) =
        register(&api, "prof-death@example.edu", "Prof", "PROF", Some(&code)).await;
    let (_, student) = register(&api, "stud-death@example.edu", "Stud", "STUD", None).await;
    let challenge =
        publish_sample_challenge(&professor, "kill a grader fast", Duration::from_secs(120)).await;
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
            let job = attempt_job(&admin, attempt_id).await?;
            (job["state"] == "LEASED" && job["tries"] == 1).then_some(())
        },
    )
    .await;
    // The second grader waits for work before the first dies.
    let mut second = start_grader(
        "death-grader-2",
        coordinator.url(),
        &token,
        &["--slots", "1"],
    )
    .await;
    eventually(
        "the second grader to register",
        Duration::from_secs(60),
        || async { second.log().contains("registered grader_id=").then_some(()) },
    )
    .await;

    let killed_at = Instant::now();
    first.kill().await;
    let requeued_after = loop {
        let job = attempt_job(&admin, attempt_id).await.expect("the job");
        let elapsed = killed_at.elapsed();
        if job["tries"] == 2 {
            break elapsed;
        }
        assert!(
            elapsed < Duration::from_secs(30),
            "the job was never leased again: {job}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    eprintln!(
        "killed grader's job leased again after {:.3} s",
        requeued_after.as_secs_f64()
    );
    assert!(
        requeued_after < REQUEUE_BOUND,
        "the killed grader's job was leased again only after {requeued_after:?}"
    );

    let attempt = wait_final(&student, attempt_id).await;
    assert_eq!(attempt["status"], "PASSED", "{attempt}");
    let job = attempt_job(&admin, attempt_id).await.expect("the job");
    assert_eq!(job["state"], "DONE", "{job}");
    assert_eq!(job["tries"], 2, "taken back once: {job}");
    second.terminate(Duration::from_secs(15)).await;
}
