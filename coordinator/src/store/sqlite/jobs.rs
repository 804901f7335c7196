//! SQLite: the job queue: enqueue, claim under a lease, fenced results, expiry.

use super::*;

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job> {
        self.write(move |transaction| {
            let id = JobId::new_v7();
            transaction
                .prepare_cached(
                    "INSERT INTO jobs (id, kind, lane, lane_priority, payload, state, tries, max_tries, timeout_ms, \
                     progress, applied, cancel_requested, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'QUEUED', 0, ?6, ?7, '[]', 0, 0, ?8)",
                )?
                .execute(params![
                    id.to_string(),
                    job.payload.kind().as_str(),
                    job.lane.as_str(),
                    job.lane.priority(),
                    to_json(&job.payload)?,
                    job.max_tries,
                    to_i64(job.timeout_ms, "timeout_ms")?,
                    micros(stored_now())
                ])?;
            existing_job(transaction, id)
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.call(move |connection| select_job(connection, id))
            .await
    }

    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        self.call(move |connection| {
            let limit = sql_limit(filter.limit);
            let after = filter.after.unwrap_or(0);
            // One statement per filter shape, so each can use an index
            // (`jobs_queued` or `jobs_by_lane`) instead of sorting every job.
            match (filter.state, filter.lane) {
                (Some(state), Some(lane)) => select_jobs(
                    connection,
                    "WHERE state = ?1 AND lane_priority = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                    params![state.as_str(), lane.priority(), after, limit],
                ),
                (Some(state), None) => select_jobs(
                    connection,
                    "WHERE state = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    params![state.as_str(), after, limit],
                ),
                (None, Some(lane)) => select_jobs(
                    connection,
                    "WHERE lane_priority = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    params![lane.priority(), after, limit],
                ),
                (None, None) => select_jobs(
                    connection,
                    "WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    params![after, limit],
                ),
            }
        })
        .await
    }

    async fn claim_job(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let priorities = lane_priorities(lanes);
        self.write(move |transaction| claim_next(transaction, &priorities, grader_id, now))
            .await
    }

    async fn claim_jobs(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        max: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        let priorities = lane_priorities(lanes);
        self.write(move |transaction| {
            let mut jobs = Vec::new();
            while jobs.len() < max as usize {
                match claim_next(transaction, &priorities, grader_id, now)? {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            Ok(jobs)
        })
        .await
    }

    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job> {
        let HeldLease {
            job_id, lease_id, ..
        } = held;
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            lease::check_fence(&job, held)?;
            let mut progress = job.progress;
            progress.retain(|existing| existing.test_case_id != case.test_case_id);
            progress.push(case);
            progress.sort_by_key(|existing| existing.test_case_id);
            transaction
                .prepare_cached("UPDATE jobs SET progress = ?3 WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2")?
                .execute(params![job_id.to_string(), lease_id.to_string(), to_json(&progress)?])?;
            existing_job(transaction, job_id)
        })
        .await
    }

    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        let job_id = held.job_id;
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            if lease::check_completion(&job, held, &outcome)? == CompletionCheck::AlreadyRecorded {
                return Ok(Completion::AlreadyRecorded(job));
            }
            record_completion_in(transaction, &job, held, &outcome, now)?;
            Ok(Completion::Recorded(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retry: Retry,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        let error = error.to_owned();
        self.write(move |transaction| {
            let job = existing_job(transaction, held.job_id)?;
            lease::check_fence(&job, held)?;
            let end = lease::after_failure(&job, &error, retry);
            end_lease(transaction, &job, end, now)
        })
        .await
    }

    async fn mark_job_applied(&self, job_id: JobId) -> StoreResult<()> {
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            let payload = match job.state {
                JobState::Done => pruned_payload(&job.payload),
                _ => job.payload,
            };
            transaction
                .prepare_cached(
                    "UPDATE jobs SET applied = 1, outcome = NULL, progress = '[]', payload = ?2 \
                     WHERE id = ?1 AND state IN ('DONE', 'FAILED', 'CANCELLED')",
                )?
                .execute(params![job_id.to_string(), to_json(&payload)?])?;
            Ok(())
        })
        .await
    }

    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let below = first_job_id_at(created_before).to_string();
        self.write(move |transaction| {
            let deleted: Vec<String> = transaction
                .prepare_cached(
                    "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE id < ?1 AND applied = 1 \
                     AND state IN ('DONE', 'FAILED', 'CANCELLED') LIMIT ?2) RETURNING id",
                )?
                .query_map(params![below, sql_limit(limit)], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            job_tries::delete_tries(transaction, &deleted)?;
            Ok(deleted.len() as u64)
        })
        .await
    }

    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>> {
        self.call(|connection| select_jobs(connection, UNAPPLIED_FILTER, []))
            .await
    }

    async fn release_grader_leases(
        &self,
        grader_id: GraderId,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>> {
        let reason = reason.to_owned();
        self.write(move |transaction| {
            let jobs = select_jobs(transaction, GRADER_LEASES_FILTER, [grader_id.to_string()])?;
            jobs.iter()
                .map(|job| {
                    let end = lease::after_take_back(job, tries, &reason);
                    end_lease(transaction, job, end, now)
                })
                .collect()
        })
        .await
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>> {
        self.write(move |transaction| {
            let jobs = select_jobs(transaction, EXPIRED_LEASES_FILTER, [micros(now)])?;
            jobs.iter()
                .filter_map(|job| {
                    let end = lease::after_expiry(job, now)?;
                    Some(end_lease(transaction, job, end, now))
                })
                .collect()
        })
        .await
    }

    async fn stale_leases(
        &self,
        grader_id: GraderId,
        leases: &[(JobId, LeaseId)],
    ) -> StoreResult<Vec<JobId>> {
        let leases = leases.to_vec();
        self.call(move |connection| {
            let transaction = connection.transaction()?;
            let mut stale = Vec::new();
            for (job_id, lease_id) in leases {
                let still_held = select_job(&transaction, job_id)?
                    .is_some_and(|job| lease::still_held(&job, lease_id, grader_id));
                if !still_held {
                    stale.push(job_id);
                }
            }
            Ok(stale)
        })
        .await
    }

    async fn cancel_job(
        &self,
        job_id: JobId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let reason = reason.to_owned();
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            let cancel_requested = match job.state {
                JobState::Queued => false,
                JobState::Leased => true,
                JobState::Done | JobState::Failed | JobState::Cancelled => return Ok(None),
            };
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'CANCELLED', cancel_requested = ?2, error = ?3, finished_at = ?4, \
                     applied = 0 WHERE id = ?1 AND state IN ('QUEUED', 'LEASED')",
                )?
                .execute(params![job_id.to_string(), cancel_requested, reason, micros(now)])?;
            close_lease_try(transaction, &job, TryOutcome::Cancelled, Some(&reason), now)?;
            Ok(Some(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn retry_job(&self, job_id: JobId) -> StoreResult<Option<Job>> {
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Ok(None);
            }
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'QUEUED', tries = 0, lease_id = NULL, grader_id = NULL, \
                     lease_expires_at = NULL, leased_at = NULL, finished_at = NULL, outcome = NULL, \
                     progress = '[]', applied = 0, cancel_requested = 0 \
                     WHERE id = ?1 AND state IN ('FAILED', 'CANCELLED')",
                )?
                .execute([job_id.to_string()])?;
            Ok(Some(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>> {
        self.call(|connection| {
            let transaction = connection.transaction()?;
            let mut stats = Vec::with_capacity(Lane::ALL.len());
            for lane in Lane::ALL {
                // From the counters the triggers keep (`console::SCHEMA`):
                // no count of a partial index, and none of LEASED jobs
                // through `jobs_by_lane` (every job of the lane).
                let count_in = |state: &str| -> StoreResult<u64> {
                    let count: i64 = transaction
                        .prepare_cached(
                            "SELECT COALESCE((SELECT SUM(jobs) FROM job_counts \
                             WHERE state = ?1 AND lane_priority = ?2), 0)",
                        )?
                        .query_row(params![state, lane.priority()], |row| row.get(0))?;
                    Ok(count.unsigned_abs())
                };
                let queued = count_in("QUEUED")?;
                let leased = count_in("LEASED")?;
                let oldest_queued_at = transaction
                    .prepare_cached(
                        "SELECT created_at FROM jobs WHERE state = 'QUEUED' AND lane_priority = ?1 \
                         ORDER BY seq LIMIT 1",
                    )?
                    .query_row([lane.priority()], |row| time_at(row, 0))
                    .optional()?;
                stats.push(LaneStats {
                    lane,
                    queued,
                    leased,
                    oldest_queued_at,
                });
            }
            Ok(stats)
        })
        .await
    }
}

/// Records `job`'s completion under `held` (checked by the caller): DONE
/// with its outcome kept, not yet applied, counted in its grader's
/// `jobs_done`.
pub(super) fn record_completion_in(
    transaction: &Transaction<'_>,
    job: &Job,
    held: HeldLease,
    outcome: &JobOutcome,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    transaction
        .prepare_cached(
            "UPDATE jobs SET state = 'DONE', outcome = ?3, finished_at = ?4, applied = 0 \
             WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2",
        )?
        .execute(params![
            held.job_id.to_string(),
            held.lease_id.to_string(),
            to_json(outcome)?,
            micros(now)
        ])?;
    count_job_done(transaction, job)?;
    job_tries::close_try(
        transaction,
        job.id,
        held.lease_id,
        TryOutcome::Done,
        None,
        now,
    )
}
