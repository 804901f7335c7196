//! SQLite: students' attempts and the leaderboard they feed.

use super::*;

#[async_trait]
impl AttemptStore for SqliteStore {
    async fn admit_attempt(
        &self,
        attempt: NewAttempt,
        max_unfinished: u64,
    ) -> StoreResult<Admission> {
        // One write transaction: no other call runs between the count and
        // the insert.
        self.write(move |transaction| {
            let unfinished: i64 = transaction
                .prepare_cached(UNFINISHED_COUNT_SQL)?
                .query_row([attempt.user_id], |row| row.get(0))?;
            let unfinished = unfinished.unsigned_abs();
            if unfinished >= max_unfinished {
                return Ok(Admission::OverCap { unfinished });
            }
            transaction
                .prepare_cached(
                    "INSERT INTO attempts (user_id, challenge_id, challenge_version, query, status, cases, \
                     created_at) VALUES (?1, ?2, ?3, ?4, 'PENDING', '[]', ?5)",
                )?
                .execute(params![
                    attempt.user_id,
                    attempt.challenge_id,
                    attempt.challenge_version,
                    attempt.query,
                    micros(stored_now())
                ])?;
            let id = AttemptId(transaction.last_insert_rowid());
            let created = select_attempt(transaction, id)?
                .ok_or_else(|| StoreError::Backend(format!("attempt {id} vanished")))?;
            Ok(Admission::Created(created))
        })
        .await
    }

    async fn get_attempt(&self, id: AttemptId) -> StoreResult<Option<Attempt>> {
        self.call(move |connection| select_attempt(connection, id))
            .await
    }

    async fn get_attempts(&self, ids: Vec<AttemptId>) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                found.extend(select_attempt(connection, id)?);
            }
            Ok(found)
        })
        .await
    }

    async fn list_user_attempts(
        &self,
        user_id: UserId,
        page: Page<AttemptId>,
    ) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            select_attempts(
                connection,
                "user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                params![
                    user_id,
                    page.after.unwrap_or(AttemptId(i64::MAX)),
                    sql_limit(page.limit)
                ],
            )
        })
        .await
    }

    async fn list_passed_attempts(&self, challenge_id: ChallengeId) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            select_attempts(
                connection,
                "challenge_id = ?1 AND status = 'PASSED' ORDER BY id",
                [challenge_id],
            )
        })
        .await
    }

    async fn top_attempts(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>> {
        self.call(move |connection| {
            let rows = connection
                .prepare_cached(TOP_ATTEMPTS_SQL)?
                .query_map(
                    params![challenge_id, version, sql_limit(limit)],
                    leaderboard_row_from,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_unfinished_challenge_attempts(
        &self,
        challenge_id: ChallengeId,
    ) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            select_attempts(
                connection,
                "challenge_id = ?1 AND status IN ('PENDING', 'RUNNING') ORDER BY id",
                [challenge_id],
            )
        })
        .await
    }

    async fn count_unfinished_attempts(&self, user_id: UserId) -> StoreResult<u64> {
        self.call(move |connection| {
            let count: i64 = connection
                .prepare_cached(UNFINISHED_COUNT_SQL)?
                .query_row([user_id], |row| row.get(0))?;
            Ok(count.unsigned_abs())
        })
        .await
    }

    async fn reopen_attempt(&self, id: AttemptId) -> StoreResult<Attempt> {
        self.write(move |transaction| {
            let reopened = transaction
                .prepare_cached(
                    "UPDATE attempts SET status = 'PENDING', cases = '[]', error = NULL, \
                     error_kind = NULL, finished_at = NULL WHERE id = ?1",
                )?
                .execute([id])?;
            if reopened == 0 {
                return Err(StoreError::NotFound(format!("attempt {id}")));
            }
            select_attempt(transaction, id)?
                .ok_or_else(|| StoreError::Backend(format!("attempt {id} vanished")))
        })
        .await
    }

    async fn update_attempt(&self, id: AttemptId, update: AttemptUpdate) -> StoreResult<Attempt> {
        self.write(move |transaction| {
            update_attempt_in(transaction, id, update)?
                .ok_or_else(|| StoreError::NotFound(format!("attempt {id}")))
        })
        .await
    }
}

/// Applies `update` to attempt `id` unless it is final (then returns it
/// unchanged), inside `transaction`; a PASSED result enters the
/// leaderboard in the same step. `None` when there is no such attempt.
pub(super) fn update_attempt_in(
    transaction: &Transaction<'_>,
    id: AttemptId,
    update: AttemptUpdate,
) -> StoreResult<Option<Attempt>> {
    let Some(attempt) = select_attempt(transaction, id)? else {
        return Ok(None);
    };
    if attempt.status.is_final() {
        return Ok(Some(attempt));
    }
    let cases = match &update.cases {
        Some(cases) => to_json(cases)?,
        None => to_json(&attempt.cases)?,
    };
    transaction
        .prepare_cached(
            "UPDATE attempts SET status = ?2, cases = ?3, error = ?4, job_id = ?5, finished_at = ?6, \
             error_kind = ?7 WHERE id = ?1",
        )?
        .execute(params![
            id,
            update.status.unwrap_or(attempt.status).as_str(),
            cases,
            update.error.or(attempt.error),
            update.job_id.or(attempt.job_id).map(|job_id| job_id.to_string()),
            update.finished_at.or(attempt.finished_at).map(micros),
            update.error_kind.or(attempt.error_kind).map(AttemptErrorKind::as_str)
        ])?;
    let updated = select_attempt(transaction, id)?
        .ok_or_else(|| StoreError::Backend(format!("attempt {id} vanished")))?;
    if updated.status == AttemptStatus::Passed {
        record_ranking(transaction, &updated)?;
    }
    Ok(Some(updated))
}
