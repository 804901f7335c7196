//! Every try of a job: which grader held the lease, from when to when, and
//! how it ended. A job row keeps only its current lease and last error;
//! this history is what an admin reads to see why a job was tried three
//! times. Written by the backends in the same store step as the lease
//! change (claim, completion, failure, take-back, cancel), read only by the
//! console's job page.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{GraderId, JobId, LeaseId};

use super::StoreResult;

/// How a try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The grader completed the job.
    Done,
    /// The job FAILED with this try (an error that cannot be retried, or
    /// its last try).
    Failed,
    /// The lease ended without a result and the job went back to the queue
    /// (a reported failure with tries left, an expired deadline, a dead or
    /// departed grader).
    Requeued,
    /// The job was cancelled while leased.
    Cancelled,
}

impl TryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TryOutcome::Done => "DONE",
            TryOutcome::Failed => "FAILED",
            TryOutcome::Requeued => "REQUEUED",
            TryOutcome::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<TryOutcome> {
        [
            TryOutcome::Done,
            TryOutcome::Failed,
            TryOutcome::Requeued,
            TryOutcome::Cancelled,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One lease of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTry {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    pub grader_id: GraderId,
    pub started_at: DateTime<Utc>,
    /// `None` while the lease is held.
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<TryOutcome>,
    /// Why it ended without a result, when it did.
    pub error: Option<String>,
}

/// Reads the tries of jobs.
#[async_trait]
pub trait JobTryStore: Send + Sync {
    /// Lists the tries of a job, first first (none for a job never leased
    /// or deleted by retention).
    async fn list_job_tries(&self, job_id: JobId) -> StoreResult<Vec<JobTry>>;
}
