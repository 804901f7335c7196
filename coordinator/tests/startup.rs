//! Starting the coordinator: concurrent starts on one MongoDB database seed
//! once and both come up; fatal errors are one line without credentials or
//! a backtrace; `create-admin` takes the password from the environment or
//! stdin, never needing it in argv.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sqlarena_coordinator::auth;
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{self, Store};
use sqlarena_e2e::mongo::test_mongodb_uri;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_coordinator");
const ADMIN_EMAIL: &str = "admin@example.com";
const CLUSTER_TOKEN: &str = "shared-cluster-token-from-one-env-file";

/// A coordinator's configuration as two systemd units sharing one
/// environment file would have it.
fn shared_config(uri: &str) -> Config {
    let mut config = Config::for_store(uri);
    config.cluster_token = Some(CLUSTER_TOKEN.into());
    config.admin_email = Some(ADMIN_EMAIL.into());
    config.admin_password = Some("admin-password-1".into());
    config
}

/// Starts a coordinator on `uri` in this process and waits until it
/// answers; returns its state and task.
async fn start(
    uri: String,
) -> (
    AppState,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    String,
) {
    let store: Arc<dyn Store> = store::open(&uri).await.expect("opening the store");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(store, shared_config(&uri), CancellationToken::new());
    let task = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
    (state, task, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_started_at_once_on_one_mongodb_both_come_up() {
    let uri = test_mongodb_uri();
    let ((first, first_task, first_base), (second, second_task, second_base)) =
        tokio::join!(start(uri.clone()), start(uri.clone()));
    let http = reqwest::Client::new();
    for (base, task) in [(&first_base, &first_task), (&second_base, &second_task)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(!task.is_finished(), "a coordinator stopped while starting");
            if let Ok(reply) = http.get(format!("{base}/healthz")).send().await {
                assert!(reply.status().is_success());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} never came up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Seeding happens before the listener answers: both are past it.
    let store = &first.store;
    let admin = store.get_user_by_email(ADMIN_EMAIL).await.unwrap();
    assert!(admin.is_some(), "the admin was created");
    let token = store
        .get_cluster_token_by_hash(&auth::token_hash(CLUSTER_TOKEN))
        .await
        .unwrap();
    assert!(token.is_some_and(|token| !token.revoked));
    assert_eq!(
        store.list_cluster_tokens().await.unwrap().len(),
        1,
        "seeded once"
    );
    for (state, task) in [(first, first_task), (second, second_task)] {
        state.shutdown.cancel();
        task.await
            .unwrap()
            .expect("the coordinator ran and stopped cleanly");
    }
}

/// Runs the coordinator binary to completion with `args`, `env` and
/// `stdin`; returns (success, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(COORDINATOR);
    command
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .env_remove("SQLARENA_ADMIN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("starting the coordinator binary");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the coordinator exits")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a fatal error: exactly one line, `coordinator: error: ...`,
/// containing `expected`, without a backtrace or `secret`.
fn assert_one_clear_line(stderr: &str, expected: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line:\n{stderr}");
    assert!(lines[0].starts_with("coordinator: error: "), "{stderr}");
    assert!(lines[0].contains(expected), "{stderr}");
    for leak in ["secret", "backtrace", "Caused by", "panicked"] {
        assert!(!lines[0].contains(leak), "{leak} in: {stderr}");
    }
}

fn temp_store() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "sqlarena-startup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let uri = format!("sqlite://{}/store.db", dir.display());
    (dir, uri)
}

#[tokio::test]
async fn a_fatal_startup_error_is_one_line_without_credentials() {
    let (ok, _, stderr) = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://sqlarena:secret@db.example.edu/sqlarena",
        ],
        &[],
        "",
    )
    .await;
    assert!(!ok);
    assert_one_clear_line(&stderr, "unknown store URI");
    assert!(stderr.contains("postgres://***@db.example.edu"), "{stderr}");

    // A store in use by another coordinator.
    let (dir, uri) = temp_store();
    let held = store::open(&uri).await.unwrap();
    let (ok, _, stderr) = run(&["--listen", "127.0.0.1:0", "--store", &uri], &[], "").await;
    assert!(!ok);
    assert_one_clear_line(&stderr, "in use by another coordinator");
    drop(held);
    let _ = std::fs::remove_dir_all(dir);
}

/// Opens the store and checks the admin's password.
async fn admin_password_is(uri: &str, email: &str, password: &str) -> bool {
    let store = store::open(uri).await.unwrap();
    let user = store
        .get_user_by_email(email)
        .await
        .unwrap()
        .expect("the admin exists");
    auth::verify_password(password.into(), user.password_hash).await
}

#[tokio::test]
async fn create_admin_reads_the_password_from_the_environment_or_stdin() {
    let (dir, uri) = temp_store();
    let (ok, stdout, stderr) = run(
        &[
            "create-admin",
            "--store",
            &uri,
            "--email",
            "env@example.com",
        ],
        &[("SQLARENA_ADMIN_PASSWORD", "password-from-env")],
        "",
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("password-from-env"), "{stdout}");
    assert!(admin_password_is(&uri, "env@example.com", "password-from-env").await);

    let (ok, stdout, stderr) = run(
        &[
            "create-admin",
            "--store",
            &uri,
            "--email",
            "stdin@example.com",
        ],
        &[],
        "password-from-stdin\n",
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("password-from-stdin"), "{stdout}");
    assert!(admin_password_is(&uri, "stdin@example.com", "password-from-stdin").await);

    let (ok, _, stderr) = run(
        &[
            "create-admin",
            "--store",
            &uri,
            "--email",
            "none@example.com",
        ],
        &[],
        "",
    )
    .await;
    assert!(!ok, "no password anywhere is refused");
    assert_one_clear_line(&stderr, "SQLARENA_ADMIN_PASSWORD");
    let _ = std::fs::remove_dir_all(dir);
}
