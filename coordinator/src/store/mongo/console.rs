//! The console's lists on MongoDB.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};
use sqlarena_common::{AttemptId, JobState, Lane, RunId, UserId};

use super::{assessments, attempt_from, backend, runs, user_from, Fields, MongoStore};
use crate::store::assessments::Assessment;
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore, JobCount, JobCounts, JobQuery};
use crate::store::runs::Run;
use crate::store::{first_job_id_at, Attempt, Job, Page, StoreResult, User};

impl MongoStore {
    /// The first `seq` of a job queued at or after `at`, if any: ids are
    /// UUID v7 made in `seq` order, so a time range of ids is a range of
    /// `seq`, which the listing (sorted by `seq`) can seek to.
    async fn first_seq_at(&self, at: DateTime<Utc>) -> StoreResult<Option<i64>> {
        let first = self
            .jobs()
            .find_one(doc! { "_id": { "$gte": first_job_id_at(at).to_string() } })
            .sort(doc! { "_id": 1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(backend)?;
        first
            .map(|document| Fields::new(&document, "job").i64("seq"))
            .transpose()
    }

    /// The conditions of `query`'s challenge, grader and time filters.
    async fn job_filter(&self, query: &JobQuery) -> StoreResult<Document> {
        let mut filter = Document::new();
        if let Some(challenge_id) = query.challenge_id {
            filter.insert("payload.challenge_id", challenge_id);
        }
        if let Some(grader_id) = query.grader_id {
            // Only a LEASED job has a lease; a finished one has none.
            filter.insert("lease.grader_id", grader_id.to_string());
        }
        let mut queued = Document::new();
        let mut seq = Document::new();
        if let Some(from) = query.queued_from {
            queued.insert("$gte", first_job_id_at(from).to_string());
            seq.insert("$gte", self.first_seq_at(from).await?.unwrap_or(i64::MAX));
        }
        if let Some(before) = query.queued_before {
            queued.insert("$lt", first_job_id_at(before).to_string());
            if let Some(end) = self.first_seq_at(before).await? {
                seq.insert("$lt", end);
            }
        }
        if !queued.is_empty() {
            filter.insert("_id", queued);
        }
        if !seq.is_empty() {
            filter.insert("seq", seq);
        }
        Ok(filter)
    }
}

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
        let mut filter = self.job_filter(&query).await?;
        if let Some(state) = query.state {
            filter.insert("state", state.as_str());
        }
        if let Some(lane) = query.lane {
            filter.insert("lane", lane.as_str());
        }
        if let Some(after) = query.after {
            match filter.get_mut("seq") {
                Some(Bson::Document(range)) => {
                    range.insert("$gt", after);
                }
                _ => {
                    filter.insert("seq", doc! { "$gt": after });
                }
            }
        }
        self.find_jobs(filter, i64::from(query.limit)).await
    }

    async fn count_jobs_by_value(&self, query: JobQuery, cap: u32) -> StoreResult<JobCounts> {
        // One count per cell, each on the `{state, lane}` index (with the
        // other filters' conditions), stopped after `cap + 1`.
        let filter = self.job_filter(&query).await?;
        let jobs = self.jobs();
        let mut counts = JobCounts::default();
        for state in JobState::ALL {
            for lane in Lane::ALL {
                let mut cell = filter.clone();
                cell.insert("state", state.as_str());
                cell.insert("lane", lane.as_str());
                let found = jobs
                    .count_documents(cell)
                    .limit(u64::from(cap) + 1)
                    .await
                    .map_err(backend)?;
                if found > u64::from(cap) {
                    counts.capped = true;
                }
                if found > 0 {
                    counts.cells.push(JobCount {
                        state,
                        lane,
                        jobs: found,
                    });
                }
            }
        }
        Ok(counts)
    }

    async fn list_users(&self, page: Page<UserId>) -> StoreResult<Vec<User>> {
        let filter = match page.after {
            Some(after) => doc! { "_id": { "$gt": after.0 } },
            None => Document::new(),
        };
        let documents = self
            .find_many("users", filter, doc! { "_id": 1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(user_from).collect()
    }

    async fn list_runs(
        &self,
        created_by: Option<UserId>,
        page: Page<RunId>,
    ) -> StoreResult<Vec<Run>> {
        let mut filter = Document::new();
        if let Some(user_id) = created_by {
            filter.insert("created_by", user_id.0);
        }
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after.0 });
        }
        let documents = self
            .find_many("runs", filter, doc! { "_id": -1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(runs::run_from).collect()
    }

    async fn list_assessments(
        &self,
        created_by: Option<UserId>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Assessment>> {
        let mut filter = Document::new();
        if let Some(user_id) = created_by {
            filter.insert("created_user_id", user_id.0);
        }
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many(
                "assessments",
                filter,
                doc! { "_id": -1 },
                i64::from(page.limit),
            )
            .await?;
        documents.iter().map(assessments::assessment_from).collect()
    }
}
