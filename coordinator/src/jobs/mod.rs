//! The jobs service: queueing with wake-ups for long-polling graders,
//! leases and the results graders report under them, applying results to
//! challenges and attempts, the reaper that takes back leases from dead
//! graders and expired jobs, and the workflows built on them (submitting and
//! cancelling attempts, a challenge's version switch, admin retries).
//!
//! It knows nothing of HTTP: it holds the store, the dispatcher, the
//! metrics and its own settings, and answers [`JobsError`], which only
//! `http/` turns into statuses.
//!
//! A result reaches the domain in two steps: the store records it on the job
//! under the lease fence (exactly once), then [`Jobs::apply_finished_job`]
//! copies it into the challenge or attempt and marks the job applied.
//! Applying is idempotent, and the reaper re-applies any finished job left
//! unapplied by a crash, so nothing accepted is lost.

mod affinity;
mod attempts;
mod challenges;
mod dispatch;
mod history;
mod presence;
mod queue;
mod reaper;
mod results;
mod runs;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub use affinity::AffinitySettings;
pub use attempts::check_accepts_attempts;
pub use challenges::{RankedAttempt, VersionSwitch};
pub use dispatch::Dispatcher;
pub use history::{History, HISTORY_RETENTION};
pub use presence::{
    heartbeat_write_due, PresenceGuard, PRESENCE_CONFIRM_TICK, PRESENCE_GRACE, PRESENCE_TICK,
};
pub use queue::version_hash;
pub use results::{attempt_status, bound_case_result, MAX_ACTUAL_BYTES, MAX_ACTUAL_ROWS};
pub use runs::{grade, Grade, PAUSE_REASON};

/// What the jobs service refuses, and store faults.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The job, attempt or challenge does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The record is not in a state that allows this (already final, not
    /// retryable, changed meanwhile).
    #[error("{0}")]
    Conflict(String),
    /// The challenge no longer accepts attempts (it expired).
    #[error("{0}")]
    Closed(String),
    /// The request contradicts the record (an outcome of the wrong kind).
    #[error("{0}")]
    Invalid(String),
    /// A grader reported under a lease that is not (or no longer) its own.
    #[error("{0}")]
    StaleLease(String),
    /// The user already has `unfinished` attempts being graded, `cap` or more.
    #[error("{unfinished} attempts being graded (at most {cap})")]
    OverCap { unfinished: u64, cap: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias of the jobs service.
pub type JobsResult<T> = Result<T, JobsError>;

/// The settings of the jobs service, taken from the coordinator's
/// configuration.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Leases a job gets before it FAILS.
    pub max_tries: u32,
    pub init_timeout_ms: u64,
    pub fast_timeout_ms: u64,
    pub slow_timeout_ms: u64,
    /// A grader silent for this long is declared dead.
    pub grader_timeout: Duration,
    /// DEAD graders stay listed this long.
    pub dead_grader_retention: Duration,
    /// Finished, applied jobs are deleted this long after they were
    /// queued (zero: kept).
    pub job_retention: Duration,
    pub reaper_interval: Duration,
    /// Unfinished attempts a user may have at once.
    pub max_unfinished_attempts: u64,
    /// How leases prefer graders that hold a job's bundle (`None`: they
    /// do not).
    pub affinity: Option<AffinitySettings>,
}

impl JobsConfig {
    /// Takes the service's settings from the coordinator's configuration.
    pub fn from_config(config: &Config) -> JobsConfig {
        JobsConfig {
            max_tries: config.max_tries,
            init_timeout_ms: config.init_timeout_ms,
            fast_timeout_ms: config.fast_timeout_ms,
            slow_timeout_ms: config.slow_timeout_ms,
            grader_timeout: config.grader_timeout(),
            dead_grader_retention: config.dead_grader_retention(),
            job_retention: config.job_retention,
            reaper_interval: Duration::from_millis(config.reaper_interval_ms),
            max_unfinished_attempts: config.max_unfinished_attempts,
            affinity: AffinitySettings::from_config(config),
        }
    }
}

/// The jobs service; cheap to clone (every part is shared).
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    metrics: Arc<Metrics>,
    config: Arc<JobsConfig>,
    /// Cancelled when the coordinator shuts down (ends long polls and the
    /// background loops).
    shutdown: CancellationToken,
    /// The graders' presence streams open on this coordinator.
    presence: Arc<presence::Presence>,
    /// Woken when a run item's end needs the runs service (the run is
    /// POSTPROCESSING, or failing under `fail_run`).
    run_wakeup: Arc<tokio::sync::Notify>,
    /// The id of every run whose items changed, for event streams.
    run_events: tokio::sync::broadcast::Sender<sqlarena_common::RunId>,
    /// Jobs that ended and were not yet added to the stored history.
    history: Arc<History>,
}

impl Jobs {
    /// Creates the service around an opened store.
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        metrics: Arc<Metrics>,
        config: JobsConfig,
        shutdown: CancellationToken,
    ) -> Jobs {
        Jobs {
            store,
            dispatcher,
            metrics,
            config: Arc::new(config),
            shutdown,
            presence: Arc::default(),
            run_wakeup: Arc::default(),
            run_events: tokio::sync::broadcast::channel(1024).0,
            history: Arc::default(),
        }
    }

    /// Woken when a run needs the runs service (see `runs`).
    pub fn run_wakeup(&self) -> &Arc<tokio::sync::Notify> {
        &self.run_wakeup
    }

    /// Announces that something of run `run_id` changed.
    pub fn announce_run(&self, run_id: sqlarena_common::RunId) {
        let _ = self.run_events.send(run_id);
    }

    /// Subscribes to the ids of runs whose items or state change.
    pub fn run_events(&self) -> tokio::sync::broadcast::Receiver<sqlarena_common::RunId> {
        self.run_events.subscribe()
    }

    /// Returns the dispatcher that wakes long-polling graders.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}
