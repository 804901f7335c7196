//! The coordinator against its own OpenAPI document: schemathesis (from
//! `.venv`, installed by `scripts/setup.sh`) runs every operation of a live
//! coordinator, signed in as a student, a professor and an admin, and as a
//! grader for the grader protocol, and checks that no request is a server
//! error, every status and body is documented, schema-valid requests are
//! accepted and schema-violating ones refused.
//!
//! Operations that end the session they are called with (logout, revoking
//! sessions, changing a password, deregistering a grader) run last, each
//! role with a session of its own, so they do not sign out the others.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use sqlarena_e2e::harness::{start_coordinator, workspace_root, Api};
use uuid::Uuid;

/// Examples per operation and generation mode; with the coverage phase's
/// boundary cases this keeps the whole test within a few minutes.
const MAX_EXAMPLES: &str = "6";
/// Fixed, so a failure reproduces.
const SEED: &str = "20261202";
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
                      positive_data_acceptance,negative_data_rejection";

/// Operations that end the session or grader they are called with.
const SESSION_ENDING: [&str; 4] = [
    "logout_user",
    "revoke_sessions",
    "revoke_session",
    "change_password",
];

/// Settings (`schemathesis.toml`) for what a schema cannot say:
/// - a list's `cursor` must be the `next_cursor` of that list's previous
///   page (any other string is rightly refused with 400): lists are tested
///   from their first page;
/// - a body over `--max-body-bytes` is refused with 413, and a URI over
///   64 KiB (a lease's `bundles` far past its limit) with 414 by the HTTP
///   layer: rejections too;
/// - the lease long-polls for `wait_ms`: 0, or each example waits up to
///   30 s for a job that never comes;
/// - rules no schema can state, refused with 422: a challenge's
///   `expires_at` must be in the future, the `user_id` of a new challenge or
///   attempt must be the caller's own, changing one's own password needs
///   `current_password`; an assessment's dates in order, its pools of the
///   caller's existing challenges, a session open when submitting (409,
///   403 and 429 name the assessment rules); a run's targets must be users that
///   exist (and its challenge READY: 409); an export of kind `run` names
///   its run, an export's dates are in order and parse as dates.
const CONFIG: &str = r#"
[parameters]
"query.cursor" = ""

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429"]

[[operations]]
include-operation-id = "lease_job"
parameters = { wait_ms = 0 }

[[operations]]
include-operation-id = ["create_challenge", "update_challenge", "create_attempt", "change_password", "create_run", "create_grading_run", "create_export"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-operation-id = ["create_assessment", "update_assessment", "set_override", "add_assessment_time", "start_session", "submit", "add_session_time", "reopen_session", "override_score", "record_score"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#;

fn schemathesis() -> PathBuf {
    let path = workspace_root().join(".venv/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is missing from {}: run scripts/setup.sh, which installs it into .venv",
        path.display()
    );
    path
}

/// One schemathesis run; returns its output when it fails.
async fn run_schemathesis(
    label: &str,
    base: &str,
    token: &str,
    filters: &[(&str, &str)],
    config: &Path,
) -> Result<(), String> {
    let log_dir = workspace_root().join("target").join("e2e-logs");
    std::fs::create_dir_all(&log_dir).expect("creating the log directory");
    let mut command = tokio::process::Command::new(schemathesis());
    command
        .arg("--config-file")
        .arg(config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", base])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        // The SQL patterns over long strings are slow to generate, not wrong.
        .args(["--suppress-health-check", "too_slow"])
        .args(["--output-truncate", "true"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--report-dir"])
        .arg(log_dir.join(format!("schemathesis-{label}")))
        // Its cache directory (.schemathesis) goes beside the logs.
        .current_dir(&log_dir)
        .kill_on_drop(true);
    for (flag, value) in filters {
        command.arg(flag).arg(value);
    }
    let started = Instant::now();
    let output = command.output().await.expect("running schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let log = log_dir.join(format!("schemathesis-{label}.log"));
    std::fs::write(&log, &text).expect("writing the schemathesis log");
    eprintln!(
        "schemathesis {label}: exit {:?} in {:.0?} (log: {})",
        output.status.code(),
        started.elapsed(),
        log.display()
    );
    if output.status.success() {
        return Ok(());
    }
    // Generated bodies can be megabytes: long lines are cut, the log has all.
    let report: Vec<String> = text
        .lines()
        .map(|line| match line.char_indices().nth(400) {
            Some((index, _)) => format!("{} [...]", &line[..index]),
            None => line.to_string(),
        })
        .collect();
    Err(format!(
        "schemathesis as {label} failed (full log: {}):\n{}",
        log.display(),
        report.join("\n")
    ))
}

/// Registers a person, with an invite for a professor.
async fn register(api: &Api, email: &str, invite: Option<&str>) {
    let mut body = json!({"email": email, "full_name": email, "password": "password-123"});
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    let (status, reply) = api.post("/register", body).await;
    assert_eq!(status, 201, "registering {email}: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_conforms_to_its_openapi_document() {
    let schemathesis_path = schemathesis();
    let suffix = Uuid::new_v4().simple().to_string();
    let dir = workspace_root()
        .join("target")
        .join("e2e-data")
        .join(format!("openapi-{suffix}"));
    std::fs::create_dir_all(&dir).expect("creating the data directory");
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, CONFIG).expect("writing schemathesis.toml");
    let cluster_token = format!("cluster-token-openapi-{suffix}");
    let store = format!("sqlite://{}/sqlarena.db", dir.display());
    let coordinator = start_coordinator("openapi", &store, &cluster_token, &[]).await;
    let base = coordinator.url().to_string();
    let api = Api::new(&base);

    // One person of each role, and something for them to read.
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let professor_email = "prof-openapi@example.edu";
    let student_email = "stud-openapi@example.edu";
    register(&api, professor_email, invite["data"]["code"].as_str()).await;
    register(&api, student_email, None).await;
    let professor = api.login(professor_email, "password-123").await;
    let (status, reply) = professor
        .post(
            "/challenges",
            json!({
                "name": "openapi", "type": "FE", "init": "create table t (a int)",
                "solution": "select a from t", "times_to_run": 1,
                "expires_at": "2099-01-01T00:00:00Z",
                "test_cases": [{"data": "insert into t values (1)", "is_visible": true}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    // An assessment over it with a started session, so that the
    // assessment reads have something to show.
    let challenge_id = reply["data"]["id"].as_i64().unwrap();
    let (status, reply) = professor
        .post(
            "/assessments",
            json!({
                "name": "openapi", "zones": [{"pool": [challenge_id], "pick": 1, "points": 1.0}],
                "selection": "random", "time_limit_s": 3600,
                "opens_at": "2020-01-01T00:00:00Z", "closes_at": "2099-01-01T00:00:00Z",
                "feedback": "immediate", "scoreboard": "live"
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let assessment_id = reply["data"]["id"].as_i64().unwrap();
    let student = api.login(student_email, "password-123").await;
    let (status, reply) = student
        .post(&format!("/assessments/{assessment_id}/sessions"), json!({}))
        .await;
    assert_eq!(status, 201, "{reply}");
    let (status, grader) = api
        .with_token(&cluster_token)
        .post(
            "/grader/register",
            json!({"name": format!("openapi-{suffix}"), "hostname": "localhost",
                   "version": "test", "lanes": ["init", "fast", "slow"], "slots": 1}),
        )
        .await;
    assert_eq!(status, 201, "{grader}");
    let grader_token = grader["data"]["grader_token"].as_str().unwrap().to_string();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut session_ending = Vec::new();
    for operation in SESSION_ENDING {
        session_ending.push(("--exclude-operation-id", operation));
    }
    let mut people_filters = session_ending.clone();
    people_filters.push(("--exclude-tag", "grader"));
    // A run's event stream lasts as long as the run: `tests/runs.rs` reads it.
    people_filters.push(("--exclude-operation-id", "run_events"));
    for (label, email, password) in [
        ("student", student_email, "password-123"),
        ("professor", professor_email, "password-123"),
        ("admin", "admin@example.com", "admin-password"),
    ] {
        let token = token_of(&api.login(email, password).await);
        if let Err(failure) = run_schemathesis(label, &base, &token, &people_filters, &config).await
        {
            failures.push(failure);
        }
    }
    // The presence stream never ends by design (it is open for as long as
    // the grader runs, and closing it declares the grader dead): it is left
    // to `coordinator/tests/grader_protocol.rs` and `tests/grader_death.rs`.
    let grader_filters = [
        ("--include-tag", "grader"),
        ("--exclude-operation-id", "register_grader"),
        ("--exclude-operation-id", "deregister_grader"),
        ("--exclude-operation-id", "open_presence"),
    ];
    if let Err(failure) =
        run_schemathesis("grader", &base, &grader_token, &grader_filters, &config).await
    {
        failures.push(failure);
    }
    let register_filters = [("--include-operation-id", "register_grader")];
    if let Err(failure) =
        run_schemathesis("cluster", &base, &cluster_token, &register_filters, &config).await
    {
        failures.push(failure);
    }
    // Last: what ends a session, each role with a session of its own.
    let ending_filters: Vec<(&str, &str)> = SESSION_ENDING
        .iter()
        .map(|operation| ("--include-operation-id", *operation))
        .collect();
    for (label, email, password) in [
        ("student-ending", student_email, "password-123"),
        ("professor-ending", professor_email, "password-123"),
        ("admin-ending", "admin@example.com", "admin-password"),
    ] {
        let token = token_of(&api.login(email, password).await);
        if let Err(failure) = run_schemathesis(label, &base, &token, &ending_filters, &config).await
        {
            failures.push(failure);
        }
    }
    if let Err(failure) = run_schemathesis(
        "grader-ending",
        &base,
        &grader_token,
        &[("--include-operation-id", "deregister_grader")],
        &config,
    )
    .await
    {
        failures.push(failure);
    }
    eprintln!(
        "schemathesis ({}) took {:.0?} in all",
        schemathesis_path.display(),
        started.elapsed()
    );
    assert!(
        coordinator
            .log()
            .lines()
            .all(|line| !line.contains("panicked")),
        "the coordinator panicked: see {}",
        coordinator.log_path.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn token_of(api: &Api) -> String {
    api.token.clone().expect("a signed-in client")
}
