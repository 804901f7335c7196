//! MongoDB: students' attempts and the leaderboard they feed.

use super::*;

#[async_trait]
impl AttemptStore for MongoStore {
    async fn admit_attempt(
        &self,
        attempt: NewAttempt,
        max_unfinished: u64,
    ) -> StoreResult<Admission> {
        if max_unfinished == 0 {
            return Ok(Admission::OverCap { unfinished: 0 });
        }
        let id = AttemptId(self.next_id("attempts").await?);
        let user_id = attempt.user_id;
        let document = doc! {
            "_id": id,
            "user_id": user_id,
            "challenge_id": attempt.challenge_id,
            "challenge_version": attempt.challenge_version,
            "query": &attempt.query,
            "status": AttemptStatus::Pending.as_str(),
            "cases": Bson::Array(Vec::new()),
            "error": Bson::Null,
            "error_kind": Bson::Null,
            "job_id": Bson::Null,
            "created_at": bson_time(stored_now()),
            "finished_at": Bson::Null,
        };
        // The attempt first, then its slot: a slot always names an
        // attempt that exists, and a crash in between leaves an attempt
        // without a job that takes no slot.
        self.collection("attempts")
            .insert_one(&document)
            .await
            .map_err(backend)?;
        if self.take_slot(user_id, id, max_unfinished).await?
            || (self.free_finished_slots(user_id).await?
                && self.take_slot(user_id, id, max_unfinished).await?)
        {
            return Ok(Admission::Created(attempt_from(&document)?));
        }
        self.collection("attempts")
            .delete_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        let unfinished = self.slots_of(user_id).await?.len() as u64;
        Ok(Admission::OverCap { unfinished })
    }

    async fn get_attempt(&self, id: AttemptId) -> StoreResult<Option<Attempt>> {
        let found = self
            .collection("attempts")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(attempt_from).transpose()
    }

    async fn get_attempts(&self, ids: Vec<AttemptId>) -> StoreResult<Vec<Attempt>> {
        let documents = self
            .find_many(
                "attempts",
                doc! { "_id": { "$in": ids } },
                doc! { "_id": 1 },
                0,
            )
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn list_user_attempts(
        &self,
        user_id: UserId,
        page: Page<AttemptId>,
    ) -> StoreResult<Vec<Attempt>> {
        let mut filter = doc! { "user_id": user_id };
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many(
                "attempts",
                filter,
                doc! { "_id": -1 },
                i64::from(page.limit),
            )
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn list_passed_attempts(&self, challenge_id: ChallengeId) -> StoreResult<Vec<Attempt>> {
        let filter =
            doc! { "challenge_id": challenge_id, "status": AttemptStatus::Passed.as_str() };
        let documents = self
            .find_many("attempts", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn top_attempts(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>> {
        let documents = self
            .find_many(
                "leaderboard",
                doc! { "challenge_id": challenge_id, "version": version },
                doc! { "rank_key": 1, "time_ms": 1, "attempt_id": 1 },
                i64::from(limit),
            )
            .await?;
        documents.iter().map(leaderboard_row_from).collect()
    }

    async fn list_unfinished_challenge_attempts(
        &self,
        challenge_id: ChallengeId,
    ) -> StoreResult<Vec<Attempt>> {
        let filter = doc! {
            "challenge_id": challenge_id,
            "status": { "$in": [AttemptStatus::Pending.as_str(), AttemptStatus::Running.as_str()] },
        };
        let documents = self
            .find_many("attempts", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn count_unfinished_attempts(&self, user_id: UserId) -> StoreResult<u64> {
        let filter = doc! {
            "user_id": user_id,
            "status": { "$in": [AttemptStatus::Pending.as_str(), AttemptStatus::Running.as_str()] },
        };
        self.collection("attempts")
            .count_documents(filter)
            .await
            .map_err(backend)
    }

    async fn update_attempt(&self, id: AttemptId, update: AttemptUpdate) -> StoreResult<Attempt> {
        let attempts = self.collection("attempts");
        let (filter, set) = {
            let mut set = Document::new();
            if let Some(status) = update.status {
                set.insert("status", status.as_str());
            }
            if let Some(cases) = &update.cases {
                set.insert("cases", to_bson(cases)?);
            }
            if let Some(error) = &update.error {
                set.insert("error", error.as_str());
            }
            if let Some(kind) = update.error_kind {
                set.insert("error_kind", kind.as_str());
            }
            if let Some(job_id) = update.job_id {
                set.insert("job_id", job_id.to_string());
            }
            if let Some(finished_at) = update.finished_at {
                set.insert("finished_at", bson_time(finished_at));
            }
            // Only an unfinished attempt changes: the status is part of the
            // filter, so a concurrent final update wins cleanly. `$or`, not
            // `status: {$in}`: nx-27017 applies `{_id, status: {$in}}` to
            // another document when ids were inserted out of order (as
            // concurrent admissions do; `nx_27017_misapplies_id_with_in`).
            let unfinished = doc! { "$or": [
                { "status": AttemptStatus::Pending.as_str() },
                { "status": AttemptStatus::Running.as_str() },
            ] };
            let mut filter = doc! { "_id": id };
            filter.extend(unfinished);
            (filter, set)
        };
        if !set.is_empty() {
            attempts
                .update_one(filter, doc! { "$set": set })
                .await
                .map_err(backend)?;
        }
        let attempt = self
            .get_attempt(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {id}")))?;
        // Also when the attempt was final already: a repeat finishes what a
        // crash interrupted.
        if attempt.status.is_final() {
            self.release_slot(attempt.user_id, id).await?;
            if attempt.status == AttemptStatus::Passed {
                self.record_ranking(&attempt).await?;
            }
        }
        Ok(attempt)
    }

    async fn reopen_attempt(&self, id: AttemptId) -> StoreResult<Attempt> {
        let set = doc! {
            "status": AttemptStatus::Pending.as_str(),
            "cases": Bson::Array(Vec::new()),
            "error": Bson::Null,
            "error_kind": Bson::Null,
            "finished_at": Bson::Null,
        };
        self.collection("attempts")
            .update_one(doc! { "_id": id }, doc! { "$set": set })
            .await
            .map_err(backend)?;
        let attempt = self
            .get_attempt(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {id}")))?;
        self.take_slot(attempt.user_id, id, u64::MAX).await?;
        Ok(attempt)
    }
}
