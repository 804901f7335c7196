//! Queueing jobs, and what an admin does to one: cancel it or retry it.

use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlarena_common::{AttemptPayload, InitPayload, JobId, JobPayload, Lane, TestCaseData};

use super::{Jobs, JobsError, JobsResult};
use crate::metrics::Metrics;
use crate::store::affinity::bundle_of;
use crate::store::{Attempt, AttemptUpdate, Challenge, Job, NewJob};

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
        hasher.update(case.id.0.to_le_bytes());
        hasher.update((case.data.len() as u64).to_le_bytes());
        hasher.update(case.data.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

impl Jobs {
    /// Queues a job and wakes a grader waiting on its lane (one that holds
    /// its bundle, if one waits).
    ///
    /// # Errors
    /// Store failures.
    pub async fn enqueue(&self, job: NewJob) -> JobsResult<Job> {
        let job = self.store.enqueue_job(job).await?;
        Metrics::incr(&self.metrics.jobs_enqueued);
        self.dispatcher
            .notify_job(job.lane, bundle_of(&job.payload));
        Ok(job)
    }

    /// Queues the init job of a challenge's current version.
    ///
    /// # Errors
    /// Store failures.
    pub async fn enqueue_init(&self, challenge: &Challenge) -> JobsResult<Job> {
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
            max_tries: self.config.max_tries,
            timeout_ms: self.config.init_timeout_ms,
        };
        self.enqueue(job).await
    }

    /// Queues the grading job of an attempt on its challenge's lane and
    /// links it to the attempt.
    ///
    /// # Errors
    /// Store failures.
    pub async fn enqueue_attempt(
        &self,
        challenge: &Challenge,
        attempt: &Attempt,
    ) -> JobsResult<(Attempt, Job)> {
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
            run_item: None,
        });
        let timeout_ms = match lane {
            Lane::Slow => self.config.slow_timeout_ms,
            _ => self.config.fast_timeout_ms,
        };
        let job = self
            .enqueue(NewJob {
                lane,
                payload,
                max_tries: self.config.max_tries,
                timeout_ms,
            })
            .await?;
        let update = AttemptUpdate {
            job_id: Some(job.id),
            ..AttemptUpdate::default()
        };
        let attempt = self.store.update_attempt(attempt.id, update).await?;
        Ok((attempt, job))
    }

    /// Returns a job.
    ///
    /// # Errors
    /// `NotFound` when there is no such job.
    pub async fn job(&self, id: JobId) -> JobsResult<Job> {
        self.store
            .get_job(id)
            .await?
            .ok_or_else(|| JobsError::NotFound(format!("no job {id}")))
    }

    /// Cancels a queued or running job (an admin's call) and applies the
    /// cancellation to its challenge or attempt.
    ///
    /// # Errors
    /// `NotFound` for an unknown job, `Conflict` when it already finished.
    pub async fn cancel_job(&self, id: JobId, reason: &str) -> JobsResult<Job> {
        let existing = self.job(id).await?;
        let Some(job) = self.store.cancel_job(id, reason, Utc::now()).await? else {
            return Err(JobsError::Conflict(format!(
                "job {id} is already {}",
                existing.state
            )));
        };
        self.apply_finished_job(&job).await?;
        Ok(job)
    }

    /// Puts a FAILED or CANCELLED job back in the queue with fresh tries and
    /// reopens its attempt.
    ///
    /// # Errors
    /// `NotFound` for an unknown job; `Conflict` when it is in another
    /// state, or was made for a version of its challenge that has since
    /// changed (its grading would be against databases that no longer exist).
    pub async fn retry_job(&self, id: JobId) -> JobsResult<Job> {
        let existing = self.job(id).await?;
        if let JobPayload::Attempt(AttemptPayload {
            run_item: Some(reference),
            ..
        }) = &existing.payload
        {
            return Err(JobsError::Conflict(format!(
                "job {id} grades item {} of run {}: retry it with POST /api/v1/runs/{}/retry",
                reference.item, reference.run_id, reference.run_id
            )));
        }
        self.check_version_is_current(&existing).await?;
        let Some(job) = self.store.retry_job(id).await? else {
            return Err(JobsError::Conflict(format!(
                "job {id} is {}: only FAILED or CANCELLED jobs can be retried",
                existing.state
            )));
        };
        if let JobPayload::Attempt(attempt) = &job.payload {
            self.store.reopen_attempt(attempt.attempt_id).await?;
        }
        self.dispatcher.notify(job.lane);
        Ok(job)
    }

    /// Refuses a job made for a version of a challenge that has since
    /// changed.
    async fn check_version_is_current(&self, job: &Job) -> JobsResult<()> {
        let (challenge_id, version, what) = match &job.payload {
            JobPayload::Attempt(payload) => (
                payload.challenge_id,
                payload.challenge_version,
                format!("attempt {}", payload.attempt_id),
            ),
            JobPayload::Init(payload) => (
                payload.challenge_id,
                payload.version,
                "initialization".to_string(),
            ),
        };
        match self.store.get_challenge(challenge_id).await? {
            Some(challenge) if challenge.version == version => Ok(()),
            Some(challenge) => Err(JobsError::Conflict(format!(
                "job {} ({what}) was made for version {version} of challenge {challenge_id}, which is \
                 now at version {}: it cannot be retried; submit a new attempt instead",
                job.id, challenge.version
            ))),
            None => Err(JobsError::Conflict(format!(
                "job {}: challenge {challenge_id} no longer exists, so it cannot be retried",
                job.id
            ))),
        }
    }
}
