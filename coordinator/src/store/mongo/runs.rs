//! Grading runs in MongoDB: `runs` (one document per run, with its fan-in
//! counters), `run_items` (`_id` "RUN:ITEM"), `run_keys` (idempotency
//! keys), `run_deliveries` and `webhook_secrets`.
//!
//! Every write is a single-document conditional write. Ending an item is
//! two of them: the item (conditional on it being QUEUED under that job,
//! so only one caller ends it) and then `$inc` of its run's counter (whose
//! answer says whether it was the last). A crash between the two leaves a
//! counter short; [`RunStore::recount_run`] (run by the sweep when no item
//! is left QUEUED) recounts from the items. Spec and results are kept as
//! JSON text, times compared as integer milliseconds (nx-27017 quirks, see
//! `mongo.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use sqlarena_common::runs::{ItemState, PostprocessingState, RunMode, RunState};
use sqlarena_common::{AttemptId, AttemptStatus, ChallengeId, JobId, JobState, RunId, UserId};
use uuid::Uuid;

use super::super::runs::{
    batch_priority, batch_round, Delivery, GradableAttempt, GradableQuery, ItemEnd, ItemResult,
    NewRun, Run, RunCounts, RunItem, RunStore, BATCH_PRIORITY_BASE, NO_ATTEMPT_NOTE,
};
use super::super::{Job, NewJob, StoreError, StoreResult};
use super::{backend, bson_time, job_from, stored_now, to_bson, Fields, MongoStore};

/// Indexes of the runs collections (created with the others).
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![
        ("runs", doc! { "state": 1 }),
        ("runs", doc! { "challenge_id": 1 }),
        ("run_items", doc! { "run_id": 1, "state": 1, "item": 1 }),
        ("run_items", doc! { "run_id": 1, "item": 1 }),
        ("run_deliveries", doc! { "run_id": 1, "at_ms": 1 }),
        ("jobs", doc! { "payload.run_item.run_id": 1, "state": 1 }),
    ]
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Backend(format!("serializing to JSON: {error}")))
}

fn from_json<T: serde::de::DeserializeOwned>(fields: &Fields<'_>, key: &str) -> StoreResult<T> {
    serde_json::from_str(fields.str(key)?).map_err(|error| fields.invalid(key, error))
}

fn count(fields: &Fields<'_>, key: &str) -> StoreResult<u64> {
    let value = fields.i64(key)?;
    u64::try_from(value).map_err(|_| fields.invalid(key, "negative"))
}

pub(super) fn run_from(document: &Document) -> StoreResult<Run> {
    let fields = Fields::new(document, "run");
    Ok(Run {
        id: RunId(fields.i64("_id")?),
        spec: from_json(&fields, "spec")?,
        challenge_version: fields.i64("challenge_version")?,
        created_by: UserId(fields.i64("created_by")?),
        idempotency_key: fields.opt_str("idempotency_key")?,
        state: fields.parsed("state", RunState::parse)?,
        counts: RunCounts {
            total: count(&fields, "total")?,
            done: count(&fields, "done")?,
            error: count(&fields, "errors")?,
            cancelled: count(&fields, "cancelled")?,
        },
        cancel_requested: fields.bool("cancel_requested")?,
        failing: fields.bool("failing")?,
        postprocessing: fields.parsed("postprocessing", PostprocessingState::parse)?,
        gradebook: fields.opt_str("gradebook")?,
        published: fields.bool("published")?,
        created_at: fields.time("created_at")?,
        started_at: fields.opt_time("started_at")?,
        finished_at: fields.opt_time("finished_at")?,
    })
}

fn item_from(document: &Document) -> StoreResult<RunItem> {
    let fields = Fields::new(document, "run item");
    Ok(RunItem {
        run_id: RunId(fields.i64("run_id")?),
        item: fields.i64("item")?,
        user_id: UserId(fields.i64("user_id")?),
        attempt_id: fields.opt_i64("attempt_id")?.map(AttemptId),
        job_id: fields.opt_uuid("job_id")?.map(JobId),
        state: fields.parsed("state", ItemState::parse)?,
        result: from_json(&fields, "result")?,
        note: fields.opt_str("note")?,
        finished_at: fields.opt_time("finished_at")?,
    })
}

fn delivery_from(document: &Document) -> StoreResult<Delivery> {
    let fields = Fields::new(document, "delivery");
    Ok(Delivery {
        id: fields.uuid("_id")?,
        run_id: RunId(fields.i64("run_id")?),
        attempt: u32::try_from(fields.i64("attempt")?).unwrap_or(0),
        at: fields.time("at")?,
        status_code: fields
            .opt_i64("status_code")?
            .and_then(|code| u16::try_from(code).ok()),
        error: fields.opt_str("error")?,
        duration_ms: u64::try_from(fields.i64("duration_ms")?).unwrap_or(0),
    })
}

fn item_key(run_id: RunId, item: i64) -> String {
    format!("{run_id}:{item}")
}

/// `state` is one of `states` (MongoDB's `$in`, written as `$or`: see
/// `nx_27017_misapplies_id_with_in`).
fn state_in(states: &[&str]) -> Document {
    let options: Vec<Bson> = states
        .iter()
        .map(|state| Bson::Document(doc! { "state": *state }))
        .collect();
    doc! { "$or": options }
}

/// The counter of items that end as `state`.
fn counter(state: ItemState) -> &'static str {
    match state {
        ItemState::Error => "errors",
        ItemState::Cancelled => "cancelled",
        _ => "done",
    }
}

impl MongoStore {
    async fn find_run(&self, filter: Document) -> StoreResult<Option<Run>> {
        let found = self
            .collection("runs")
            .find_one(filter)
            .await
            .map_err(backend)?;
        found.as_ref().map(run_from).transpose()
    }

    async fn update_run(&self, filter: Document, update: Document) -> StoreResult<Option<Run>> {
        let updated = self
            .collection("runs")
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        updated.as_ref().map(run_from).transpose()
    }

    /// Moves a RUNNING or PAUSED run whose items all ended to POSTPROCESSING.
    async fn fan_in(&self, run: Run) -> StoreResult<Run> {
        if run.counts.ended() < run.counts.total
            || !matches!(run.state, RunState::Running | RunState::Paused)
        {
            return Ok(run);
        }
        let mut filter = state_in(&["RUNNING", "PAUSED"]);
        filter.insert("_id", run.id.0);
        let moved = self
            .update_run(filter, doc! { "$set": { "state": "POSTPROCESSING" } })
            .await?;
        match moved {
            Some(run) => Ok(run),
            None => self
                .find_run(doc! { "_id": run.id.0 })
                .await?
                .ok_or_else(|| StoreError::Backend(format!("run {} vanished", run.id))),
        }
    }

    async fn count_items(&self, filter: Document) -> StoreResult<u64> {
        self.collection("run_items")
            .count_documents(filter)
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl RunStore for MongoStore {
    async fn create_run(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<(Run, bool)> {
        let id = RunId(self.next_id("runs").await?);
        if let Some(key) = &run.idempotency_key {
            let key_id = format!("{}:{key}", run.created_by);
            let reserved = self
                .collection("run_keys")
                .insert_one(doc! { "_id": &key_id, "run_id": id.0 })
                .await
                .map_err(backend);
            match reserved {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => {
                    let found = self
                        .collection("run_keys")
                        .find_one(doc! { "_id": &key_id })
                        .await
                        .map_err(backend)?
                        .ok_or_else(|| StoreError::Backend("run key vanished".into()))?;
                    let existing = RunId(Fields::new(&found, "run key").i64("run_id")?);
                    return match self.get_run(existing).await? {
                        Some(existing) => Ok((existing, false)),
                        None => Err(StoreError::Conflict(format!(
                            "a run with idempotency key {key:?} is being created: try again"
                        ))),
                    };
                }
                Err(error) => return Err(error),
            }
        }
        let now = bson_time(now);
        let mut items = Vec::with_capacity(run.items.len());
        let mut done = 0_i64;
        for (index, item) in run.items.iter().enumerate() {
            let number = index as i64 + 1;
            let ended = item.attempt_id.is_none();
            done += i64::from(ended);
            items.push(doc! {
                "_id": item_key(id, number),
                "run_id": id.0,
                "item": number,
                "user_id": item.user_id.0,
                "attempt_id": item.attempt_id.map(|attempt| attempt.0),
                "job_id": Bson::Null,
                "state": if ended { "DONE" } else { "QUEUED" },
                "result": "{}",
                "note": ended.then_some(NO_ATTEMPT_NOTE),
                "finished_at": if ended { Bson::DateTime(now) } else { Bson::Null },
            });
        }
        for chunk in items.chunks(1000) {
            self.collection("run_items")
                .insert_many(chunk.to_vec())
                .await
                .map_err(backend)?;
        }
        let document = doc! {
            "_id": id.0,
            "spec": json(&run.spec)?,
            "challenge_id": run.spec.challenge_id.0,
            "challenge_version": run.challenge_version,
            "created_by": run.created_by.0,
            "idempotency_key": run.idempotency_key.clone(),
            "state": if run.start { "RUNNING" } else { "QUEUED" },
            "total": run.items.len() as i64,
            "done": done,
            "errors": 0_i64,
            "cancelled": 0_i64,
            "cancel_requested": false,
            "failing": false,
            "postprocessing": "PENDING",
            "pp_token": Bson::Null,
            "pp_until_ms": Bson::Null,
            "gradebook": Bson::Null,
            "published": run.spec.mode == RunMode::Publish,
            "created_at": now,
            "started_at": if run.start { Bson::DateTime(now) } else { Bson::Null },
            "finished_at": Bson::Null,
        };
        self.collection("runs")
            .insert_one(&document)
            .await
            .map_err(backend)?;
        let created = self.fan_in(run_from(&document)?).await?;
        Ok((created, true))
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.find_run(doc! { "_id": id.0 }).await
    }

    async fn list_active_runs(&self) -> StoreResult<Vec<Run>> {
        let documents = self
            .find_many(
                "runs",
                state_in(&["RUNNING", "PAUSED", "POSTPROCESSING"]),
                doc! { "_id": 1 },
                0,
            )
            .await?;
        documents.iter().map(run_from).collect()
    }

    async fn start_run(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>> {
        let started = self
            .update_run(
                doc! { "_id": id.0, "state": "QUEUED" },
                doc! { "$set": { "state": "RUNNING", "started_at": bson_time(now) } },
            )
            .await?;
        match started {
            Some(run) => Ok(Some(self.fan_in(run).await?)),
            None => Ok(None),
        }
    }

    async fn set_run_paused(&self, id: RunId, paused: bool) -> StoreResult<Option<Run>> {
        let (from, to) = if paused {
            ("RUNNING", "PAUSED")
        } else {
            ("PAUSED", "RUNNING")
        };
        self.update_run(
            doc! { "_id": id.0, "state": from, "cancel_requested": false },
            doc! { "$set": { "state": to } },
        )
        .await
    }

    async fn request_run_cancel(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>> {
        let Some(run) = self.get_run(id).await? else {
            return Ok(None);
        };
        if !matches!(
            run.state,
            RunState::Queued | RunState::Running | RunState::Paused
        ) {
            return Ok(None);
        }
        let state = match run.state {
            RunState::Queued => RunState::Running,
            other => other,
        };
        let marked = self
            .update_run(
                doc! { "_id": id.0, "state": run.state.as_str() },
                doc! { "$set": {
                    "cancel_requested": true,
                    "state": state.as_str(),
                    "started_at": bson_time(run.started_at.unwrap_or(now)),
                } },
            )
            .await?;
        if marked.is_none() {
            return Ok(None);
        }
        let result = json(&ItemResult {
            error: Some("cancelled before it was graded".into()),
            ..ItemResult::default()
        })?;
        let cancelled = self
            .collection("run_items")
            .update_many(
                doc! { "run_id": id.0, "state": "QUEUED", "job_id": Bson::Null },
                doc! { "$set": {
                    "state": "CANCELLED",
                    "result": result,
                    "finished_at": bson_time(now),
                } },
            )
            .await
            .map_err(backend)?
            .modified_count;
        let run = self
            .update_run(
                doc! { "_id": id.0 },
                doc! { "$inc": { "cancelled": cancelled as i64 } },
            )
            .await?
            .ok_or_else(|| StoreError::Backend(format!("run {id} vanished")))?;
        Ok(Some(self.fan_in(run).await?))
    }

    async fn set_run_failing(&self, id: RunId) -> StoreResult<()> {
        self.collection("runs")
            .update_one(doc! { "_id": id.0 }, doc! { "$set": { "failing": true } })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_unqueued_items(&self, run_id: RunId, limit: u32) -> StoreResult<Vec<RunItem>> {
        let documents = self
            .find_many(
                "run_items",
                doc! { "run_id": run_id.0, "state": "QUEUED", "job_id": Bson::Null },
                doc! { "item": 1 },
                i64::from(limit),
            )
            .await?;
        documents.iter().map(item_from).collect()
    }

    async fn queue_item_jobs(
        &self,
        run_id: RunId,
        jobs: Vec<(i64, NewJob)>,
    ) -> StoreResult<Vec<Job>> {
        let feeding = self
            .find_run(doc! { "_id": run_id.0, "state": "RUNNING", "cancel_requested": false })
            .await?;
        if feeding.is_none() || jobs.is_empty() {
            return Ok(Vec::new());
        }
        let created_by = feeding.map_or(0, |run| run.created_by.0);
        let first = self.first_round(created_by).await?;
        // Each item is linked to its job before the job is inserted, so no
        // grader can end a job its item does not name yet. A crash between
        // the two leaves an item naming a job that does not exist: it stays
        // QUEUED until the run is cancelled (a known gap of this backend).
        let mut documents = Vec::with_capacity(jobs.len());
        for (round, (item, job)) in (first..).zip(&jobs) {
            let seq = self.next_id("jobs").await?;
            let timeout_ms = i64::try_from(job.timeout_ms).map_err(|_| {
                StoreError::Backend(format!("timeout_ms out of range: {}", job.timeout_ms))
            })?;
            documents.push((
                *item,
                doc! {
                    "_id": Uuid::now_v7().to_string(),
                    "seq": seq,
                    "kind": job.payload.kind().as_str(),
                    "lane": job.lane.as_str(),
                    "lane_priority": batch_priority(job.lane, round),
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
                },
            ));
        }
        let mut queued = Vec::with_capacity(documents.len());
        for (item, document) in documents {
            let job = job_from(&document)?;
            let linked = self
                .collection("run_items")
                .update_one(
                    doc! {
                        "_id": item_key(run_id, item),
                        "state": "QUEUED",
                        "job_id": Bson::Null,
                    },
                    doc! { "$set": { "job_id": job.id.to_string() } },
                )
                .await
                .map_err(backend)?;
            if linked.modified_count == 0 {
                continue;
            }
            self.jobs().insert_one(&document).await.map_err(backend)?;
            queued.push(job);
        }
        self.collection("run_rounds")
            .update_one(
                doc! { "_id": created_by },
                doc! { "$max": { "next_round": first + jobs.len() as i64 } },
            )
            .upsert(true)
            .await
            .map_err(backend)?;
        Ok(queued)
    }

    async fn finish_run_item(
        &self,
        run_id: RunId,
        item: i64,
        job_id: JobId,
        end: ItemEnd,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Run>> {
        let (state, result) = match end {
            ItemEnd::Graded(result) => (ItemState::Done, result),
            ItemEnd::Error(result) => (ItemState::Error, result),
            ItemEnd::Cancelled(result) => (ItemState::Cancelled, result),
        };
        let ended = self
            .collection("run_items")
            .update_one(
                doc! {
                    "_id": item_key(run_id, item),
                    "job_id": job_id.to_string(),
                    "state": "QUEUED",
                },
                doc! { "$set": {
                    "state": state.as_str(),
                    "result": json(&result)?,
                    "finished_at": bson_time(now),
                } },
            )
            .await
            .map_err(backend)?;
        if ended.modified_count == 0 {
            return Ok(None);
        }
        let run = self
            .update_run(
                doc! { "_id": run_id.0 },
                doc! { "$inc": { counter(state): 1_i64 } },
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
        Ok(Some(self.fan_in(run).await?))
    }

    async fn detach_item_job(&self, run_id: RunId, item: i64, job_id: JobId) -> StoreResult<bool> {
        let detached = self
            .collection("run_items")
            .update_one(
                doc! {
                    "_id": item_key(run_id, item),
                    "job_id": job_id.to_string(),
                    "state": "QUEUED",
                },
                doc! { "$set": { "job_id": Bson::Null } },
            )
            .await
            .map_err(backend)?;
        Ok(detached.modified_count > 0)
    }

    async fn list_run_items(
        &self,
        run_id: RunId,
        state: Option<ItemState>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RunItem>> {
        let leased = match state {
            Some(ItemState::Running | ItemState::Queued) => Some(self.leased_items(run_id).await?),
            _ => None,
        };
        let mut filter = doc! { "run_id": run_id.0, "item": { "$gt": after.unwrap_or(0) } };
        match state {
            Some(ItemState::Running | ItemState::Queued) => {
                filter.insert("state", "QUEUED");
            }
            Some(other) => {
                filter.insert("state", other.as_str());
            }
            None => {}
        }
        let wanted = match (state, &leased) {
            (Some(ItemState::Running), Some(leased)) => {
                let items: Vec<i64> = leased.iter().copied().collect();
                filter.insert("item", doc! { "$in": items, "$gt": after.unwrap_or(0) });
                None
            }
            (Some(ItemState::Queued), Some(leased)) => Some(leased.clone()),
            _ => None,
        };
        let mut items = Vec::new();
        let collection = self.collection("run_items");
        let mut cursor = collection
            .find(filter)
            .sort(doc! { "item": 1 })
            .await
            .map_err(backend)?;
        while cursor.advance().await.map_err(backend)? {
            let document = cursor.deserialize_current().map_err(backend)?;
            let item = item_from(&document)?;
            if wanted
                .as_ref()
                .is_some_and(|leased| leased.contains(&item.item))
            {
                continue;
            }
            items.push(item);
            if limit > 0 && items.len() >= limit as usize {
                break;
            }
        }
        Ok(items)
    }

    async fn count_running_items(&self, run_id: RunId) -> StoreResult<u64> {
        Ok(self.leased_items(run_id).await?.len() as u64)
    }

    async fn run_queue_position(&self, run_id: RunId) -> StoreResult<Option<u64>> {
        let first = self
            .find_many(
                "jobs",
                doc! { "payload.run_item.run_id": run_id.0, "state": "QUEUED" },
                doc! { "lane_priority": 1, "seq": 1 },
                1,
            )
            .await?;
        let Some(first) = first.first() else {
            return Ok(None);
        };
        let priority = Fields::new(first, "job").i64("lane_priority")?;
        let job = job_from(first)?;
        let ahead = self
            .jobs()
            .count_documents(doc! {
                "state": "QUEUED",
                "lane": job.lane.as_str(),
                "$or": [
                    { "lane_priority": { "$lt": priority } },
                    { "lane_priority": priority, "seq": { "$lt": job.seq } },
                ],
            })
            .await
            .map_err(backend)?;
        Ok(Some(ahead))
    }

    async fn retry_run_errors(&self, id: RunId) -> StoreResult<Option<Run>> {
        let Some(run) = self.get_run(id).await? else {
            return Err(StoreError::NotFound(format!("run {id}")));
        };
        if !run.state.is_final() || run.state == RunState::Cancelled || run.counts.error == 0 {
            return Ok(None);
        }
        let reopened = self
            .update_run(
                doc! { "_id": id.0, "state": run.state.as_str() },
                doc! { "$set": {
                    "state": "RUNNING",
                    "failing": false,
                    "postprocessing": "PENDING",
                    "pp_token": Bson::Null,
                    "pp_until_ms": Bson::Null,
                    "finished_at": Bson::Null,
                } },
            )
            .await?;
        if reopened.is_none() {
            return Ok(None);
        }
        let retried = self
            .collection("run_items")
            .update_many(
                doc! { "run_id": id.0, "state": "ERROR" },
                doc! { "$set": {
                    "state": "QUEUED",
                    "job_id": Bson::Null,
                    "result": "{}",
                    "finished_at": Bson::Null,
                } },
            )
            .await
            .map_err(backend)?
            .modified_count;
        self.update_run(
            doc! { "_id": id.0 },
            doc! { "$inc": { "errors": -(retried as i64) } },
        )
        .await
    }

    async fn claim_postprocessing(
        &self,
        id: RunId,
        token: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Run>> {
        let filter = doc! {
            "_id": id.0,
            "state": "POSTPROCESSING",
            "$or": [
                { "pp_until_ms": Bson::Null },
                { "pp_until_ms": { "$lt": now.timestamp_millis() } },
                { "pp_token": token.to_string() },
            ],
        };
        self.update_run(
            filter,
            doc! { "$set": {
                "pp_token": token.to_string(),
                "pp_until_ms": until.timestamp_millis(),
                "postprocessing": "RUNNING",
            } },
        )
        .await
    }

    async fn finish_postprocessing(
        &self,
        id: RunId,
        token: Uuid,
        gradebook: String,
        postprocessing: PostprocessingState,
        state: RunState,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let finished = self
            .collection("runs")
            .update_one(
                doc! { "_id": id.0, "state": "POSTPROCESSING", "pp_token": token.to_string() },
                doc! { "$set": {
                    "gradebook": gradebook,
                    "postprocessing": postprocessing.as_str(),
                    "state": state.as_str(),
                    "finished_at": bson_time(now),
                    "pp_until_ms": Bson::Null,
                } },
            )
            .await
            .map_err(backend)?;
        Ok(finished.modified_count > 0)
    }

    async fn publish_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        let Some(run) = self.get_run(id).await? else {
            return Ok(None);
        };
        if run.published
            || !matches!(
                run.state,
                RunState::Completed | RunState::CompletedWithErrors
            )
        {
            return Ok(None);
        }
        self.update_run(
            doc! { "_id": id.0, "state": run.state.as_str(), "published_ms": Bson::Null },
            doc! { "$set": { "published": true, "published_ms": Utc::now().timestamp_millis() } },
        )
        .await
    }

    async fn latest_published_run(
        &self,
        challenge_id: ChallengeId,
        except: RunId,
    ) -> StoreResult<Option<Run>> {
        // `published` may read back as 1 on nx-27017 once `$set`: filter the
        // finished runs of the challenge and decide here.
        let mut filter = state_in(&["COMPLETED", "COMPLETED_WITH_ERRORS"]);
        filter.insert("challenge_id", challenge_id.0);
        let documents = self
            .find_many("runs", filter, doc! { "_id": -1 }, 0)
            .await?;
        for document in &documents {
            let run = run_from(document)?;
            if run.published && run.id != except {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    async fn record_delivery(&self, delivery: Delivery) -> StoreResult<()> {
        self.collection("run_deliveries")
            .insert_one(doc! {
                "_id": delivery.id.to_string(),
                "run_id": delivery.run_id.0,
                "attempt": i64::from(delivery.attempt),
                "at": bson_time(delivery.at),
                "at_ms": delivery.at.timestamp_millis(),
                "status_code": delivery.status_code.map(i64::from),
                "error": delivery.error,
                "duration_ms": i64::try_from(delivery.duration_ms).unwrap_or(i64::MAX),
            })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_deliveries(&self, run_id: RunId) -> StoreResult<Vec<Delivery>> {
        let documents = self
            .find_many(
                "run_deliveries",
                doc! { "run_id": run_id.0 },
                doc! { "at_ms": 1, "attempt": 1 },
                0,
            )
            .await?;
        documents.iter().map(delivery_from).collect()
    }

    async fn webhook_secret(&self, user_id: UserId, fresh: String) -> StoreResult<(String, bool)> {
        let inserted = self
            .collection("webhook_secrets")
            .insert_one(doc! { "_id": user_id.0, "secret": &fresh })
            .await
            .map_err(backend);
        match inserted {
            Ok(_) => Ok((fresh, true)),
            Err(StoreError::Conflict(_)) => {
                let found = self
                    .collection("webhook_secrets")
                    .find_one(doc! { "_id": user_id.0 })
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::Backend("webhook secret vanished".into()))?;
                let secret = Fields::new(&found, "webhook secret").str("secret")?;
                Ok((secret.to_owned(), false))
            }
            Err(error) => Err(error),
        }
    }

    async fn list_gradable_attempts(
        &self,
        query: GradableQuery,
    ) -> StoreResult<Vec<GradableAttempt>> {
        let mut filter = doc! { "challenge_id": query.challenge_id.0 };
        let statuses: Vec<Bson> = [
            AttemptStatus::Passed,
            AttemptStatus::Failed,
            AttemptStatus::Error,
        ]
        .iter()
        .map(|status| Bson::Document(doc! { "status": status.as_str() }))
        .collect();
        filter.insert("$or", statuses);
        if let Some(users) = &query.users {
            filter.insert("user_id", doc! { "$in": users.clone() });
        }
        // Whole `cases` (nx-27017 drops nested projection paths).
        let mut projection = doc! { "_id": 1, "user_id": 1, "status": 1 };
        if query.ratios {
            projection.insert("cases", 1);
        }
        let mut found = self
            .collection("attempts")
            .find(filter)
            .projection(projection)
            .sort(doc! { "_id": 1 })
            .await
            .map_err(backend)?;
        let mut attempts = Vec::new();
        while let Some(document) = found.try_next().await.map_err(backend)? {
            let fields = Fields::new(&document, "attempt");
            let ratios = if query.ratios {
                fields
                    .array("cases")?
                    .iter()
                    .filter_map(|case| match case {
                        Bson::Document(case) => case.get_f64("ratio").ok(),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            attempts.push(GradableAttempt {
                id: fields.id("_id")?,
                user_id: fields.id("user_id")?,
                status: fields.parsed("status", AttemptStatus::parse)?,
                ratios,
            });
        }
        Ok(attempts)
    }

    async fn recount_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        let Some(run) = self.get_run(id).await? else {
            return Ok(None);
        };
        let queued = self
            .count_items(doc! { "run_id": id.0, "state": "QUEUED" })
            .await?;
        if queued > 0 || run.counts.ended() >= run.counts.total {
            return Ok(Some(run));
        }
        let done = self
            .count_items(doc! { "run_id": id.0, "state": "DONE" })
            .await?;
        let errors = self
            .count_items(doc! { "run_id": id.0, "state": "ERROR" })
            .await?;
        let cancelled = self
            .count_items(doc! { "run_id": id.0, "state": "CANCELLED" })
            .await?;
        let recounted = self
            .update_run(
                doc! {
                    "_id": id.0,
                    "done": run.counts.done as i64,
                    "errors": run.counts.error as i64,
                    "cancelled": run.counts.cancelled as i64,
                },
                doc! { "$set": {
                    "done": done as i64,
                    "errors": errors as i64,
                    "cancelled": cancelled as i64,
                } },
            )
            .await?;
        match recounted {
            Some(run) => Ok(Some(self.fan_in(run).await?)),
            None => self.get_run(id).await,
        }
    }
}

impl MongoStore {
    /// The first round of a professor's next items (see the SQLite store's
    /// `first_round`).
    async fn first_round(&self, created_by: i64) -> StoreResult<i64> {
        let own = self
            .collection("run_rounds")
            .find_one(doc! { "_id": created_by })
            .await
            .map_err(backend)?
            .map(|document| Fields::new(&document, "run round").i64("next_round"))
            .transpose()?
            .unwrap_or(0);
        let lowest = self
            .find_many(
                "jobs",
                doc! { "state": "QUEUED", "lane_priority": { "$gte": BATCH_PRIORITY_BASE } },
                doc! { "lane_priority": 1 },
                1,
            )
            .await?;
        let floor = match lowest.first() {
            Some(job) => batch_round(Fields::new(job, "job").i64("lane_priority")?),
            None => {
                let highest = self
                    .find_many("run_rounds", doc! {}, doc! { "next_round": -1 }, 1)
                    .await?;
                match highest.first() {
                    Some(round) => Fields::new(round, "run round").i64("next_round")?,
                    None => 0,
                }
            }
        };
        Ok(own.max(floor))
    }

    /// The items of a run whose job is LEASED.
    async fn leased_items(&self, run_id: RunId) -> StoreResult<std::collections::BTreeSet<i64>> {
        let documents = self
            .find_many(
                "jobs",
                doc! { "payload.run_item.run_id": run_id.0, "state": "LEASED" },
                doc! { "seq": 1 },
                0,
            )
            .await?;
        let mut items = std::collections::BTreeSet::new();
        for document in &documents {
            if let sqlarena_common::JobPayload::Attempt(payload) = job_from(document)?.payload {
                if let Some(reference) = payload.run_item {
                    items.insert(reference.item);
                }
            }
        }
        Ok(items)
    }
}
