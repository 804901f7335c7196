//! SQLite: challenges, their versions and test cases.

use super::*;

#[async_trait]
impl ChallengeStore for SqliteStore {
    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<Challenge> {
        self.write(move |transaction| {
            let now = micros(stored_now());
            transaction
                .prepare_cached(
                    "INSERT INTO challenges (created_user_id, name, description, challenge_type, init, solution, \
                     times_to_run, expires_at, version, state, init_warnings, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 'PENDING', '[]', ?9)",
                )?
                .execute(params![
                    challenge.created_user_id,
                    challenge.name,
                    challenge.description,
                    challenge_type_name(challenge.challenge_type),
                    challenge.init,
                    challenge.solution,
                    challenge.times_to_run,
                    micros(challenge.expires_at),
                    now
                ])?;
            let id = ChallengeId(transaction.last_insert_rowid());
            insert_test_cases(transaction, id, 1, &challenge.test_cases, now)?;
            select_challenge(transaction, id)?.ok_or_else(|| StoreError::Backend(format!("challenge {id} vanished")))
        })
        .await
    }

    async fn get_challenge(&self, id: ChallengeId) -> StoreResult<Option<Challenge>> {
        self.call(move |connection| select_challenge(connection, id))
            .await
    }

    async fn list_challenges(
        &self,
        created_by: Option<UserId>,
        page: Page<ChallengeId>,
    ) -> StoreResult<Vec<Challenge>> {
        self.call(move |connection| {
            let transaction = connection.transaction()?;
            let below = page.after.unwrap_or(ChallengeId(i64::MAX));
            let limit = sql_limit(page.limit);
            let ids: Vec<ChallengeId> = match created_by {
                Some(user_id) => transaction
                    .prepare_cached(
                        "SELECT id FROM challenges WHERE created_user_id = ?1 AND id < ?2 \
                         ORDER BY id DESC LIMIT ?3",
                    )?
                    .query_map(params![user_id, below, limit], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                None => transaction
                    .prepare_cached(
                        "SELECT id FROM challenges WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                    )?
                    .query_map(params![below, limit], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            let mut challenges = Vec::with_capacity(ids.len());
            for id in ids {
                challenges.extend(select_challenge(&transaction, id)?);
            }
            Ok(challenges)
        })
        .await
    }

    async fn update_challenge(
        &self,
        id: ChallengeId,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> StoreResult<Challenge> {
        self.write(move |transaction| {
            let challenge = select_challenge(transaction, id)?
                .ok_or_else(|| StoreError::NotFound(format!("challenge {id}")))?;
            if challenge.version != expected_version {
                return Err(StoreError::Conflict(format!(
                    "challenge {id} is at version {}, not {expected_version}",
                    challenge.version
                )));
            }
            transaction
                .prepare_cached(
                    "UPDATE challenges SET name = ?2, description = ?3, times_to_run = ?4, \
                     expires_at = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    update.name.unwrap_or(challenge.name),
                    update.description.unwrap_or(challenge.description),
                    update.times_to_run.unwrap_or(challenge.times_to_run),
                    micros(update.expires_at.unwrap_or(challenge.expires_at))
                ])?;
            if let Some(new_version) = update.new_version {
                // The old version's test cases stay, for its attempts.
                let version = expected_version + 1;
                transaction
                    .prepare_cached(
                        "UPDATE challenges SET init = ?2, solution = ?3, version = ?4, \
                         state = 'PENDING', init_at = NULL, init_errors = NULL, \
                         init_warnings = '[]' WHERE id = ?1",
                    )?
                    .execute(params![id, new_version.init, new_version.solution, version])?;
                let now = micros(stored_now());
                insert_test_cases(transaction, id, version, &new_version.test_cases, now)?;
            }
            select_challenge(transaction, id)?
                .ok_or_else(|| StoreError::Backend(format!("challenge {id} vanished")))
        })
        .await
    }

    async fn list_test_cases(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<TestCase>> {
        self.call(move |connection| select_test_cases(connection, challenge_id, version))
            .await
    }

    async fn set_challenge_init(
        &self,
        id: ChallengeId,
        version: i64,
        result: InitResult,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.write(move |transaction| {
            let current: Option<i64> = transaction
                .prepare_cached("SELECT version FROM challenges WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            match current {
                None => return Err(StoreError::NotFound(format!("challenge {id}"))),
                Some(current) if current != version => return Ok(false),
                Some(_) => {}
            }
            match result {
                InitResult::Ready { expected, warnings } => {
                    let mut update_case = transaction.prepare_cached(
                        "UPDATE test_cases SET expected = ?4, reference_ms = ?5 \
                         WHERE id = ?1 AND challenge_id = ?2 AND version = ?3",
                    )?;
                    for (case_id, result, reference_ms) in &expected {
                        if update_case.execute(params![case_id, id, version, to_json(result)?, reference_ms])? == 0 {
                            return Err(StoreError::NotFound(format!("test case {case_id} of challenge {id}")));
                        }
                    }
                    transaction
                        .prepare_cached(
                            "UPDATE challenges SET state = 'READY', init_at = ?2, init_errors = NULL, \
                             init_warnings = ?3 WHERE id = ?1",
                        )?
                        .execute(params![id, micros(at), to_json(&warnings)?])?;
                }
                InitResult::Failed { errors } => {
                    transaction
                        .prepare_cached(
                            "UPDATE challenges SET state = 'FAILED', init_at = ?2, init_errors = ?3 WHERE id = ?1",
                        )?
                        .execute(params![id, micros(at), to_json(&errors)?])?;
                }
            }
            Ok(true)
        })
        .await
    }
}
