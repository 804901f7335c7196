//! sqlarena coordinator: the people API, the grader protocol, the job store.
//!
//! [`run`] serves on an already-bound listener until the shutdown token is
//! cancelled; `main.rs` only parses configuration and sets up logging.

pub mod assessments;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod exports;
pub mod http;
pub mod jobs;
pub mod leaderboard;
pub mod metrics;
pub mod runs;
pub mod state;
pub mod store;
pub mod throttle;

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use sqlarena_common::{Role, UserId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::state::AppState;
use crate::store::{ClusterToken, NewUser, Store, StoreError};

/// Opens the store, seeds what the configuration asks for, and serves the API
/// and the reaper until `shutdown` is cancelled.
///
/// # Errors
/// Fails when the store cannot be opened or the server cannot run.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = store::open(&config.store)
        .await
        .with_context(|| format!("opening the store {}", redact(&config.store)))?;
    serve(store, config, listener, shutdown).await
}

/// Serves with an already-opened store.
///
/// # Errors
/// Fails when seeding or serving fails.
pub async fn serve(
    store: Arc<dyn Store>,
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_state(AppState::new(store, config, shutdown), listener).await
}

/// Serves with a prepared state (benchmarks and tests keep a clone of it to
/// queue jobs in-process). Stops when `state.shutdown` is cancelled. With
/// `--metrics-listen`, binds that address for `/metrics`.
///
/// # Errors
/// Fails when seeding, binding the metrics address or serving fails.
pub async fn serve_state(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    let metrics_listener = match state.config.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the metrics address {address}"))?,
        ),
        None => None,
    };
    serve_listeners(state, listener, metrics_listener).await
}

/// Serves the API on `listener` and, when given, `/metrics` on
/// `metrics_listener` (bound to `--metrics-listen` by the caller, so tests
/// can bind port 0 themselves).
///
/// # Errors
/// Fails when seeding or serving fails.
pub async fn serve_listeners(
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
) -> anyhow::Result<()> {
    let shutdown = state.shutdown.clone();
    seed(state.store.as_ref(), &state.config)
        .await
        .context("seeding the store")?;
    state
        .jobs
        .reap_once()
        .await
        .context("recovering unapplied results")?;
    let tracker = TaskTracker::new();
    tracker.spawn(state.jobs.clone().run_reaper());
    tracker.spawn(state.jobs.clone().run_compaction());
    tracker.spawn(state.jobs.clone().run_history());
    tracker.spawn(state.runs.clone().run_loop());
    tracker.spawn(state.exports.clone().run_loop());
    let header_timeout = state.config.header_timeout();
    if let Some(metrics_listener) = metrics_listener {
        let address = metrics_listener
            .local_addr()
            .context("reading the metrics address")?;
        tracing::info!("metrics on http://{address}/metrics");
        tracker.spawn(http::server::serve(
            metrics_listener,
            http::metrics_router(state.clone()),
            header_timeout,
            shutdown.clone(),
        ));
    }
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{address}");
    http::server::serve(
        listener,
        http::router(state),
        header_timeout,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Creates the first admin and the seeded cluster token, if configured and
/// not there yet. Idempotent under concurrency: coordinators starting at
/// the same moment on one store may both try to create them, and the one
/// that loses the race (a unique-key conflict) finds them there.
async fn seed(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
        if store.get_user_by_email(email).await?.is_none() {
            match create_user(store, email, password, "Administrator").await {
                Ok(_) => tracing::info!(email = %email, "created the first admin"),
                Err(StoreError::Conflict(_)) => {
                    tracing::info!(email = %email, "the first admin was created by another coordinator")
                }
                Err(error) => return Err(error).context("creating the first admin"),
            }
        }
    }
    if let Some(token) = &config.cluster_token {
        let hash = auth::token_hash(token);
        if store.get_cluster_token_by_hash(&hash).await?.is_none() {
            let created = store
                .create_cluster_token(ClusterToken {
                    id: Uuid::now_v7(),
                    label: "seeded from SQLARENA_CLUSTER_TOKEN".into(),
                    token_hash: hash,
                    created_by: None,
                    created_at: Utc::now(),
                    revoked: false,
                })
                .await;
            match created {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error).context("seeding the cluster token"),
            }
        }
    }
    Ok(())
}

/// Creates an admin user.
///
/// # Errors
/// Fails when the email is taken or the store fails.
pub async fn create_admin(
    store: &dyn Store,
    email: &str,
    password: &str,
    full_name: &str,
) -> anyhow::Result<UserId> {
    match create_user(store, email, password, full_name).await {
        Ok(id) => Ok(id),
        Err(StoreError::Conflict(_)) => {
            anyhow::bail!("a user with the email {email} already exists")
        }
        Err(error) => Err(error.into()),
    }
}

/// Hashes the password and stores an admin.
async fn create_user(
    store: &dyn Store,
    email: &str,
    password: &str,
    full_name: &str,
) -> Result<UserId, StoreError> {
    let password_hash = auth::hash_password(password.to_string())
        .await
        .map_err(|error| StoreError::Backend(error.to_string()))?;
    let user = NewUser {
        email: email.to_string(),
        full_name: full_name.to_string(),
        role: Role::Admin,
        password_hash,
    };
    Ok(store.create_user(user).await?.id)
}

/// Hides credentials in a store URI (or any text holding one) for logs and
/// error messages: the userinfo of every `scheme://user:password@host` in
/// it becomes `***`, and so does the value of every query option that
/// names a password, secret or key.
pub fn redact(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        redacted.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        // The authority ends at the path, query or fragment, or at the end
        // of the URI in running text; its userinfo ends at the last `@`.
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                redacted.push_str("***");
                redacted.push_str(&authority[at..]);
            }
            None => redacted.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    redacted.push_str(rest);
    redact_secret_options(&redacted)
}

/// Replaces the values of query options whose names mention a password,
/// secret or key (`tlsCertificateKeyFilePassword=...`, `secret=...`).
fn redact_secret_options(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['?', '&']) {
        redacted.push_str(&rest[..=at]);
        let option = &rest[at + 1..];
        let end = option
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"')
            .unwrap_or(option.len());
        let (name, value) = option[..end]
            .split_once('=')
            .unwrap_or((&option[..end], ""));
        let lower = name.to_ascii_lowercase();
        if !value.is_empty()
            && ["password", "secret", "key", "token"]
                .iter()
                .any(|word| lower.contains(word))
        {
            redacted.push_str(name);
            redacted.push_str("=***");
        } else {
            redacted.push_str(&option[..end]);
        }
        rest = &option[end..];
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn store_uris_lose_every_credential() {
        for (uri, expected) in [
            ("sqlite://data/sqlarena.db", "sqlite://data/sqlarena.db"),
            ("mongodb://db:27017/sqlarena", "mongodb://db:27017/sqlarena"),
            ("mongodb://user:pw@db:27017/x", "mongodb://***@db:27017/x"),
            // A raw `@` in the password: the userinfo ends at the last one.
            ("mongodb://user:p@ss@db:27017/x", "mongodb://***@db:27017/x"),
            (
                "mongodb://user:pw@a:1,b:2/x?replicaSet=r",
                "mongodb://***@a:1,b:2/x?replicaSet=r",
            ),
            (
                "mongodb+srv://u:pw@cluster.example.net",
                "mongodb+srv://***@cluster.example.net",
            ),
            // An `@` after the host (in the path or query) is no userinfo.
            ("mongodb://db/x?appName=a@b", "mongodb://db/x?appName=a@b"),
            (
                "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=hunter2",
                "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=***",
            ),
            (
                "unknown store URI \"postgres://me:pw@h/db\": use sqlite",
                "unknown store URI \"postgres://***@h/db\": use sqlite",
            ),
        ] {
            assert_eq!(redact(uri), expected, "{uri}");
            assert!(!redact(uri).contains("pw"), "{uri}");
        }
    }
}
