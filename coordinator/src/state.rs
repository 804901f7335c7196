//! The state every handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::exports::Exports;
use crate::jobs::{Dispatcher, Jobs, JobsConfig};
use crate::metrics::Metrics;
use crate::runs::Runs;
use crate::store::Store;
use crate::throttle::{CredentialThrottle, HashGate};

/// Shared by every handler and background task.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Queueing, leases, results and the workflows built on them.
    pub jobs: Jobs,
    /// Grading runs, built on the jobs.
    pub runs: Runs,
    /// Exports written to files, page by page.
    pub exports: Exports,
    pub metrics: Arc<Metrics>,
    /// Per-client and per-account limits of the password endpoints.
    pub throttle: Arc<CredentialThrottle>,
    /// Bounds the password hashing in progress.
    pub hashing: Arc<HashGate>,
    /// Cancelled when the coordinator shuts down (ends long polls).
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Builds the state around an opened store.
    pub fn new(store: Arc<dyn Store>, config: Config, shutdown: CancellationToken) -> AppState {
        let multi_coordinator = !config.store.starts_with("sqlite://");
        let metrics = Arc::new(Metrics::default());
        let jobs = Jobs::new(
            store.clone(),
            Arc::new(Dispatcher::new(multi_coordinator)),
            metrics.clone(),
            JobsConfig::from_config(&config),
            shutdown.clone(),
        );
        let runs = Runs::new(store.clone(), jobs.clone(), &config, shutdown.clone());
        let exports = Exports::new(
            store.clone(),
            jobs.clone(),
            runs.clone(),
            &config,
            shutdown.clone(),
        );
        AppState {
            store,
            jobs,
            runs,
            exports,
            throttle: Arc::new(CredentialThrottle::new(&config)),
            hashing: Arc::new(HashGate::new(
                config.max_concurrent_hashes,
                config.max_queued_hashes,
            )),
            config: Arc::new(config),
            metrics,
            shutdown,
        }
    }
}
