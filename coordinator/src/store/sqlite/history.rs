//! The cluster's per-minute history on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use sqlarena_common::Lane;

use super::{micros, time_at, to_i64, wire_at, SqliteStore};
use crate::store::history::{HistoryStore, MinuteSample};
use crate::store::StoreResult;

/// One row per minute and lane (a few thousand rows a day at most).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cluster_minutes (
    minute INTEGER NOT NULL,
    lane TEXT NOT NULL,
    completed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    latency_ms_sum INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    queue_depth INTEGER,
    PRIMARY KEY (minute, lane)
) WITHOUT ROWID;
";

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn record_minute(&self, sample: MinuteSample) -> StoreResult<()> {
        let depth = sample
            .queue_depth
            .map(|depth| to_i64(depth, "queue_depth"))
            .transpose()?;
        let counts = [
            to_i64(sample.completed, "completed")?,
            to_i64(sample.failed, "failed")?,
            to_i64(sample.latency_ms_sum, "latency_ms_sum")?,
            to_i64(sample.latency_count, "latency_count")?,
        ];
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO cluster_minutes \
                     (minute, lane, completed, failed, latency_ms_sum, latency_count, queue_depth) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (minute, lane) DO UPDATE SET \
                     completed = completed + excluded.completed, failed = failed + excluded.failed, \
                     latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
                     latency_count = latency_count + excluded.latency_count, \
                     queue_depth = COALESCE(excluded.queue_depth, queue_depth)",
                )?
                .execute(params![
                    micros(sample.minute),
                    sample.lane.as_str(),
                    counts[0],
                    counts[1],
                    counts[2],
                    counts[3],
                    depth
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_minutes(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteSample>> {
        self.call(move |connection| {
            let count = |row: &rusqlite::Row<'_>, index: usize| -> rusqlite::Result<u64> {
                Ok(row.get::<_, i64>(index)?.unsigned_abs())
            };
            let rows = connection
                .prepare_cached(
                    "SELECT minute, lane, completed, failed, latency_ms_sum, latency_count, queue_depth \
                     FROM cluster_minutes WHERE minute >= ?1 ORDER BY minute, lane",
                )?
                .query_map([micros(since)], |row| {
                    Ok(MinuteSample {
                        minute: time_at(row, 0)?,
                        lane: wire_at(row, 1, Lane::parse)?,
                        completed: count(row, 2)?,
                        failed: count(row, 3)?,
                        latency_ms_sum: count(row, 4)?,
                        latency_count: count(row, 5)?,
                        queue_depth: row.get::<_, Option<i64>>(6)?.map(i64::unsigned_abs),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_minutes_before(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM cluster_minutes WHERE minute < ?1")?
                .execute([micros(before)])?;
            Ok(deleted as u64)
        })
        .await
    }
}
