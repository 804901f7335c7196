//! Attempts: submitting one (admission under the per-user cap, then its
//! grading job), how it looks while graded, and cancelling it.

use chrono::Utc;
use sqlarena_common::{AttemptStatus, ChallengeState, JobState, UserId};

use super::{Jobs, JobsError, JobsResult};
use crate::store::{
    Admission, Attempt, AttemptErrorKind, AttemptUpdate, Challenge, Job, NewAttempt,
};

/// Why an attempt of an older version of a challenge was cancelled.
pub(super) fn outdated_reason(version: i64) -> String {
    format!(
        "the challenge changed (now version {version}) before this attempt was graded; \
         submit it again once the challenge is READY"
    )
}

/// Checks that an attempt may be created for `challenge` now.
///
/// # Errors
/// `Conflict` when the challenge is not READY, `Closed` once it expired.
pub fn check_accepts_attempts(challenge: &Challenge) -> JobsResult<()> {
    match challenge.state {
        ChallengeState::Ready => {}
        ChallengeState::Pending => {
            return Err(JobsError::Conflict(format!(
                "challenge {} is not ready yet: its databases are being built, try again shortly",
                challenge.id
            )))
        }
        ChallengeState::Failed => {
            return Err(JobsError::Conflict(format!(
                "challenge {} failed to initialize and accepts no attempts",
                challenge.id
            )))
        }
    }
    if challenge.expires_at <= Utc::now() {
        return Err(JobsError::Closed(format!(
            "challenge {} expired at {}",
            challenge.id, challenge.expires_at
        )));
    }
    Ok(())
}

impl Jobs {
    /// Submits `user_id`'s query for `challenge`: admits the attempt under
    /// the per-user cap of unfinished attempts, queues its grading job, and
    /// cancels it at once if the challenge moved to another version
    /// meanwhile.
    ///
    /// # Errors
    /// `Conflict`/`Closed` when the challenge accepts no attempts,
    /// `OverCap` when the user has too many being graded.
    pub async fn submit_attempt(
        &self,
        challenge: &Challenge,
        user_id: UserId,
        query: String,
    ) -> JobsResult<(Attempt, Job)> {
        check_accepts_attempts(challenge)?;
        let new_attempt = NewAttempt {
            user_id,
            challenge_id: challenge.id,
            challenge_version: challenge.version,
            query,
        };
        let cap = self.config.max_unfinished_attempts;
        let attempt = match self.store.admit_attempt(new_attempt, cap).await? {
            Admission::Created(attempt) => attempt,
            Admission::OverCap { unfinished } => {
                return Err(JobsError::OverCap { unfinished, cap })
            }
        };
        let (attempt, job) = self.enqueue_attempt(challenge, &attempt).await?;
        let attempt = self.cancel_if_outdated(attempt).await?;
        Ok((attempt, job))
    }

    /// Returns the attempt as a client should see it now: while its job
    /// runs, the status is RUNNING and the cases are those posted so far.
    ///
    /// # Errors
    /// Store failures.
    pub async fn live_attempt(&self, mut attempt: Attempt) -> JobsResult<Attempt> {
        if attempt.status.is_final() {
            return Ok(attempt);
        }
        if let Some(job_id) = attempt.job_id {
            if let Some(job) = self.store.get_job(job_id).await? {
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

    /// Loads the challenge of `attempt` with the test cases of the version
    /// the attempt was made against (the store keeps them after the
    /// challenge changes), so an old attempt shows its own cases.
    ///
    /// # Errors
    /// Store failures.
    pub async fn attempt_challenge(&self, attempt: &Attempt) -> JobsResult<Option<Challenge>> {
        let Some(mut challenge) = self.store.get_challenge(attempt.challenge_id).await? else {
            return Ok(None);
        };
        if challenge.version != attempt.challenge_version {
            challenge.test_cases = self
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
        &self,
        attempt: &Attempt,
        reason: &str,
        kind: AttemptErrorKind,
    ) -> JobsResult<Attempt> {
        if attempt.status.is_final() {
            return Err(JobsError::Conflict(format!(
                "attempt {} is already {}",
                attempt.id, attempt.status
            )));
        }
        let cancelled_job = match attempt.job_id {
            Some(job_id) => self.store.cancel_job(job_id, reason, Utc::now()).await?,
            None => None,
        };
        // The attempt is finished here, with its kind; applying the
        // cancelled job afterwards finds it final and only marks the job
        // applied.
        let updated = self
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
            self.apply_finished_job(&job).await?;
        }
        Ok(updated)
    }

    /// Cancels an attempt just queued if its challenge moved to another
    /// version meanwhile. A change cancels the unfinished attempts it lists,
    /// but an attempt created while the change ran can come after that
    /// list; looking at the challenge again once the attempt is stored
    /// closes the gap: either the change's list holds the attempt or this
    /// sees the new version.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cancel_if_outdated(&self, attempt: Attempt) -> JobsResult<Attempt> {
        let Some(challenge) = self.store.get_challenge(attempt.challenge_id).await? else {
            return Ok(attempt);
        };
        if challenge.version == attempt.challenge_version {
            return Ok(attempt);
        }
        let reason = outdated_reason(challenge.version);
        match self
            .cancel_attempt(&attempt, &reason, AttemptErrorKind::Outdated)
            .await
        {
            Ok(cancelled) => Ok(cancelled),
            // The change's own sweep got there first.
            Err(JobsError::Conflict(_)) => {
                Ok(self.store.get_attempt(attempt.id).await?.unwrap_or(attempt))
            }
            Err(error) => Err(error),
        }
    }
}
