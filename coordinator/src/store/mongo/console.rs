//! The console's lists on MongoDB.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use sqlarena_common::{AttemptId, JobState};

use super::{attempt_from, backend, Fields, MongoStore};
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore, JobQuery, JobTimes};
use crate::store::{first_job_id_at, Attempt, Job, Page, StoreResult};

#[async_trait]
impl ConsoleStore for MongoStore {
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<AttemptId>,
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

    async fn list_job_times(
        &self,
        queued_from: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<JobTimes>> {
        let filter = doc! { "_id": { "$gte": first_job_id_at(queued_from).to_string() } };
        let jobs = self.jobs();
        let mut find = jobs
            .find(filter)
            .sort(doc! { "_id": 1 })
            .projection(doc! { "state": 1, "created_at": 1, "leased_at": 1, "finished_at": 1 });
        if limit > 0 {
            find = find.limit(i64::from(limit));
        }
        let documents: Vec<Document> = find
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        documents
            .iter()
            .map(|document| {
                let fields = Fields::new(document, "job");
                let state = fields.str("state")?;
                Ok(JobTimes {
                    state: JobState::parse(state)
                        .ok_or_else(|| fields.invalid("state", format!("unknown {state:?}")))?,
                    created_at: fields.time("created_at")?,
                    leased_at: fields.opt_time("leased_at")?,
                    finished_at: fields.opt_time("finished_at")?,
                })
            })
            .collect()
    }
}
