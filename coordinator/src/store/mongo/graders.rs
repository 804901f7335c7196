//! MongoDB: registered graders and the cluster tokens they register with.

use super::*;

#[async_trait]
impl GraderStore for MongoStore {
    async fn create_grader(&self, grader: Grader) -> StoreResult<()> {
        let seq = self.next_id("graders").await?;
        let jobs_done = i64::try_from(grader.jobs_done).map_err(|_| {
            StoreError::Backend(format!("jobs_done out of range: {}", grader.jobs_done))
        })?;
        let document = doc! {
            "_id": grader.id.to_string(),
            "seq": seq,
            "name": &grader.name,
            "hostname": &grader.hostname,
            "version": &grader.version,
            "lanes": to_bson(&grader.lanes)?,
            "slots": i64::from(grader.slots),
            "state": grader.state.as_str(),
            "token_hash": &grader.token_hash,
            "last_heartbeat": bson_time(grader.last_heartbeat),
            "last_heartbeat_ms": grader.last_heartbeat.timestamp_millis(),
            "registered_at": bson_time(grader.registered_at),
            "jobs_done": jobs_done,
            "heartbeats": 0_i64,
            "cluster_token_id": grader.cluster_token_id.map(|id| id.to_string()),
        };
        self.collection("graders")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_grader(&self, id: GraderId) -> StoreResult<Option<Grader>> {
        self.find_grader(doc! { "_id": id.to_string() }).await
    }

    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>> {
        self.find_grader(doc! { "token_hash": token_hash }).await
    }

    async fn list_graders(&self, page: Page<GraderId>) -> StoreResult<Vec<Grader>> {
        // Hyphenated v7 UUIDs sort as text in the order they were made.
        let filter = match page.after {
            Some(after) => doc! { "_id": { "$lt": after.to_string() } },
            None => doc! {},
        };
        let documents = self
            .find_many("graders", filter, doc! { "_id": -1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(grader_from).collect()
    }

    async fn touch_grader(&self, id: GraderId, now: DateTime<Utc>) -> StoreResult<Option<Grader>> {
        let touched = self
            .collection("graders")
            .find_one_and_update(
                doc! { "_id": id.to_string(), "state": { "$ne": GraderState::Dead.as_str() } },
                doc! {
                    "$set": { "last_heartbeat": bson_time(now), "last_heartbeat_ms": now.timestamp_millis() },
                    "$inc": { "heartbeats": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        touched.as_ref().map(grader_from).transpose()
    }

    async fn set_grader_state(&self, id: GraderId, state: GraderState) -> StoreResult<bool> {
        let updated = self
            .collection("graders")
            .update_one(
                doc! { "_id": id.to_string(), "state": { "$ne": GraderState::Dead.as_str() } },
                doc! { "$set": { "state": state.as_str() } },
            )
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }

    /// Finds silent graders with a range filter on the heartbeat alone (an
    /// integer copy in epoch milliseconds, as for `lease_expires_ms`),
    /// then marks each one DEAD with a write conditioned on the state and
    /// heartbeat count read, so a grader that heartbeats meanwhile, or that
    /// another coordinator already marked, is left alone. (Range and `$in`
    /// conditions together miss `$set` dates on nx-27017, test
    /// `nx_27017_range_filters_with_in_miss_set_dates`.)
    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>> {
        let silent = doc! { "last_heartbeat_ms": { "$lt": cutoff.timestamp_millis() } };
        let candidates = self
            .find_many("graders", silent, doc! { "seq": 1 }, 0)
            .await?;
        let mut dead = Vec::new();
        for candidate in &candidates {
            let grader = grader_from(candidate)?;
            if grader.state == GraderState::Dead {
                continue;
            }
            let heartbeats = Fields::new(candidate, "grader")
                .opt_i64("heartbeats")?
                .unwrap_or(0);
            let filter = doc! {
                "_id": grader.id.to_string(),
                "state": grader.state.as_str(),
                "heartbeats": heartbeats,
            };
            let marked = self
                .collection("graders")
                .find_one_and_update(
                    filter,
                    doc! { "$set": { "state": GraderState::Dead.as_str() } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?;
            if let Some(marked) = marked {
                dead.push(grader_from(&marked)?);
            }
        }
        Ok(dead)
    }

    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = self
            .collection("graders")
            .delete_many(doc! {
                "state": GraderState::Dead.as_str(),
                "last_heartbeat_ms": { "$lt": cutoff.timestamp_millis() },
            })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count)
    }

    async fn list_grader_leases(&self, grader_id: GraderId) -> StoreResult<Vec<Job>> {
        let filter =
            doc! { "state": JobState::Leased.as_str(), "lease.grader_id": grader_id.to_string() };
        self.find_jobs(filter, 0).await
    }

    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()> {
        let seq = self.next_id("cluster_tokens").await?;
        let document = doc! {
            "_id": token.id.to_string(),
            "seq": seq,
            "label": &token.label,
            "token_hash": &token.token_hash,
            "created_by": token.created_by,
            "created_at": bson_time(token.created_at),
            "revoked": token.revoked,
        };
        self.collection("cluster_tokens")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>> {
        let documents = self
            .find_many(
                "cluster_tokens",
                doc! {},
                doc! { "created_at": -1, "seq": -1 },
                0,
            )
            .await?;
        documents.iter().map(cluster_token_from).collect()
    }

    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>> {
        self.find_cluster_token(doc! { "token_hash": token_hash })
            .await
    }

    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>> {
        self.find_cluster_token(doc! { "_id": id.to_string() })
            .await
    }

    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool> {
        let updated = self
            .collection("cluster_tokens")
            .update_one(
                doc! { "_id": id.to_string() },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }
}
