//! Students' attempts and the leaderboard they feed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{AttemptId, AttemptStatus, CaseResult, ChallengeId, JobId, UserId};

use super::{LeaderboardRow, Page, StoreError, StoreResult};

/// An attempt with its per-test-case results.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: AttemptId,
    pub user_id: UserId,
    pub challenge_id: ChallengeId,
    pub challenge_version: i64,
    pub query: String,
    pub status: AttemptStatus,
    /// One entry per test case once results arrive (ordered by test case id).
    pub cases: Vec<CaseResult>,
    /// Why the attempt is ERROR or CANCELLED, when it is, in full (for the
    /// challenge's professor and admins).
    pub error: Option<String>,
    /// What kind of failure `error` describes: students see a fixed message
    /// per kind, never the text.
    pub error_kind: Option<AttemptErrorKind>,
    /// The attempt's grading job.
    pub job_id: Option<JobId>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The kind of failure an attempt's `error` describes. The text can name
/// graders, hosts, databases, roles, admins or the reference's errors; its
/// kind is what a student is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptErrorKind {
    /// The grader rejected the student's query itself (e.g. not a single
    /// read-only statement): the text is about the student's own SQL.
    Query,
    /// Grading failed for reasons outside the query (grader lost, deadline,
    /// database or reference failure).
    Grading,
    /// Cancelled by its owner, the challenge's professor or an admin.
    Cancelled,
    /// Cancelled because the challenge moved to a new version first.
    Outdated,
}

impl AttemptErrorKind {
    /// Returns the stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptErrorKind::Query => "query",
            AttemptErrorKind::Grading => "grading",
            AttemptErrorKind::Cancelled => "cancelled",
            AttemptErrorKind::Outdated => "outdated",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<AttemptErrorKind> {
        [
            AttemptErrorKind::Query,
            AttemptErrorKind::Grading,
            AttemptErrorKind::Cancelled,
            AttemptErrorKind::Outdated,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// An attempt to be created with status PENDING.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub user_id: UserId,
    pub challenge_id: ChallengeId,
    pub challenge_version: i64,
    pub query: String,
}

/// Outcome of [`Store::admit_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The attempt was created, PENDING.
    Created(Attempt),
    /// Nothing was created: the user already has this many unfinished
    /// attempts, the cap or more.
    OverCap { unfinished: u64 },
}

/// Changes to an attempt; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AttemptUpdate {
    pub status: Option<AttemptStatus>,
    pub cases: Option<Vec<CaseResult>>,
    pub error: Option<String>,
    pub error_kind: Option<AttemptErrorKind>,
    pub job_id: Option<JobId>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Students' attempts and the leaderboard they feed.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Creates a PENDING attempt with the next attempt id, whatever its
    /// user has unfinished (counted all the same by `admit_attempt`).
    async fn create_attempt(&self, attempt: NewAttempt) -> StoreResult<Attempt> {
        match self.admit_attempt(attempt, u64::MAX).await? {
            Admission::Created(attempt) => Ok(attempt),
            Admission::OverCap { unfinished } => Err(StoreError::Backend(format!(
                "{unfinished} unfinished attempts exceed any cap"
            ))),
        }
    }
    /// Creates a PENDING attempt unless its user already has
    /// `max_unfinished` attempts PENDING or RUNNING. Counting and creating
    /// are one atomic step: of any number of concurrent calls for one user,
    /// exactly as many succeed as the cap leaves room for.
    async fn admit_attempt(
        &self,
        attempt: NewAttempt,
        max_unfinished: u64,
    ) -> StoreResult<Admission>;
    /// Returns an attempt.
    async fn get_attempt(&self, id: AttemptId) -> StoreResult<Option<Attempt>>;
    /// Returns the attempts with these ids that exist, in any order: one
    /// store call for a batch (a run's items are fed a thousand at a time).
    async fn get_attempts(&self, ids: Vec<AttemptId>) -> StoreResult<Vec<Attempt>>;
    /// Lists a user's attempts, newest first (by id); a page starts below
    /// the id `page.after`.
    async fn list_user_attempts(
        &self,
        user_id: UserId,
        page: Page<AttemptId>,
    ) -> StoreResult<Vec<Attempt>>;
    /// Lists a challenge's PASSED attempts (for the leaderboard).
    async fn list_passed_attempts(&self, challenge_id: ChallengeId) -> StoreResult<Vec<Attempt>>;
    /// Returns the best `limit` leaderboard rows of one version of a
    /// challenge, best first: by `rank_key`, then earlier submission, then
    /// attempt id; one row per user.
    async fn top_attempts(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>>;
    /// Lists a challenge's attempts that are PENDING or RUNNING, oldest first.
    async fn list_unfinished_challenge_attempts(
        &self,
        challenge_id: ChallengeId,
    ) -> StoreResult<Vec<Attempt>>;
    /// Counts a user's attempts that are PENDING or RUNNING.
    async fn count_unfinished_attempts(&self, user_id: UserId) -> StoreResult<u64>;
    /// Applies `update` unless the attempt is already final (then returns the
    /// attempt unchanged). `NotFound` if there is no such attempt.
    ///
    /// An attempt that becomes PASSED and qualifies for the leaderboard
    /// ([`crate::leaderboard::row_for`] with its version's test cases)
    /// replaces its user's row for that challenge version if it ranks
    /// better, in the same step as the result.
    async fn update_attempt(&self, id: AttemptId, update: AttemptUpdate) -> StoreResult<Attempt>;
    /// Reopens the attempt (an admin retried its job): status PENDING, no
    /// cases, no error, no finished_at, even when it was final; it counts
    /// as unfinished again. `NotFound` if there is no such attempt.
    async fn reopen_attempt(&self, id: AttemptId) -> StoreResult<Attempt>;
}
