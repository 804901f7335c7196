//! The console's lists on SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::{select_attempts, sql_limit, SqliteStore};
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore};
use crate::store::{Attempt, Page, StoreResult};

/// The console's tables and indexes (run with the main schema).
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS attempts_by_challenge_id ON attempts (challenge_id, id);
";

#[async_trait]
impl ConsoleStore for SqliteStore {
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<i64>,
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
                    page.after.unwrap_or(i64::MAX),
                    sql_limit(page.limit)
                ],
            )
        })
        .await
    }
}
