//! Starts the real `coordinator` and `grader` binaries as processes.
//!
//! Each process gets `--listen 127.0.0.1:0` (coordinators) and its output is
//! drained line by line into `target/e2e-logs/<name>.log`; the coordinator's
//! `listening on http://ADDR` line tells the test where it is. Processes are
//! stopped with SIGTERM, then SIGKILL after a grace period, and killed when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::client::Client;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of a workspace binary built by `cargo build --workspace --bins`,
/// from the `debug` profile unless `SQLARENA_BIN_PROFILE` names another
/// (the benchmarks use `release`).
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = std::env::var("SQLARENA_BIN_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(&profile).join(name);
    let build = if profile == "debug" {
        "cargo build --workspace --bins".to_string()
    } else {
        format!("cargo build --profile {profile} --workspace --bins")
    };
    assert!(
        path.exists(),
        "{} is missing: run `{build}` first (scripts/test.sh and scripts/bench.sh do)",
        path.display()
    );
    path
}

/// A new store URI for `label`: an SQLite file in its own directory under
/// `target/e2e-data/`, kept after the test for a look.
pub fn temp_store(label: &str) -> String {
    let dir = workspace_root()
        .join("target")
        .join("e2e-data")
        .join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}/sqlarena.db", dir.display())
}

/// The PostgreSQL admin URL tests use.
pub fn postgres_url() -> String {
    std::env::var("SQLARENA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A running binary.
pub struct Process {
    pub name: String,
    child: Child,
    pub log_path: PathBuf,
    /// `http://ADDR` for coordinators, once listening.
    pub url: Option<String>,
    /// Ends once the process's output is all in the log file.
    drained: Option<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `binary` with `args`, draining its output to a log file. With
    /// `wait_for_listen`, waits for the `listening on http://` line.
    ///
    /// # Panics
    /// When the process cannot start or does not listen within 30 s.
    pub async fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        wait_for_listen: bool,
    ) -> Process {
        Process::start_with_env(name, binary, args, wait_for_listen, &[]).await
    }

    /// [`Process::start`] with extra environment variables (e.g. `RUST_LOG`).
    ///
    /// # Panics
    /// When the process cannot start or does not listen within 30 s.
    pub async fn start_with_env(
        name: &str,
        binary: &Path,
        args: &[String],
        wait_for_listen: bool,
        env: &[(&str, &str)],
    ) -> Process {
        let log_dir = workspace_root().join("target").join("e2e-logs");
        std::fs::create_dir_all(&log_dir).expect("creating the log directory");
        let log_path = log_dir.join(format!("{name}.log"));
        let mut child = Command::new(binary)
            .args(args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let (address_tx, address_rx) = oneshot::channel();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .await
            .expect("opening the log file");
        let file = std::sync::Arc::new(tokio::sync::Mutex::new(file));
        let mut address_tx = Some(address_tx);
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out_file = file.clone();
        let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let err_tx = line_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = line_tx.send(line);
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = err_tx.send(line);
            }
        });
        let drained = tokio::spawn(async move {
            while let Some(line) = line_rx.recv().await {
                if let Some(index) = line.find("listening on http://") {
                    let rest = &line[index + "listening on ".len()..];
                    let url: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\u{1b}')
                        .collect();
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(url);
                    }
                }
                let mut file = out_file.lock().await;
                let _ = file.write_all(line.as_bytes()).await;
                let _ = file.write_all(b"\n").await;
                // Readers of the log (`Process::log`) see every line handed over.
                let _ = file.flush().await;
            }
        });
        let mut process = Process {
            name: name.to_string(),
            child,
            log_path,
            url: None,
            drained: Some(drained),
        };
        if wait_for_listen {
            match tokio::time::timeout(Duration::from_secs(30), address_rx).await {
                Ok(Ok(url)) => process.url = Some(url),
                _ => panic!(
                    "{name} did not log `listening on`; see {}:\n{}",
                    process.log_path.display(),
                    process.log()
                ),
            }
        }
        process
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The base URL of a coordinator.
    pub fn url(&self) -> &str {
        self.url.as_deref().expect("not a listening process")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process already reaped")
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Sends SIGKILL and waits for the process to go.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait().await;
        self.wait_drained().await;
    }

    /// Waits until the output of an exited process is all in its log (its
    /// pipes close when it exits), for at most 5 s.
    async fn wait_drained(&mut self) {
        if let Some(drained) = self.drained.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns the exit
    /// status code when it exited by itself.
    pub async fn terminate(&mut self, grace: Duration) -> Option<i32> {
        self.signal("TERM");
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.wait_drained().await;
                status.code()
            }
            _ => {
                self.kill().await;
                None
            }
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts a coordinator on `store` with a cluster token and a first admin
/// (`admin@example.com` / `admin-password`).
pub async fn start_coordinator(
    name: &str,
    store: &str,
    cluster_token: &str,
    extra: &[&str],
) -> Process {
    let args = coordinator_args(store, cluster_token, extra);
    Process::start(name, &binary("coordinator"), &args, true).await
}

/// The arguments of [`start_coordinator`]: `--listen 127.0.0.1:0` unless
/// `extra` has a `--listen`, the store, the cluster token, the first admin,
/// and no per-client sign-in limit, then `extra`.
pub fn coordinator_args(store: &str, cluster_token: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if !extra.contains(&"--listen") {
        args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
    }
    for arg in [
        "--store",
        store,
        "--cluster-token",
        cluster_token,
        "--admin-email",
        "admin@example.com",
    ] {
        args.push(arg.to_string());
    }
    args.extend(["--admin-password".to_string(), "admin-password".to_string()]);
    // Every simulated user signs in from this one loopback address: lift
    // the per-client sign-in limit (the per-account one still applies).
    if !extra.contains(&"--auth-client-burst") {
        args.extend(["--auth-client-burst".to_string(), "1000000".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts a grader against `coordinator_url` on the test PostgreSQL.
pub async fn start_grader(
    name: &str,
    coordinator_url: &str,
    cluster_token: &str,
    extra: &[&str],
) -> Process {
    let mut args: Vec<String> = [
        "--coordinator",
        coordinator_url,
        "--cluster-token",
        cluster_token,
        "--postgres",
        &postgres_url(),
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(name, &binary("grader"), &args, false).await
}

/// A client of the people API (`/api/v1`) carrying an optional bearer
/// token, over the one test [`Client`]; its calls answer the status and
/// the JSON body.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub token: Option<String>,
}

impl Api {
    /// A client of the coordinator at `base` (its root URL).
    pub fn new(base: &str) -> Api {
        Api {
            client: Client::new(base),
            token: None,
        }
    }

    /// A copy of this client that sends `token`.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// Sends a request under `/api/v1` and returns the status and the JSON
    /// body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let reply = self
            .client
            .call(
                method,
                &format!("/api/v1{path}"),
                self.token.as_deref(),
                body,
            )
            .await;
        (reply.status.as_u16(), reply.body)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Logs in and returns a client carrying the token.
    pub async fn login(&self, email: &str, password: &str) -> Api {
        let (status, body) = self
            .post(
                "/login",
                serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login of {email} failed: {body}");
        self.with_token(body["data"]["token"].as_str().expect("token"))
    }
}
