//! The coordinator's store: everything the coordinator keeps, one async
//! trait per aggregate ([`UserStore`], [`ChallengeStore`], [`AttemptStore`],
//! [`JobStore`], [`GraderStore`], grading runs' [`runs::RunStore`],
//! challenge affinity's [`AffinityStore`] and exports'
//! [`exports::ExportStore`])
//! gathered by [`Store`], with two backends
//! chosen by URI scheme. Each backend implements each aggregate in a file of
//! its own (`sqlite/jobs.rs`, `mongo/jobs.rs`, ...).
//!
//! - `sqlite://PATH`: the embedded default ([`sqlite::SqliteStore`]), one file
//!   in WAL mode, one coordinator at a time.
//! - `mongodb://...`: [`mongo::MongoStore`], several coordinators may share it.
//!
//! Both pass the one conformance suite (`conformance.rs`, behind the
//! `testsuite` feature, run per backend by [`store_conformance_suite!`]). The store knows
//! nothing of HTTP or of grading rules; the fenced job operations
//! (`record_progress`, `complete_job`, `fail_job`) are atomic so that a result
//! is recorded exactly once.

pub mod affinity;
#[cfg(feature = "testsuite")]
pub mod affinity_conformance;
pub mod assessments;
#[cfg(feature = "testsuite")]
pub mod assessments_conformance;
mod attempts;
pub mod audit;
#[cfg(feature = "testsuite")]
pub mod audit_conformance;
mod challenges;
#[cfg(feature = "testsuite")]
mod conformance;
pub mod console;
#[cfg(feature = "testsuite")]
pub mod console_conformance;
pub mod exports;
#[cfg(feature = "testsuite")]
pub mod exports_conformance;
mod graders;
pub mod history;
pub mod job_tries;
mod jobs;
pub mod lease;
pub mod migration;
pub mod mongo;
pub mod runs;
#[cfg(feature = "testsuite")]
pub mod runs_conformance;
pub mod sqlite;
mod users;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{JobOutcome, JobPayload};

pub use self::affinity::AffinityStore;
pub use self::assessments::AssessmentStore;
pub use self::lease::{HeldLease, Retry, TryCount};
pub use crate::leaderboard::LeaderboardRow;
pub use attempts::*;
pub use audit::AuditStore;
pub use challenges::*;
#[cfg(feature = "testsuite")]
pub use conformance::{Check, CheckFuture, CHECKS};
pub use console::ConsoleStore;
pub use graders::*;
pub use history::HistoryStore;
pub use job_tries::JobTryStore;
pub use jobs::*;
pub use users::*;

/// Returns the conformance check named `name`, for
/// [`store_conformance_suite!`](crate::store_conformance_suite).
///
/// # Panics
/// When no check has that name.
#[cfg(feature = "testsuite")]
pub fn conformance_check(name: &str) -> fn(Arc<dyn Store>) -> conformance::CheckFuture {
    CHECKS
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no conformance check is named {name}"))
        .run
}

/// Errors a store reports. `Conflict`, `NotFound`, `StaleLease` and
/// `Invalid` are expected outcomes a caller turns into 409/404/422;
/// `Database` and `Backend` are faults, and [`StoreError::is_transient`]
/// says whether trying again later may work.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. an email already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A fenced job call carried a lease that is no longer the job's current
    /// lease (requeued, cancelled, finished, or another grader's). Nothing
    /// was changed.
    #[error("stale lease: {0}")]
    StaleLease(String),
    /// The call contradicts the record (e.g. an outcome of the wrong kind
    /// for its job). Nothing was changed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database failed; `transient` when trying again later may work
    /// (SQLite busy or locked, MongoDB unreachable or timing out), not when
    /// it is a bug or corruption.
    #[error("store database error: {source}")]
    Database {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
        transient: bool,
    },
    /// What the store read breaks an invariant it relies on (a record
    /// vanished inside a transaction, a value out of range): a bug or
    /// corruption.
    #[error("store backend error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Wraps a database error; `transient` when trying again later may work.
    pub fn database(
        source: impl std::error::Error + Send + Sync + 'static,
        transient: bool,
    ) -> StoreError {
        StoreError::Database {
            source: Box::new(source),
            transient,
        }
    }

    /// True for a fault that may go away when the call is tried again
    /// later (the database is busy or unreachable), false for expected
    /// outcomes and for faults that will not (bugs, corruption).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                transient: true,
                ..
            }
        )
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store named by `uri`.
///
/// # Errors
/// Fails when the scheme is unknown or the backend cannot be opened (e.g. a
/// second coordinator on the same SQLite file).
pub async fn open(uri: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = uri.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(path)?;
        Ok(Arc::new(store))
    } else if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        let store = mongo::MongoStore::connect(uri).await?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "unknown store URI {:?}: use sqlite://PATH or mongodb://HOST:PORT/DB",
            crate::redact(uri)
        )
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One page of a list, in the list's order: the entries after the key
/// `after` (the last key of the previous page), at most `limit` of them
/// (0: all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: u32,
}

impl<K> Page<K> {
    /// The whole list.
    pub const fn all() -> Page<K> {
        Page {
            after: None,
            limit: 0,
        }
    }
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

/// Everything the coordinator keeps. Implementations must be safe to share
/// between tasks; the MongoDB one between coordinator processes too.
#[async_trait]
pub trait Store:
    UserStore
    + ChallengeStore
    + AttemptStore
    + JobStore
    + GraderStore
    + AssessmentStore
    + AuditStore
    + ConsoleStore
    + HistoryStore
    + JobTryStore
    + runs::RunStore
    + AffinityStore
    + exports::ExportStore
    + Send
    + Sync
    + 'static
{
    /// Checks the backend is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Records an attempt job's completion under its grader's lease and
    /// applies the result: `update` to the attempt (unless it is gone or
    /// final), then the job is marked applied. Refusals as
    /// [`JobStore::complete_job`], and nothing changes then.
    ///
    /// A job grading a run item (`run_item: Some(_)`) is only recorded, as
    /// [`JobStore::complete_job`] does (unapplied): its result goes to the
    /// item, never to the attempt.
    ///
    /// This default takes the three steps one after the other; a crash
    /// between them leaves the job unapplied, and
    /// [`JobStore::list_unapplied_jobs`] finds it again. SQLite takes them
    /// in one transaction (one commit instead of three per result).
    async fn complete_attempt_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        update: AttemptUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        let completion = self.complete_job(held, outcome, now).await?;
        let Completion::Recorded(job) = &completion else {
            return Ok(completion);
        };
        let JobPayload::Attempt(payload) = &job.payload else {
            return Ok(completion);
        };
        if payload.run_item.is_some() {
            // A run item's result goes to its item (`Jobs::apply_finished_job`
            // routes the unapplied job there), never to the attempt.
            return Ok(completion);
        }
        match self.update_attempt(payload.attempt_id, update).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.mark_job_applied(job.id).await?;
        let applied = self
            .get_job(job.id)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("job {} vanished", job.id)))?;
        Ok(Completion::Recorded(applied))
    }
}
