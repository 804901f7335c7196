//! What the web console reads beyond the other aggregates: a challenge's
//! attempts with filters, for its professor, and jobs with every filter an
//! admin may put in the URL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{AttemptId, AttemptStatus, ChallengeId, GraderId, JobState, Lane, UserId};

use super::{Attempt, Job, Page, StoreResult};

/// Which attempts of a challenge to list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChallengeAttemptFilter {
    pub challenge_id: ChallengeId,
    /// Only attempts with this status.
    pub status: Option<AttemptStatus>,
    /// Only this user's attempts.
    pub user_id: Option<UserId>,
}

/// Which jobs to list, oldest first (by `seq`). Every field is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobQuery {
    pub state: Option<JobState>,
    pub lane: Option<Lane>,
    /// Only jobs for this challenge (init or attempt).
    pub challenge_id: Option<ChallengeId>,
    /// Only jobs leased now by this grader (a finished job keeps no lease).
    pub grader_id: Option<GraderId>,
    /// Only jobs queued at or after this time, read from the job's id (a
    /// UUID v7, see [`super::first_job_id_at`]), as job retention does.
    pub queued_from: Option<DateTime<Utc>>,
    /// Only jobs queued before this time (by id, likewise).
    pub queued_before: Option<DateTime<Utc>>,
    /// At most this many jobs; 0 lists every one.
    pub limit: u32,
    /// Only jobs after the one with this `seq` (the last of the previous page).
    pub after: Option<i64>,
}

/// When a job was queued, last leased and finished, and its state: what
/// the overview's charts are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobTimes {
    pub state: JobState,
    pub created_at: DateTime<Utc>,
    pub leased_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Lists for the console.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Lists a challenge's attempts matching `filter`, newest first (by id),
    /// one page after `page.after`.
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<AttemptId>,
    ) -> StoreResult<Vec<Attempt>>;

    /// Lists the jobs matching `query`, oldest first.
    async fn list_jobs_matching(&self, query: JobQuery) -> StoreResult<Vec<Job>>;

    /// Lists the times of the jobs queued at or after `queued_from` (by id,
    /// as [`JobQuery::queued_from`]), oldest first, at most `limit` (0: all):
    /// four fields a job, so the overview reads thousands cheaply.
    async fn list_job_times(
        &self,
        queued_from: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<JobTimes>>;
}
