//! A grader's life with its coordinator and its PostgreSQL: SIGTERM always
//! deregisters, and `grader cleanup` removes what a grader made, but never
//! under a running grader.

use std::time::Duration;

use sqlarena_e2e::demo::eventually;
use sqlarena_e2e::harness::{
    binary, postgres_url, start_coordinator, start_grader, workspace_root,
};
use uuid::Uuid;

fn store(label: &str) -> String {
    let dir = workspace_root()
        .join("target")
        .join("e2e-data")
        .join(format!("{label}-{}", Uuid::new_v4().simple()));
    format!("sqlite://{}/sqlarena.db", dir.display())
}

/// Removes a process's log from earlier runs (logs are appended to), so
/// that what a test counts in it is this run's.
fn fresh_log(name: &str) {
    let _ = std::fs::remove_file(workspace_root().join(format!("target/e2e-logs/{name}.log")));
}

/// Counts the lines of `log` that contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Twenty times over: a registered grader that gets SIGTERM deregisters
/// before it exits (the coordinator hears of it at once, not after missed
/// heartbeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_always_deregisters() {
    let token = format!("sqc_test_{}", Uuid::new_v4().simple());
    fresh_log("sigterm-coordinator");
    fresh_log("sigterm-grader");
    let mut coordinator =
        start_coordinator("sigterm-coordinator", &store("sigterm"), &token, &[]).await;
    for round in 1..=20 {
        let mut grader = start_grader("sigterm-grader", coordinator.url(), &token, &[]).await;
        eventually(
            "the grader to register",
            Duration::from_secs(60),
            || async { (count(&grader.log(), "registered grader_id=") >= round).then_some(()) },
        )
        .await;
        let code = grader.terminate(Duration::from_secs(30)).await;
        assert_eq!(code, Some(0), "round {round}: {}", grader.log());
        // The grader exits only after the coordinator answered its
        // deregistration; the coordinator's log reaches its file a moment
        // later. Without a deregistration the count stays behind.
        let deregistered = tokio::time::timeout(Duration::from_secs(5), async {
            while count(&coordinator.log(), "grader deregistered") < round {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            deregistered.is_ok(),
            "round {round}: the grader stopped without deregistering:\n{}",
            grader.log()
        );
    }
    coordinator.terminate(Duration::from_secs(10)).await;
}

/// Runs `grader cleanup` for a grader name; returns its exit code and output.
async fn cleanup(name: &str) -> (i32, String) {
    let output = tokio::process::Command::new(binary("grader"))
        .args(["cleanup", "--postgres", &postgres_url(), "--name", name])
        .output()
        .await
        .expect("running grader cleanup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Cleanup refuses while the grader runs, and afterwards leaves no role or
/// database of its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_removes_a_graders_objects_but_never_under_it() {
    let token = format!("sqc_test_{}", Uuid::new_v4().simple());
    fresh_log("cleanup-coordinator");
    fresh_log("cleanup-grader");
    let mut coordinator =
        start_coordinator("cleanup-coordinator", &store("cleanup"), &token, &[]).await;
    let mut grader = start_grader("cleanup-grader", coordinator.url(), &token, &[]).await;
    eventually(
        "the grader to register",
        Duration::from_secs(60),
        || async { (count(&grader.log(), "registered grader_id=") >= 1).then_some(()) },
    )
    .await;
    let (code, text) = cleanup("cleanup-grader").await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is running"), "{text}");

    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("test PostgreSQL");
    tokio::spawn(connection);
    let leftovers = || async {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sqlarena\\_cleanup\\_grader\\_%')
                      + (SELECT count(*) FROM pg_database WHERE datname LIKE 'sqlarena\\_cleanup\\_grader\\_%')",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert!(leftovers().await > 0, "the running grader has its roles");
    grader.kill().await;
    // PostgreSQL ends the killed grader's sessions (and with them its hold
    // on the prefix) a moment after the process is gone: on a loaded
    // machine, after the first try. Refusals until then are the rule
    // working, so the cleanup is retried until it may run.
    let text = eventually(
        "cleanup to run once the killed grader's sessions are gone",
        Duration::from_secs(30),
        || async {
            let (code, text) = cleanup("cleanup-grader").await;
            if code == 1 && text.contains("is running") {
                return None;
            }
            assert_eq!(code, 0, "{text}");
            Some(text)
        },
    )
    .await;
    assert!(text.contains("sqlarena_cleanup_grader_runner"), "{text}");
    assert_eq!(leftovers().await, 0, "cleanup left objects behind");
    coordinator.terminate(Duration::from_secs(10)).await;
}
