//! Timed assessments as stored: the assessment (its spec, per-student
//! overrides, an extension for everyone), one session per student (picked
//! questions, submissions by receipt time, a log), and manual scores.
//!
//! An assessment and a session are each one record changed as a whole with
//! a revision check ([`AssessmentStore::replace_assessment`],
//! [`AssessmentStore::replace_assessment_session`]): the service reads,
//! decides, and writes back only if nobody wrote in between, so every rule
//! (a submission limit, no edit once started) holds under concurrency on
//! both backends without multi-record transactions. Submissions live inside
//! their session for the same reason.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::assessments::{AssessmentSpec, TimeOverride};
use sqlarena_common::{AttemptId, ChallengeId, UserId};

use super::StoreResult;

/// An assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub id: i64,
    /// Bumped by every write; a replace must carry the revision it read.
    pub rev: i64,
    pub created_user_id: UserId,
    pub spec: AssessmentSpec,
    /// At most one per user.
    pub overrides: Vec<TimeOverride>,
    /// Seconds staff added for everyone (every session's deadline and the
    /// close date move by it).
    pub extension_s: i64,
    /// Set before the first session is created: the spec is frozen then.
    pub started: bool,
    /// What staff did to every session at once (extensions), by whom.
    pub log: Vec<SessionEvent>,
    pub created_at: DateTime<Utc>,
}

/// A question of a session: one picked challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// 1, 2, ... in the session.
    pub number: u32,
    /// Index of the zone it was picked from.
    pub zone: u32,
    pub challenge_id: ChallengeId,
    pub points: f64,
}

/// A submission, accepted by its receipt time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// 1, 2, ... in the session.
    pub number: u32,
    pub question: u32,
    pub received_at: DateTime<Utc>,
    /// Kept so the attempt can be made again if the coordinator stopped
    /// between accepting the submission and queueing its attempt.
    pub query: String,
    /// The graded attempt, once queued.
    pub attempt_id: Option<AttemptId>,
    /// Why no attempt could be made for it (a final state, scored 0).
    pub error: Option<String>,
}

/// What happened to a session, by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub at: DateTime<Utc>,
    /// `started`, `submitted`, `extended`, `finished`, `reopened`.
    pub kind: String,
    /// Who did it (none: the clock).
    pub actor_id: Option<UserId>,
    pub detail: Option<String>,
}

/// A student's session of an assessment (one per student).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentSession {
    pub id: i64,
    pub rev: i64,
    pub assessment_id: i64,
    pub user_id: UserId,
    /// Seed of the pick, kept to explain it.
    pub seed: u64,
    pub questions: Vec<Question>,
    pub started_at: DateTime<Utc>,
    /// Set by `finish`; cleared by a reopen.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds staff added to (or, by a reopen, set on) this session.
    pub extension_s: i64,
    pub submissions: Vec<Submission>,
    pub log: Vec<SessionEvent>,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewAssessmentSession {
    pub assessment_id: i64,
    pub user_id: UserId,
    pub seed: u64,
    pub questions: Vec<Question>,
    pub started_at: DateTime<Utc>,
    pub log: Vec<SessionEvent>,
}

/// A manual score: the latest one of a student and assessment replaces the
/// computed score; all are kept (who, when, why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreOverride {
    pub id: i64,
    pub assessment_id: i64,
    pub user_id: UserId,
    pub score: f64,
    pub reason: String,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
}

/// A manual score to record.
#[derive(Debug, Clone)]
pub struct NewScoreOverride {
    pub assessment_id: i64,
    pub user_id: UserId,
    pub score: f64,
    pub reason: String,
    pub created_by: UserId,
}

/// Assessments, their sessions and manual scores.
#[async_trait]
pub trait AssessmentStore: Send + Sync {
    /// Creates an assessment (rev 1, not started, no overrides) with the
    /// next assessment id.
    async fn create_assessment(
        &self,
        created_user_id: UserId,
        spec: AssessmentSpec,
    ) -> StoreResult<Assessment>;
    /// Returns an assessment.
    async fn get_assessment(&self, id: i64) -> StoreResult<Option<Assessment>>;
    /// Writes `assessment` (with `rev + 1`) if the stored one is still at
    /// `assessment.rev`; false (nothing written) otherwise. `NotFound` if
    /// there is no such assessment.
    async fn replace_assessment(&self, assessment: &Assessment) -> StoreResult<bool>;
    /// Creates the session of `session.user_id` for the assessment with the
    /// next session id, or returns the one that exists: `(session, true)`
    /// when this call created it. Of concurrent calls for one student, one
    /// creates it and the others return it.
    async fn create_assessment_session(
        &self,
        session: NewAssessmentSession,
    ) -> StoreResult<(AssessmentSession, bool)>;
    /// Returns a session.
    async fn get_assessment_session(&self, id: i64) -> StoreResult<Option<AssessmentSession>>;
    /// Returns the session of a student in an assessment.
    async fn find_assessment_session(
        &self,
        assessment_id: i64,
        user_id: UserId,
    ) -> StoreResult<Option<AssessmentSession>>;
    /// Lists an assessment's sessions by id.
    async fn list_assessment_sessions(
        &self,
        assessment_id: i64,
    ) -> StoreResult<Vec<AssessmentSession>>;
    /// Lists a student's sessions by id.
    async fn list_user_assessment_sessions(
        &self,
        user_id: UserId,
    ) -> StoreResult<Vec<AssessmentSession>>;
    /// Writes `session` (with `rev + 1`) if the stored one is still at
    /// `session.rev`; false otherwise. `NotFound` if there is no such session.
    async fn replace_assessment_session(&self, session: &AssessmentSession) -> StoreResult<bool>;
    /// Records a manual score with the next score id.
    async fn create_score_override(&self, score: NewScoreOverride) -> StoreResult<ScoreOverride>;
    /// Lists manual scores by id, of one assessment and/or one user.
    async fn list_score_overrides(
        &self,
        assessment_id: Option<i64>,
        user_id: Option<UserId>,
    ) -> StoreResult<Vec<ScoreOverride>>;
}
