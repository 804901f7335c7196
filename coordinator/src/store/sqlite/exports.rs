//! Exports in SQLite: the `exports` table (spec as JSON, cursor, counters),
//! and the paged reads of attempts an export streams from (by id, so a
//! page is one range of the primary key).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension as _, Row};
use sqlarena_common::exports::ExportState;
use sqlarena_common::{AttemptId, ExportId, UserId};

use super::super::assessments::Assessment;
use super::super::exports::{AttemptScope, Export, ExportStore, NewExport};
use super::super::{Attempt, StoreResult};
use super::{
    json_at, micros, optional_time_at, sql_limit, time_at, to_i64, to_json, wire_at, SqliteStore,
    ATTEMPT_COLUMNS,
};

/// The exports table, created with the main schema (schema version 9).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    created_by INTEGER NOT NULL,
    state TEXT NOT NULL,
    cursor INTEGER,
    rows INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS exports_unfinished ON exports (state) WHERE state IN ('RUNNING', 'PAUSED');
CREATE INDEX IF NOT EXISTS exports_expiry ON exports (expires_at) WHERE state = 'COMPLETED';
";

const EXPORT_COLUMNS: &str = "id, spec, created_by, state, cursor, rows, bytes, total, error, \
     created_at, finished_at, expires_at";

fn count_at(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

fn export_from(row: &Row<'_>) -> rusqlite::Result<Export> {
    Ok(Export {
        id: ExportId(row.get(0)?),
        spec: json_at(row, 1)?,
        created_by: UserId(row.get(2)?),
        state: wire_at(row, 3, ExportState::parse)?,
        cursor: row.get(4)?,
        rows: count_at(row, 5)?,
        bytes: count_at(row, 6)?,
        total: count_at(row, 7)?,
        error: row.get(8)?,
        created_at: time_at(row, 9)?,
        finished_at: optional_time_at(row, 10)?,
        expires_at: optional_time_at(row, 11)?,
    })
}

fn select_export(connection: &rusqlite::Connection, id: ExportId) -> StoreResult<Option<Export>> {
    let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id.0], export_from)
        .optional()?)
}

fn select_exports(
    connection: &rusqlite::Connection,
    filter: &str,
    parameters: impl rusqlite::Params,
) -> StoreResult<Vec<Export>> {
    let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE {filter} ORDER BY id");
    let mut statement = connection.prepare_cached(&sql)?;
    let exports = statement
        .query_map(parameters, export_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(exports)
}

/// The WHERE conditions of `scope` and their parameters.
fn scope_sql(scope: &AttemptScope) -> (String, Vec<Value>) {
    let mut conditions = vec!["1 = 1".to_string()];
    let mut values = Vec::new();
    if let Some(challenge_ids) = &scope.challenge_ids {
        let ids: Vec<String> = challenge_ids.iter().map(|id| id.0.to_string()).collect();
        conditions.push(format!("challenge_id IN ({})", ids.join(", ")));
    }
    if let Some(user_id) = scope.user_id {
        conditions.push("user_id = ?".into());
        values.push(Value::Integer(user_id.0));
    }
    if let Some(date_gte) = scope.date_gte {
        conditions.push("created_at >= ?".into());
        values.push(Value::Integer(micros(date_gte)));
    }
    if let Some(date_lte) = scope.date_lte {
        conditions.push("created_at <= ?".into());
        values.push(Value::Integer(micros(date_lte)));
    }
    (conditions.join(" AND "), values)
}

#[async_trait]
impl ExportStore for SqliteStore {
    async fn create_export(&self, export: NewExport, now: DateTime<Utc>) -> StoreResult<Export> {
        let spec = to_json(&export.spec)?;
        let total = to_i64(export.total, "export total")?;
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO exports (spec, created_by, state, total, created_at) \
                     VALUES (?1, ?2, 'RUNNING', ?3, ?4)",
                )?
                .execute(params![spec, export.created_by.0, total, micros(now)])?;
            let id = ExportId(transaction.last_insert_rowid());
            select_export(transaction, id)?
                .ok_or_else(|| super::StoreError::Backend(format!("export {id} vanished")))
        })
        .await
    }

    async fn get_export(&self, id: ExportId) -> StoreResult<Option<Export>> {
        self.call(move |connection| select_export(connection, id))
            .await
    }

    async fn list_unfinished_exports(&self) -> StoreResult<Vec<Export>> {
        self.call(|connection| select_exports(connection, "state IN ('RUNNING', 'PAUSED')", []))
            .await
    }

    async fn set_export_paused(&self, id: ExportId, paused: bool) -> StoreResult<Option<Export>> {
        let (from, to) = if paused {
            ("RUNNING", "PAUSED")
        } else {
            ("PAUSED", "RUNNING")
        };
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE exports SET state = ?1 WHERE id = ?2 AND state = ?3")?
                .execute(params![to, id.0, from])?;
            if changed == 0 {
                return Ok(None);
            }
            select_export(transaction, id)
        })
        .await
    }

    async fn cancel_export(&self, id: ExportId, now: DateTime<Utc>) -> StoreResult<Option<Export>> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE exports SET state = 'CANCELLED', finished_at = ?1 \
                     WHERE id = ?2 AND state IN ('RUNNING', 'PAUSED')",
                )?
                .execute(params![micros(now), id.0])?;
            if changed == 0 {
                return Ok(None);
            }
            select_export(transaction, id)
        })
        .await
    }

    async fn save_export_page(
        &self,
        id: ExportId,
        cursor: Option<i64>,
        rows: u64,
        bytes: u64,
    ) -> StoreResult<Option<Export>> {
        let rows = to_i64(rows, "export rows")?;
        let bytes = to_i64(bytes, "export bytes")?;
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "UPDATE exports SET cursor = ?1, rows = ?2, bytes = ?3 \
                     WHERE id = ?4 AND state = 'RUNNING'",
                )?
                .execute(params![cursor, rows, bytes, id.0])?;
            select_export(transaction, id)
        })
        .await
    }

    async fn finish_export(
        &self,
        id: ExportId,
        state: ExportState,
        error: Option<String>,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE exports SET state = ?1, error = ?2, finished_at = ?3, expires_at = ?4 \
                     WHERE id = ?5 AND state = 'RUNNING'",
                )?
                .execute(params![
                    state.as_str(),
                    error,
                    micros(now),
                    expires_at.map(micros),
                    id.0
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn list_expired_exports(&self, now: DateTime<Utc>) -> StoreResult<Vec<Export>> {
        self.call(move |connection| {
            select_exports(
                connection,
                "state = 'COMPLETED' AND expires_at <= ?1",
                [micros(now)],
            )
        })
        .await
    }

    async fn expire_export(&self, id: ExportId) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "UPDATE exports SET state = 'EXPIRED' WHERE id = ?1 AND state = 'COMPLETED'",
                )?
                .execute([id.0])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn list_scoped_attempts(
        &self,
        scope: &AttemptScope,
        after: Option<AttemptId>,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>> {
        let (conditions, mut values) = scope_sql(scope);
        values.push(Value::Integer(after.map_or(0, |id| id.0)));
        values.push(Value::Integer(sql_limit(limit)));
        self.call(move |connection| {
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {conditions} AND id > ? \
                 ORDER BY id LIMIT ?"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let attempts = statement
                .query_map(params_from_iter(values), super::attempt_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(attempts)
        })
        .await
    }

    async fn count_scoped_attempts(&self, scope: &AttemptScope) -> StoreResult<u64> {
        let (conditions, values) = scope_sql(scope);
        self.call(move |connection| {
            let sql = format!("SELECT COUNT(*) FROM attempts WHERE {conditions}");
            let count: i64 = connection
                .prepare_cached(&sql)?
                .query_row(params_from_iter(values), |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn list_scoped_users(
        &self,
        scope: &AttemptScope,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserId>> {
        let (conditions, mut values) = scope_sql(scope);
        values.push(Value::Integer(after.map_or(0, |id| id.0)));
        values.push(Value::Integer(sql_limit(limit)));
        self.call(move |connection| {
            let sql = format!(
                "SELECT DISTINCT user_id FROM attempts WHERE {conditions} AND user_id > ? \
                 ORDER BY user_id LIMIT ?"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let users = statement
                .query_map(params_from_iter(values), |row| Ok(UserId(row.get(0)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(users)
        })
        .await
    }

    async fn count_scoped_users(&self, scope: &AttemptScope) -> StoreResult<u64> {
        let (conditions, values) = scope_sql(scope);
        self.call(move |connection| {
            let sql = format!("SELECT COUNT(DISTINCT user_id) FROM attempts WHERE {conditions}");
            let count: i64 = connection
                .prepare_cached(&sql)?
                .query_row(params_from_iter(values), |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn list_assessments_by(
        &self,
        created_by: Option<UserId>,
    ) -> StoreResult<Vec<Assessment>> {
        self.call(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, rev, record FROM assessments \
                 WHERE ?1 IS NULL OR created_user_id = ?1 ORDER BY id",
            )?;
            let rows: Vec<(i64, i64, String)> = statement
                .query_map([created_by.map(|id| id.0)], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            rows.iter()
                .map(|(id, rev, text)| super::assessments::assessment_from(*id, *rev, text))
                .collect()
        })
        .await
    }
}
