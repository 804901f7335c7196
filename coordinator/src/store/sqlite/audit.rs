//! The audit of grading on SQLite: init audits, one grader's leaderboard
//! (kept by `record_ranking` beside the whole one), recent passed cases.

use async_trait::async_trait;
use rusqlite::params;
use sqlarena_common::{CaseAudit, CaseResult, ChallengeId, GraderId, TestCaseId};

use super::{json_at, leaderboard_row_from, sql_limit, to_json, SqliteStore};
use crate::store::audit::AuditStore;
use crate::store::{LeaderboardRow, StoreResult};

/// The audit's tables (run with the main schema; new in version 9).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS init_audits (
    test_case_id INTEGER PRIMARY KEY,
    challenge_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    audit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS init_audits_by_version ON init_audits (challenge_id, version, test_case_id);
-- Each user's best passing attempt per challenge version and grader.
CREATE TABLE IF NOT EXISTS grader_leaderboard (
    grader_id TEXT NOT NULL,
    challenge_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    score REAL NOT NULL,
    rank_key REAL NOT NULL,
    completion_time_ms REAL NOT NULL,
    time_of_attempt INTEGER NOT NULL,
    PRIMARY KEY (grader_id, challenge_id, version, user_id)
);
CREATE INDEX IF NOT EXISTS grader_leaderboard_top ON grader_leaderboard
    (challenge_id, version, grader_id, rank_key, time_of_attempt, attempt_id);
";

/// The best rows of one grader on one challenge version: a range of
/// `grader_leaderboard_top`.
const TOP_OF_GRADER_SQL: &str =
    "SELECT challenge_id, version, user_id, attempt_id, score, rank_key, \
     completion_time_ms, time_of_attempt FROM grader_leaderboard \
     WHERE challenge_id = ?1 AND version = ?2 AND grader_id = ?3 \
     ORDER BY rank_key, time_of_attempt, attempt_id LIMIT ?4";

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        audits: Vec<(TestCaseId, CaseAudit)>,
    ) -> StoreResult<()> {
        self.write(move |transaction| {
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO init_audits (test_case_id, challenge_id, version, audit) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (test_case_id) DO UPDATE SET \
                 challenge_id = excluded.challenge_id, version = excluded.version, \
                 audit = excluded.audit",
            )?;
            for (test_case_id, audit) in &audits {
                upsert.execute(params![
                    test_case_id,
                    challenge_id,
                    version,
                    to_json(audit)?
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<(TestCaseId, CaseAudit)>> {
        self.call(move |connection| {
            let audits = connection
                .prepare_cached(
                    "SELECT test_case_id, audit FROM init_audits \
                     WHERE challenge_id = ?1 AND version = ?2 ORDER BY test_case_id",
                )?
                .query_map(params![challenge_id, version], |row| {
                    Ok((row.get(0)?, json_at(row, 1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(audits)
        })
        .await
    }

    async fn top_attempts_of_grader(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        grader_id: GraderId,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>> {
        self.call(move |connection| {
            let rows = connection
                .prepare_cached(TOP_OF_GRADER_SQL)?
                .query_map(
                    params![
                        challenge_id,
                        version,
                        grader_id.to_string(),
                        sql_limit(limit)
                    ],
                    leaderboard_row_from,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_recent_passed_cases(&self, limit: u32) -> StoreResult<Vec<CaseResult>> {
        self.call(move |connection| {
            let lists: Vec<Vec<CaseResult>> = connection
                .prepare_cached(
                    "SELECT cases FROM attempts WHERE status = 'PASSED' ORDER BY id DESC LIMIT ?1",
                )?
                .query_map([sql_limit(limit)], |row| json_at(row, 0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(lists.into_iter().flatten().collect())
        })
        .await
    }
}
