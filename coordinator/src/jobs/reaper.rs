//! Taking leases back: from graders that leave, are cut off or go silent,
//! and from jobs past their deadline; forgetting dead graders; deleting
//! old finished jobs.

use std::time::Duration;

use chrono::Utc;
use sqlarena_common::{GraderId, GraderState};

use super::results::LeaseEndedBy;
use super::{Jobs, JobsResult};
use crate::metrics::Metrics;
use crate::store::{FailOutcome, Grader, TryCount};

/// Jobs deleted per store call by a compaction pass.
const COMPACTION_BATCH: u32 = 1_000;

impl Jobs {
    /// Settles lease take-backs: wakes graders for requeued jobs and
    /// applies failed ones.
    async fn settle(&self, outcomes: Vec<FailOutcome>) -> JobsResult<()> {
        for outcome in outcomes {
            self.settle_one(outcome, LeaseEndedBy::TakenBack).await?;
        }
        Ok(())
    }

    /// Takes back a grader's leases and settles them; `tries` says whether
    /// the try counts against each job (the grader died) or is refunded.
    ///
    /// # Errors
    /// Store failures.
    pub async fn release_grader(
        &self,
        grader_id: GraderId,
        tries: TryCount,
        reason: &str,
    ) -> JobsResult<()> {
        let outcomes = self
            .store
            .release_grader_leases(grader_id, tries, reason, Utc::now())
            .await?;
        self.settle(outcomes).await
    }

    /// Retires a grader that left or was cut off: DEAD (every later call of
    /// it is refused) and its jobs back in the queue at once, without
    /// counting a try against them.
    ///
    /// # Errors
    /// Store failures.
    pub async fn retire_grader(&self, grader: &Grader, reason: &str) -> JobsResult<()> {
        self.store
            .set_grader_state(grader.id, GraderState::Dead)
            .await?;
        self.release_grader(grader.id, TryCount::Refunded, reason)
            .await
    }

    /// One pass of the reaper: declares silent graders dead and takes back
    /// their leases, forgets graders dead for longer than the retention,
    /// takes back leases past their deadline, and applies results left
    /// unapplied.
    ///
    /// # Errors
    /// Store failures.
    pub async fn reap_once(&self) -> JobsResult<()> {
        let now = Utc::now();
        let timeout = chrono::Duration::from_std(self.config.grader_timeout)
            .unwrap_or(chrono::Duration::seconds(6));
        for grader in self.store.mark_dead_graders(now - timeout).await? {
            Metrics::incr(&self.metrics.graders_declared_dead);
            tracing::warn!(grader_id = %grader.id, name = %grader.name, "grader missed its heartbeats, declared dead");
            let reason = format!(
                "grader {} ({}) stopped heartbeating",
                grader.name, grader.hostname
            );
            self.release_grader(grader.id, TryCount::Counts, &reason)
                .await?;
        }
        let retention = chrono::Duration::from_std(self.config.dead_grader_retention)
            .unwrap_or(chrono::Duration::days(1));
        let forgotten = self.store.delete_dead_graders(now - retention).await?;
        if forgotten > 0 {
            tracing::info!(
                graders = forgotten,
                "forgot dead graders past their retention"
            );
        }
        let expired = self.store.requeue_expired(now).await?;
        self.settle(expired).await?;
        for job in self.store.list_unapplied_jobs().await? {
            self.apply_finished_job(&job).await?;
        }
        Ok(())
    }

    /// Runs the reaper until shutdown.
    pub async fn run_reaper(self) {
        let mut interval = tokio::time::interval(self.config.reaper_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            if let Err(error) = self.reap_once().await {
                tracing::warn!(%error, "reaper pass failed");
            }
        }
    }

    /// One compaction pass: deletes finished, applied jobs queued more than
    /// `--job-retention` ago, in batches. Returns how many were deleted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn compact_once(&self) -> JobsResult<u64> {
        let Ok(retention) = chrono::Duration::from_std(self.config.job_retention) else {
            return Ok(0);
        };
        if retention.is_zero() {
            return Ok(0);
        }
        let cutoff = Utc::now() - retention;
        let mut deleted = 0;
        loop {
            let batch = self
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
    pub async fn run_compaction(self) {
        if self.config.job_retention.is_zero() {
            return;
        }
        let every = (self.config.job_retention / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(600));
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            match self.compact_once().await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "finished jobs past their retention deleted")
                }
                Err(error) => tracing::warn!(%error, "job compaction failed"),
            }
        }
    }
}
