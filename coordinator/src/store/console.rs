//! What the web console reads beyond the other aggregates: a challenge's
//! attempts with filters, for its professor, jobs with every filter an
//! admin may put in the URL, how many jobs each filter value has, and the
//! lists of users, runs and assessments its pages show.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{
    AttemptId, AttemptStatus, ChallengeId, GraderId, JobState, Lane, RunId, UserId,
};

use super::assessments::Assessment;
use super::runs::Run;
use super::{Attempt, Job, Page, StoreResult, User};

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

/// How many jobs of one state and lane match a query's other filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCount {
    pub state: JobState,
    pub lane: Lane,
    pub jobs: u64,
}

/// Jobs per state and lane (cells with none may be left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub cells: Vec<JobCount>,
    /// True when counting stopped at the cap: the counts are lower bounds.
    pub capped: bool,
}

impl JobCounts {
    /// Jobs in `state` (on `lane` only, when given).
    pub fn in_state(&self, state: JobState, lane: Option<Lane>) -> u64 {
        self.sum(|cell| cell.state == state && lane.is_none_or(|lane| cell.lane == lane))
    }

    /// Jobs on `lane` (in `state` only, when given).
    pub fn on_lane(&self, lane: Lane, state: Option<JobState>) -> u64 {
        self.sum(|cell| cell.lane == lane && state.is_none_or(|state| cell.state == state))
    }

    fn sum(&self, wanted: impl Fn(&JobCount) -> bool) -> u64 {
        self.cells
            .iter()
            .filter(|cell| wanted(cell))
            .map(|cell| cell.jobs)
            .sum()
    }
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

    /// Counts the jobs matching `query`'s challenge, grader and time
    /// filters (its state, lane, page and limit are ignored) per state and
    /// lane. Exact, from counters, when there is no such filter on SQLite;
    /// otherwise at most about `cap` jobs are counted, and `capped` says
    /// when counting stopped there.
    async fn count_jobs_by_value(&self, query: JobQuery, cap: u32) -> StoreResult<JobCounts>;

    /// Lists users by id, one page after `page.after`.
    async fn list_users(&self, page: Page<UserId>) -> StoreResult<Vec<User>>;

    /// Lists runs newest first (of `created_by` only, when given), one page
    /// after `page.after`.
    async fn list_runs(
        &self,
        created_by: Option<UserId>,
        page: Page<RunId>,
    ) -> StoreResult<Vec<Run>>;

    /// Lists assessments newest first (of `created_by` only, when given),
    /// one page after `page.after`.
    async fn list_assessments(
        &self,
        created_by: Option<UserId>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Assessment>>;
}
