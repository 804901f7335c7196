//! The audit of grading: where and how each init measured the reference
//! (attempts keep theirs in their cases), the leaderboard of one grader's
//! results, and the recent reference timings graders are calibrated from.

use async_trait::async_trait;
use sqlarena_common::{CaseAudit, CaseResult, ChallengeId, GraderId, TestCaseId};

use super::{Attempt, LeaderboardRow, StoreResult};

/// The audit store.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Keeps the audit of an init's reference runs for version `version`
    /// of a challenge, one per test case, replacing what an earlier init
    /// of the same test cases left.
    async fn record_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        audits: Vec<(TestCaseId, CaseAudit)>,
    ) -> StoreResult<()>;

    /// Returns the init audits of one version of a challenge, by test case
    /// id (empty when none were recorded).
    async fn list_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<(TestCaseId, CaseAudit)>>;

    /// Returns the best `limit` leaderboard rows of one version of a
    /// challenge among the attempts graded by `grader_id` (see
    /// [`graded_by`]), best first, one per user, ordered as
    /// [`super::AttemptStore::top_attempts`]. The store keeps them as
    /// attempts pass, beside the whole leaderboard.
    async fn top_attempts_of_grader(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        grader_id: GraderId,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>>;

    /// Returns the case results of the `limit` most recent PASSED
    /// attempts (by id), newest attempt first: the reference timings
    /// graders are calibrated from.
    async fn list_recent_passed_cases(&self, limit: u32) -> StoreResult<Vec<CaseResult>>;
}

/// The grader an attempt was graded by: the one its case audits name
/// (a completed job's cases all come from the grader that held its lease).
pub fn graded_by(attempt: &Attempt) -> Option<GraderId> {
    attempt
        .cases
        .iter()
        .find_map(|case| case.audit.as_ref().and_then(|audit| audit.grader_id))
}
