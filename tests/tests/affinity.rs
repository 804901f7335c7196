//! Challenge affinity with real processes: a coordinator and two graders
//! (1 slot each) on the local PostgreSQL, on the embedded store and on the
//! MongoDB test server. Which grader took an attempt is read from the admin
//! job list; no assertion depends on how fast the machine is, only on
//! which grader took a job and on lower bounds of waits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlarena_e2e::bench::{publish_scores_challenge, ATTEMPT};
use sqlarena_e2e::demo::{eventually, grade, register, submit, wait_final};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api, Process};
use uuid::Uuid;

/// A coordinator with `flags` and the people of a test.
struct Setup {
    coordinator: Process,
    token: String,
    admin: Api,
    professor: Api,
    student: Api,
}

async fn setup(label: &str, store: &str, flags: &[&str]) -> Setup {
    let token = format!("sqc_test_{}", Uuid::new_v4().simple());
    let coordinator =
        start_coordinator(&format!("{label}-coordinator"), store, &token, flags).await;
    let api = Api::new(coordinator.url());
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
    Setup {
        coordinator,
        token,
        admin,
        professor,
        student,
    }
}

/// A uniquely named grader with one slot and only the planned rounds.
async fn grader(setup: &Setup, name: &str) -> Process {
    start_grader(
        &format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..8]),
        setup.coordinator.url(),
        &setup.token,
        // A statement timeout the slow attempt stays under on a loaded machine.
        &[
            "--slots",
            "1",
            "--precision-time-ms",
            "0",
            "--fast-timeout-ms",
            "60000",
        ],
    )
    .await
}

/// The id of the ALIVE grader `process`, once it has registered.
async fn grader_id(admin: &Api, process: &Process) -> String {
    eventually(
        &format!("{} to register", process.name),
        Duration::from_secs(60),
        || async {
            let (_, graders) = admin.get("/admin/graders").await;
            graders["data"].as_array()?.iter().find_map(|grader| {
                (grader["name"] == process.name.as_str() && grader["state"] == "ALIVE")
                    .then(|| grader["id"].as_str().unwrap().to_string())
            })
        },
    )
    .await
}

/// The admin's view of the job that graded `attempt_id` of `challenge_id`.
async fn job_of(admin: &Api, challenge_id: i64, attempt_id: i64) -> Value {
    let (status, jobs) = admin
        .get(&format!(
            "/admin/jobs?challenge_id={challenge_id}&limit=500"
        ))
        .await;
    assert_eq!(status, 200, "{jobs}");
    jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["attempt_id"] == attempt_id)
        .cloned()
        .unwrap_or_else(|| panic!("no job for attempt {attempt_id}: {jobs}"))
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(job[field].as_str().unwrap_or_default())
        .unwrap_or_else(|error| panic!("{field} of {job}: {error}"))
        .with_timezone(&Utc)
}

fn bundles_built(grader: &Process) -> usize {
    grader.log().matches("bundle built").count()
}

/// One small challenge (3 cases of 50 rows), initialized by whichever
/// grader runs; its id.
async fn challenge(setup: &Setup, name: &str) -> i64 {
    publish_scores_challenge(
        &setup.professor,
        name,
        50,
        &[7, 11, 13],
        3,
        Duration::from_secs(120),
    )
    .await
}

/// A grader that holds a challenge's bundle gets its attempts; the one that
/// does not builds nothing. (Taking jobs in queue order, the grader that
/// waited longer, the second one, would get the next attempt.) The wait is
/// long, so the other grader could not take a held job even if the holder
/// were slow to ask.
async fn the_holder_of_a_bundle_gets_its_attempts(store: &str, label: &str) {
    let setup = setup(label, store, &["--affinity-wait-ms", "600000"]).await;
    let mut holder = grader(&setup, &format!("{label}-holder")).await;
    let holder_id = grader_id(&setup.admin, &holder).await;
    let challenge_id = challenge(&setup, label).await;
    let first = grade(&setup.student, challenge_id, ATTEMPT).await;
    assert_eq!(first["status"], "PASSED", "{first}");
    assert_eq!(bundles_built(&holder), 1, "the holder built the bundle");

    let mut other = grader(&setup, &format!("{label}-other")).await;
    grader_id(&setup.admin, &other).await;
    for _ in 0..3 {
        let attempt = grade(&setup.student, challenge_id, ATTEMPT).await;
        assert_eq!(attempt["status"], "PASSED", "{attempt}");
        let job = job_of(&setup.admin, challenge_id, attempt["id"].as_i64().unwrap()).await;
        assert_eq!(
            job["grader_id"], holder_id,
            "the attempt went to the grader holding its bundle: {job}"
        );
    }
    assert_eq!(bundles_built(&other), 0, "the other grader built nothing");
    assert_eq!(bundles_built(&holder), 1, "the holder built it once");
    other.terminate(Duration::from_secs(15)).await;
    holder.terminate(Duration::from_secs(15)).await;
}

/// A query that keeps a grader busy: an uncorrelated subquery counts
/// twenty million rows on every run (a second or more, until the series'
/// temporary file passes the runner's limit), for each of the 3 cases.
const SLOW_ATTEMPT: &str = "SELECT player, points FROM scores \
     WHERE points > 10 AND (SELECT count(*) FROM generate_series(1, 20000000)) > 0 \
     ORDER BY points DESC, player";

/// While the grader holding a bundle is busy (its one slot full), an
/// attempt of that bundle waits out the affinity wait, then the other
/// grader takes it and builds the bundle.
async fn a_busy_holder_leaves_the_attempt_to_another_after_the_wait(store: &str, label: &str) {
    let wait_ms = 1500;
    let setup = setup(label, store, &["--affinity-wait-ms", &wait_ms.to_string()]).await;
    let mut holder = grader(&setup, &format!("{label}-holder")).await;
    let holder_id = grader_id(&setup.admin, &holder).await;
    let challenge_id = challenge(&setup, label).await;
    let first = grade(&setup.student, challenge_id, ATTEMPT).await;
    assert_eq!(first["status"], "PASSED", "{first}");

    let slow = submit(&setup.student, challenge_id, SLOW_ATTEMPT).await;
    eventually(
        "the holder to run the slow attempt",
        Duration::from_secs(60),
        || async {
            let job = job_of(&setup.admin, challenge_id, slow).await;
            (job["state"] == "LEASED" && job["grader_id"] == holder_id.as_str()).then_some(())
        },
    )
    .await;
    let mut other = grader(&setup, &format!("{label}-other")).await;
    let other_id = grader_id(&setup.admin, &other).await;

    let attempt = grade(&setup.student, challenge_id, ATTEMPT).await;
    assert_eq!(attempt["status"], "PASSED", "{attempt}");
    let job = job_of(&setup.admin, challenge_id, attempt["id"].as_i64().unwrap()).await;
    assert_eq!(job["grader_id"], other_id, "the free grader took it: {job}");
    let waited = time(&job, "leased_at") - time(&job, "created_at");
    assert!(
        waited >= chrono::Duration::milliseconds(wait_ms),
        "it waited for the busy holder first ({waited} of {wait_ms} ms): {job}"
    );
    assert_eq!(
        bundles_built(&other),
        1,
        "the other grader built the bundle"
    );
    // It only had to fill the slot: how it ends (PostgreSQL may refuse the
    // series' temporary file) does not matter here.
    let slow = wait_final(&setup.student, slow).await;
    assert!(slow["finished_at"].is_string(), "{slow}");
    other.terminate(Duration::from_secs(15)).await;
    holder.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_holder_of_a_bundle_gets_its_attempts_on_sqlite() {
    the_holder_of_a_bundle_gets_its_attempts(&temp_store("affinity-holder"), "aff-holder-sqlite")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_holder_of_a_bundle_gets_its_attempts_on_mongodb() {
    the_holder_of_a_bundle_gets_its_attempts(
        &sqlarena_e2e::mongo::test_mongodb_uri(),
        "aff-holder-mongo",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_holder_leaves_the_attempt_to_another_after_the_wait_on_sqlite() {
    a_busy_holder_leaves_the_attempt_to_another_after_the_wait(
        &temp_store("affinity-busy"),
        "aff-busy-sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_holder_leaves_the_attempt_to_another_after_the_wait_on_mongodb() {
    a_busy_holder_leaves_the_attempt_to_another_after_the_wait(
        &sqlarena_e2e::mongo::test_mongodb_uri(),
        "aff-busy-mongo",
    )
    .await;
}
