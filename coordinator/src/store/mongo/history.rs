//! The cluster's per-minute history on MongoDB: one document per minute
//! and lane, `_id` `"MINUTE_MS:LANE"`, counts added with `$inc` so that
//! several coordinators' additions sum.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use sqlarena_common::Lane;

use super::{backend, bson_time, Fields, MongoStore};
use crate::store::history::{HistoryStore, MinuteSample};
use crate::store::{StoreError, StoreResult};

const COLLECTION: &str = "cluster_minutes";

/// The history's index: its rows by minute.
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![(COLLECTION, doc! { "minute": 1 })]
}

fn signed(value: u64, field: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend(format!("{field} out of range: {value}")))
}

fn sample_from(document: &Document) -> StoreResult<MinuteSample> {
    let fields = Fields::new(document, "minute");
    let count = |key: &str| fields.i64(key).map(i64::unsigned_abs);
    Ok(MinuteSample {
        minute: fields.time("minute")?,
        lane: fields.parsed("lane", Lane::parse)?,
        completed: count("completed")?,
        failed: count("failed")?,
        latency_ms_sum: count("latency_ms_sum")?,
        latency_count: count("latency_count")?,
        queue_depth: fields.opt_i64("queue_depth")?.map(i64::unsigned_abs),
    })
}

#[async_trait]
impl HistoryStore for MongoStore {
    async fn record_minute(&self, sample: MinuteSample) -> StoreResult<()> {
        let id = format!(
            "{}:{}",
            sample.minute.timestamp_millis(),
            sample.lane.as_str()
        );
        let mut set_on_insert = doc! {
            "minute": bson_time(sample.minute),
            "lane": sample.lane.as_str(),
        };
        let mut update = doc! {
            "$inc": {
                "completed": signed(sample.completed, "completed")?,
                "failed": signed(sample.failed, "failed")?,
                "latency_ms_sum": signed(sample.latency_ms_sum, "latency_ms_sum")?,
                "latency_count": signed(sample.latency_count, "latency_count")?,
            },
        };
        match sample.queue_depth {
            Some(depth) => {
                update.insert(
                    "$set",
                    doc! { "queue_depth": signed(depth, "queue_depth")? },
                );
            }
            None => {
                set_on_insert.insert("queue_depth", Bson::Null);
            }
        }
        update.insert("$setOnInsert", set_on_insert);
        // Two coordinators creating the row at once: the loser's upsert
        // meets a duplicate key and simply adds to the winner's row.
        for _ in 0..2 {
            let written = self
                .collection(COLLECTION)
                .update_one(doc! { "_id": &id }, update.clone())
                .upsert(true)
                .await
                .map_err(backend);
            match written {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Backend(format!(
            "minute {id} could not be written"
        )))
    }

    async fn list_minutes(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteSample>> {
        let documents: Vec<Document> = self
            .collection(COLLECTION)
            .find(doc! { "minute": { "$gte": bson_time(since) } })
            .sort(doc! { "minute": 1, "lane": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        documents.iter().map(sample_from).collect()
    }

    async fn delete_minutes_before(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = self
            .collection(COLLECTION)
            .delete_many(doc! { "minute": { "$lt": bson_time(before) } })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count)
    }
}
