//! What the store keeps of grading runs: the run (its spec, state and
//! fan-in counters), its items (one per student), the webhook deliveries
//! made for it, and each professor's webhook secret.
//!
//! The fan-in: [`RunStore::finish_run_item`] ends an item and counts it in
//! its run in one store step, and the step that counts the last item moves
//! the run to `POSTPROCESSING`; postprocessing is then claimed by exactly
//! one coordinator ([`RunStore::claim_postprocessing`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::runs::{
    AttemptRule, ItemFailurePolicy, ItemState, PostprocessingState, RunMode, RunState,
};
use sqlarena_common::{
    AttemptId, AttemptStatus, ChallengeId, GraderId, JobId, Lane, RunId, UserId,
};
use uuid::Uuid;

use super::{Job, NewJob, StoreResult};

/// Whom a run grades: every student who attempted the challenge, or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunTargets {
    /// `"all"`.
    All(AllTargets),
    /// A list of user ids.
    Users(Vec<UserId>),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AllTargets {
    All,
}

/// What a professor asked for when creating a run (kept as asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub challenge_id: ChallengeId,
    pub targets: RunTargets,
    pub attempt: AttemptRule,
    pub mode: RunMode,
    pub on_item_failure: ItemFailurePolicy,
    pub webhook_url: Option<String>,
}

/// Items of a run by how they ended, and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub total: u64,
    pub done: u64,
    pub error: u64,
    pub cancelled: u64,
}

impl RunCounts {
    /// Items that have ended, in any way.
    pub fn ended(&self) -> u64 {
        self.done + self.error + self.cancelled
    }
}

/// A grading run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub spec: RunSpec,
    /// The challenge version the items are graded against.
    pub challenge_version: i64,
    pub created_by: UserId,
    pub idempotency_key: Option<String>,
    pub state: RunState,
    pub counts: RunCounts,
    /// Cancel asked for: the remaining items are being cancelled.
    pub cancel_requested: bool,
    /// An item ended in ERROR under `fail_run`: the run ends FAILED.
    pub failing: bool,
    pub postprocessing: PostprocessingState,
    /// The gradebook (CSV), once postprocessing built it.
    pub gradebook: Option<String>,
    /// Whether the run's results are the published ones (publish mode, or
    /// a shadow run once published).
    pub published: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub spec: RunSpec,
    pub challenge_version: i64,
    pub created_by: UserId,
    pub idempotency_key: Option<String>,
    /// One per target, in item order.
    pub items: Vec<NewRunItem>,
    /// Start at once (RUNNING) rather than wait for a start (QUEUED).
    pub start: bool,
}

/// One target of a new run; without an attempt the item is DONE at once,
/// with no score and a note saying why.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRunItem {
    pub user_id: UserId,
    pub attempt_id: Option<AttemptId>,
}

/// Where run items sit in the queue. A job's `lane_priority` orders the
/// claims: live jobs have their lane's priority (0 to 2); a run item has
/// `BATCH_PRIORITY_BASE + 4 * round + lane priority`, so every live job of
/// a lane is claimed before any run item (the batch share of the queue),
/// and among run items the lower round goes first. Each professor's items
/// get consecutive rounds from the later of where their last run ended and
/// the lowest round still queued, so runs of different professors are
/// served in turn (round-robin) and a professor's second run queues behind
/// their first.
pub const BATCH_PRIORITY_BASE: i64 = 4;

/// The claim priority of a run item on `lane` in `round`.
pub fn batch_priority(lane: Lane, round: i64) -> i64 {
    BATCH_PRIORITY_BASE + 4 * round + lane.priority()
}

/// The round of a run item's claim priority.
pub fn batch_round(priority: i64) -> i64 {
    (priority - BATCH_PRIORITY_BASE).div_euclid(4)
}

/// The note of an item whose student has no attempt to grade.
pub const NO_ATTEMPT_NOTE: &str = "no attempt to grade: the student made none that finished";

/// A graded item's result (every field optional on the way in: an item
/// not yet graded stores `{}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ItemResult {
    /// The grade, as an attempt's status (PASSED, FAILED, ERROR for a
    /// query the grader rejected).
    pub status: Option<AttemptStatus>,
    /// Percentage of the test cases passed.
    pub score: Option<f64>,
    /// Sum of the cases' median execution times.
    pub execution_ms: Option<f64>,
    /// Geometric mean of the cases' ratios, when every case passed.
    pub ratio: Option<f64>,
    /// Why the item is in ERROR or CANCELLED, or why the query was rejected.
    pub error: Option<String>,
    pub tries: u32,
    pub grader_id: Option<GraderId>,
}

/// One item of a run: a student and the attempt graded for them.
#[derive(Debug, Clone, PartialEq)]
pub struct RunItem {
    pub run_id: RunId,
    /// 1, 2, ... in the order of the run's targets.
    pub item: i64,
    pub user_id: UserId,
    pub attempt_id: Option<AttemptId>,
    /// The item's current job, if queued.
    pub job_id: Option<JobId>,
    /// QUEUED until the item ends (RUNNING is shown from its job).
    pub state: ItemState,
    pub result: ItemResult,
    pub note: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How an item ends.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemEnd {
    /// Its job finished: DONE with this result.
    Graded(ItemResult),
    /// Its job failed out of tries: ERROR (infrastructure, not the student's).
    Error(ItemResult),
    Cancelled(ItemResult),
}

/// One call of a run's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub run_id: RunId,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The HTTP status answered, if any.
    pub status_code: Option<u16>,
    /// What went wrong (no answer, or a non-2xx status).
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Delivery {
    /// True when the receiver answered 2xx.
    pub fn succeeded(&self) -> bool {
        self.status_code
            .is_some_and(|code| (200..300).contains(&code))
    }
}

/// Runs, their items and deliveries, webhook secrets.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run and its items (ids from the run sequence, items
    /// numbered 1..n in order); items without an attempt are DONE at once
    /// with [`NO_ATTEMPT_NOTE`]. With an `idempotency_key` its creator
    /// already used, nothing is created and that run is returned with
    /// `false`. A started run whose items all ended at creation is
    /// POSTPROCESSING.
    async fn create_run(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<(Run, bool)>;
    /// Returns a run.
    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>>;
    /// Lists runs in RUNNING, PAUSED or POSTPROCESSING (recovery at startup
    /// and by the sweep).
    async fn list_active_runs(&self) -> StoreResult<Vec<Run>>;
    /// QUEUED -> RUNNING (POSTPROCESSING when every item already ended);
    /// `None` when the run is in another state.
    async fn start_run(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>>;
    /// RUNNING -> PAUSED (`paused`) or PAUSED -> RUNNING; `None` when the
    /// run is not in the state to leave.
    async fn set_run_paused(&self, id: RunId, paused: bool) -> StoreResult<Option<Run>>;
    /// Asks for a QUEUED, RUNNING or PAUSED run to be cancelled: marks it,
    /// and ends its QUEUED items that have no job as CANCELLED (counted).
    /// `None` when the run is already past those states.
    async fn request_run_cancel(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>>;
    /// Marks a RUNNING run as failing (`fail_run` after an item ERROR).
    async fn set_run_failing(&self, id: RunId) -> StoreResult<()>;
    /// Lists QUEUED items without a job, in item order, at most `limit`.
    async fn list_unqueued_items(&self, run_id: RunId, limit: u32) -> StoreResult<Vec<RunItem>>;
    /// Queues `jobs` (as the jobs store would, in one step where the backend
    /// can) and links each to its item, for items still QUEUED without a job
    /// of a RUNNING run that is not being cancelled, on the batch share of
    /// the queue in the run creator's next rounds ([`batch_priority`]).
    /// Returns the jobs queued.
    async fn queue_item_jobs(
        &self,
        run_id: RunId,
        jobs: Vec<(i64, NewJob)>,
    ) -> StoreResult<Vec<Job>>;
    /// Ends a QUEUED item whose current job is `job_id` and counts it in its
    /// run in the same step; the step counting the last item moves a
    /// RUNNING or PAUSED run to POSTPROCESSING. Returns the run as updated,
    /// or `None` when nothing changed (ended already, or the item has
    /// another job).
    async fn finish_run_item(
        &self,
        run_id: RunId,
        item: i64,
        job_id: JobId,
        end: ItemEnd,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Run>>;
    /// Unlinks a QUEUED item from its job `job_id` (the job was cancelled by
    /// a pause), so it is queued again on resume. False when the item has
    /// another job or ended.
    async fn detach_item_job(&self, run_id: RunId, item: i64, job_id: JobId) -> StoreResult<bool>;
    /// Lists a run's items in item order after `after`, at most `limit`
    /// (0: all), only those in `state` when given (RUNNING: QUEUED items
    /// whose job is LEASED; QUEUED: the others not ended).
    async fn list_run_items(
        &self,
        run_id: RunId,
        state: Option<ItemState>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RunItem>>;
    /// Counts the run's items whose job is LEASED.
    async fn count_running_items(&self, run_id: RunId) -> StoreResult<u64>;
    /// How many QUEUED jobs of the lane are ahead of the run's first queued
    /// job; `None` when the run has none queued.
    async fn run_queue_position(&self, run_id: RunId) -> StoreResult<Option<u64>>;
    /// Requeues a final run's items in ERROR (QUEUED, no job), uncounts
    /// them, and moves the run back to RUNNING with postprocessing PENDING.
    /// `None` when the run is not final or has no item in ERROR.
    async fn retry_run_errors(&self, id: RunId) -> StoreResult<Option<Run>>;
    /// Claims the postprocessing of a POSTPROCESSING run whose claim is
    /// free or expired, until `until`, under `token`. Claims of the same
    /// run by several callers: one wins until its claim expires.
    async fn claim_postprocessing(
        &self,
        id: RunId,
        token: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Run>>;
    /// Ends postprocessing claimed under `token`: stores the gradebook,
    /// the postprocessing state and the run's final state. False when the
    /// claim was lost.
    async fn finish_postprocessing(
        &self,
        id: RunId,
        token: Uuid,
        gradebook: String,
        postprocessing: PostprocessingState,
        state: RunState,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Publishes a finished shadow run (COMPLETED or COMPLETED_WITH_ERRORS,
    /// not yet published): its results become the published ones. `None`
    /// when it is not such a run.
    async fn publish_run(&self, id: RunId) -> StoreResult<Option<Run>>;
    /// The published, finished run of a challenge with the highest id
    /// other than `except`: the results a shadow run is compared with.
    async fn latest_published_run(
        &self,
        challenge_id: ChallengeId,
        except: RunId,
    ) -> StoreResult<Option<Run>>;
    /// Records a webhook delivery.
    async fn record_delivery(&self, delivery: Delivery) -> StoreResult<()>;
    /// Lists a run's deliveries, oldest first.
    async fn list_deliveries(&self, run_id: RunId) -> StoreResult<Vec<Delivery>>;
    /// Returns the user's webhook secret, creating it from `fresh` when the
    /// user has none; `true` when it was created now (shown once).
    async fn webhook_secret(&self, user_id: UserId, fresh: String) -> StoreResult<(String, bool)>;
    /// Recounts a run's ended items from the items themselves when none is
    /// left QUEUED and its counters say otherwise (a backend whose fan-in
    /// is two writes may lose the second in a crash), then fans in.
    /// Returns the run as it is.
    async fn recount_run(&self, id: RunId) -> StoreResult<Option<Run>>;
    /// Lists a challenge's attempts that finished graded (PASSED, FAILED,
    /// ERROR), oldest first, of `query.users` only when given: what a run
    /// chooses from. Their cases' ratios only when `query.ratios`.
    async fn list_gradable_attempts(
        &self,
        query: GradableQuery,
    ) -> StoreResult<Vec<GradableAttempt>>;
}

/// Which attempts of a challenge a run chooses from.
#[derive(Debug, Clone, PartialEq)]
pub struct GradableQuery {
    pub challenge_id: ChallengeId,
    /// Only these users' attempts (a run of listed students); every
    /// student's when `None`.
    pub users: Option<Vec<UserId>>,
    /// Read each attempt's cases for their ratios (the `best` rule needs
    /// them, `latest` does not).
    pub ratios: bool,
}

/// An attempt as a run chooses it: who made it, how it ended and, when
/// asked for, the ratios of its cases (those that have one).
#[derive(Debug, Clone, PartialEq)]
pub struct GradableAttempt {
    pub id: AttemptId,
    pub user_id: UserId,
    pub status: AttemptStatus,
    pub ratios: Vec<f64>,
}

/// The ratios of the cases of an attempt stored as JSON text (its other
/// fields are skipped, not built).
pub fn ratios_of_cases(cases: &str) -> serde_json::Result<Vec<f64>> {
    #[derive(Deserialize)]
    struct Ratio {
        ratio: Option<f64>,
    }
    let cases: Vec<Ratio> = serde_json::from_str(cases)?;
    Ok(cases.into_iter().filter_map(|case| case.ratio).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_priorities_come_after_live_lanes_in_rounds() {
        for lane in Lane::ALL {
            assert!(batch_priority(lane, 0) > Lane::Slow.priority());
            for round in [0, 1, 7, 1_000_000] {
                let priority = batch_priority(lane, round);
                assert_eq!(batch_round(priority), round);
                assert_eq!(priority % 4, lane.priority(), "the lane stays readable");
            }
        }
        assert!(batch_priority(Lane::Slow, 0) < batch_priority(Lane::Init, 1));
    }
}
