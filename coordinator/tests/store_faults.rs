//! Transient store faults: a coordinator whose MongoDB stops answers 503
//! with `Retry-After` (not 500) and recovers once the server is back.
//!
//! Runs its own nx-27017 (the shared test server cannot be stopped), so it
//! is skipped when `SQLARENA_TEST_MONGODB_URI` names another server.

mod common;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;
use sqlarena_e2e::mongo::using_nx_27017;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long the server may take to accept connections, and the
/// coordinator to recover.
const PATIENCE: Duration = Duration::from_secs(30);

/// Starts nx-27017 on `port` (killed when dropped) and waits until it
/// accepts connections.
async fn start_nx_27017(port: u16) -> Child {
    let server = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nx-27017");
    let child = Command::new(&server)
        .args(["--data-dir", "memory", "--host", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["--log-file", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", server.display()));
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            started.elapsed() < PATIENCE,
            "nx-27017 did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn free_port() -> u16 {
    let listener = StdListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn signup(email: &str) -> serde_json::Value {
    json!({"email": email, "full_name": "Ada", "password": "password-123"})
}

#[tokio::test]
async fn a_coordinator_whose_mongodb_stopped_answers_503_and_recovers() {
    if !using_nx_27017() {
        eprintln!("skipped: needs an nx-27017 it can stop");
        return;
    }
    let port = free_port();
    let mut mongod = start_nx_27017(port).await;
    // Short server selection, so a stopped server is reported in a second
    // rather than the driver's default 30.
    let uri = format!(
        "mongodb://127.0.0.1:{port}/sqlarena_faults?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
    );
    let server = TestServer::start_on(Some(uri), |_| {}).await;
    server.register("before@example.org", None, None).await;

    mongod.kill().await.unwrap();
    let reply = server
        .post("/api/v1/register", None, signup("during@example.org"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    let retry_after = reply
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .expect("a Retry-After header");
    assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let message = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !message.contains("127.0.0.1") && !message.to_lowercase().contains("mongo"),
        "the detail stays in the log: {message}"
    );

    let _mongod = start_nx_27017(port).await;
    let started = Instant::now();
    loop {
        let reply = server
            .post("/api/v1/register", None, signup("after@example.org"))
            .await;
        if reply.status == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "while reconnecting: {}",
            reply.text
        );
        assert!(
            started.elapsed() < PATIENCE,
            "the coordinator did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
