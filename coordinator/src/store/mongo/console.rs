//! The console's lists on MongoDB.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::{attempt_from, MongoStore};
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore, JobQuery};
use crate::store::{first_job_id_at, Attempt, Job, Page, StoreResult};

#[async_trait]
impl ConsoleStore for MongoStore {
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<i64>,
    ) -> StoreResult<Vec<Attempt>> {
        // Served by the `{challenge_id, status}` index.
        let mut query = doc! { "challenge_id": filter.challenge_id };
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        if let Some(user_id) = filter.user_id {
            query.insert("user_id", user_id);
        }
        if let Some(after) = page.after {
            query.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many("attempts", query, doc! { "_id": -1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn list_jobs_matching(&self, query: JobQuery) -> StoreResult<Vec<Job>> {
        let mut filter = Document::new();
        if let Some(state) = query.state {
            filter.insert("state", state.as_str());
        }
        if let Some(lane) = query.lane {
            filter.insert("lane", lane.as_str());
        }
        if let Some(challenge_id) = query.challenge_id {
            filter.insert("payload.challenge_id", challenge_id);
        }
        if let Some(grader_id) = query.grader_id {
            // Only a LEASED job has a lease; a finished one has none.
            filter.insert("lease.grader_id", grader_id.to_string());
        }
        let mut queued = Document::new();
        if let Some(from) = query.queued_from {
            queued.insert("$gte", first_job_id_at(from).to_string());
        }
        if let Some(before) = query.queued_before {
            queued.insert("$lt", first_job_id_at(before).to_string());
        }
        if !queued.is_empty() {
            filter.insert("_id", queued);
        }
        if let Some(after) = query.after {
            filter.insert("seq", doc! { "$gt": after });
        }
        self.find_jobs(filter, i64::from(query.limit)).await
    }
}
