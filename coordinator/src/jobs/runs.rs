//! Jobs of grading-run items: what one is queued with, and applying its
//! result to the item (never to the student's attempt). Ending an item
//! counts it in its run in the same store step; the step that ends the
//! last item moves the run to POSTPROCESSING, and the runs service is
//! woken to do it.

use chrono::Utc;
use sqlarena_common::runs::{ItemFailurePolicy, RunItemRef, RunState};
use sqlarena_common::{AttemptPayload, CaseStatus, JobOutcome, JobPayload, JobState, Lane};

use super::{version_hash, Jobs, JobsResult};
use crate::store::runs::{ItemEnd, ItemResult};
use crate::store::{Attempt, Challenge, Job, NewJob};

/// Why a run item's job is cancelled when its run is paused.
pub const PAUSE_REASON: &str = "its run was paused";

impl Jobs {
    /// The job grading `attempt`'s query for item `reference` against the
    /// current version of `challenge`, on the challenge's lane.
    pub fn run_item_job(
        &self,
        challenge: &Challenge,
        attempt: &Attempt,
        reference: RunItemRef,
    ) -> NewJob {
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
            run_item: Some(reference),
        });
        let timeout_ms = match lane {
            Lane::Slow => self.config.slow_timeout_ms,
            _ => self.config.fast_timeout_ms,
        };
        NewJob {
            lane,
            payload,
            max_tries: self.config.max_tries,
            timeout_ms,
        }
    }

    /// Queues `jobs` for items of a run and wakes graders on their lanes.
    ///
    /// # Errors
    /// Store failures.
    pub async fn queue_run_items(
        &self,
        run_id: sqlarena_common::RunId,
        jobs: Vec<(i64, NewJob)>,
    ) -> JobsResult<usize> {
        let queued = self.store.queue_item_jobs(run_id, jobs).await?;
        let mut lanes: Vec<Lane> = queued.iter().map(|job| job.lane).collect();
        lanes.sort();
        lanes.dedup();
        for lane in lanes {
            self.dispatcher.notify(lane);
        }
        Ok(queued.len())
    }

    /// Applies a finished job of a run item to the item: DONE with its
    /// grade, ERROR when it ran out of tries, CANCELLED; a job cancelled
    /// because its run was paused only frees the item to be queued again.
    pub(super) async fn apply_run_item(&self, job: &Job, reference: RunItemRef) -> JobsResult<()> {
        let run_id = reference.run_id;
        if job.state == JobState::Cancelled {
            let paused = self
                .store
                .get_run(run_id)
                .await?
                .is_some_and(|run| run.state == RunState::Paused && !run.cancel_requested);
            if paused {
                self.store
                    .detach_item_job(run_id, reference.item, job.id)
                    .await?;
                return Ok(());
            }
        }
        let end = item_end(job);
        let errored = matches!(end, ItemEnd::Error(_));
        let run = self
            .store
            .finish_run_item(run_id, reference.item, job.id, end, Utc::now())
            .await?;
        let Some(run) = run else {
            return Ok(());
        };
        tracing::info!(run_id = %run_id, item = reference.item, job_id = %job.id, state = %job.state, "run item ended");
        if errored && run.spec.on_item_failure == ItemFailurePolicy::FailRun && !run.failing {
            self.store.set_run_failing(run_id).await?;
            self.run_wakeup.notify_one();
        }
        if run.state == RunState::Postprocessing {
            self.run_wakeup.notify_one();
        }
        let _ = self.run_events.send(run_id);
        Ok(())
    }
}

/// How a finished job ends its item.
fn item_end(job: &Job) -> ItemEnd {
    let grader_id = job.lease.map(|lease| lease.grader_id);
    let base = ItemResult {
        tries: job.tries,
        grader_id,
        ..ItemResult::default()
    };
    match (job.state, &job.outcome) {
        (JobState::Done, Some(JobOutcome::Attempt(outcome))) => {
            let total = match &job.payload {
                JobPayload::Attempt(payload) => payload.test_case_ids.len(),
                JobPayload::Init(_) => 0,
            };
            let status = super::attempt_status(&outcome.cases, outcome.error.as_deref());
            let grade = grade(status, &outcome.cases, total);
            ItemEnd::Graded(ItemResult {
                status: Some(status),
                score: Some(grade.score),
                execution_ms: grade.execution_ms,
                ratio: grade.ratio,
                error: outcome.error.clone(),
                ..base
            })
        }
        (JobState::Cancelled, _) => ItemEnd::Cancelled(ItemResult {
            error: Some(job.error.clone().unwrap_or_else(|| "cancelled".into())),
            ..base
        }),
        _ => ItemEnd::Error(ItemResult {
            error: Some(job.error.clone().unwrap_or_else(|| "grading failed".into())),
            ..base
        }),
    }
}

/// The numbers of a graded query, as gradebooks and run items show them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grade {
    /// Percentage of the `total` test cases passed (two decimals).
    pub score: f64,
    /// Sum of the cases' median execution times, when every case has one.
    pub execution_ms: Option<f64>,
    /// Geometric mean of the cases' ratios, when the query PASSED.
    pub ratio: Option<f64>,
}

/// Grades `cases` of a query whose status is `status`, out of `total`
/// test cases.
pub fn grade(
    status: sqlarena_common::AttemptStatus,
    cases: &[sqlarena_common::CaseResult],
    total: usize,
) -> Grade {
    let passed = cases
        .iter()
        .filter(|case| case.status == CaseStatus::Passed)
        .count();
    let score = if total == 0 {
        0.0
    } else {
        (passed as f64 * 100.0 / total as f64 * 100.0).round() / 100.0
    };
    let execution_ms: Option<f64> = cases.iter().map(|case| case.execution_ms).sum();
    let ratios: Option<Vec<f64>> = cases
        .iter()
        .map(|case| case.ratio.filter(|ratio| *ratio > 0.0))
        .collect();
    let ratio = match (status, ratios) {
        (sqlarena_common::AttemptStatus::Passed, Some(ratios)) if !ratios.is_empty() => {
            let log_sum: f64 = ratios.iter().map(|ratio| ratio.ln()).sum();
            Some((log_sum / ratios.len() as f64).exp())
        }
        _ => None,
    };
    Grade {
        score,
        execution_ms: execution_ms.filter(|_| !cases.is_empty()),
        ratio,
    }
}
