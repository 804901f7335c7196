//! Wire names of grading runs: a professor grades a whole roster of one
//! challenge at once, one item per student, each item an ordinary attempt
//! job whose result goes to the item (never to the student's attempt).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::RunId;

/// Names the run item a job grades (carried in its attempt payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunItemRef {
    pub run_id: RunId,
    /// The item's number within its run (1, 2, ...).
    pub item: i64,
}

/// Lifecycle of a run: `QUEUED` (created, not started) -> `RUNNING` <->
/// `PAUSED` -> `POSTPROCESSING` (every item ended) -> `COMPLETED` |
/// `COMPLETED_WITH_ERRORS` | `FAILED` | `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    Queued,
    Running,
    Paused,
    Postprocessing,
    Completed,
    CompletedWithErrors,
    Failed,
    Cancelled,
}
wire_names!(RunState {
    Queued => "QUEUED",
    Running => "RUNNING",
    Paused => "PAUSED",
    Postprocessing => "POSTPROCESSING",
    Completed => "COMPLETED",
    CompletedWithErrors => "COMPLETED_WITH_ERRORS",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl RunState {
    /// True once the run has ended (postprocessing included).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Completed
                | RunState::CompletedWithErrors
                | RunState::Failed
                | RunState::Cancelled
        )
    }
}

/// Lifecycle of a run item. `ERROR` is an infrastructure failure (the
/// job ran out of tries), never charged to the student; a query the
/// student got wrong is `DONE` with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemState {
    Queued,
    Running,
    Done,
    Error,
    Cancelled,
}
wire_names!(ItemState {
    Queued => "QUEUED",
    Running => "RUNNING",
    Done => "DONE",
    Error => "ERROR",
    Cancelled => "CANCELLED",
});

impl ItemState {
    /// True once the item has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Done | ItemState::Error | ItemState::Cancelled
        )
    }
}

/// Which of a student's attempts a run grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptRule {
    /// The last graded attempt.
    Latest,
    /// The best passing attempt (leaderboard order), else the latest.
    Best,
}
wire_names!(AttemptRule { Latest => "latest", Best => "best" });

/// What a run's results are: published at once, or kept beside the
/// published ones until `publish` (a regrade after a fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Publish,
    Shadow,
}
wire_names!(RunMode { Publish => "publish", Shadow => "shadow" });

/// What an item in ERROR does to its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemFailurePolicy {
    /// The other items go on; the run ends COMPLETED_WITH_ERRORS.
    Continue,
    /// The remaining items are cancelled; the run ends FAILED.
    FailRun,
}
wire_names!(ItemFailurePolicy { Continue => "continue", FailRun => "fail_run" });

/// The run's step after its last item: build the gradebook, call the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PostprocessingState {
    /// Items are still running.
    Pending,
    Running,
    Done,
    /// The gradebook was built but the webhook never answered 2xx.
    Failed,
}
wire_names!(PostprocessingState {
    Pending => "PENDING",
    Running => "RUNNING",
    Done => "DONE",
    Failed => "FAILED",
});
