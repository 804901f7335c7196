//! sqlarena coordinator: the people API, the grader protocol, the job store.
//!
//! [`run`] serves on an already-bound listener until the shutdown token is
//! cancelled; `main.rs` only parses configuration and sets up logging.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
pub mod leaderboard;
pub mod metrics;
pub mod state;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use sqlarena_common::Role;
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
/// queue jobs in-process). Stops when `state.shutdown` is cancelled.
///
/// # Errors
/// Fails when seeding or serving fails.
pub async fn serve_state(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    let shutdown = state.shutdown.clone();
    seed(state.store.as_ref(), &state.config)
        .await
        .context("seeding the store")?;
    jobs::reap_once(&state)
        .await
        .context("recovering unapplied results")?;
    let tracker = TaskTracker::new();
    tracker.spawn(jobs::run_reaper(state.clone(), shutdown.clone()));
    tracker.spawn(jobs::run_compaction(state.clone(), shutdown.clone()));
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{address}");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP")?;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Creates the first admin and the seeded cluster token, if configured and
/// not there yet.
async fn seed(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
        if store.get_user_by_email(email).await?.is_none() {
            create_admin(store, email, password, "Administrator").await?;
            tracing::info!(email = %email, "created the first admin");
        }
    }
    if let Some(token) = &config.cluster_token {
        let hash = auth::token_hash(token);
        if store.get_cluster_token_by_hash(&hash).await?.is_none() {
            store
                .create_cluster_token(ClusterToken {
                    id: Uuid::now_v7(),
                    label: "seeded from SQLARENA_CLUSTER_TOKEN".into(),
                    token_hash: hash,
                    created_by: None,
                    created_at: Utc::now(),
                    revoked: false,
                })
                .await?;
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
) -> anyhow::Result<i64> {
    let password_hash = auth::hash_password(password.to_string())
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let user = NewUser {
        email: email.to_string(),
        full_name: full_name.to_string(),
        role: Role::Admin,
        password_hash,
    };
    match store.create_user(user).await {
        Ok(user) => Ok(user.id),
        Err(StoreError::Conflict(_)) => {
            anyhow::bail!("a user with the email {email} already exists")
        }
        Err(error) => Err(error.into()),
    }
}

/// Hides credentials in a store URI for logs.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &uri[..scheme], &uri[at..])
        }
        _ => uri.to_string(),
    }
}
