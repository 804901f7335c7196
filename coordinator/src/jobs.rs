//! Jobs: queueing with wake-ups for long-polling graders, applying results to
//! challenges and attempts, and the reaper that takes back leases from dead
//! graders and expired jobs.
//!
//! A result reaches the domain in two steps: the store records it on the job
//! under the lease fence (exactly once), then [`apply_finished_job`] copies it
//! into the challenge or attempt and marks the job applied. Applying is
//! idempotent, and the reaper re-applies any finished job left unapplied by a
//! crash, so nothing accepted is lost.

use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::select_all;
use sha2::{Digest, Sha256};
use sqlarena_common::{
    AttemptPayload, AttemptStatus, CaseResult, CaseStatus, ChallengeState, GraderState,
    InitPayload, JobOutcome, JobPayload, JobState, Lane, QueryResult, TestCaseData,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{
    Attempt, AttemptErrorKind, AttemptUpdate, Challenge, FailOutcome, Grader, InitResult, Job,
    JobFilter, NewJob, StoreError, StoreResult,
};

/// Wakes long-polling lease requests when a job is queued in their lanes.
///
/// Within one coordinator a queued job wakes a waiter at once. Jobs queued by
/// another coordinator sharing the store are found by re-polling every
/// `poll_interval` (short when several coordinators may share the store).
pub struct Dispatcher {
    lanes: [Notify; 3],
    poll_interval: Duration,
}

impl Dispatcher {
    /// Creates a dispatcher; `multi_coordinator` shortens the re-poll interval.
    pub fn new(multi_coordinator: bool) -> Dispatcher {
        let poll_interval = if multi_coordinator {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(500)
        };
        Dispatcher {
            lanes: [Notify::new(), Notify::new(), Notify::new()],
            poll_interval,
        }
    }

    fn lane(&self, lane: Lane) -> &Notify {
        &self.lanes[lane.priority() as usize]
    }

    /// Wakes one waiter of `lane` (or lets the next one through at once).
    pub fn notify(&self, lane: Lane) {
        self.lane(lane).notify_one();
    }
}

/// Queues a job and wakes a grader waiting on its lane.
///
/// # Errors
/// Store failures.
pub async fn enqueue(state: &AppState, job: NewJob) -> StoreResult<Job> {
    let job = state.store.enqueue_job(job).await?;
    Metrics::incr(&state.metrics.jobs_enqueued);
    state.dispatcher.notify(job.lane);
    Ok(job)
}

/// Identifies what a grader must build for a challenge version: init SQL,
/// solution and test data.
pub fn version_hash(challenge: &Challenge) -> String {
    let mut hasher = Sha256::new();
    for part in [
        challenge.id.to_string(),
        challenge.version.to_string(),
        challenge.init.clone(),
        challenge.solution.clone(),
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    for case in &challenge.test_cases {
        hasher.update(case.id.to_le_bytes());
        hasher.update((case.data.len() as u64).to_le_bytes());
        hasher.update(case.data.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Queues the init job of a challenge's current version.
///
/// # Errors
/// Store failures.
pub async fn enqueue_init(state: &AppState, challenge: &Challenge) -> StoreResult<Job> {
    let payload = JobPayload::Init(InitPayload {
        challenge_id: challenge.id,
        challenge_name: challenge.name.clone(),
        version: challenge.version,
        init: challenge.init.clone(),
        solution: challenge.solution.clone(),
        times_to_run: challenge.times_to_run,
        test_cases: challenge
            .test_cases
            .iter()
            .map(|case| TestCaseData {
                id: case.id,
                data: case.data.clone(),
            })
            .collect(),
    });
    let job = NewJob {
        lane: Lane::Init,
        payload,
        max_tries: state.config.max_tries,
        timeout_ms: state.config.init_timeout_ms,
    };
    enqueue(state, job).await
}

/// Queues the grading job of an attempt on its challenge's lane and links it
/// to the attempt.
///
/// # Errors
/// Store failures.
pub async fn enqueue_attempt(
    state: &AppState,
    challenge: &Challenge,
    attempt: &Attempt,
) -> StoreResult<(Attempt, Job)> {
    let lane = challenge.challenge_type.attempt_lane();
    let payload = JobPayload::Attempt(AttemptPayload {
        attempt_id: attempt.id,
        user_id: attempt.user_id,
        challenge_id: challenge.id,
        challenge_name: challenge.name.clone(),
        challenge_version: challenge.version,
        version_hash: version_hash(challenge),
        query: attempt.query.clone(),
        times_to_run: challenge.times_to_run,
        test_case_ids: challenge.test_cases.iter().map(|case| case.id).collect(),
    });
    let timeout_ms = match lane {
        Lane::Slow => state.config.slow_timeout_ms,
        _ => state.config.fast_timeout_ms,
    };
    let job = enqueue(
        state,
        NewJob {
            lane,
            payload,
            max_tries: state.config.max_tries,
            timeout_ms,
        },
    )
    .await?;
    let update = AttemptUpdate {
        job_id: Some(job.id),
        ..AttemptUpdate::default()
    };
    let attempt = state.store.update_attempt(attempt.id, update).await?;
    Ok((attempt, job))
}

/// Waits up to `wait` for a job in the grader's lanes and leases it to the
/// grader. Returns `None` when nothing came, the grader is draining, or the
/// coordinator is shutting down.
///
/// # Errors
/// Store failures.
pub async fn lease_next(
    state: &AppState,
    grader: &Grader,
    wait: Duration,
    shutdown: &CancellationToken,
) -> StoreResult<Option<Job>> {
    let deadline = Instant::now() + wait;
    let dispatcher = &state.dispatcher;
    let mut woken = false;
    loop {
        // The caller checked the grader on entry; after a wait it may have
        // been drained or declared dead, and then it takes nothing new.
        if woken {
            let current = state.store.get_grader(grader.id).await?;
            if current.is_none_or(|current| current.state != GraderState::Alive) {
                return Ok(None);
            }
        }
        woken = true;
        // Register for wake-ups before looking, so a job queued between the
        // look and the wait is not missed.
        let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = grader
            .lanes
            .iter()
            .map(|lane| Box::pin(dispatcher.lane(*lane).notified()))
            .collect();
        for wakeup in &mut wakeups {
            wakeup.as_mut().enable();
        }
        if let Some(job) = state
            .store
            .claim_job(grader.id, &grader.lanes, Utc::now())
            .await?
        {
            Metrics::incr(&state.metrics.leases_granted);
            return Ok(Some(job));
        }
        let now = Instant::now();
        if now >= deadline || grader.lanes.is_empty() {
            return Ok(None);
        }
        let tick = (deadline - now).min(dispatcher.poll_interval);
        tokio::select! {
            _ = select_all(wakeups) => {}
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Rows of a failed case's `actual_result` kept.
pub const MAX_ACTUAL_ROWS: usize = 50;
/// Bytes (as JSON) of a failed case's `actual_result` kept.
pub const MAX_ACTUAL_BYTES: usize = 16 * 1024;

/// Bounds what a case result keeps before it is stored: `actual_result`
/// only on a FAILED case (a passing one equals the expected result), and
/// then only its first rows, at most [`MAX_ACTUAL_ROWS`] and
/// [`MAX_ACTUAL_BYTES`] of JSON (none when even the columns exceed it).
pub fn bound_case_result(case: &mut CaseResult) {
    if case.status != CaseStatus::Failed {
        case.actual_result = None;
        return;
    }
    let Some(result) = &mut case.actual_result else {
        return;
    };
    let mut used = json_len(&QueryResult {
        rows: Vec::new(),
        ..result.clone()
    });
    let mut kept = 0;
    for row in result.rows.iter().take(MAX_ACTUAL_ROWS) {
        // A row costs its JSON and a separating comma.
        let cost = json_len(row).saturating_add(1);
        if used.saturating_add(cost) > MAX_ACTUAL_BYTES {
            break;
        }
        used += cost;
        kept += 1;
    }
    if used > MAX_ACTUAL_BYTES {
        case.actual_result = None;
    } else {
        result.rows.truncate(kept);
    }
}

fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// Derives an attempt's final status from its cases.
pub fn attempt_status(cases: &[CaseResult], error: Option<&str>) -> AttemptStatus {
    if error.is_some() || cases.iter().any(|case| case.status == CaseStatus::Error) {
        AttemptStatus::Error
    } else if !cases.is_empty() && cases.iter().all(|case| case.status == CaseStatus::Passed) {
        AttemptStatus::Passed
    } else {
        AttemptStatus::Failed
    }
}

/// Copies a finished job's result into its challenge or attempt, then marks
/// the job applied. Safe to call more than once for the same job.
///
/// # Errors
/// Store failures (the reaper retries later).
pub async fn apply_finished_job(state: &AppState, job: &Job) -> StoreResult<()> {
    let now = Utc::now();
    match (&job.payload, job.state) {
        (_, JobState::Queued | JobState::Leased) => return Ok(()),
        (JobPayload::Init(init), state_now) => {
            let result = match (state_now, &job.outcome) {
                (JobState::Done, Some(JobOutcome::Init(outcome))) if outcome.errors.is_empty() => {
                    InitResult::Ready {
                        expected: outcome
                            .expected
                            .iter()
                            .map(|case| (case.test_case_id, case.result.clone(), case.reference_ms))
                            .collect(),
                        warnings: outcome.warnings.clone(),
                    }
                }
                (JobState::Done, Some(JobOutcome::Init(outcome))) => InitResult::Failed {
                    errors: outcome.errors.clone(),
                },
                (JobState::Done, _) => InitResult::Failed {
                    errors: vec!["the grader posted a result of the wrong kind".into()],
                },
                (JobState::Cancelled, _) => InitResult::Failed {
                    errors: vec![job
                        .error
                        .clone()
                        .unwrap_or_else(|| "the init job was cancelled".into())],
                },
                _ => InitResult::Failed {
                    errors: vec![job
                        .error
                        .clone()
                        .unwrap_or_else(|| "the init job failed".into())],
                },
            };
            match state
                .store
                .set_challenge_init(init.challenge_id, init.version, result, now)
                .await
            {
                Ok(_) => {}
                Err(StoreError::NotFound(_)) => {
                    tracing::warn!(job_id = %job.id, challenge_id = init.challenge_id, "finished job's challenge is gone");
                }
                Err(error) => return Err(error),
            }
        }
        (JobPayload::Attempt(attempt), state_now) => {
            let update = match (state_now, &job.outcome) {
                (JobState::Done, Some(JobOutcome::Attempt(outcome))) => AttemptUpdate {
                    status: Some(attempt_status(&outcome.cases, outcome.error.as_deref())),
                    cases: Some(outcome.cases.clone()),
                    error: outcome.error.clone(),
                    error_kind: outcome.error.is_some().then_some(AttemptErrorKind::Query),
                    finished_at: Some(now),
                    ..AttemptUpdate::default()
                },
                (JobState::Cancelled, _) => AttemptUpdate {
                    status: Some(AttemptStatus::Cancelled),
                    cases: Some(job.progress.clone()),
                    error: Some(job.error.clone().unwrap_or_else(|| "cancelled".into())),
                    error_kind: Some(AttemptErrorKind::Cancelled),
                    finished_at: Some(now),
                    ..AttemptUpdate::default()
                },
                _ => AttemptUpdate {
                    status: Some(AttemptStatus::Error),
                    cases: Some(job.progress.clone()),
                    error: Some(job.error.clone().unwrap_or_else(|| "grading failed".into())),
                    error_kind: Some(AttemptErrorKind::Grading),
                    finished_at: Some(now),
                    ..AttemptUpdate::default()
                },
            };
            match state.store.update_attempt(attempt.attempt_id, update).await {
                Ok(_) => {}
                // Nothing left to apply the result to.
                Err(StoreError::NotFound(_)) => {
                    tracing::warn!(job_id = %job.id, attempt_id = attempt.attempt_id, "finished job's attempt is gone");
                }
                Err(error) => return Err(error),
            }
        }
    }
    state.store.mark_job_applied(job.id).await
}

/// Returns the attempt as a client should see it now: while its job runs,
/// the status is RUNNING and the cases are those posted so far.
///
/// # Errors
/// Store failures.
pub async fn live_attempt(state: &AppState, mut attempt: Attempt) -> StoreResult<Attempt> {
    if attempt.status.is_final() {
        return Ok(attempt);
    }
    if let Some(job_id) = attempt.job_id {
        if let Some(job) = state.store.get_job(job_id).await? {
            if job.state == JobState::Leased {
                attempt.status = AttemptStatus::Running;
            }
            if attempt.cases.is_empty() {
                attempt.cases = job.progress;
            }
        }
    }
    Ok(attempt)
}

/// Loads the challenge of `attempt` with the test cases of the version the
/// attempt was made against (the store keeps them after the challenge
/// changes), so an old attempt shows its own cases.
///
/// # Errors
/// Store failures.
pub async fn attempt_challenge(
    state: &AppState,
    attempt: &Attempt,
) -> StoreResult<Option<Challenge>> {
    let Some(mut challenge) = state.store.get_challenge(attempt.challenge_id).await? else {
        return Ok(None);
    };
    if challenge.version != attempt.challenge_version {
        challenge.test_cases = state
            .store
            .list_test_cases(challenge.id, attempt.challenge_version)
            .await?;
    }
    Ok(Some(challenge))
}

/// Cancels an unfinished attempt: a queued job is cancelled at once, a
/// running one is taken back and its grader told to stop at its next
/// heartbeat. `kind` is what students are told of `reason`.
///
/// # Errors
/// `Conflict` when the attempt is already final.
pub async fn cancel_attempt(
    state: &AppState,
    attempt: &Attempt,
    reason: &str,
    kind: AttemptErrorKind,
) -> ApiResult<Attempt> {
    if attempt.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "attempt {} is already {}",
            attempt.id, attempt.status
        )));
    }
    let cancelled_job = match attempt.job_id {
        Some(job_id) => state.store.cancel_job(job_id, reason, Utc::now()).await?,
        None => None,
    };
    // The attempt is finished here, with its kind; applying the cancelled
    // job afterwards finds it final and only marks the job applied.
    let updated = state
        .store
        .update_attempt(
            attempt.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Cancelled),
                cases: cancelled_job.as_ref().map(|job| job.progress.clone()),
                error: Some(reason.to_string()),
                error_kind: Some(kind),
                finished_at: Some(Utc::now()),
                ..AttemptUpdate::default()
            },
        )
        .await?;
    if let Some(job) = cancelled_job {
        apply_finished_job(state, &job).await?;
    }
    Ok(updated)
}

/// Why an attempt of an older version of a challenge was cancelled.
fn outdated_reason(version: i64) -> String {
    format!(
        "the challenge changed (now version {version}) before this attempt was graded; \
         submit it again once the challenge is READY"
    )
}

/// Cancels the unfinished attempts of older versions of `challenge`, which
/// could only be graded against databases that no longer match. Returns
/// how many were cancelled.
///
/// # Errors
/// Store failures.
pub async fn cancel_outdated_attempts(state: &AppState, challenge: &Challenge) -> ApiResult<usize> {
    let reason = outdated_reason(challenge.version);
    let mut cancelled = 0;
    for attempt in state
        .store
        .list_unfinished_challenge_attempts(challenge.id)
        .await?
    {
        if attempt.challenge_version == challenge.version {
            continue;
        }
        match cancel_attempt(state, &attempt, &reason, AttemptErrorKind::Outdated).await {
            Ok(_) => cancelled += 1,
            // It finished meanwhile.
            Err(ApiError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(cancelled)
}

/// Cancels an attempt just queued if its challenge moved to another
/// version meanwhile. A change cancels the unfinished attempts it lists,
/// but an attempt created while the change ran can come after that list;
/// looking at the challenge again once the attempt is stored closes the
/// gap: either the change's list holds the attempt or this sees the new
/// version.
///
/// # Errors
/// Store failures.
pub async fn cancel_if_outdated(state: &AppState, attempt: Attempt) -> ApiResult<Attempt> {
    let Some(challenge) = state.store.get_challenge(attempt.challenge_id).await? else {
        return Ok(attempt);
    };
    if challenge.version == attempt.challenge_version {
        return Ok(attempt);
    }
    let reason = outdated_reason(challenge.version);
    match cancel_attempt(state, &attempt, &reason, AttemptErrorKind::Outdated).await {
        Ok(cancelled) => Ok(cancelled),
        // The change's own sweep got there first.
        Err(ApiError::Conflict(_)) => Ok(state
            .store
            .get_attempt(attempt.id)
            .await?
            .unwrap_or(attempt)),
        Err(error) => Err(error),
    }
}

/// Cancels the queued or running init jobs of older versions of a
/// challenge, whose results would be ignored anyway; a grader running one
/// learns it from its next heartbeat. Returns how many were cancelled.
///
/// # Errors
/// Store failures.
pub async fn cancel_stale_inits(
    state: &AppState,
    challenge_id: i64,
    version: i64,
) -> StoreResult<usize> {
    let reason = format!("challenge {challenge_id} moved on to version {version}");
    let mut cancelled = 0;
    for job_state in [JobState::Queued, JobState::Leased] {
        let filter = JobFilter {
            state: Some(job_state),
            lane: Some(Lane::Init),
            ..JobFilter::default()
        };
        for job in state.store.list_jobs(filter).await? {
            let JobPayload::Init(init) = &job.payload else {
                continue;
            };
            if init.challenge_id != challenge_id || init.version >= version {
                continue;
            }
            // None: it finished meanwhile, and its stale result is ignored.
            if let Some(job) = state.store.cancel_job(job.id, &reason, Utc::now()).await? {
                apply_finished_job(state, &job).await?;
                cancelled += 1;
            }
        }
    }
    Ok(cancelled)
}

/// Reports requeues and failures from lease take-backs: wakes graders for
/// requeued jobs and applies failed ones.
async fn settle(state: &AppState, outcomes: Vec<FailOutcome>) -> StoreResult<()> {
    for outcome in outcomes {
        match outcome {
            FailOutcome::Requeued(job) => {
                Metrics::incr(&state.metrics.requeues);
                tracing::info!(job_id = %job.id, tries = job.tries, "lease taken back, job requeued");
                state.dispatcher.notify(job.lane);
            }
            FailOutcome::Failed(job) => {
                Metrics::incr(&state.metrics.jobs_failed);
                tracing::warn!(job_id = %job.id, reason = job.error.as_deref().unwrap_or(""), "job failed");
                apply_finished_job(state, &job).await?;
            }
        }
    }
    Ok(())
}

/// Takes back a grader's leases and settles them.
///
/// # Errors
/// Store failures.
pub async fn release_grader(
    state: &AppState,
    grader_id: Uuid,
    count_try: bool,
    reason: &str,
) -> StoreResult<()> {
    let outcomes = state
        .store
        .release_grader_leases(grader_id, count_try, reason, Utc::now())
        .await?;
    settle(state, outcomes).await
}

/// One pass of the reaper: declares silent graders dead and takes back their
/// leases, forgets graders dead for longer than the retention, takes back
/// leases past their deadline, and applies results left unapplied.
///
/// # Errors
/// Store failures.
pub async fn reap_once(state: &AppState) -> StoreResult<()> {
    let now = Utc::now();
    let timeout = chrono::Duration::from_std(state.config.grader_timeout())
        .unwrap_or(chrono::Duration::seconds(6));
    for grader in state.store.mark_dead_graders(now - timeout).await? {
        Metrics::incr(&state.metrics.graders_declared_dead);
        tracing::warn!(grader_id = %grader.id, name = %grader.name, "grader missed its heartbeats, declared dead");
        let reason = format!(
            "grader {} ({}) stopped heartbeating",
            grader.name, grader.hostname
        );
        release_grader(state, grader.id, true, &reason).await?;
    }
    let retention = chrono::Duration::from_std(state.config.dead_grader_retention())
        .unwrap_or(chrono::Duration::days(1));
    let forgotten = state.store.delete_dead_graders(now - retention).await?;
    if forgotten > 0 {
        tracing::info!(
            graders = forgotten,
            "forgot dead graders past their retention"
        );
    }
    let expired = state.store.requeue_expired(now).await?;
    settle(state, expired).await?;
    for job in state.store.list_unapplied_jobs().await? {
        apply_finished_job(state, &job).await?;
    }
    Ok(())
}

/// Runs the reaper until shutdown.
pub async fn run_reaper(state: AppState, shutdown: CancellationToken) {
    let mut interval =
        tokio::time::interval(Duration::from_millis(state.config.reaper_interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = reap_once(&state).await {
            tracing::warn!(%error, "reaper pass failed");
        }
    }
}

/// Jobs deleted per store call by a compaction pass.
const COMPACTION_BATCH: u32 = 1_000;

/// One compaction pass: deletes finished, applied jobs queued more than
/// `--job-retention` ago, in batches. Returns how many were deleted.
///
/// # Errors
/// Store failures.
pub async fn compact_once(state: &AppState) -> StoreResult<u64> {
    let retention = state.config.job_retention;
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return Ok(0);
    };
    if retention.is_zero() {
        return Ok(0);
    }
    let cutoff = Utc::now() - retention;
    let mut deleted = 0;
    loop {
        let batch = state
            .store
            .delete_finished_jobs(cutoff, COMPACTION_BATCH)
            .await?;
        deleted += batch;
        if batch < u64::from(COMPACTION_BATCH) {
            return Ok(deleted);
        }
    }
}

/// Runs compaction until shutdown, every quarter of the retention (at
/// least every 10 minutes, at most every 100 ms).
pub async fn run_compaction(state: AppState, shutdown: CancellationToken) {
    if state.config.job_retention.is_zero() {
        return;
    }
    let every = (state.config.job_retention / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(600));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match compact_once(&state).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "finished jobs past their retention deleted"),
            Err(error) => tracing::warn!(%error, "job compaction failed"),
        }
    }
}

/// Returns true if an attempt may be created for `challenge` now.
///
/// # Errors
/// `Conflict` when the challenge is not READY, `Forbidden` once it expired.
pub fn check_accepts_attempts(challenge: &Challenge) -> ApiResult<()> {
    match challenge.state {
        ChallengeState::Ready => {}
        ChallengeState::Pending => {
            return Err(ApiError::Conflict(format!(
                "challenge {} is not ready yet: its databases are being built, try again shortly",
                challenge.id
            )))
        }
        ChallengeState::Failed => {
            return Err(ApiError::Conflict(format!(
                "challenge {} failed to initialize and accepts no attempts",
                challenge.id
            )))
        }
    }
    if challenge.expires_at <= Utc::now() {
        return Err(ApiError::Forbidden(format!(
            "challenge {} expired at {}",
            challenge.id, challenge.expires_at
        )));
    }
    Ok(())
}

/// Counts a recorded completion in the metrics.
pub fn observe_completion(state: &AppState, job: &Job) {
    Metrics::incr(&state.metrics.jobs_completed);
    if let (Some(leased_at), Some(finished_at)) = (job.leased_at, job.finished_at) {
        let seconds = (finished_at - leased_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0) as f64
            / 1e6;
        state.metrics.observe_job_duration(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlarena_common::Column;

    fn failed_with(rows: usize, cell: &str) -> CaseResult {
        CaseResult {
            test_case_id: 1,
            status: CaseStatus::Failed,
            execution_ms: None,
            min_ms: None,
            reference_ms: None,
            ratio: None,
            actual_result: Some(QueryResult {
                columns: vec![Column {
                    name: "a".into(),
                    type_name: "text".into(),
                }],
                rows: (0..rows).map(|_| vec![json!(cell)]).collect(),
                ordered: false,
            }),
            diff: None,
            error: None,
            timing: None,
        }
    }

    #[test]
    fn failed_cases_keep_a_bounded_actual_result_and_others_none() {
        let mut many = failed_with(200, "x");
        bound_case_result(&mut many);
        assert_eq!(many.actual_result.unwrap().rows.len(), MAX_ACTUAL_ROWS);
        let mut wide = failed_with(50, &"w".repeat(1000));
        bound_case_result(&mut wide);
        let wide = wide.actual_result.unwrap();
        assert!(wide.rows.len() < 50 && !wide.rows.is_empty());
        assert!(serde_json::to_vec(&wide).unwrap().len() <= MAX_ACTUAL_BYTES);
        let mut huge_cell = failed_with(1, &"h".repeat(MAX_ACTUAL_BYTES));
        bound_case_result(&mut huge_cell);
        assert_eq!(huge_cell.actual_result.unwrap().rows.len(), 0);
        let mut passed = failed_with(3, "x");
        passed.status = CaseStatus::Passed;
        bound_case_result(&mut passed);
        assert_eq!(passed.actual_result, None);
    }
}
