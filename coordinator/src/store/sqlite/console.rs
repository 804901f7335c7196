//! The console's lists on SQLite.

use async_trait::async_trait;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row};
use sqlarena_common::{AttemptId, JobState, Lane, RunId, UserId};

use super::{
    assessments, runs, select_attempts, select_jobs, sql_limit, user_from, wire_at, SqliteStore,
    USER_COLUMNS,
};
use crate::store::assessments::Assessment;
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore, JobCount, JobCounts, JobQuery};
use crate::store::runs::Run;
use crate::store::{first_job_id_at, Attempt, Job, Page, StoreResult, User};

/// The console's tables and indexes (run with the main schema).
///
/// `job_counts` holds how many jobs each (state, lane) has, kept by
/// triggers in the statement that changes a job, so that the jobs page
/// shows a count per filter value without counting a million rows and no
/// code path can forget it. A state change costs two small updates of a
/// table of at most 15 rows (`bench_dispatch` before and after in
/// BENCHMARKS.md).
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS attempts_by_challenge_id ON attempts (challenge_id, id);
CREATE INDEX IF NOT EXISTS jobs_by_challenge ON jobs (json_extract(payload, '$.challenge_id'), seq);
CREATE TABLE IF NOT EXISTS job_counts (
    state TEXT NOT NULL,
    lane_priority INTEGER NOT NULL,
    lane TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    PRIMARY KEY (state, lane_priority, lane)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, lane_priority, lane, jobs)
        VALUES (NEW.state, NEW.lane_priority, NEW.lane, 1)
        ON CONFLICT (state, lane_priority, lane) DO UPDATE SET jobs = jobs + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs
    WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE job_counts SET jobs = jobs - 1
        WHERE state = OLD.state AND lane_priority = OLD.lane_priority AND lane = OLD.lane;
    INSERT INTO job_counts (state, lane_priority, lane, jobs)
        VALUES (NEW.state, NEW.lane_priority, NEW.lane, 1)
        ON CONFLICT (state, lane_priority, lane) DO UPDATE SET jobs = jobs + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET jobs = jobs - 1
        WHERE state = OLD.state AND lane_priority = OLD.lane_priority AND lane = OLD.lane;
END;
";

/// Fills `job_counts` from the jobs (a store made before the counters).
pub(super) const BACKFILL_JOB_COUNTS: &str = "
DELETE FROM job_counts;
INSERT INTO job_counts (state, lane_priority, lane, jobs)
    SELECT state, lane_priority, lane, COUNT(*) FROM jobs GROUP BY state, lane_priority, lane;
";

/// The first `seq` of a job queued at or after a time (`?` is the first
/// job id of that time), or past every job when there is none: ids are
/// UUID v7 made in `seq` order, so a time range of ids is a range of
/// `seq`, which the scan in `seq` order can start from (or stop at)
/// instead of walking every older job.
const FIRST_SEQ_AT: &str =
    "COALESCE((SELECT seq FROM jobs WHERE id >= ? ORDER BY id LIMIT 1), 9223372036854775807)";

/// The WHERE clause and parameters of a job query: only the filters given,
/// so that SQLite can pick an index for them (`jobs_queued`,
/// `jobs_by_lane`, `jobs_by_grader`, `jobs_by_challenge`).
fn job_query_sql(query: &JobQuery) -> (String, Vec<Value>) {
    // One lower bound of `seq`, the page's and the queue time's together:
    // given two, SQLite seeks by one and filters by the other, walking
    // every job below the later bound.
    let after = Value::Integer(query.after.unwrap_or(0) + 1);
    let (mut conditions, mut values) = match query.queued_from {
        Some(from) => {
            let first = Value::Text(first_job_id_at(from).to_string());
            (
                vec![
                    format!("seq >= MAX(?, {FIRST_SEQ_AT})"),
                    // `+id`: the id check must not pick the `id` index,
                    // whose range would be read whole and sorted by `seq`.
                    "+id >= ?".to_string(),
                ],
                vec![after, first.clone(), first],
            )
        }
        None => (vec!["seq >= ?".to_string()], vec![after]),
    };
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
    if let Some(before) = query.queued_before {
        let first = Value::Text(first_job_id_at(before).to_string());
        condition(&format!("seq < {FIRST_SEQ_AT}"), first.clone());
        condition("+id < ?", first);
    }
    let sql = format!("WHERE {} ORDER BY seq LIMIT ?", conditions.join(" AND "));
    values.push(Value::Integer(sql_limit(query.limit)));
    (sql, values)
}

/// A (state, lane, jobs) row.
fn count_from(row: &Row<'_>) -> rusqlite::Result<JobCount> {
    Ok(JobCount {
        state: wire_at(row, 0, JobState::parse)?,
        lane: wire_at(row, 1, Lane::parse)?,
        jobs: row.get::<_, i64>(2)?.unsigned_abs(),
    })
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

    async fn count_jobs_by_value(&self, query: JobQuery, cap: u32) -> StoreResult<JobCounts> {
        let filtered = query.challenge_id.is_some()
            || query.grader_id.is_some()
            || query.queued_from.is_some()
            || query.queued_before.is_some();
        self.call(move |connection| {
            if !filtered {
                let cells = connection
                    .prepare_cached(
                        "SELECT state, lane, SUM(jobs) FROM job_counts WHERE jobs > 0 \
                         GROUP BY state, lane",
                    )?
                    .query_map([], count_from)?
                    .collect::<rusqlite::Result<_>>()?;
                return Ok(JobCounts {
                    cells,
                    capped: false,
                });
            }
            // Counted over the first `cap + 1` matching jobs: one pass in
            // the order of the filter's own index.
            let others = JobQuery {
                state: None,
                lane: None,
                after: None,
                limit: cap.saturating_add(1),
                ..query
            };
            let (filter, values) = job_query_sql(&others);
            let sql = format!(
                "SELECT state, lane, COUNT(*) FROM (SELECT state, lane FROM jobs {filter}) \
                 GROUP BY state, lane"
            );
            let cells: Vec<JobCount> = connection
                .prepare_cached(&sql)?
                .query_map(params_from_iter(values), count_from)?
                .collect::<rusqlite::Result<_>>()?;
            let counted: u64 = cells.iter().map(|cell| cell.jobs).sum();
            Ok(JobCounts {
                cells,
                capped: counted > u64::from(cap),
            })
        })
        .await
    }

    async fn list_users(&self, page: Page<UserId>) -> StoreResult<Vec<User>> {
        self.call(move |connection| {
            let sql =
                format!("SELECT {USER_COLUMNS} FROM users WHERE id > ?1 ORDER BY id LIMIT ?2");
            let users = connection
                .prepare_cached(&sql)?
                .query_map(
                    params![page.after.map_or(0, i64::from), sql_limit(page.limit)],
                    user_from,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(users)
        })
        .await
    }

    async fn list_runs(
        &self,
        created_by: Option<UserId>,
        page: Page<RunId>,
    ) -> StoreResult<Vec<Run>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {} FROM runs WHERE (?1 IS NULL OR created_by = ?1) AND id < ?2 \
                 ORDER BY id DESC LIMIT ?3",
                runs::RUN_COLUMNS
            );
            let runs = connection
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        created_by.map(i64::from),
                        page.after.map_or(i64::MAX, |run| run.0),
                        sql_limit(page.limit)
                    ],
                    runs::run_from,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(runs)
        })
        .await
    }

    async fn list_assessments(
        &self,
        created_by: Option<UserId>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Assessment>> {
        self.call(move |connection| {
            let rows: Vec<(i64, i64, String)> = connection
                .prepare_cached(
                    "SELECT id, rev, record FROM assessments \
                     WHERE (?1 IS NULL OR created_user_id = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3",
                )?
                .query_map(
                    params![
                        created_by.map(i64::from),
                        page.after.unwrap_or(i64::MAX),
                        sql_limit(page.limit)
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            rows.iter()
                .map(|(id, rev, text)| assessments::assessment_from(*id, *rev, text))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::plan;
    use super::*;
    use uuid::Uuid;

    /// A queue-time filter reads jobs in `seq` order from the first job of
    /// that time: a range of the primary key, never the `id` index's
    /// range sorted afterwards (which reads every job since that time).
    #[test]
    fn queue_time_filters_scan_the_primary_key_from_their_first_job() {
        let path = std::env::temp_dir()
            .join(format!("sqlarena-console-plan-{}", Uuid::new_v4().simple()))
            .join("store.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let connection = store.connection.lock().unwrap();
        let now = chrono::Utc::now();
        for query in [
            JobQuery {
                queued_from: Some(now),
                limit: 50,
                ..JobQuery::default()
            },
            JobQuery {
                queued_from: Some(now),
                queued_before: Some(now),
                limit: 50,
                ..JobQuery::default()
            },
        ] {
            let (filter, _) = job_query_sql(&query);
            let found = plan(&connection, &format!("SELECT seq FROM jobs {filter}"));
            let outer = found.split("; ").next().unwrap_or_default();
            assert!(
                outer.contains("INTEGER PRIMARY KEY")
                    && !found.contains("TEMP B-TREE")
                    && !outer.contains("sqlite_autoindex_jobs"),
                "{query:?}: {found}"
            );
        }
    }
}
