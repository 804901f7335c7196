//! Grading runs in SQLite: `runs` (spec as JSON, fan-in counters),
//! `run_items`, `run_deliveries` and `webhook_secrets`. Every call is one
//! transaction, so ending an item and counting it in its run is one step.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension as _, Row, Transaction};
use sqlarena_common::runs::{ItemState, PostprocessingState, RunState};
use sqlarena_common::{AttemptId, AttemptStatus, ChallengeId, JobId, RunId, UserId};
use uuid::Uuid;

use super::super::runs::{
    batch_priority, batch_round, ratios_of_cases, Delivery, GradableAttempt, GradableQuery,
    ItemEnd, ItemResult, NewRun, Run, RunCounts, RunItem, RunStore, BATCH_PRIORITY_BASE,
    NO_ATTEMPT_NOTE,
};
use super::super::{Job, NewJob, StoreError, StoreResult};
use super::{
    conversion_error, existing_job, json_at, micros, optional_time_at, optional_uuid_at, sql_limit,
    stored_now, time_at, to_i64, to_json, u32_at, wire_at, SqliteStore,
};

/// A listed student's gradable attempts of a challenge: one seek of
/// `attempts_by_user` (`+challenge_id` keeps SQLite from walking
/// `attempts_by_challenge`, every attempt of the challenge, instead).
const LISTED_GRADABLE: &str = "WHERE user_id = ?1 AND status IN ('PASSED', 'FAILED', 'ERROR') \
     AND +challenge_id = ?2";

/// The next queued run item of the lanes with `priorities`, once no live
/// job of them is queued: one range of `jobs_queued` from the batch share
/// on, in round order (`batch_priority`), skipping other lanes'.
pub(super) fn next_batch_item(
    transaction: &Transaction<'_>,
    priorities: &[i64],
) -> StoreResult<Option<(i64, i64)>> {
    let lanes: Vec<String> = priorities.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT seq, timeout_ms FROM jobs WHERE state = 'QUEUED' AND lane_priority >= {} \
         AND lane_priority % 4 IN ({}) ORDER BY lane_priority, seq LIMIT 1",
        BATCH_PRIORITY_BASE,
        lanes.join(", ")
    );
    Ok(transaction
        .prepare_cached(&sql)?
        .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
        .optional()?)
}

/// The runs tables, created with the main schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    challenge_id INTEGER NOT NULL,
    challenge_version INTEGER NOT NULL,
    created_by INTEGER NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    failing INTEGER NOT NULL DEFAULT 0,
    postprocessing TEXT NOT NULL DEFAULT 'PENDING',
    pp_token TEXT,
    pp_until INTEGER,
    gradebook TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_by_idempotency_key
    ON runs (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_published ON runs (challenge_id, id) WHERE published = 1;
CREATE INDEX IF NOT EXISTS runs_active ON runs (state)
    WHERE state IN ('RUNNING', 'PAUSED', 'POSTPROCESSING');
CREATE TABLE IF NOT EXISTS run_items (
    run_id INTEGER NOT NULL,
    item INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    attempt_id INTEGER,
    job_id TEXT,
    state TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '{}',
    note TEXT,
    finished_at INTEGER,
    PRIMARY KEY (run_id, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_items_by_state ON run_items (run_id, state, item);
CREATE TABLE IF NOT EXISTS run_deliveries (
    id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_deliveries_by_run ON run_deliveries (run_id, at);
CREATE TABLE IF NOT EXISTS run_rounds (
    user_id INTEGER PRIMARY KEY,
    next_round INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_secrets (
    user_id INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);
";

pub(super) const RUN_COLUMNS: &str =
    "id, spec, challenge_version, created_by, idempotency_key, state, total, \
     done, errors, cancelled, cancel_requested, failing, postprocessing, gradebook, published, \
     created_at, started_at, finished_at";
const ITEM_COLUMNS: &str =
    "run_id, item, user_id, attempt_id, job_id, state, result, note, finished_at";

fn u64_at(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::from(u32_at(row, index)?))
}

pub(super) fn run_from(row: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: RunId(row.get(0)?),
        spec: json_at(row, 1)?,
        challenge_version: row.get(2)?,
        created_by: UserId(row.get(3)?),
        idempotency_key: row.get(4)?,
        state: wire_at(row, 5, RunState::parse)?,
        counts: RunCounts {
            total: u64_at(row, 6)?,
            done: u64_at(row, 7)?,
            error: u64_at(row, 8)?,
            cancelled: u64_at(row, 9)?,
        },
        cancel_requested: row.get(10)?,
        failing: row.get(11)?,
        postprocessing: wire_at(row, 12, PostprocessingState::parse)?,
        gradebook: row.get(13)?,
        published: row.get(14)?,
        created_at: time_at(row, 15)?,
        started_at: optional_time_at(row, 16)?,
        finished_at: optional_time_at(row, 17)?,
    })
}

fn item_from(row: &Row<'_>) -> rusqlite::Result<RunItem> {
    Ok(RunItem {
        run_id: RunId(row.get(0)?),
        item: row.get(1)?,
        user_id: UserId(row.get(2)?),
        attempt_id: row.get::<_, Option<i64>>(3)?.map(AttemptId),
        job_id: optional_uuid_at(row, 4)?.map(JobId),
        state: wire_at(row, 5, ItemState::parse)?,
        result: json_at(row, 6)?,
        note: row.get(7)?,
        finished_at: optional_time_at(row, 8)?,
    })
}

fn delivery_from(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status_code: Option<i64> = row.get(4)?;
    let duration_ms: i64 = row.get(6)?;
    Ok(Delivery {
        id: super::uuid_at(row, 0)?,
        run_id: RunId(row.get(1)?),
        attempt: u32_at(row, 2)?,
        at: time_at(row, 3)?,
        status_code: status_code.and_then(|code| u16::try_from(code).ok()),
        error: row.get(5)?,
        duration_ms: u64::try_from(duration_ms).unwrap_or(0),
    })
}

fn select_run(transaction: &rusqlite::Connection, id: RunId) -> StoreResult<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    Ok(transaction
        .prepare_cached(&sql)?
        .query_row([id.0], run_from)
        .optional()?)
}

fn existing_run(transaction: &rusqlite::Connection, id: RunId) -> StoreResult<Run> {
    select_run(transaction, id)?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

/// Moves a RUNNING or PAUSED run whose items all ended to POSTPROCESSING.
fn fan_in(transaction: &Transaction<'_>, id: RunId) -> StoreResult<()> {
    transaction
        .prepare_cached(
            "UPDATE runs SET state = 'POSTPROCESSING' WHERE id = ?1 \
             AND state IN ('RUNNING', 'PAUSED') AND done + errors + cancelled >= total",
        )?
        .execute([id.0])?;
    Ok(())
}

/// The first round of a professor's next items: where their last run's
/// items ended, but not before the lowest round still queued (nor, with
/// nothing queued, before where anyone's ended), so a professor idle for a
/// while does not jump the queue with old rounds.
fn first_round(transaction: &Transaction<'_>, created_by: i64) -> StoreResult<i64> {
    let own: Option<i64> = transaction
        .prepare_cached("SELECT next_round FROM run_rounds WHERE user_id = ?1")?
        .query_row([created_by], |row| row.get(0))
        .optional()?;
    let lowest_queued: Option<i64> = transaction
        .prepare_cached(
            "SELECT lane_priority FROM jobs WHERE state = 'QUEUED' AND lane_priority >= ?1 \
             ORDER BY lane_priority LIMIT 1",
        )?
        .query_row([BATCH_PRIORITY_BASE], |row| row.get(0))
        .optional()?;
    let floor = match lowest_queued {
        Some(priority) => batch_round(priority),
        None => transaction
            .prepare_cached("SELECT COALESCE(MAX(next_round), 0) FROM run_rounds")?
            .query_row([], |row| row.get(0))?,
    };
    Ok(own.unwrap_or(0).max(floor))
}

/// The column counting items that end as `state`.
fn counter(state: ItemState) -> &'static str {
    match state {
        ItemState::Error => "errors",
        ItemState::Cancelled => "cancelled",
        _ => "done",
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<(Run, bool)> {
        self.write(move |transaction| {
            if let Some(key) = &run.idempotency_key {
                let existing: Option<i64> = transaction
                    .prepare_cached(
                        "SELECT id FROM runs WHERE created_by = ?1 AND idempotency_key = ?2",
                    )?
                    .query_row(params![run.created_by.0, key], |row| row.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    return Ok((existing_run(transaction, RunId(id))?, false));
                }
            }
            let without_attempt = run
                .items
                .iter()
                .filter(|item| item.attempt_id.is_none())
                .count();
            let (state, started_at) = if run.start {
                ("RUNNING", Some(micros(now)))
            } else {
                ("QUEUED", None)
            };
            transaction
                .prepare_cached(
                    "INSERT INTO runs (spec, challenge_version, created_by, idempotency_key, state, \
                     total, done, created_at, started_at, published, challenge_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    to_json(&run.spec)?,
                    run.challenge_version,
                    run.created_by.0,
                    run.idempotency_key,
                    state,
                    to_i64(run.items.len() as u64, "items")?,
                    to_i64(without_attempt as u64, "items")?,
                    micros(now),
                    started_at,
                    run.spec.mode == sqlarena_common::runs::RunMode::Publish,
                    run.spec.challenge_id.0,
                ])?;
            let id = RunId(transaction.last_insert_rowid());
            let mut insert = transaction.prepare_cached(
                "INSERT INTO run_items (run_id, item, user_id, attempt_id, state, note, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (index, item) in run.items.iter().enumerate() {
                let ended = item.attempt_id.is_none();
                insert.execute(params![
                    id.0,
                    index as i64 + 1,
                    item.user_id.0,
                    item.attempt_id.map(|attempt| attempt.0),
                    if ended { "DONE" } else { "QUEUED" },
                    ended.then_some(NO_ATTEMPT_NOTE),
                    ended.then(|| micros(now)),
                ])?;
            }
            fan_in(transaction, id)?;
            Ok((existing_run(transaction, id)?, true))
        })
        .await
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.call(move |connection| select_run(connection, id))
            .await
    }

    async fn list_active_runs(&self) -> StoreResult<Vec<Run>> {
        self.call(|connection| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs \
                 WHERE state IN ('RUNNING', 'PAUSED', 'POSTPROCESSING') ORDER BY id"
            );
            let runs = connection
                .prepare_cached(&sql)?
                .query_map([], run_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(runs)
        })
        .await
    }

    async fn start_run(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET state = 'RUNNING', started_at = ?2 \
                     WHERE id = ?1 AND state = 'QUEUED'",
                )?
                .execute(params![id.0, micros(now)])?;
            if changed == 0 {
                return Ok(None);
            }
            fan_in(transaction, id)?;
            select_run(transaction, id)
        })
        .await
    }

    async fn set_run_paused(&self, id: RunId, paused: bool) -> StoreResult<Option<Run>> {
        let (from, to) = if paused {
            ("RUNNING", "PAUSED")
        } else {
            ("PAUSED", "RUNNING")
        };
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET state = ?3 WHERE id = ?1 AND state = ?2 \
                     AND cancel_requested = 0",
                )?
                .execute(params![id.0, from, to])?;
            if changed == 0 {
                return Ok(None);
            }
            select_run(transaction, id)
        })
        .await
    }

    async fn request_run_cancel(&self, id: RunId, now: DateTime<Utc>) -> StoreResult<Option<Run>> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET cancel_requested = 1, \
                     state = CASE state WHEN 'QUEUED' THEN 'RUNNING' ELSE state END, \
                     started_at = COALESCE(started_at, ?2) \
                     WHERE id = ?1 AND state IN ('QUEUED', 'RUNNING', 'PAUSED')",
                )?
                .execute(params![id.0, micros(now)])?;
            if changed == 0 {
                return Ok(None);
            }
            let result = to_json(&ItemResult {
                error: Some("cancelled before it was graded".into()),
                ..ItemResult::default()
            })?;
            let cancelled = transaction
                .prepare_cached(
                    "UPDATE run_items SET state = 'CANCELLED', result = ?2, finished_at = ?3 \
                     WHERE run_id = ?1 AND state = 'QUEUED' AND job_id IS NULL",
                )?
                .execute(params![id.0, result, micros(now)])?;
            transaction
                .prepare_cached("UPDATE runs SET cancelled = cancelled + ?2 WHERE id = ?1")?
                .execute(params![id.0, cancelled as i64])?;
            fan_in(transaction, id)?;
            select_run(transaction, id)
        })
        .await
    }

    async fn set_run_failing(&self, id: RunId) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached("UPDATE runs SET failing = 1 WHERE id = ?1")?
                .execute([id.0])?;
            Ok(())
        })
        .await
    }

    async fn list_unqueued_items(&self, run_id: RunId, limit: u32) -> StoreResult<Vec<RunItem>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {ITEM_COLUMNS} FROM run_items WHERE run_id = ?1 AND state = 'QUEUED' \
                 AND job_id IS NULL ORDER BY item LIMIT ?2"
            );
            let items = connection
                .prepare_cached(&sql)?
                .query_map(params![run_id.0, sql_limit(limit)], item_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(items)
        })
        .await
    }

    async fn queue_item_jobs(
        &self,
        run_id: RunId,
        jobs: Vec<(i64, NewJob)>,
    ) -> StoreResult<Vec<Job>> {
        self.write(move |transaction| {
            let feeding: bool = transaction
                .prepare_cached(
                    "SELECT COUNT(*) FROM runs WHERE id = ?1 AND state = 'RUNNING' \
                     AND cancel_requested = 0",
                )?
                .query_row([run_id.0], |row| row.get(0))?;
            if !feeding {
                return Ok(Vec::new());
            }
            let created_by: i64 = transaction
                .prepare_cached("SELECT created_by FROM runs WHERE id = ?1")?
                .query_row([run_id.0], |row| row.get(0))?;
            let mut round = first_round(transaction, created_by)?;
            let created_at = micros(stored_now());
            let mut queued = Vec::with_capacity(jobs.len());
            let mut link = transaction.prepare_cached(
                "UPDATE run_items SET job_id = ?3 WHERE run_id = ?1 AND item = ?2 \
                 AND state = 'QUEUED' AND job_id IS NULL",
            )?;
            let mut insert = transaction.prepare_cached(
                "INSERT INTO jobs (id, kind, lane, lane_priority, payload, state, tries, max_tries, \
                 timeout_ms, progress, applied, cancel_requested, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'QUEUED', 0, ?6, ?7, '[]', 0, 0, ?8)",
            )?;
            for (item, job) in jobs {
                let id = JobId::new_v7();
                if link.execute(params![run_id.0, item, id.to_string()])? == 0 {
                    continue;
                }
                insert.execute(params![
                    id.to_string(),
                    job.payload.kind().as_str(),
                    job.lane.as_str(),
                    batch_priority(job.lane, round),
                    to_json(&job.payload)?,
                    job.max_tries,
                    to_i64(job.timeout_ms, "timeout_ms")?,
                    created_at
                ])?;
                queued.push(existing_job(transaction, id)?);
                round += 1;
            }
            transaction
                .prepare_cached(
                    "INSERT INTO run_rounds (user_id, next_round) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET next_round = excluded.next_round",
                )?
                .execute(params![created_by, round])?;
            Ok(queued)
        })
        .await
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
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE run_items SET state = ?4, result = ?5, finished_at = ?6 \
                     WHERE run_id = ?1 AND item = ?2 AND job_id = ?3 AND state = 'QUEUED'",
                )?
                .execute(params![
                    run_id.0,
                    item,
                    job_id.to_string(),
                    state.as_str(),
                    to_json(&result)?,
                    micros(now)
                ])?;
            if changed == 0 {
                return Ok(None);
            }
            let column = counter(state);
            transaction
                .prepare_cached(&format!(
                    "UPDATE runs SET {column} = {column} + 1 WHERE id = ?1"
                ))?
                .execute([run_id.0])?;
            fan_in(transaction, run_id)?;
            select_run(transaction, run_id)
        })
        .await
    }

    async fn detach_item_job(&self, run_id: RunId, item: i64, job_id: JobId) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE run_items SET job_id = NULL WHERE run_id = ?1 AND item = ?2 \
                     AND job_id = ?3 AND state = 'QUEUED'",
                )?
                .execute(params![run_id.0, item, job_id.to_string()])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn list_run_items(
        &self,
        run_id: RunId,
        state: Option<ItemState>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RunItem>> {
        self.call(move |connection| {
            let after = after.unwrap_or(0);
            let limit = sql_limit(limit);
            let columns = ITEM_COLUMNS
                .split(", ")
                .map(|column| format!("i.{column}"))
                .collect::<Vec<_>>()
                .join(", ");
            let (sql, state_name) = match state {
                None => (
                    format!(
                        "SELECT {columns} FROM run_items i WHERE i.run_id = ?1 AND i.item > ?2 \
                         AND ?4 IS NULL ORDER BY i.item LIMIT ?3"
                    ),
                    None,
                ),
                Some(ItemState::Running) => (
                    format!(
                        "SELECT {columns} FROM run_items i JOIN jobs j ON j.id = i.job_id \
                         WHERE i.run_id = ?1 AND i.item > ?2 AND i.state = 'QUEUED' \
                         AND j.state = 'LEASED' AND ?4 IS NULL ORDER BY i.item LIMIT ?3"
                    ),
                    None,
                ),
                Some(ItemState::Queued) => (
                    format!(
                        "SELECT {columns} FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id \
                         WHERE i.run_id = ?1 AND i.item > ?2 AND i.state = ?4 \
                         AND (j.state IS NULL OR j.state <> 'LEASED') ORDER BY i.item LIMIT ?3"
                    ),
                    Some("QUEUED"),
                ),
                Some(other) => (
                    format!(
                        "SELECT {columns} FROM run_items i WHERE i.run_id = ?1 AND i.item > ?2 \
                         AND i.state = ?4 ORDER BY i.item LIMIT ?3"
                    ),
                    Some(other.as_str()),
                ),
            };
            let items = connection
                .prepare_cached(&sql)?
                .query_map(params![run_id.0, after, limit, state_name], item_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(items)
        })
        .await
    }

    async fn count_running_items(&self, run_id: RunId) -> StoreResult<u64> {
        self.call(move |connection| {
            let count: i64 = connection
                // From the few LEASED jobs (a partial index; CROSS JOIN
                // keeps them the outer loop), not from the run's QUEUED
                // items, which may be a hundred thousand.
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs j CROSS JOIN run_items i \
                     ON i.run_id = ?1 AND i.job_id = j.id AND i.state = 'QUEUED' \
                     WHERE j.state = 'LEASED' AND json_extract(j.payload, '$.run_item.run_id') = ?1",
                )?
                .query_row([run_id.0], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn run_queue_position(&self, run_id: RunId) -> StoreResult<Option<u64>> {
        self.call(move |connection| {
            let first: Option<(i64, i64, String)> = connection
                // The run's first waiting item in item order (items are
                // fed, so queued, in that order): a walk of
                // `run_items_by_state` that stops at the first one whose
                // job is still queued, not a sort of all of them.
                .prepare_cached(
                    "SELECT j.seq, j.lane_priority, j.lane FROM run_items i \
                     JOIN jobs j ON j.id = i.job_id \
                     WHERE i.run_id = ?1 AND i.state = 'QUEUED' AND j.state = 'QUEUED' \
                     ORDER BY i.item LIMIT 1",
                )?
                .query_row([run_id.0], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get::<_, String>(2)?))
                })
                .optional()?;
            let Some((seq, priority, lane)) = first else {
                return Ok(None);
            };
            let ahead: i64 = connection
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED' AND lane = ?3 \
                     AND (lane_priority < ?1 OR (lane_priority = ?1 AND seq < ?2))",
                )?
                .query_row(params![priority, seq, lane], |row| row.get(0))?;
            Ok(Some(u64::try_from(ahead).unwrap_or(0)))
        })
        .await
    }

    async fn retry_run_errors(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.write(move |transaction| {
            let run = existing_run(transaction, id)?;
            if !run.state.is_final() || run.state == RunState::Cancelled || run.counts.error == 0 {
                return Ok(None);
            }
            let retried = transaction
                .prepare_cached(
                    "UPDATE run_items SET state = 'QUEUED', job_id = NULL, result = '{}', \
                     finished_at = NULL WHERE run_id = ?1 AND state = 'ERROR'",
                )?
                .execute([id.0])?;
            transaction
                .prepare_cached(
                    "UPDATE runs SET state = 'RUNNING', errors = errors - ?2, failing = 0, \
                     postprocessing = 'PENDING', pp_token = NULL, pp_until = NULL, \
                     finished_at = NULL WHERE id = ?1",
                )?
                .execute(params![id.0, retried as i64])?;
            select_run(transaction, id)
        })
        .await
    }

    async fn claim_postprocessing(
        &self,
        id: RunId,
        token: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Run>> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET pp_token = ?2, pp_until = ?4, postprocessing = 'RUNNING' \
                     WHERE id = ?1 AND state = 'POSTPROCESSING' \
                     AND (pp_until IS NULL OR pp_until < ?3 OR pp_token = ?2)",
                )?
                .execute(params![id.0, token.to_string(), micros(now), micros(until)])?;
            if changed == 0 {
                return Ok(None);
            }
            select_run(transaction, id)
        })
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
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET gradebook = ?3, postprocessing = ?4, state = ?5, \
                     finished_at = ?6, pp_until = NULL \
                     WHERE id = ?1 AND state = 'POSTPROCESSING' AND pp_token = ?2",
                )?
                .execute(params![
                    id.0,
                    token.to_string(),
                    gradebook,
                    postprocessing.as_str(),
                    state.as_str(),
                    micros(now)
                ])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn publish_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE runs SET published = 1 WHERE id = ?1 AND published = 0 \
                     AND state IN ('COMPLETED', 'COMPLETED_WITH_ERRORS')",
                )?
                .execute([id.0])?;
            if changed == 0 {
                return Ok(None);
            }
            select_run(transaction, id)
        })
        .await
    }

    async fn latest_published_run(
        &self,
        challenge_id: ChallengeId,
        except: RunId,
    ) -> StoreResult<Option<Run>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE challenge_id = ?1 AND published = 1 \
                 AND id <> ?2 AND state IN ('COMPLETED', 'COMPLETED_WITH_ERRORS') \
                 ORDER BY id DESC LIMIT 1"
            );
            Ok(connection
                .prepare_cached(&sql)?
                .query_row(params![challenge_id.0, except.0], run_from)
                .optional()?)
        })
        .await
    }

    async fn record_delivery(&self, delivery: Delivery) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO run_deliveries (id, run_id, attempt, at, status_code, error, \
                     duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    delivery.id.to_string(),
                    delivery.run_id.0,
                    delivery.attempt,
                    micros(delivery.at),
                    delivery.status_code,
                    delivery.error,
                    to_i64(delivery.duration_ms, "duration_ms")?
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_deliveries(&self, run_id: RunId) -> StoreResult<Vec<Delivery>> {
        self.call(move |connection| {
            let deliveries = connection
                .prepare_cached(
                    "SELECT id, run_id, attempt, at, status_code, error, duration_ms \
                     FROM run_deliveries WHERE run_id = ?1 ORDER BY at, attempt",
                )?
                .query_map([run_id.0], delivery_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(deliveries)
        })
        .await
    }

    async fn webhook_secret(&self, user_id: UserId, fresh: String) -> StoreResult<(String, bool)> {
        self.write(move |transaction| {
            let created = transaction
                .prepare_cached(
                    "INSERT INTO webhook_secrets (user_id, secret) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO NOTHING",
                )?
                .execute(params![user_id.0, fresh])?;
            let secret: String = transaction
                .prepare_cached("SELECT secret FROM webhook_secrets WHERE user_id = ?1")?
                .query_row([user_id.0], |row| row.get(0))?;
            Ok((secret, created > 0))
        })
        .await
    }

    async fn recount_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        // Ending an item and counting it are one transaction here.
        self.get_run(id).await
    }

    async fn list_gradable_attempts(
        &self,
        query: GradableQuery,
    ) -> StoreResult<Vec<GradableAttempt>> {
        self.call(move |connection| {
            let cases = if query.ratios { "cases" } else { "NULL" };
            let read = |row: &Row<'_>| -> rusqlite::Result<GradableAttempt> {
                let ratios = match row.get::<_, Option<String>>(3)? {
                    Some(text) => ratios_of_cases(&text)
                        .map_err(|error| conversion_error(3, error.to_string()))?,
                    None => Vec::new(),
                };
                Ok(GradableAttempt {
                    id: row.get(0)?,
                    user_id: row.get(1)?,
                    status: wire_at(row, 2, AttemptStatus::parse)?,
                    ratios,
                })
            };
            let gradable = "status IN ('PASSED', 'FAILED', 'ERROR')";
            let Some(users) = &query.users else {
                let sql = format!(
                    "SELECT id, user_id, status, {cases} FROM attempts \
                     WHERE challenge_id = ?1 AND {gradable} ORDER BY id"
                );
                let attempts = connection
                    .prepare_cached(&sql)?
                    .query_map([query.challenge_id.0], read)?
                    .collect::<rusqlite::Result<_>>()?;
                return Ok(attempts);
            };
            let sql =
                format!("SELECT id, user_id, status, {cases} FROM attempts {LISTED_GRADABLE}");
            let mut statement = connection.prepare_cached(&sql)?;
            let mut attempts = Vec::new();
            for user in users {
                for attempt in statement.query_map(params![user.0, query.challenge_id.0], read)? {
                    attempts.push(attempt?);
                }
            }
            attempts.sort_by_key(|attempt: &GradableAttempt| attempt.id);
            Ok(attempts)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::plan;
    use super::*;

    /// A run of listed students reads each one's attempts through
    /// `attempts_by_user`, never the challenge's every attempt.
    #[test]
    fn listed_students_attempts_are_seeks_of_their_own() {
        let path = std::env::temp_dir()
            .join(format!("sqlarena-runs-plan-{}", Uuid::new_v4().simple()))
            .join("store.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let connection = store.connection.lock().unwrap();
        let found = plan(
            &connection,
            &format!("SELECT id FROM attempts {LISTED_GRADABLE}"),
        );
        assert!(
            found.contains("attempts_by_user") && !found.contains("attempts_by_challenge"),
            "{found}"
        );
    }
}
