//! The audit of grading with real processes: two graders grade one
//! challenge; every case of an attempt and of the init names its grader,
//! PostgreSQL version, rounds and timing for the professor and admins (the
//! admin job view too), never for the student; the leaderboard filters to
//! one grader's results for the professor only; and the graders list
//! calibrates each grader's reference speed against the cluster.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_e2e::demo::{publish_sample_challenge, register, submit, wait_final};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

/// Correct, with another text than the reference.
const CORRECT: &str = "SELECT c.name, sum(o.amount) AS total FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.id, c.name ORDER BY total DESC, c.name";

/// Asserts `audit` names one of `graders` and what was measured.
fn assert_full_audit(audit: &Value, graders: &HashSet<String>) {
    let name = audit["grader_name"].as_str().unwrap_or_default();
    assert!(graders.contains(name), "an audit names a grader: {audit}");
    assert!(audit["grader_id"].as_str().is_some(), "{audit}");
    assert!(
        audit["postgres_version"]
            .as_str()
            .is_some_and(|version| version.chars().next().is_some_and(|c| c.is_ascii_digit())),
        "an audit names the PostgreSQL version: {audit}"
    );
    assert!(audit["rounds"].as_u64().unwrap_or(0) >= 1, "{audit}");
    assert!(audit["discarded"].as_u64().is_some(), "{audit}");
    assert!(audit["reference_median_ms"].as_f64().is_some(), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audits_show_where_each_case_was_measured_to_staff_only() {
    let token = format!("sqc_test_{}", Uuid::new_v4().simple());
    let coordinator =
        start_coordinator("audit-coordinator", &temp_store("audit"), &token, &[]).await;
    let names: HashSet<String> = ["audit-grader-1", "audit-grader-2"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut graders = Vec::new();
    for name in &names {
        // One slot each, the planned rounds only: the two share the work.
        let extra = ["--slots", "1", "--precision-time-ms", "0"];
        graders.push(start_grader(name, coordinator.url(), &token, &extra).await);
    }
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) =
        register(&api, "prof-audit@example.edu", "Prof", "PROF", Some(&code)).await;
    let (_, student) = register(&api, "stud-audit@example.edu", "Stud", "STUD", None).await;
    let challenge = publish_sample_challenge(&professor, "audited", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();

    // Grade until both graders have graded passing attempts (the queue
    // hands attempts to whichever grader asks first).
    let mut attempts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(submit(&student, challenge_id, CORRECT).await);
        }
        for id in &ids {
            assert_eq!(wait_final(&student, *id).await["status"], "PASSED");
        }
        attempts.extend(ids);
        let (status, list) = admin.get("/admin/graders").await;
        assert_eq!(status, 200, "{list}");
        let calibrated = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|grader| grader["reference_speed"].as_f64().is_some())
            .count();
        if calibrated == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both graders graded and were calibrated: {list}"
        );
    }

    // The student sees no audit; the professor and the admin see one per case.
    let attempt_id = *attempts.last().unwrap();
    let path = format!("/attempts/{attempt_id}");
    let (_, as_student) = student.get(&path).await;
    for case in as_student["data"]["attempts"].as_array().unwrap() {
        assert!(
            case.get("audit").is_none(),
            "a student sees no audit: {case}"
        );
    }
    let mut graded_by = HashSet::new();
    for viewer in [&professor, &admin] {
        let (status, reply) = viewer.get(&path).await;
        assert_eq!(status, 200, "{reply}");
        let cases = reply["data"]["attempts"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            assert_full_audit(&case["audit"], &names);
            assert!(case["audit"]["ratio"].as_f64().is_some(), "{case}");
            graded_by.insert(case["audit"]["grader_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(graded_by.len(), 1, "one grader graded every case");
    let grader_id = graded_by.into_iter().next().unwrap();

    // The init's audit: on the challenge for its professor, not the student.
    let (_, for_professor) = professor.get(&format!("/challenges/{challenge_id}")).await;
    for case in for_professor["data"]["test_cases"].as_array().unwrap() {
        assert_full_audit(&case["audit"], &names);
    }
    let (_, for_student) = student.get(&format!("/challenges/{challenge_id}")).await;
    for case in for_student["data"]["test_cases"].as_array().unwrap() {
        assert!(case.get("audit").is_none(), "{case}");
    }

    // The admin job view of the attempt and of the init.
    let (_, jobs) = admin
        .get(&format!(
            "/admin/jobs?challenge_id={challenge_id}&limit=500"
        ))
        .await;
    let jobs = jobs["data"].as_array().unwrap().clone();
    let attempt_job = jobs
        .iter()
        .find(|job| job["attempt_id"] == attempt_id)
        .expect("the attempt's job");
    let init_job = jobs.iter().find(|job| job["kind"] == "init").unwrap();
    for job in [attempt_job, init_job] {
        let (status, view) = admin
            .get(&format!("/admin/jobs/{}", job["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200, "{view}");
        let audit = view["data"]["audit"].as_array().unwrap();
        assert_eq!(audit.len(), 3, "{view}");
        for entry in audit {
            assert!(entry["test_case_id"].as_i64().is_some(), "{entry}");
            assert_full_audit(entry, &names);
        }
    }

    // One grader's leaderboard, for the professor only.
    let filtered = format!("/challenges/{challenge_id}?grader_id={grader_id}");
    let (status, reply) = professor.get(&filtered).await;
    assert_eq!(status, 200, "{reply}");
    let board = reply["data"]["top_attempts"].as_array().unwrap();
    assert_eq!(board.len(), 1, "one student: {reply}");
    let best = board[0]["attempt_id"].as_i64().unwrap();
    let (_, best) = professor.get(&format!("/attempts/{best}")).await;
    for case in best["data"]["attempts"].as_array().unwrap() {
        assert_eq!(case["audit"]["grader_id"], grader_id, "{best}");
    }
    let unknown = format!("/challenges/{challenge_id}?grader_id={}", Uuid::now_v7());
    let (status, reply) = admin.get(&unknown).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["top_attempts"], json!([]));
    let (status, reply) = student.get(&filtered).await;
    assert_eq!(status, 403, "a student cannot rank by grader: {reply}");

    // Calibration: both graders measured, the cluster's median near 1.
    let (_, list) = admin.get("/admin/graders").await;
    let speeds: Vec<f64> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grader| {
            assert!(
                grader["calibration_samples"].as_u64().unwrap() > 0,
                "{grader}"
            );
            grader["reference_speed"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(speeds.len(), 2);
    assert!(
        speeds.iter().all(|speed| speed.is_finite() && *speed > 0.0),
        "{speeds:?}"
    );
    // With two graders the median grader is their mean: one is at least
    // as fast as it, the other at most.
    let (slower, faster) = (speeds[0].min(speeds[1]), speeds[0].max(speeds[1]));
    assert!(slower <= 1.0 + 1e-9 && faster >= 1.0 - 1e-9, "{speeds:?}");

    for mut grader in graders {
        grader.terminate(Duration::from_secs(15)).await;
    }
}
