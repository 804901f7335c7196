//! Every try of a job on MongoDB: a document per lease (`_id` the lease
//! id), inserted by the claim and closed by whatever ends the lease, each
//! right after the job's own fenced write (MongoDB has no transaction
//! here; a coordinator dying in between leaves a try open, which the page
//! shows as such).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use sqlarena_common::{JobId, LeaseId};

use super::{backend, bson_time, Fields, MongoStore};
use crate::store::job_tries::{JobTry, JobTryStore, TryOutcome};
use crate::store::lease::LeaseEnd;
use crate::store::{Job, StoreResult};

const COLLECTION: &str = "job_tries";

/// A job's tries in order.
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![(COLLECTION, doc! { "job_id": 1, "started_at": 1 })]
}

/// How a lease that ended without a result ended.
pub(super) fn outcome_of(end: &LeaseEnd) -> (TryOutcome, Option<&str>) {
    match end {
        LeaseEnd::Fail { error } => (TryOutcome::Failed, Some(error)),
        LeaseEnd::Requeue { error, .. } => (TryOutcome::Requeued, error.as_deref()),
    }
}

impl MongoStore {
    /// Records the start of the try `job` (just claimed) is on.
    pub(super) async fn open_try(&self, job: &Job, now: DateTime<Utc>) -> StoreResult<()> {
        let Some(lease) = job.lease else {
            return Ok(());
        };
        self.collection(COLLECTION)
            .insert_one(doc! {
                "_id": lease.lease_id.to_string(),
                "job_id": job.id.to_string(),
                "grader_id": lease.grader_id.to_string(),
                "started_at": bson_time(now),
                "ended_at": Bson::Null,
                "outcome": Bson::Null,
                "error": Bson::Null,
            })
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Records how the try under `lease_id` ended.
    pub(super) async fn close_try(
        &self,
        lease_id: LeaseId,
        outcome: TryOutcome,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let error = error.map_or(Bson::Null, |error| Bson::String(error.to_owned()));
        self.collection(COLLECTION)
            .update_one(
                doc! { "_id": lease_id.to_string(), "ended_at": Bson::Null },
                doc! { "$set": {
                    "ended_at": bson_time(now),
                    "outcome": outcome.as_str(),
                    "error": error,
                } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Deletes the tries of a job deleted by retention.
    pub(super) async fn delete_tries(&self, job_id: &str) -> StoreResult<()> {
        self.collection(COLLECTION)
            .delete_many(doc! { "job_id": job_id })
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn try_from(document: &Document) -> StoreResult<JobTry> {
    let fields = Fields::new(document, "job try");
    Ok(JobTry {
        job_id: fields.uuid("job_id")?,
        lease_id: fields.uuid("_id")?,
        grader_id: fields.uuid("grader_id")?,
        started_at: fields.time("started_at")?,
        ended_at: fields.opt_time("ended_at")?,
        outcome: fields
            .opt_str("outcome")?
            .as_deref()
            .and_then(TryOutcome::parse),
        error: fields.opt_str("error")?,
    })
}

#[async_trait]
impl JobTryStore for MongoStore {
    async fn list_job_tries(&self, job_id: JobId) -> StoreResult<Vec<JobTry>> {
        let documents: Vec<Document> = self
            .collection(COLLECTION)
            .find(doc! { "job_id": job_id.to_string() })
            .sort(doc! { "started_at": 1, "_id": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        documents.iter().map(try_from).collect()
    }
}
