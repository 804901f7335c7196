//! The console's lists on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};
use sqlarena_common::{AttemptId, JobState};

use super::{
    optional_time_at, select_attempts, select_jobs, sql_limit, time_at, wire_at, SqliteStore,
};
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore, JobQuery, JobTimes};
use crate::store::{first_job_id_at, Attempt, Job, Page, StoreResult};

/// The console's tables and indexes (run with the main schema).
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS attempts_by_challenge_id ON attempts (challenge_id, id);
CREATE INDEX IF NOT EXISTS jobs_by_challenge ON jobs (json_extract(payload, '$.challenge_id'), seq);
";

/// The WHERE clause and parameters of a job query: only the filters given,
/// so that SQLite can pick an index for them (`jobs_queued`,
/// `jobs_by_lane`, `jobs_by_grader`, `jobs_by_challenge`).
fn job_query_sql(query: &JobQuery) -> (String, Vec<Value>) {
    let mut conditions = vec!["seq > ?".to_string()];
    let mut values = vec![Value::Integer(query.after.unwrap_or(0))];
    let mut condition = |sql: &str, value: Value| {
        conditions.push(sql.to_string());
        values.push(value);
    };
    if let Some(state) = query.state {
        condition("state = ?", Value::Text(state.as_str().into()));
    }
    if let Some(lane) = query.lane {
        condition("lane_priority = ?", Value::Integer(lane.priority()));
    }
    if let Some(challenge_id) = query.challenge_id {
        condition(
            "json_extract(payload, '$.challenge_id') = ?",
            Value::Integer(challenge_id.into()),
        );
    }
    if let Some(grader_id) = query.grader_id {
        condition(
            "state = 'LEASED' AND grader_id = ?",
            Value::Text(grader_id.to_string()),
        );
    }
    if let Some(from) = query.queued_from {
        condition("id >= ?", Value::Text(first_job_id_at(from).to_string()));
    }
    if let Some(before) = query.queued_before {
        condition("id < ?", Value::Text(first_job_id_at(before).to_string()));
    }
    let sql = format!("WHERE {} ORDER BY seq LIMIT ?", conditions.join(" AND "));
    values.push(Value::Integer(sql_limit(query.limit)));
    (sql, values)
}

#[async_trait]
impl ConsoleStore for SqliteStore {
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<AttemptId>,
    ) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            select_attempts(
                connection,
                "challenge_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR user_id = ?3) \
                 AND id < ?4 ORDER BY id DESC LIMIT ?5",
                params![
                    filter.challenge_id,
                    filter.status.map(|status| status.as_str()),
                    filter.user_id,
                    page.after.unwrap_or(AttemptId(i64::MAX)),
                    sql_limit(page.limit)
                ],
            )
        })
        .await
    }

    async fn list_jobs_matching(&self, query: JobQuery) -> StoreResult<Vec<Job>> {
        self.call(move |connection| {
            let (sql, values) = job_query_sql(&query);
            select_jobs(connection, &sql, params_from_iter(values))
        })
        .await
    }

    async fn list_job_times(
        &self,
        queued_from: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<JobTimes>> {
        self.call(move |connection| {
            let times = connection
                .prepare_cached(
                    "SELECT state, created_at, leased_at, finished_at FROM jobs \
                     WHERE id >= ?1 ORDER BY id LIMIT ?2",
                )?
                .query_map(
                    params![first_job_id_at(queued_from).to_string(), sql_limit(limit)],
                    |row| {
                        Ok(JobTimes {
                            state: wire_at(row, 0, JobState::parse)?,
                            created_at: time_at(row, 1)?,
                            leased_at: optional_time_at(row, 2)?,
                            finished_at: optional_time_at(row, 3)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(times)
        })
        .await
    }
}
