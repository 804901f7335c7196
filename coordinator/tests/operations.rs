//! Operations against a real coordinator: `/metrics` behind a token or on
//! its own address, DEAD graders forgotten after the retention, and the
//! header and request timeouts that keep idle or trickling clients from
//! holding the server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{self, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CLUSTER_TOKEN: &str = "operations-cluster-token";

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn metrics_can_require_a_token() {
    let server = TestServer::start_with(|config| {
        config.metrics_token = Some("scrape-secret".into());
    })
    .await;
    for token in [None, Some("wrong-secret")] {
        let reply = server.get("/metrics", token).await;
        let message = reply.expect_error(StatusCode::UNAUTHORIZED);
        assert!(message.contains("METRICS_TOKEN"), "{message}");
    }
    let scraped = server.get("/metrics", Some("scrape-secret")).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(scraped.text.contains("sqlarena_"), "{}", scraped.text);
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_be_served_on_their_own_address() {
    let dir = std::env::temp_dir().join(format!(
        "sqlarena-metrics-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let uri = format!("sqlite://{}/store.db", dir.display());
    let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", api_listener.local_addr().unwrap());
    let metrics = format!("http://{}", metrics_listener.local_addr().unwrap());
    let mut config = Config::for_store(&uri);
    config.metrics_listen = Some(metrics_listener.local_addr().unwrap());
    let store: Arc<dyn Store> = store::open(&uri).await.unwrap();
    let state = AppState::new(store, config, CancellationToken::new());
    let server = tokio::spawn(sqlarena_coordinator::serve_listeners(
        state.clone(),
        api_listener,
        Some(metrics_listener),
    ));
    let http = reqwest::Client::new();
    let health = wait_for(&http, &format!("{api}/healthz")).await;
    assert_eq!(health.status(), StatusCode::OK);

    let scraped = http.get(format!("{metrics}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("sqlarena_"));
    let on_api = http.get(format!("{api}/metrics")).send().await.unwrap();
    assert_eq!(
        on_api.status(),
        StatusCode::NOT_FOUND,
        "not on the API address"
    );
    let body: Value = on_api.json().await.unwrap();
    assert_eq!(body["status"], "error");
    let others = http.get(format!("{metrics}/healthz")).send().await.unwrap();
    assert_eq!(
        others.status(),
        StatusCode::NOT_FOUND,
        "the metrics address serves nothing else"
    );

    state.shutdown.cancel();
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

async fn wait_for(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match http.get(url).send().await {
            Ok(response) => return response,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("{url} did not answer: {error}"),
        }
    }
}

/// Registers a grader and deregisters it (DEAD); returns its id.
async fn dead_grader(server: &TestServer) -> String {
    let registered = server
        .post(
            "/api/v1/grader/register",
            Some(CLUSTER_TOKEN),
            json!({"name": "gone", "hostname": "h", "version": "v", "lanes": ["fast"], "slots": 1}),
        )
        .await;
    let data = registered.data();
    let id = data["grader_id"].as_str().unwrap().to_string();
    let token = data["grader_token"].as_str().unwrap().to_string();
    let gone = server
        .post("/api/v1/grader/deregister", Some(&token), json!({}))
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text);
    id
}

async fn listed_graders(server: &TestServer) -> Vec<Value> {
    let admin = server.admin_token().await;
    let reply = server.get("/api/v1/admin/graders", Some(&admin)).await;
    reply.data().as_array().unwrap().clone()
}

#[tokio::test]
async fn dead_graders_leave_the_lists_after_the_retention() {
    let kept = TestServer::start_with(|config| {
        config.cluster_token = Some(CLUSTER_TOKEN.into());
    })
    .await;
    let id = dead_grader(&kept).await;
    kept.state.jobs.reap_once().await.unwrap();
    let graders = listed_graders(&kept).await;
    assert_eq!(graders.len(), 1, "within the retention");
    assert_eq!(graders[0]["id"], json!(id));
    assert_eq!(graders[0]["state"], "DEAD");
    kept.stop().await;

    let forgetful = TestServer::start_with(|config| {
        config.cluster_token = Some(CLUSTER_TOKEN.into());
        config.dead_grader_retention_secs = 0;
    })
    .await;
    dead_grader(&forgetful).await;
    forgetful.state.jobs.reap_once().await.unwrap();
    assert!(
        listed_graders(&forgetful).await.is_empty(),
        "past the retention"
    );
    forgetful.stop().await;
}

/// Reads until the peer closes the connection (or resets it); returns
/// what it sent.
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sockets_that_never_finish_their_headers_are_closed() {
    let server = TestServer::start_with(|config| config.header_timeout_ms = 500).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for index in 0..200 {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        if index % 2 == 0 {
            // Half start a request and never end its headers; half send
            // nothing at all.
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: coordinator\r\n")
                .await
                .unwrap();
        }
        idle.push(socket);
    }
    let normal = tokio::time::timeout(PATIENCE, server.get("/healthz", None))
        .await
        .expect("a normal request is answered beside 200 idle sockets");
    assert_eq!(normal.status, StatusCode::OK);

    for (index, mut socket) in idle.into_iter().enumerate() {
        let received = tokio::time::timeout(PATIENCE, read_to_close(&mut socket))
            .await
            .unwrap_or_else(|_| panic!("idle socket {index} was never closed"));
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "socket {index} got {text:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_never_ends_times_out_in_the_envelope() {
    let server = TestServer::start_with(|config| config.request_timeout_ms = 300).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            b"POST /api/v1/register HTTP/1.1\r\nHost: coordinator\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"email\": \"slow",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let reply = tokio::time::timeout(PATIENCE, async {
        loop {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed without a reply");
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received).to_string();
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                return text;
            }
        }
    })
    .await
    .expect("the server answers a stalled request");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().contains("300 ms"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_grader_long_poll_outlasts_the_request_timeout() {
    let server = TestServer::start_with(|config| {
        config.request_timeout_ms = 200;
        config.cluster_token = Some(CLUSTER_TOKEN.into());
    })
    .await;
    let registered = server
        .post(
            "/api/v1/grader/register",
            Some(CLUSTER_TOKEN),
            json!({"name": "poller", "hostname": "h", "version": "v", "lanes": ["fast"], "slots": 1}),
        )
        .await;
    let token = registered.data()["grader_token"]
        .as_str()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let reply = server
        .post(
            "/api/v1/grader/jobs/lease?wait_ms=800",
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "the poll waited its full time"
    );
    server.stop().await;
}
