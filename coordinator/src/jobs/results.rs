//! What graders report under their leases (progress, completions,
//! failures), bounding the results kept, and applying finished jobs to
//! their challenge or attempt.

use chrono::Utc;
use sqlarena_common::{
    audit, AttemptOutcome, AttemptStatus, CaseAudit, CaseResult, CaseStatus, JobId, JobOutcome,
    JobPayload, JobState, LeaseId, QueryResult, TestCaseId,
};

use super::{Jobs, JobsError, JobsResult};
use crate::metrics::Metrics;
use crate::store::{
    AttemptErrorKind, AttemptUpdate, Completion, FailOutcome, Grader, HeldLease, InitResult, Job,
    Retry, StoreError,
};

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

impl Jobs {
    /// Copies a finished job's result into its challenge or attempt, then
    /// marks the job applied. Safe to call more than once for the same job.
    ///
    /// # Errors
    /// Store failures (the reaper retries later).
    pub async fn apply_finished_job(&self, job: &Job) -> JobsResult<()> {
        let now = Utc::now();
        match (&job.payload, job.state) {
            (_, JobState::Queued | JobState::Leased) => return Ok(()),
            (JobPayload::Init(init), state_now) => {
                let result = init_result(job, state_now);
                match self
                    .store
                    .set_challenge_init(init.challenge_id, init.version, result, now)
                    .await
                {
                    Ok(true) => {
                        let audits = init_audits(job);
                        if !audits.is_empty() {
                            self.store
                                .record_init_audits(init.challenge_id, init.version, audits)
                                .await?;
                        }
                    }
                    Ok(false) => {}
                    Err(StoreError::NotFound(_)) => {
                        tracing::warn!(job_id = %job.id, challenge_id = %init.challenge_id, "finished job's challenge is gone");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            (JobPayload::Attempt(attempt), _) if attempt.run_item.is_some() => {
                if let Some(reference) = attempt.run_item {
                    self.apply_run_item(job, reference).await?;
                }
            }
            (JobPayload::Attempt(attempt), state_now) => {
                let update = attempt_result(job, state_now, now);
                match self.store.update_attempt(attempt.attempt_id, update).await {
                    Ok(_) => {}
                    // Nothing left to apply the result to.
                    Err(StoreError::NotFound(_)) => {
                        tracing::warn!(job_id = %job.id, attempt_id = %attempt.attempt_id, "finished job's attempt is gone");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(self.store.mark_job_applied(job.id).await?)
    }

    /// Records one case result posted by `grader` under its lease (the
    /// rows are kept once, in the attempt: they come with the outcome).
    /// Returns the job with its progress so far.
    ///
    /// # Errors
    /// `NotFound`, or `StaleLease` when the lease is not the grader's
    /// current one.
    pub async fn record_progress(
        &self,
        grader: &Grader,
        job_id: JobId,
        lease_id: LeaseId,
        mut case: CaseResult,
    ) -> JobsResult<Job> {
        case.actual_result = None;
        audit::stamp(&mut case.audit, grader.id, &grader.name);
        let held = held_lease(grader, job_id, lease_id);
        let recorded = self.store.record_progress(held, case).await;
        self.fenced(job_id, recorded)
    }

    /// Records the outcome `grader` posted under its lease and applies it.
    /// A repeat of a recorded completion is `AlreadyRecorded`.
    ///
    /// # Errors
    /// `NotFound`, `StaleLease`, or `Invalid` for an outcome of the wrong
    /// kind.
    pub async fn complete_job(
        &self,
        grader: &Grader,
        job_id: JobId,
        lease_id: LeaseId,
        mut outcome: JobOutcome,
    ) -> JobsResult<Completion> {
        if let JobOutcome::Attempt(attempt) = &mut outcome {
            attempt.cases.iter_mut().for_each(bound_case_result);
        }
        stamp_outcome(&mut outcome, grader);
        let held = held_lease(grader, job_id, lease_id);
        let now = Utc::now();
        // An attempt's result is applied in the same store step; an init's
        // (rare, and it touches the challenge) right after, and so is a run
        // item's (`complete_attempt_job` only records it: it goes to the
        // item, never to the attempt).
        let completion = match &outcome {
            JobOutcome::Attempt(attempt) => {
                let update = finished_attempt(attempt, now);
                self.store
                    .complete_attempt_job(held, outcome, update, now)
                    .await
            }
            JobOutcome::Init(_) => self.store.complete_job(held, outcome, now).await,
        };
        let completion = self.fenced(job_id, completion)?;
        if let Completion::Recorded(job) = &completion {
            self.observe_completion(job);
            if !job.applied {
                self.apply_finished_job(job).await?;
            }
        }
        Ok(completion)
    }

    /// Records a failure `grader` reported under its lease: the job is
    /// requeued when `retry` allows and it has tries left, else FAILED and
    /// applied.
    ///
    /// # Errors
    /// `NotFound` or `StaleLease`.
    pub async fn fail_job(
        &self,
        grader: &Grader,
        job_id: JobId,
        lease_id: LeaseId,
        error: &str,
        retry: Retry,
    ) -> JobsResult<Job> {
        let error = format!("grader {}: {error}", grader.name);
        let held = held_lease(grader, job_id, lease_id);
        let outcome = self.store.fail_job(held, &error, retry, Utc::now()).await;
        let outcome = self.fenced(job_id, outcome)?;
        self.settle_one(outcome, LeaseEndedBy::Grader).await
    }

    /// Turns the refusals of a fenced store call into the service's: a
    /// stale lease (counted), an unknown job, a contradicting outcome.
    fn fenced<T>(&self, job_id: JobId, result: Result<T, StoreError>) -> JobsResult<T> {
        result.map_err(|error| match error {
            StoreError::StaleLease(message) => {
                Metrics::incr(&self.metrics.stale_lease_rejections);
                JobsError::StaleLease(message)
            }
            StoreError::NotFound(_) => JobsError::NotFound(format!("no job {job_id}")),
            StoreError::Invalid(message) => JobsError::Invalid(message),
            other => other.into(),
        })
    }

    /// Settles a requeue or failure: wakes a grader for a requeued job,
    /// applies a failed one; logs the leases the coordinator took back.
    pub(super) async fn settle_one(
        &self,
        outcome: FailOutcome,
        ended_by: LeaseEndedBy,
    ) -> JobsResult<Job> {
        let taken_back = ended_by == LeaseEndedBy::TakenBack;
        match outcome {
            FailOutcome::Requeued(job) => {
                Metrics::incr(&self.metrics.requeues);
                if taken_back {
                    tracing::info!(job_id = %job.id, tries = job.tries, "lease taken back, job requeued");
                }
                self.dispatcher.notify(job.lane);
                Ok(job)
            }
            FailOutcome::Failed(job) => {
                Metrics::incr(&self.metrics.jobs_failed);
                self.history.record_end(&job);
                if taken_back {
                    tracing::warn!(job_id = %job.id, reason = job.error.as_deref().unwrap_or(""), "job failed");
                }
                self.apply_finished_job(&job).await?;
                Ok(job)
            }
        }
    }

    /// Counts a recorded completion in the metrics.
    fn observe_completion(&self, job: &Job) {
        Metrics::incr(&self.metrics.jobs_completed);
        self.history.record_end(job);
        if let (Some(leased_at), Some(finished_at)) = (job.leased_at, job.finished_at) {
            let seconds = (finished_at - leased_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            self.metrics.observe_job_duration(seconds);
        }
    }
}

/// Who ended a lease that brought no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseEndedBy {
    /// Its grader reported a failure.
    Grader,
    /// The coordinator took it back (the reaper, a release, a dead grader).
    TakenBack,
}

/// The lease `grader` reports under.
fn held_lease(grader: &Grader, job_id: JobId, lease_id: LeaseId) -> HeldLease {
    HeldLease {
        job_id,
        lease_id,
        grader_id: grader.id,
    }
}

/// Stamps every case audit of `outcome` with the grader that posted it
/// under its lease: the audit names the grader the coordinator knows, not
/// the one a grader may claim to be.
fn stamp_outcome(outcome: &mut JobOutcome, grader: &Grader) {
    match outcome {
        JobOutcome::Attempt(attempt) => {
            for case in &mut attempt.cases {
                audit::stamp(&mut case.audit, grader.id, &grader.name);
            }
        }
        JobOutcome::Init(init) => {
            for expected in &mut init.expected {
                audit::stamp(&mut expected.audit, grader.id, &grader.name);
            }
        }
    }
}

/// The audits of a finished init job's reference runs, per test case.
fn init_audits(job: &Job) -> Vec<(TestCaseId, CaseAudit)> {
    match &job.outcome {
        Some(JobOutcome::Init(outcome)) => outcome
            .expected
            .iter()
            .filter_map(|case| Some((case.test_case_id, case.audit.clone()?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a finished init job establishes for its challenge version.
fn init_result(job: &Job, state_now: JobState) -> InitResult {
    match (state_now, &job.outcome) {
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
    }
}

/// What a finished grading job changes in its attempt.
/// What a graded attempt's outcome makes of the attempt.
fn finished_attempt(outcome: &AttemptOutcome, now: chrono::DateTime<Utc>) -> AttemptUpdate {
    AttemptUpdate {
        status: Some(attempt_status(&outcome.cases, outcome.error.as_deref())),
        cases: Some(outcome.cases.clone()),
        error: outcome.error.clone(),
        error_kind: outcome.error.is_some().then_some(AttemptErrorKind::Query),
        finished_at: Some(now),
        ..AttemptUpdate::default()
    }
}

fn attempt_result(job: &Job, state_now: JobState, now: chrono::DateTime<Utc>) -> AttemptUpdate {
    match (state_now, &job.outcome) {
        (JobState::Done, Some(JobOutcome::Attempt(outcome))) => finished_attempt(outcome, now),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlarena_common::{Column, TestCaseId};

    fn failed_with(rows: usize, cell: &str) -> CaseResult {
        CaseResult {
            test_case_id: TestCaseId(1),
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
            audit: None,
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
