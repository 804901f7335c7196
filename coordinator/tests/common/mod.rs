//! A real coordinator served in-process on `127.0.0.1:0` with a fresh SQLite
//! store in a temporary directory, reached through the workspace's one test
//! client (`sqlarena_e2e::client`).
//!
//! The test keeps a handle on the same store (`server.store()`) to assert on
//! what the API did (jobs queued, counts unchanged) and to play the grader's
//! part (e.g. `set_challenge_init` to make a challenge READY).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlarena_common::{ChallengeId, Column, QueryResult, TestCaseId};
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{self, InitResult, Store};
pub use sqlarena_e2e::client::Client;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The first admin's credentials, seeded at start.
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A coordinator serving in this test process.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub client: Client,
    dir: PathBuf,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a coordinator with the default configuration, changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_on(None, tune).await
    }

    /// Starts a coordinator on the store `uri` (a fresh SQLite file when
    /// `None`), with the default configuration changed by `tune`.
    pub async fn start_on(uri: Option<String>, tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir =
            std::env::temp_dir().join(format!("sqlarena-people-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        let uri = uri.unwrap_or_else(|| format!("sqlite://{}/store.db", dir.display()));
        let mut config = Config::for_store(&uri);
        config.admin_email = Some(ADMIN_EMAIL.into());
        config.admin_password = Some(ADMIN_PASSWORD.into());
        tune(&mut config);
        let store: Arc<dyn Store> = store::open(&uri).await.expect("opening the store");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store, config, CancellationToken::new());
        let task = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
        let server = TestServer {
            client: Client::new(&base),
            base,
            state,
            dir,
            task: Some(task),
        };
        // The listener is bound, so this request waits in its backlog until
        // the coordinator (its first admin seeded) answers.
        let health = server.get("/healthz", None).await;
        assert_eq!(health.status, StatusCode::OK, "{}", health.text);
        server
    }

    /// Starts a coordinator with the default configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// The store the coordinator serves from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// Stops the coordinator and waits for it.
    pub async fn stop(mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("coordinator task panicked")
                .expect("coordinator failed");
        }
    }

    /// Registers a user (201 expected) and returns its id.
    pub async fn register(&self, email: &str, role: Option<&str>, invite: Option<&str>) -> i64 {
        let mut body = json!({"email": email, "full_name": format!("Name of {email}"), "password": "password-123"});
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        if let Some(invite) = invite {
            body["invite"] = json!(invite);
        }
        let reply = self.post("/api/v1/register", None, body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "register {email}: {}",
            reply.text
        );
        reply.data()["id"].as_i64().unwrap()
    }

    /// Signs in and returns the token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let reply = self
            .post(
                "/api/v1/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login {email}: {}",
            reply.text
        );
        reply.data()["token"].as_str().unwrap().to_string()
    }

    /// Signs in as the seeded admin.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers and signs in a user; returns (id, token).
    pub async fn user(
        &self,
        email: &str,
        role: Option<&str>,
        invite: Option<&str>,
    ) -> (i64, String) {
        let id = self.register(email, role, invite).await;
        (id, self.login(email, "password-123").await)
    }

    /// Creates a professor through an admin invite; returns (id, token).
    pub async fn professor(&self, email: &str) -> (i64, String) {
        let admin = self.admin_token().await;
        let invite = self
            .post("/api/v1/invites", Some(&admin), json!({"role": "PROF"}))
            .await;
        assert_eq!(
            invite.status,
            StatusCode::CREATED,
            "invite: {}",
            invite.text
        );
        let code = invite.data()["code"].as_str().unwrap().to_string();
        self.user(email, None, Some(&code)).await
    }
}

/// A one-row result of one `int4` column `a`: what the tests' challenges
/// expect.
pub fn int_result(value: i64) -> QueryResult {
    QueryResult {
        columns: vec![Column {
            name: "a".into(),
            type_name: "int4".into(),
        }],
        rows: vec![vec![json!(value)]],
        ordered: false,
    }
}

impl TestServer {
    /// Plays the init job's part: `challenge` (as the API returned it)
    /// becomes READY, its case number `i` (from 0) expecting
    /// `int_result(value_of(i))` with a 2 ms reference.
    pub async fn make_ready(
        &self,
        challenge: &Value,
        value_of: impl Fn(usize) -> i64,
        warnings: &[&str],
    ) {
        let expected = challenge["test_cases"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(index, case)| {
                (
                    TestCaseId(case["id"].as_i64().unwrap()),
                    int_result(value_of(index)),
                    Some(2.0),
                )
            })
            .collect();
        let ready = InitResult::Ready {
            expected,
            warnings: warnings.iter().map(|warning| warning.to_string()).collect(),
        };
        let id = ChallengeId(challenge["id"].as_i64().unwrap());
        let version = challenge["version"].as_i64().unwrap();
        assert!(self
            .store()
            .set_challenge_init(id, version, ready, Utc::now())
            .await
            .unwrap());
    }

    /// Creates a challenge from `body` as `professor`, makes it READY with
    /// every case expecting `a = 1`, and returns its id.
    pub async fn ready_challenge(&self, professor: &str, body: Value) -> i64 {
        let reply = self.post("/api/v1/challenges", Some(professor), body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        self.make_ready(reply.data(), |_| 1, &[]).await;
        reply.data()["id"].as_i64().unwrap()
    }
}

/// The server is also its client: `server.get(path, token)`,
/// `server.post(...)`, `server.call(...)`, `server.call_raw(...)`.
impl std::ops::Deref for TestServer {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
