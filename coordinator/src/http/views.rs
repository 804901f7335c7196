//! What the people API shows: users, challenges, test cases, attempts and the
//! leaderboard, each shaped for the person asking.
//!
//! Store records are never serialized directly. A challenge's creator and
//! admins see everything; everyone else never sees the solution, hidden test
//! data, hidden expected results, or what a hidden case's result looked like.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlarena_common::{
    AttemptId, AttemptStatus, CaseAudit, CaseResult, CaseStatus, CaseTiming, ChallengeId,
    ChallengeState, ChallengeType, QueryResult, Role, TestCaseId, UserId,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::{Attempt, AttemptErrorKind, Challenge, TestCase, User};

/// A user as clients see it: never the password or its hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id,
            email: user.email.clone(),
            full_name: user.full_name.clone(),
            role: user.role,
            created_at: user.created_at,
        }
    }
}

/// The reply to a login: the user plus the bearer token (shown once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginView {
    #[serde(flatten)]
    pub user: UserView,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The reply to revoking a session or a cluster token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revoked {
    pub id: Uuid,
    pub revoked: bool,
}

/// Returns true if `viewer` may see everything about `challenge`: its
/// creator and admins.
pub fn sees_everything(viewer: &User, challenge: &Challenge) -> bool {
    viewer.role == Role::Admin || viewer.id == challenge.created_user_id
}

/// A test case; `data` and `expected_result` are null for hidden cases
/// unless the viewer sees everything.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestCaseView {
    pub id: TestCaseId,
    pub challenge_id: ChallengeId,
    pub data: Option<String>,
    pub is_visible: bool,
    pub expected_result: Option<QueryResult>,
    pub created_at: DateTime<Utc>,
    /// Where and how the init timed the reference on this case: only for
    /// the challenge's professor and admins (see [`CaseView::audit`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<CaseAudit>,
}

impl TestCaseView {
    fn new(case: &TestCase, full: bool) -> TestCaseView {
        let shown = full || case.is_visible;
        TestCaseView {
            id: case.id,
            challenge_id: case.challenge_id,
            data: shown.then(|| case.data.clone()),
            is_visible: case.is_visible,
            expected_result: if shown { case.expected.clone() } else { None },
            created_at: case.created_at,
            audit: None,
        }
    }
}

/// A challenge as one viewer may see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChallengeView {
    pub id: ChallengeId,
    pub created_user_id: UserId,
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub challenge_type: ChallengeType,
    pub init: String,
    /// Only for the creator and admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
    pub times_to_run: u32,
    pub expires_at: DateTime<Utc>,
    pub version: i64,
    pub state: ChallengeState,
    pub init_at: Option<DateTime<Utc>>,
    pub init_errors: Option<Vec<String>>,
    pub init_warnings: Vec<String>,
    pub test_cases: Vec<TestCaseView>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_attempts: Option<Vec<LeaderboardEntry>>,
}

impl ChallengeView {
    /// Shapes `challenge` for `viewer`. Init errors and warnings can quote
    /// hidden data or hint at the solution, so others only learn that
    /// initialization failed.
    pub fn new(challenge: &Challenge, viewer: &User) -> ChallengeView {
        let full = sees_everything(viewer, challenge);
        let init_errors = match &challenge.init_errors {
            Some(errors) if !full && !errors.is_empty() => Some(vec![
                "the challenge failed to initialize; its professor can see why".to_string(),
            ]),
            other => other.clone(),
        };
        ChallengeView {
            id: challenge.id,
            created_user_id: challenge.created_user_id,
            name: challenge.name.clone(),
            description: challenge.description.clone(),
            challenge_type: challenge.challenge_type,
            init: challenge.init.clone(),
            solution: full.then(|| challenge.solution.clone()),
            times_to_run: challenge.times_to_run,
            expires_at: challenge.expires_at,
            version: challenge.version,
            state: challenge.state,
            init_at: challenge.init_at,
            init_errors,
            init_warnings: if full {
                challenge.init_warnings.clone()
            } else {
                Vec::new()
            },
            test_cases: challenge
                .test_cases
                .iter()
                .map(|case| TestCaseView::new(case, full))
                .collect(),
            created_at: challenge.created_at,
            top_attempts: None,
        }
    }
}

/// One test case of an attempt. For a hidden case and a viewer who is not
/// the challenge's professor or an admin, only the status is shown: no
/// timings, no error text, no rows (each can leak the hidden data).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseView {
    pub test_case_id: TestCaseId,
    pub is_visible: bool,
    pub status: CaseStatus,
    pub execution_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub reference_ms: Option<f64>,
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_result: Option<QueryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_result: Option<QueryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub error: Option<String>,
    /// How the case was timed: the ratio's 95 % interval, rounds run and
    /// discarded, whether the interval reached its target width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<CaseTiming>,
    /// Where and how the case was measured (grader, PostgreSQL version,
    /// rounds, timing summary): only for the challenge's professor and
    /// admins, absent for everyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<CaseAudit>,
}

impl CaseView {
    fn new(result: &CaseResult, case: Option<&TestCase>, full: bool) -> CaseView {
        let is_visible = case.is_some_and(|case| case.is_visible);
        if !(full || is_visible) {
            return CaseView::status_only(result.test_case_id, result.status);
        }
        CaseView {
            test_case_id: result.test_case_id,
            is_visible,
            status: result.status,
            execution_ms: result.execution_ms,
            min_ms: result.min_ms,
            reference_ms: result
                .reference_ms
                .or_else(|| case.and_then(|case| case.reference_ms)),
            ratio: result.ratio,
            expected_result: case.and_then(|case| case.expected.clone()),
            actual_result: result.actual_result.clone(),
            diff: result.diff.clone(),
            error: result.error.clone(),
            timing: result.timing,
            audit: if full { result.audit.clone() } else { None },
        }
    }

    /// A hidden case as students see it: its status and nothing else.
    fn status_only(test_case_id: TestCaseId, status: CaseStatus) -> CaseView {
        CaseView {
            test_case_id,
            is_visible: false,
            status,
            execution_ms: None,
            min_ms: None,
            reference_ms: None,
            ratio: None,
            expected_result: None,
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: None,
        }
    }

    fn pending(case: &TestCase, full: bool) -> CaseView {
        if !(full || case.is_visible) {
            return CaseView::status_only(case.id, CaseStatus::Pending);
        }
        CaseView {
            expected_result: case.expected.clone(),
            is_visible: case.is_visible,
            ..CaseView::status_only(case.id, CaseStatus::Pending)
        }
    }
}

/// What a student is told about an attempt's error: their own query's
/// rejection as the grader wrote it, otherwise a fixed message per kind.
/// The full text can name graders, hosts, databases, roles, admins or the
/// reference's errors; only the challenge's professor and admins see it.
pub fn student_error(kind: Option<AttemptErrorKind>, error: &str) -> String {
    match kind {
        Some(AttemptErrorKind::Query) => error.to_string(),
        Some(AttemptErrorKind::Cancelled) => {
            "this attempt was cancelled (by you, the challenge's professor or an admin) before \
             it was graded; submit it again to have it graded"
                .to_string()
        }
        Some(AttemptErrorKind::Outdated) => {
            "the challenge changed before this attempt was graded; submit it again once the \
             challenge is READY"
                .to_string()
        }
        // Older records have no kind: they get the safe message too.
        Some(AttemptErrorKind::Grading) | None => {
            "grading failed for a reason outside your query (the grading cluster had a \
             problem); submit it again, and tell your professor if it keeps happening"
                .to_string()
        }
    }
}

/// An attempt with its per-test-case list (`attempts`, as the seed names it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: AttemptId,
    pub user_id: UserId,
    pub challenge_id: ChallengeId,
    pub challenge_version: i64,
    pub query: String,
    pub status: AttemptStatus,
    /// Why the attempt is ERROR or CANCELLED: in full for the challenge's
    /// professor and admins, otherwise [`student_error`].
    pub error: Option<String>,
    /// `query`, `grading`, `cancelled` or `outdated` when there is an error.
    #[schema(value_type = Option<String>, pattern = "^(query|grading|cancelled|outdated)$")]
    pub error_kind: Option<&'static str>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<CaseView>,
}

impl AttemptView {
    /// Shapes `attempt` for `viewer`. Cases of the challenge without a
    /// result yet appear as PENDING (while the attempt is unfinished and was
    /// made against the challenge's current version).
    pub fn new(attempt: &Attempt, challenge: Option<&Challenge>, viewer: &User) -> AttemptView {
        let full = viewer.role == Role::Admin
            || challenge.is_some_and(|challenge| viewer.id == challenge.created_user_id);
        let cases_by_id: HashMap<TestCaseId, &TestCase> = challenge
            .map(|challenge| {
                challenge
                    .test_cases
                    .iter()
                    .map(|case| (case.id, case))
                    .collect()
            })
            .unwrap_or_default();
        let mut attempts: Vec<CaseView> = attempt
            .cases
            .iter()
            .map(|result| {
                CaseView::new(result, cases_by_id.get(&result.test_case_id).copied(), full)
            })
            .collect();
        if let Some(challenge) = challenge {
            if !attempt.status.is_final() && challenge.version == attempt.challenge_version {
                for case in &challenge.test_cases {
                    if !attempt
                        .cases
                        .iter()
                        .any(|result| result.test_case_id == case.id)
                    {
                        attempts.push(CaseView::pending(case, full));
                    }
                }
                attempts.sort_by_key(|case| case.test_case_id);
            }
        }
        AttemptView {
            id: attempt.id,
            user_id: attempt.user_id,
            challenge_id: attempt.challenge_id,
            challenge_version: attempt.challenge_version,
            query: attempt.query.clone(),
            status: attempt.status,
            error: match &attempt.error {
                Some(error) if !full => Some(student_error(attempt.error_kind, error)),
                other => other.clone(),
            },
            error_kind: attempt.error.as_ref().map(|_| {
                attempt
                    .error_kind
                    .unwrap_or(AttemptErrorKind::Grading)
                    .as_str()
            }),
            created_at: attempt.created_at,
            finished_at: attempt.finished_at,
            attempts,
        }
    }
}

/// One row of a challenge's leaderboard (`top_attempts`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    pub rank: usize,
    pub attempt_id: AttemptId,
    pub user_id: UserId,
    pub user_full_name: String,
    /// Geometric mean of the cases' student/reference time ratios (absent
    /// for students when the challenge has hidden cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Sum of the cases' median execution times (absent like `score`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time_ms: Option<f64>,
    pub time_of_attempt: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn challenge(challenge_type: ChallengeType) -> Challenge {
        let now = Utc::now();
        let case = |id: i64, is_visible: bool| TestCase {
            id: TestCaseId(id),
            challenge_id: ChallengeId(1),
            data: format!("insert {id}"),
            is_visible,
            expected: Some(QueryResult::default()),
            reference_ms: Some(2.0),
            created_at: now,
        };
        Challenge {
            id: ChallengeId(1),
            created_user_id: UserId(7),
            name: "c".into(),
            description: None,
            challenge_type,
            init: "create table t(a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 3,
            expires_at: now + Duration::days(1),
            version: 2,
            state: ChallengeState::Ready,
            init_at: Some(now),
            init_errors: None,
            init_warnings: vec!["a warning".into()],
            created_at: now,
            test_cases: vec![case(10, true), case(11, false)],
        }
    }

    fn passed(id: i64, user_id: i64, ratios: [f64; 2], minutes: i64) -> Attempt {
        let case = |test_case_id: i64, ratio: f64| CaseResult {
            test_case_id: TestCaseId(test_case_id),
            status: CaseStatus::Passed,
            execution_ms: Some(ratio * 2.0),
            min_ms: None,
            reference_ms: Some(2.0),
            ratio: Some(ratio),
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: None,
        };
        Attempt {
            id: AttemptId(id),
            user_id: UserId(user_id),
            challenge_id: ChallengeId(1),
            challenge_version: 2,
            query: "select a from t".into(),
            status: AttemptStatus::Passed,
            cases: vec![case(10, ratios[0]), case(11, ratios[1])],
            error: None,
            error_kind: None,
            job_id: None,
            created_at: Utc::now() - Duration::hours(1) + Duration::minutes(minutes),
            finished_at: None,
        }
    }

    #[test]
    fn hidden_cases_are_reduced_for_students_but_not_for_the_professor() {
        let challenge = challenge(ChallengeType::FE);
        let now = Utc::now();
        let user = |id: i64, role: Role| User {
            id: UserId(id),
            email: format!("u{id}@example.com"),
            full_name: "U".into(),
            role,
            password_hash: "$argon2id$secret".into(),
            created_at: now,
        };
        let mut attempt = passed(1, 100, [1.0, 1.0], 0);
        attempt.status = AttemptStatus::Failed;
        attempt.cases[1].status = CaseStatus::Failed;
        attempt.cases[1].diff = Some("row 1: expected 42".into());
        attempt.cases[1].error = Some("expected 42 got 41".into());
        let student = serde_json::to_value(AttemptView::new(
            &attempt,
            Some(&challenge),
            &user(100, Role::Student),
        ))
        .unwrap();
        let hidden = &student["attempts"][1];
        assert_eq!(hidden["is_visible"], false);
        assert_eq!(hidden["status"], "FAILED");
        for field in ["execution_ms", "min_ms", "reference_ms", "ratio", "error"] {
            assert!(hidden[field].is_null(), "{field} shown: {hidden}");
        }
        assert!(hidden.get("diff").is_none() && hidden.get("expected_result").is_none());
        assert_eq!(student["attempts"][0]["ratio"], 1.0);
        let professor = serde_json::to_value(AttemptView::new(
            &attempt,
            Some(&challenge),
            &user(7, Role::Professor),
        ))
        .unwrap();
        assert_eq!(professor["attempts"][1]["diff"], "row 1: expected 42");

        let view = serde_json::to_value(ChallengeView::new(&challenge, &user(100, Role::Student)))
            .unwrap();
        assert!(view.get("solution").is_none());
        assert!(view["test_cases"][1]["data"].is_null());
        assert_eq!(view["test_cases"][0]["data"], "insert 10");
        assert_eq!(view["init_warnings"], serde_json::json!([]));
    }
}
