//! Wire types of timed assessments: how a professor describes one (zones of
//! challenges, timing, limits, feedback) and per-student time overrides.
//! The coordinator stores these as they are sent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ChallengeId, UserId};

/// Picks `pick` challenges from `pool` for each student, each worth `points`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Challenge ids (distinct, at least one); every one must be the
    /// caller's own (any, for admins).
    #[schema(min_items = 1, max_items = 200)]
    pub pool: Vec<ChallengeId>,
    /// How many challenges of the pool each student gets (1 to the pool's size).
    #[schema(minimum = 1, maximum = 200)]
    pub pick: u32,
    /// Points of each picked challenge.
    #[schema(minimum = 0, maximum = 1000000)]
    pub points: f64,
}

/// How challenges are picked from a zone's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Seeded per student and per session start.
    Random,
    /// Seeded by the assessment and the student only: a retake (or a session
    /// started again after a reset) gets exactly the same pick.
    Stable,
}

/// When students see their results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// As soon as a submission is graded.
    Immediate,
    /// Only "submitted" until the assessment closes (for everyone).
    AfterClose,
}

/// Whether students see each other's scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scoreboard {
    Live,
    Hidden,
}

/// Which submission of a question counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScorePolicy {
    /// The best-scoring submission.
    #[default]
    Best,
    /// The last passing submission (by receipt time).
    Last,
}

/// An assessment as a professor describes it (`POST /api/v1/assessments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessmentSpec {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    pub zones: Vec<Zone>,
    pub selection: Selection,
    /// Length of a session, in seconds, before overrides.
    #[schema(minimum = 1, maximum = 2592000)]
    pub time_limit_s: u32,
    pub opens_at: DateTime<Utc>,
    /// After `opens_at`; no session runs past it unless a student's override
    /// or an extension says so.
    pub closes_at: DateTime<Utc>,
    /// Submissions per question (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_submissions: Option<u32>,
    /// Seconds between two submissions of one question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub min_interval_s: Option<u32>,
    pub feedback: Feedback,
    pub scoreboard: Scoreboard,
    #[serde(default)]
    pub policy: ScorePolicy,
    /// Share of a question's points earned by speed (FE) or slowness (SE)
    /// relative to the reference, from 0 (none: passing is full points) to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub performance_credit: f64,
}

/// A student's accommodation: extra seconds, a time multiplier, their own
/// close date. Applies to a session already running too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeOverride {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2592000)]
    pub extra_s: Option<u32>,
    /// Multiplies the time limit (e.g. 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub time_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<DateTime<Utc>>,
}
