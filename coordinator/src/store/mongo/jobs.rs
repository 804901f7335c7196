//! MongoDB: the job queue: enqueue, claim under a lease, fenced results, expiry.

use super::*;

#[async_trait]
impl JobStore for MongoStore {
    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job> {
        let id = JobId::new_v7();
        let seq = self.next_id("jobs").await?;
        let timeout_ms = i64::try_from(job.timeout_ms).map_err(|_| {
            StoreError::Backend(format!("timeout_ms out of range: {}", job.timeout_ms))
        })?;
        let document = doc! {
            "_id": id.to_string(),
            "seq": seq,
            "kind": job.payload.kind().as_str(),
            "lane": job.lane.as_str(),
            "lane_priority": job.lane.priority(),
            "payload": to_bson(&job.payload)?,
            "state": JobState::Queued.as_str(),
            "tries": 0_i64,
            "max_tries": i64::from(job.max_tries),
            "lease": Bson::Null,
            "lease_expires_ms": Bson::Null,
            "timeout_ms": timeout_ms,
            "progress": Bson::Array(Vec::new()),
            "progress_rev": 0_i64,
            "outcome": Bson::Null,
            "error": Bson::Null,
            "applied": false,
            "cancel_requested": false,
            "created_at": bson_time(stored_now()),
            "leased_at": Bson::Null,
            "finished_at": Bson::Null,
        };
        self.jobs().insert_one(&document).await.map_err(backend)?;
        job_from(&document)
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let found = self
            .jobs()
            .find_one(doc! { "_id": id.to_string() })
            .await
            .map_err(backend)?;
        found.as_ref().map(job_from).transpose()
    }

    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        let mut query = Document::new();
        if let Some(state) = filter.state {
            query.insert("state", state.as_str());
        }
        if let Some(lane) = filter.lane {
            query.insert("lane", lane.as_str());
        }
        if let Some(after) = filter.after {
            query.insert("seq", doc! { "$gt": after });
        }
        self.find_jobs(query, i64::from(filter.limit)).await
    }

    /// Claims in two writes, both conditional, because the deadline depends
    /// on the claimed job's own `timeout_ms`, which a plain update cannot
    /// read (an aggregation-pipeline update could, but nx-27017 rejects
    /// those; see `nx_27017_rejects_pipeline_updates`):
    ///
    /// 1. one `findOneAndUpdate` on `{state: QUEUED, lane: {$in}}` sorted by
    ///    `{lane_priority, seq}` takes the job: LEASED, tries+1, a new lease
    ///    with a provisional deadline of `now + 60 s`. This write alone
    ///    decides who gets the job, so every job is claimed once even with
    ///    several coordinators on one database.
    /// 2. a write fenced by the new lease id sets the real deadline,
    ///    `now + timeout_ms`.
    ///
    /// Between the two, a reaper sees the provisional deadline (never an
    /// early one unless the job's timeout is over 60 s and the second write
    /// is 60 s late). If the coordinator dies in between, the lease expires
    /// after at most 60 s, or sooner when the grader is declared dead. If the
    /// lease was taken away in between (cancelled), the claim moves on to
    /// the next job.
    async fn claim_job(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        if lanes.is_empty() {
            return Ok(None);
        }
        let lanes: Vec<&str> = lanes.iter().map(|lane| lane.as_str()).collect();
        let filter = doc! { "state": JobState::Queued.as_str(), "lane": { "$in": lanes } };
        for _ in 0..MAX_CONFLICT_RETRIES {
            match self.take_queued(filter.clone(), grader_id, now).await? {
                Taken::Nothing => return Ok(None),
                Taken::Leased(job) => return Ok(Some(*job)),
                Taken::Lost => continue,
            }
        }
        Err(StoreError::Backend(
            "claim_job: every claimed job was taken away before its deadline was set".into(),
        ))
    }

    /// Replaces the whole case list in one write conditioned on the lease
    /// and on the progress revision read (optimistic concurrency), so two
    /// progress posts under one lease cannot lose each other's case. (A
    /// `$push` plus positional `$set` pair would do the same in MongoDB, but
    /// as two writes; nx-27017 also mishandles both, see
    /// `nx_27017_pushes_json_strings_and_ignores_positional_updates`.)
    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job> {
        let HeldLease {
            job_id, lease_id, ..
        } = held;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let document = self
                .jobs()
                .find_one(doc! { "_id": job_id.to_string() })
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
            let job = job_from(&document)?;
            lease::check_fence(&job, held)?;
            let revision = progress_revision(&document)?;
            let mut progress = job.progress;
            progress.retain(|existing| existing.test_case_id != case.test_case_id);
            progress.push(case.clone());
            progress.sort_by_key(|existing| existing.test_case_id);
            let filter = doc! {
                "_id": job_id.to_string(),
                "state": JobState::Leased.as_str(),
                "lease.lease_id": lease_id.to_string(),
                "progress_rev": revision,
            };
            let update = doc! {
                "$set": { "progress": to_bson(&progress)? },
                "$inc": { "progress_rev": 1_i64 },
            };
            if let Some(job) = self.update_job(filter, update).await? {
                return Ok(job);
            }
        }
        Err(StoreError::Backend(format!(
            "record_progress on job {job_id}: too many concurrent writers"
        )))
    }

    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        let job_id = held.job_id;
        let update = doc! { "$set": {
            "state": JobState::Done.as_str(),
            "outcome": to_bson(&outcome)?,
            "finished_at": bson_time(now),
            "applied": false,
            "lease_expires_ms": Bson::Null,
        } };
        // Fenced on the lease, its grader and the outcome's kind: whatever
        // misses is explained by the checks on the job as read below.
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": JobState::Leased.as_str(),
            "lease.lease_id": held.lease_id.to_string(),
            "lease.grader_id": held.grader_id.to_string(),
            "kind": lease::outcome_kind(&outcome).as_str(),
        };
        if let Some(job) = self.update_job(filter, update).await? {
            // Only the write that recorded the outcome gets here: counted once.
            if let Some(lease) = &job.lease {
                self.collection("graders")
                    .update_one(
                        doc! { "_id": lease.grader_id.to_string() },
                        doc! { "$inc": { "jobs_done": 1_i64 } },
                    )
                    .await
                    .map_err(backend)?;
            }
            self.close_try(held.lease_id, TryOutcome::Done, None, now)
                .await?;
            return Ok(Completion::Recorded(job));
        }
        let job = self.existing_job(job_id).await?;
        if lease::check_completion(&job, held, &outcome)? == CompletionCheck::AlreadyRecorded {
            return Ok(Completion::AlreadyRecorded(job));
        }
        // LEASED under this lease when read, yet the fenced write missed:
        // it changed in between; report what it is now.
        Err(StoreError::StaleLease(format!(
            "job {job_id} changed while completing it"
        )))
    }

    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retry: Retry,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let job = self.existing_job(held.job_id).await?;
            lease::check_fence(&job, held)?;
            // tries and max_tries do not change while the lease is held, so
            // the decision made on what was read stays right for the fenced
            // write.
            let end = lease::after_failure(&job, error, retry);
            if let Some(outcome) = self.end_lease(&job, &end, now).await? {
                return Ok(outcome);
            }
        }
        Err(StoreError::Backend(format!(
            "fail_job on job {}: too many concurrent writers",
            held.job_id
        )))
    }

    async fn mark_job_applied(&self, job_id: JobId) -> StoreResult<()> {
        let job = self.existing_job(job_id).await?;
        if !matches!(
            job.state,
            JobState::Done | JobState::Failed | JobState::Cancelled
        ) {
            return Ok(());
        }
        let mut set = doc! {
            "applied": true,
            "outcome": Bson::Null,
            "progress": Bson::Array(Vec::new()),
        };
        if job.state == JobState::Done {
            set.insert("payload", to_bson(&pruned_payload(&job.payload))?);
        }
        // Conditional on the state read: a finished job's state is final.
        self.jobs()
            .update_one(
                doc! { "_id": job_id.to_string(), "state": job.state.as_str() },
                doc! { "$set": set },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let below = first_job_id_at(created_before).to_string();
        let filter = doc! {
            "_id": { "$lt": below },
            "applied": true,
            "state": { "$in": finished_states() },
        };
        let found = self
            .find_many("jobs", filter, doc! { "_id": 1 }, i64::from(limit))
            .await?;
        let mut deleted = 0;
        for document in found {
            // One by one, each still conditional on being applied.
            let id = Fields::new(&document, "job").str("_id")?.to_owned();
            let result = self
                .jobs()
                .delete_one(doc! { "_id": &id, "applied": true })
                .await
                .map_err(backend)?;
            if result.deleted_count > 0 {
                self.delete_tries(&id).await?;
            }
            deleted += result.deleted_count;
        }
        Ok(deleted)
    }

    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>> {
        self.find_jobs(
            doc! { "applied": false, "state": { "$in": finished_states() } },
            0,
        )
        .await
    }

    async fn release_grader_leases(
        &self,
        grader_id: GraderId,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>> {
        let filter =
            doc! { "state": JobState::Leased.as_str(), "lease.grader_id": grader_id.to_string() };
        let mut outcomes = Vec::new();
        for job in self.find_jobs(filter, 0).await? {
            let end = lease::after_take_back(&job, tries, reason);
            outcomes.extend(self.end_lease(&job, &end, now).await?);
        }
        Ok(outcomes)
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>> {
        // Only LEASED jobs carry `lease_expires_ms`, so this one condition
        // is the whole filter (the state is checked again below, and the
        // take-back is fenced by the lease). It is a top-level integer copy
        // of `lease.expires_at` because nx-27017 compares dates written by
        // `$set` to the second only, and misses them when an `$in` joins
        // (tests `nx_27017_compares_set_dates_to_the_second` and
        // `nx_27017_range_filters_with_in_miss_set_dates`); integers
        // compare exactly everywhere.
        let filter = doc! { "lease_expires_ms": { "$lt": now.timestamp_millis() } };
        let mut outcomes = Vec::new();
        let expired = self.find_jobs(filter, 0).await?;
        for job in &expired {
            if let Some(end) = lease::after_expiry(job, now) {
                outcomes.extend(self.end_lease(job, &end, now).await?);
            }
        }
        Ok(outcomes)
    }

    async fn stale_leases(
        &self,
        grader_id: GraderId,
        leases: &[(JobId, LeaseId)],
    ) -> StoreResult<Vec<JobId>> {
        let mut stale = Vec::new();
        for &(job_id, lease_id) in leases {
            let still_held = self
                .get_job(job_id)
                .await?
                .is_some_and(|job| lease::still_held(&job, lease_id, grader_id));
            if !still_held {
                stale.push(job_id);
            }
        }
        Ok(stale)
    }

    async fn cancel_job(
        &self,
        job_id: JobId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let job = self.existing_job(job_id).await?;
            // Conditional on the state (and lease) read: a job claimed or
            // finished in between is looked at again.
            let (filter, cancel_requested) = match (job.state, job.lease) {
                (JobState::Queued, _) => (
                    doc! { "_id": job_id.to_string(), "state": JobState::Queued.as_str() },
                    false,
                ),
                (JobState::Leased, Some(lease)) => (
                    doc! {
                        "_id": job_id.to_string(),
                        "state": JobState::Leased.as_str(),
                        "lease.lease_id": lease.lease_id.to_string(),
                    },
                    true,
                ),
                (JobState::Leased, None) => {
                    return Err(StoreError::Backend(format!(
                        "job {job_id} is LEASED without a lease"
                    )))
                }
                (JobState::Done | JobState::Failed | JobState::Cancelled, _) => return Ok(None),
            };
            let update = doc! { "$set": {
                "state": JobState::Cancelled.as_str(),
                "cancel_requested": cancel_requested,
                "error": reason,
                "finished_at": bson_time(now),
                "applied": false,
                "lease_expires_ms": Bson::Null,
            } };
            if let Some(cancelled) = self.update_job(filter, update).await? {
                if let Some(lease) = job.lease.filter(|_| cancel_requested) {
                    self.close_try(lease.lease_id, TryOutcome::Cancelled, Some(reason), now)
                        .await?;
                }
                return Ok(Some(cancelled));
            }
        }
        Err(StoreError::Backend(format!(
            "cancel_job on job {job_id}: too many concurrent writers"
        )))
    }

    async fn retry_job(&self, job_id: JobId) -> StoreResult<Option<Job>> {
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": { "$in": [JobState::Failed.as_str(), JobState::Cancelled.as_str()] },
        };
        let update = doc! {
            "$set": {
                "state": JobState::Queued.as_str(),
                "tries": 0_i64,
                "lease": Bson::Null,
                "lease_expires_ms": Bson::Null,
                "leased_at": Bson::Null,
                "finished_at": Bson::Null,
                "outcome": Bson::Null,
                "progress": Bson::Array(Vec::new()),
                "applied": false,
                "cancel_requested": false,
            },
            "$inc": { "progress_rev": 1_i64 },
        };
        match self.update_job(filter, update).await? {
            Some(job) => Ok(Some(job)),
            None => self.existing_job(job_id).await.map(|_| None),
        }
    }

    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>> {
        let jobs = self.jobs();
        let mut stats = Vec::with_capacity(Lane::ALL.len());
        for lane in Lane::ALL {
            let count_in = |state: JobState| {
                jobs.count_documents(doc! { "state": state.as_str(), "lane": lane.as_str() })
            };
            let queued = count_in(JobState::Queued).await.map_err(backend)?;
            let leased = count_in(JobState::Leased).await.map_err(backend)?;
            let oldest = self
                .find_jobs(
                    doc! { "state": JobState::Queued.as_str(), "lane": lane.as_str() },
                    1,
                )
                .await?;
            stats.push(LaneStats {
                lane,
                queued,
                leased,
                oldest_queued_at: oldest.first().map(|job| job.created_at),
            });
        }
        Ok(stats)
    }
}

/// What [`MongoStore::take_queued`] did.
pub(super) enum Taken {
    /// No QUEUED job matched.
    Nothing,
    /// The job is leased to the grader, with its real deadline.
    Leased(Box<Job>),
    /// A job was taken but its lease was taken away (cancelled) before the
    /// deadline was set: look again.
    Lost,
}

impl MongoStore {
    /// Leases the first QUEUED job matching `filter` (by lane priority,
    /// then age) to `grader_id`, in the two writes [`MongoStore::claim_job`]
    /// explains.
    pub(super) async fn take_queued(
        &self,
        filter: Document,
        grader_id: GraderId,
        now: DateTime<Utc>,
    ) -> StoreResult<Taken> {
        let provisional = Lease {
            lease_id: LeaseId::new_v7(),
            grader_id,
            expires_at: now + chrono::Duration::milliseconds(PROVISIONAL_LEASE_MS),
        };
        let claim = doc! {
            "$set": {
                "state": JobState::Leased.as_str(),
                "lease": lease_document(&provisional),
                "lease_expires_ms": provisional.expires_at.timestamp_millis(),
                "leased_at": bson_time(now),
                "progress": Bson::Array(Vec::new()),
                "cancel_requested": false,
            },
            "$inc": { "tries": 1_i64, "progress_rev": 1_i64 },
        };
        let claimed = self
            .jobs()
            .find_one_and_update(filter, claim)
            .sort(doc! { "lane_priority": 1, "seq": 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        let Some(claimed) = claimed else {
            return Ok(Taken::Nothing);
        };
        let job = job_from(&claimed)?;
        let lease = Lease {
            lease_id: provisional.lease_id,
            ..lease::new_lease(job.timeout_ms, grader_id, now)
        };
        let deadline = doc! { "$set": {
            "lease": lease_document(&lease),
            "lease_expires_ms": lease.expires_at.timestamp_millis(),
        } };
        Ok(
            match self.update_leased(job.id, lease.lease_id, deadline).await? {
                Some(job) => {
                    self.open_try(&job, now).await?;
                    Taken::Leased(Box::new(job))
                }
                None => Taken::Lost,
            },
        )
    }
}
