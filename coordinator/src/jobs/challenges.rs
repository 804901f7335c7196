//! Challenges: publishing one (with its init job), the version switch,
//! and the leaderboard as shown.

use chrono::Utc;
use sqlarena_common::{ChallengeId, GraderId, JobPayload, JobState, Lane};

use super::attempts::outdated_reason;
use super::{Jobs, JobsError, JobsResult};
use crate::leaderboard::{LeaderboardRow, LEADERBOARD_SIZE};
use crate::store::{
    AttemptErrorKind, Challenge, ChallengeUpdate, Job, JobFilter, NewChallenge, StoreError,
};

/// One leaderboard row as shown: its rank and its user's name.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedAttempt {
    /// 1 for the best.
    pub rank: usize,
    pub row: LeaderboardRow,
    pub user_full_name: String,
}

/// What a switch to a new version of a challenge did.
#[derive(Debug, Clone)]
pub struct VersionSwitch {
    /// The new version's init job.
    pub init_job: Job,
    /// Unfinished attempts of older versions cancelled.
    pub cancelled_attempts: usize,
    /// Init jobs of older versions cancelled.
    pub cancelled_inits: usize,
}

impl Jobs {
    /// Creates a challenge (version 1, PENDING) and queues its init job.
    ///
    /// # Errors
    /// Store failures.
    pub async fn create_challenge(&self, challenge: NewChallenge) -> JobsResult<(Challenge, Job)> {
        let challenge = self.store.create_challenge(challenge).await?;
        let job = self.enqueue_init(&challenge).await?;
        Ok((challenge, job))
    }

    /// Applies `update` to a challenge still at `expected_version`. When
    /// it makes a new version, queues the new version's init job and
    /// cancels what belonged to older versions (unfinished attempts, init
    /// jobs), which can no longer be graded.
    ///
    /// # Errors
    /// `Conflict` when the challenge was changed meanwhile.
    pub async fn change_challenge(
        &self,
        id: ChallengeId,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> JobsResult<(Challenge, Option<VersionSwitch>)> {
        let new_version = update.new_version.is_some();
        let challenge = match self
            .store
            .update_challenge(id, expected_version, update)
            .await
        {
            Ok(challenge) => challenge,
            Err(StoreError::Conflict(detail)) => {
                return Err(JobsError::Conflict(format!(
                    "challenge {id} was changed meanwhile ({detail}); reload it and try again"
                )))
            }
            Err(error) => return Err(error.into()),
        };
        if !new_version {
            return Ok((challenge, None));
        }
        let init_job = self.enqueue_init(&challenge).await?;
        let cancelled_attempts = self.cancel_outdated_attempts(&challenge).await?;
        let cancelled_inits = self.cancel_stale_inits(id, challenge.version).await?;
        let switch = VersionSwitch {
            init_job,
            cancelled_attempts,
            cancelled_inits,
        };
        Ok((challenge, Some(switch)))
    }

    /// Cancels the unfinished attempts of older versions of `challenge`,
    /// which could only be graded against databases that no longer match.
    /// Returns how many were cancelled.
    async fn cancel_outdated_attempts(&self, challenge: &Challenge) -> JobsResult<usize> {
        let reason = outdated_reason(challenge.version);
        let mut cancelled = 0;
        for attempt in self
            .store
            .list_unfinished_challenge_attempts(challenge.id)
            .await?
        {
            if attempt.challenge_version == challenge.version {
                continue;
            }
            match self
                .cancel_attempt(&attempt, &reason, AttemptErrorKind::Outdated)
                .await
            {
                Ok(_) => cancelled += 1,
                // It finished meanwhile.
                Err(JobsError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(cancelled)
    }

    /// Cancels the queued or running init jobs of older versions of a
    /// challenge, whose results would be ignored anyway; a grader running
    /// one learns it from its next heartbeat. Returns how many were
    /// cancelled.
    async fn cancel_stale_inits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> JobsResult<usize> {
        let reason = format!("challenge {challenge_id} moved on to version {version}");
        let mut cancelled = 0;
        for job_state in [JobState::Queued, JobState::Leased] {
            let filter = JobFilter {
                state: Some(job_state),
                lane: Some(Lane::Init),
                ..JobFilter::default()
            };
            for job in self.store.list_jobs(filter).await? {
                let JobPayload::Init(init) = &job.payload else {
                    continue;
                };
                if init.challenge_id != challenge_id || init.version >= version {
                    continue;
                }
                // None: it finished meanwhile, and its stale result is ignored.
                if let Some(job) = self.store.cancel_job(job.id, &reason, Utc::now()).await? {
                    self.apply_finished_job(&job).await?;
                    cancelled += 1;
                }
            }
        }
        Ok(cancelled)
    }

    /// Returns the leaderboard of a challenge's current version, best
    /// first, with its users' names: of every grader's results, or of
    /// `grader`'s alone (each user's best attempt that grader graded).
    ///
    /// # Errors
    /// Store failures.
    pub async fn leaderboard(
        &self,
        challenge: &Challenge,
        grader: Option<GraderId>,
    ) -> JobsResult<Vec<RankedAttempt>> {
        let rows = match grader {
            None => {
                self.store
                    .top_attempts(challenge.id, challenge.version, LEADERBOARD_SIZE)
                    .await?
            }
            Some(grader_id) => {
                self.store
                    .top_attempts_of_grader(
                        challenge.id,
                        challenge.version,
                        grader_id,
                        LEADERBOARD_SIZE,
                    )
                    .await?
            }
        };
        let mut ranked = Vec::with_capacity(rows.len());
        for (index, row) in rows.into_iter().enumerate() {
            let user_full_name = match self.store.get_user(row.user_id).await? {
                Some(user) => user.full_name,
                None => format!("user {}", row.user_id),
            };
            ranked.push(RankedAttempt {
                rank: index + 1,
                row,
                user_full_name,
            });
        }
        Ok(ranked)
    }
}
