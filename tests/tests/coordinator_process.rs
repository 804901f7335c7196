//! The coordinator binary as a process on the embedded store: acknowledged
//! writes survive SIGKILL, a second coordinator on the same file refuses to
//! start, SIGTERM stops it cleanly, and the first admin can be created with
//! the `create-admin` subcommand.

use std::time::Duration;

use serde_json::json;
use sqlarena_e2e::client::Client;
use sqlarena_e2e::harness::{
    binary, coordinator_args, start_coordinator, temp_store, Api, Process,
};

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let store = temp_store("sigkill");
    let mut coordinator =
        start_coordinator("sigkill-1", &store, "cluster-token-sigkill", &[]).await;
    let api = Api::new(coordinator.url());
    let mut emails = Vec::new();
    for index in 0..40 {
        let email = format!("student{index}@example.com");
        let (status, body) = api
            .post("/register", json!({"email": email, "full_name": format!("Student {index}"), "password": "password123"}))
            .await;
        assert_eq!(status, 201, "{body}");
        emails.push(email);
    }
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, body) = admin
        .post("/admin/cluster-tokens", json!({"label": "kept"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin
        .post(
            "/challenges",
            json!({
                "name": "durable", "type": "FE", "init": "create table t (a int)",
                "solution": "select a from t", "times_to_run": 3,
                "expires_at": "2099-01-01T00:00:00Z",
                "test_cases": [{"data": "insert into t values (1)", "is_visible": true}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let challenge_id = body["data"]["id"].as_i64().unwrap();

    coordinator.kill().await;
    let coordinator = start_coordinator("sigkill-2", &store, "cluster-token-sigkill", &[]).await;
    let api = Api::new(coordinator.url());
    for email in &emails {
        api.login(email, "password123").await;
    }
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, body) = admin.get(&format!("/challenges/{challenge_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "durable");
    let (status, body) = admin.get("/admin/cluster-tokens").await;
    assert_eq!(status, 200);
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|token| token["label"] == "kept"),
        "{body}"
    );
    let (status, body) = admin.get("/admin/jobs?lane=init").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        1,
        "the init job survived: {body}"
    );
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_file_refuses_to_start() {
    let store = temp_store("locked");
    let mut first = start_coordinator("locked-1", &store, "cluster-token-locked", &[]).await;
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--store", &store]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut second = Process::start("locked-2", &binary("coordinator"), &args, false).await;
    let mut exited = false;
    for _ in 0..100 {
        if !second.is_running() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited, "the second coordinator kept running");
    let log = second.log();
    assert!(log.contains("lock"), "the refusal names the lock: {log}");
    assert!(first.is_running());
    let code = first.terminate(Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(0),
        "SIGTERM stops the coordinator cleanly: {}",
        first.log()
    );
}

#[tokio::test]
async fn create_admin_subcommand_makes_a_usable_admin() {
    let store = temp_store("create-admin");
    let output = tokio::process::Command::new(binary("coordinator"))
        .args([
            "create-admin",
            "--store",
            &store,
            "--email",
            "root@example.com",
            "--password",
            "root-password-1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("root-password-1"),
        "the password is not echoed"
    );
    let again = tokio::process::Command::new(binary("coordinator"))
        .args([
            "create-admin",
            "--store",
            &store,
            "--email",
            "ROOT@example.com",
            "--password",
            "other-password",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        !again.status.success(),
        "a duplicate email (any case) is refused"
    );
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--store", &store]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let coordinator = Process::start("create-admin", &binary("coordinator"), &args, true).await;
    let admin = Api::new(coordinator.url())
        .login("root@example.com", "root-password-1")
        .await;
    let (status, body) = admin.get("/admin/graders").await;
    assert_eq!(status, 200, "{body}");
}

/// A request is counted in `/metrics` under its route template, not its
/// URI, and its log line carries the route.
#[tokio::test]
async fn requests_are_counted_and_logged_by_route() {
    let store = temp_store("routes");
    let args = coordinator_args(&store, "cluster-token-routes", &[]);
    // A fresh log file: logs of earlier runs must not satisfy the checks.
    let name = format!("routes-{}", uuid::Uuid::new_v4().simple());
    let mut coordinator = Process::start_with_env(
        &name,
        &binary("coordinator"),
        &args,
        true,
        &[("RUST_LOG", "info,tower_http=debug")],
    )
    .await;
    let client = Client::new(coordinator.url());
    for id in [41, 42] {
        let reply = client.get(&format!("/api/v1/challenges/{id}"), None).await;
        reply.expect_error(reqwest::StatusCode::UNAUTHORIZED);
    }
    let metrics = client.get("/metrics", None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    let counted = r#"sqlarena_http_requests_total{method="GET",route="/api/v1/challenges/{id}",status="401"} 2"#;
    assert!(
        metrics.text.lines().any(|line| line == counted),
        "no `{counted}` in:\n{}",
        metrics.text
    );
    assert!(
        !metrics.text.contains("/api/v1/challenges/41"),
        "a raw URI became a label:\n{}",
        metrics.text
    );
    assert_eq!(
        coordinator.terminate(Duration::from_secs(10)).await,
        Some(0),
        "SIGTERM stops the coordinator cleanly"
    );
    let log = coordinator.log();
    assert!(
        log.lines()
            .any(|line| line.contains(r#"route="/api/v1/challenges/{id}""#)
                && line.contains("uri=/api/v1/challenges/42")
                && line.contains("status=401")),
        "no request line with its route in:\n{log}"
    );
}
