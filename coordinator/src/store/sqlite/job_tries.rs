//! Every try of a job on SQLite: a row per lease, keyed by job then lease
//! (both UUID v7, so new rows go at the end of the one B-tree), opened by
//! the claim and closed by whatever ends the lease, in the same
//! transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use sqlarena_common::{JobId, LeaseId};

use super::{micros, optional_time_at, time_at, uuid_at, SqliteStore};
use crate::store::job_tries::{JobTry, JobTryStore, TryOutcome};
use crate::store::{Job, StoreError, StoreResult};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS job_tries (
    job_id TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    grader_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (job_id, lease_id)
) WITHOUT ROWID;
";

/// Records the start of the try `job` (just claimed) is on.
pub(super) fn open_try(connection: &Connection, job: &Job, now: DateTime<Utc>) -> StoreResult<()> {
    let Some(lease) = job.lease else {
        return Err(StoreError::Backend(format!(
            "job {} was claimed without a lease",
            job.id
        )));
    };
    connection
        .prepare_cached(
            "INSERT INTO job_tries (job_id, lease_id, grader_id, started_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            job.id.to_string(),
            lease.lease_id.to_string(),
            lease.grader_id.to_string(),
            micros(now)
        ])?;
    Ok(())
}

/// Records how the try under `lease_id` ended.
pub(super) fn close_try(
    connection: &Connection,
    job_id: JobId,
    lease_id: LeaseId,
    outcome: TryOutcome,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    connection
        .prepare_cached(
            "UPDATE job_tries SET ended_at = ?3, outcome = ?4, error = ?5 \
             WHERE job_id = ?1 AND lease_id = ?2 AND ended_at IS NULL",
        )?
        .execute(params![
            job_id.to_string(),
            lease_id.to_string(),
            micros(now),
            outcome.as_str(),
            error
        ])?;
    Ok(())
}

/// Deletes the tries of jobs deleted by retention.
pub(super) fn delete_tries(connection: &Connection, job_ids: &[String]) -> StoreResult<()> {
    let mut delete = connection.prepare_cached("DELETE FROM job_tries WHERE job_id = ?1")?;
    for job_id in job_ids {
        delete.execute([job_id])?;
    }
    Ok(())
}

#[async_trait]
impl JobTryStore for SqliteStore {
    async fn list_job_tries(&self, job_id: JobId) -> StoreResult<Vec<JobTry>> {
        self.call(move |connection| {
            let tries = connection
                .prepare_cached(
                    "SELECT job_id, lease_id, grader_id, started_at, ended_at, outcome, error \
                     FROM job_tries WHERE job_id = ?1 ORDER BY started_at, lease_id",
                )?
                .query_map([job_id.to_string()], |row| {
                    let outcome: Option<String> = row.get(5)?;
                    Ok(JobTry {
                        job_id: uuid_at(row, 0)?,
                        lease_id: uuid_at(row, 1)?,
                        grader_id: uuid_at(row, 2)?,
                        started_at: time_at(row, 3)?,
                        ended_at: optional_time_at(row, 4)?,
                        outcome: outcome.as_deref().and_then(TryOutcome::parse),
                        error: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(tries)
        })
        .await
    }
}
