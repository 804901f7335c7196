//! Leaderboard scoring, written once and used by both stores when an
//! attempt finishes: each user's best passing result per challenge version
//! is kept in the store as it happens, and `GET /challenges/:id` reads the
//! top entries by index instead of ranking every passing attempt.
//!
//! An attempt qualifies when it PASSED every test case of its version and
//! every case has a positive ratio (from the grader, or from execution and
//! reference times). Its score is the geometric mean of the ratios. FE
//! ranks the lowest score first, SE the highest; ties go to the earlier
//! submission, then the lower attempt id. [`rank_key`] folds the direction
//! into one ascending number, so a store orders entries by
//! `(rank_key, time_of_attempt, attempt_id)` for both types.

use chrono::{DateTime, Utc};
use sqlarena_common::{AttemptId, AttemptStatus, CaseStatus, ChallengeId, ChallengeType, UserId};

use crate::store::{Attempt, TestCase};

/// How many entries a leaderboard shows.
pub const LEADERBOARD_SIZE: u32 = 10;

/// A user's best passing attempt on one version of a challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardRow {
    pub challenge_id: ChallengeId,
    pub version: i64,
    pub user_id: UserId,
    pub attempt_id: AttemptId,
    /// Geometric mean of the cases' student/reference time ratios.
    pub score: f64,
    /// Ascending sort key: `score` for FE, `-score` for SE.
    pub rank_key: f64,
    /// Sum of the cases' median execution times.
    pub completion_time_ms: f64,
    /// When the attempt was submitted.
    pub time_of_attempt: DateTime<Utc>,
}

impl LeaderboardRow {
    /// Returns true if `self` ranks before `other` (lower key, then earlier,
    /// then lower attempt id).
    pub fn beats(&self, other: &LeaderboardRow) -> bool {
        self.rank_key
            .total_cmp(&other.rank_key)
            .then(self.time_of_attempt.cmp(&other.time_of_attempt))
            .then(self.attempt_id.cmp(&other.attempt_id))
            .is_lt()
    }
}

/// Folds the ranking direction of `challenge_type` into an ascending key.
pub fn rank_key(challenge_type: ChallengeType, score: f64) -> f64 {
    match challenge_type {
        ChallengeType::FE => score,
        ChallengeType::SE => -score,
    }
}

/// Returns the leaderboard row of `attempt`, if it qualifies: PASSED, with
/// a passing result with a positive ratio for every one of `test_cases`
/// (the test cases of the attempt's version).
pub fn row_for(
    attempt: &Attempt,
    challenge_type: ChallengeType,
    test_cases: &[TestCase],
) -> Option<LeaderboardRow> {
    if attempt.status != AttemptStatus::Passed || test_cases.is_empty() {
        return None;
    }
    let mut log_sum = 0.0;
    let mut completion_time_ms = 0.0;
    for case in test_cases {
        let result = attempt
            .cases
            .iter()
            .find(|result| result.test_case_id == case.id)?;
        if result.status != CaseStatus::Passed {
            return None;
        }
        let ratio = result.ratio.or_else(|| {
            match (
                result.execution_ms,
                result.reference_ms.or(case.reference_ms),
            ) {
                (Some(student), Some(reference)) if reference > 0.0 => Some(student / reference),
                _ => None,
            }
        })?;
        if !ratio.is_finite() || ratio <= 0.0 {
            return None;
        }
        log_sum += ratio.ln();
        completion_time_ms += result.execution_ms.unwrap_or(0.0);
    }
    let score = (log_sum / test_cases.len() as f64).exp();
    Some(LeaderboardRow {
        challenge_id: attempt.challenge_id,
        version: attempt.challenge_version,
        user_id: attempt.user_id,
        attempt_id: attempt.id,
        score,
        rank_key: rank_key(challenge_type, score),
        completion_time_ms,
        time_of_attempt: attempt.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use sqlarena_common::{CaseResult, TestCaseId};

    fn case(id: i64) -> TestCase {
        TestCase {
            id: TestCaseId(id),
            challenge_id: ChallengeId(1),
            data: String::new(),
            is_visible: true,
            expected: None,
            reference_ms: Some(2.0),
            created_at: Utc::now(),
        }
    }

    fn passed(id: i64, ratios: &[Option<f64>], minutes: i64) -> Attempt {
        let cases = ratios
            .iter()
            .enumerate()
            .map(|(index, ratio)| CaseResult {
                test_case_id: TestCaseId(10 + index as i64),
                status: CaseStatus::Passed,
                execution_ms: Some(4.0),
                min_ms: None,
                reference_ms: None,
                ratio: *ratio,
                actual_result: None,
                diff: None,
                error: None,
                timing: None,
                audit: None,
            })
            .collect();
        Attempt {
            id: AttemptId(id),
            user_id: UserId(100),
            challenge_id: ChallengeId(1),
            challenge_version: 2,
            query: "select 1".into(),
            status: AttemptStatus::Passed,
            cases,
            error: None,
            error_kind: None,
            job_id: None,
            created_at: Utc::now() + Duration::minutes(minutes),
            finished_at: None,
        }
    }

    #[test]
    fn scores_are_geometric_means_and_fe_ranks_low_se_high() {
        let cases = [case(10), case(11)];
        let row = row_for(
            &passed(1, &[Some(2.0), Some(8.0)], 0),
            ChallengeType::FE,
            &cases,
        )
        .unwrap();
        assert!((row.score - 4.0).abs() < 1e-9);
        assert!((row.completion_time_ms - 8.0).abs() < 1e-9);
        // No ratio: execution over the case's reference time (4 / 2).
        let fallback =
            row_for(&passed(2, &[None, Some(2.0)], 1), ChallengeType::FE, &cases).unwrap();
        assert!((fallback.score - 2.0).abs() < 1e-9);
        assert!(fallback.beats(&row));
        let slow = row_for(
            &passed(1, &[Some(2.0), Some(8.0)], 0),
            ChallengeType::SE,
            &cases,
        )
        .unwrap();
        let slower = row_for(&passed(2, &[None, Some(2.0)], 1), ChallengeType::SE, &cases).unwrap();
        assert!(slow.beats(&slower), "SE: the higher score first");
        let tie = row_for(
            &passed(3, &[Some(4.0), Some(4.0)], 2),
            ChallengeType::FE,
            &cases,
        )
        .unwrap();
        assert!(
            row.beats(&tie) && !tie.beats(&row),
            "ties: the earlier first"
        );
    }

    #[test]
    fn only_complete_passing_attempts_with_positive_ratios_qualify() {
        let cases = [case(10), case(11)];
        let mut failed = passed(1, &[Some(1.0), Some(1.0)], 0);
        failed.status = AttemptStatus::Failed;
        assert_eq!(row_for(&failed, ChallengeType::FE, &cases), None);
        let incomplete = passed(2, &[Some(1.0)], 0);
        assert_eq!(row_for(&incomplete, ChallengeType::FE, &cases), None);
        let zero = passed(3, &[Some(0.0), Some(1.0)], 0);
        assert_eq!(row_for(&zero, ChallengeType::FE, &cases), None);
        assert_eq!(row_for(&passed(4, &[], 0), ChallengeType::FE, &[]), None);
    }
}
