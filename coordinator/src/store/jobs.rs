//! The job queue: enqueue, claim under a lease, fenced results, expiry.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{CaseResult, JobKind, JobOutcome, JobPayload, JobState, Lane};
use sqlarena_common::{GraderId, JobId, LeaseId};

use super::{HeldLease, Retry, StoreResult, TryCount};

/// A job's current lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub lease_id: LeaseId,
    pub grader_id: GraderId,
    /// The job's deadline: past it, the lease is taken back.
    pub expires_at: DateTime<Utc>,
}

/// A unit of work for a grader.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    /// Position in the order jobs were queued (the key of job listings).
    pub seq: i64,
    pub kind: JobKind,
    pub lane: Lane,
    pub payload: JobPayload,
    pub state: JobState,
    /// Times leased so far (a clean release does not count).
    pub tries: u32,
    pub max_tries: u32,
    pub lease: Option<Lease>,
    /// How long one lease may run before it is taken back, in milliseconds.
    pub timeout_ms: u64,
    /// Per-test-case results posted as progress under the current lease.
    pub progress: Vec<CaseResult>,
    /// The final outcome, once DONE.
    pub outcome: Option<JobOutcome>,
    /// Why the job FAILED or was CANCELLED; the last failure while queued.
    pub error: Option<String>,
    /// False between recording an outcome and applying it to the domain
    /// (challenge or attempt); the reaper re-applies after a crash.
    pub applied: bool,
    /// Set when an admin or owner cancels a LEASED job, so the grader learns
    /// it from its next heartbeat.
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub leased_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to be queued.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub lane: Lane,
    pub payload: JobPayload,
    pub max_tries: u32,
    pub timeout_ms: u64,
}

/// Outcome of [`Store::complete_job`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// This call recorded the outcome; the job is DONE.
    Recorded(Job),
    /// The same lease already completed the job; nothing changed.
    AlreadyRecorded(Job),
}

/// Outcome of [`Store::fail_job`] and of lease expiry.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    /// Back in the queue for another try.
    Requeued(Job),
    /// No tries left (or not retryable): the job is FAILED.
    Failed(Job),
}

/// Queue depth and age of the oldest queued job of a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneStats {
    pub lane: Lane,
    pub queued: u64,
    pub leased: u64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// A filter for [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub lane: Option<Lane>,
    /// At most this many jobs; 0 lists every one.
    pub limit: u32,
    /// Only jobs queued after the one with this `seq` (the last of the
    /// previous page).
    pub after: Option<i64>,
}

/// What an applied DONE job keeps of its payload: the ids and names that
/// say what it was for. The SQL, test data and query are gone: the
/// challenge and the attempt keep them.
pub fn pruned_payload(payload: &JobPayload) -> JobPayload {
    match payload {
        JobPayload::Init(init) => JobPayload::Init(sqlarena_common::InitPayload {
            init: String::new(),
            solution: String::new(),
            test_cases: init
                .test_cases
                .iter()
                .map(|case| sqlarena_common::TestCaseData {
                    id: case.id,
                    data: String::new(),
                })
                .collect(),
            ..init.clone()
        }),
        JobPayload::Attempt(attempt) => JobPayload::Attempt(sqlarena_common::AttemptPayload {
            query: String::new(),
            ..attempt.clone()
        }),
    }
}

/// The smallest job id made at `at` (a UUID v7 with every random bit
/// zero): every job queued before `at` has a smaller id.
pub fn first_job_id_at(at: DateTime<Utc>) -> JobId {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10])
        .into_uuid()
        .into()
}

/// The job queue: enqueue, claim under a lease, fenced results, expiry.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Queues a job (QUEUED, tries 0) with a new v7 id.
    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job>;
    /// Returns a job.
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// Lists jobs, oldest first (by `seq`), filtered by state and lane,
    /// after `filter.after`.
    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>>;
    /// Atomically claims the next QUEUED job in `lanes` (by lane priority,
    /// then age) for `grader_id`: LEASED, tries+1, a new lease id, lease
    /// expiring at `now + timeout_ms`. Every job is claimed by one caller only.
    async fn claim_job(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>>;
    /// Claims up to `max` QUEUED jobs in `lanes` for `grader_id`, each as
    /// [`Store::claim_job`] would, in the order it would take them. The
    /// default claims them one at a time; a backend may claim them in one
    /// transaction.
    async fn claim_jobs(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        max: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::new();
        while jobs.len() < max as usize {
            match self.claim_job(grader_id, lanes, now).await? {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
        Ok(jobs)
    }
    /// Appends or replaces (by test case id) one case result under the
    /// current lease. `StaleLease` if `held` is not the job's LEASED lease
    /// or not its grader's ([`lease::check_fence`]).
    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job>;
    /// Records the outcome: LEASED with this lease -> DONE, `applied = false`,
    /// and counts the job in the lease holder's `jobs_done`. A repeat by the
    /// same lease is `AlreadyRecorded`; any other lease is `StaleLease`; an
    /// outcome of the wrong kind is `Invalid` ([`lease::check_completion`]).
    /// Nothing changes in those cases.
    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion>;
    /// A grader reports failure under its lease: requeued when `retry`
    /// allows and tries < max_tries, else FAILED with `error`. `StaleLease`
    /// as above.
    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retry: Retry,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome>;
    /// Marks a DONE/FAILED/CANCELLED job's result as applied to the domain
    /// and prunes what the domain now holds: the outcome and progress go,
    /// and a DONE job's payload becomes [`pruned_payload`] (FAILED and
    /// CANCELLED jobs keep theirs: an admin may retry them).
    async fn mark_job_applied(&self, job_id: JobId) -> StoreResult<()>;
    /// Deletes up to `limit` finished jobs whose result is applied and that
    /// were queued before `created_before` (job ids are UUID v7, so this is
    /// a range of ids); returns how many were deleted.
    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Lists finished jobs whose result is not yet applied (crash recovery).
    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>>;
    /// Takes back every lease of `grader_id` ([`lease::after_take_back`]).
    /// When the try counts (the grader died) jobs out of tries become FAILED
    /// with `reason`; refunded (clean release), tries is decremented and the
    /// job requeued.
    async fn release_grader_leases(
        &self,
        grader_id: GraderId,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>>;
    /// Takes back every LEASED job whose lease expired before `now`: requeued,
    /// or FAILED once out of tries, with a reason saying the deadline passed.
    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>>;
    /// Returns the job ids among `leases` (job id, lease id) that the grader
    /// must stop: the lease is no longer its own (requeued, finished, given
    /// to another grader) or a cancel was requested. Leases are not extended:
    /// a job's deadline is fixed when it is leased.
    async fn stale_leases(
        &self,
        grader_id: GraderId,
        leases: &[(JobId, LeaseId)],
    ) -> StoreResult<Vec<JobId>>;
    /// Cancels a QUEUED or LEASED job: QUEUED becomes CANCELLED at once;
    /// LEASED becomes CANCELLED (so its lease is stale) with
    /// `cancel_requested` set. `None` if the job is already finished.
    async fn cancel_job(
        &self,
        job_id: JobId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>>;
    /// Puts a FAILED or CANCELLED job back in the queue with tries 0.
    /// `None` if the job is in another state.
    async fn retry_job(&self, job_id: JobId) -> StoreResult<Option<Job>>;
    /// Queue depth, leases held and oldest queued job per lane (every lane
    /// is listed, even when empty).
    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>>;
}
