//! [`AssessmentStore`] on SQLite: each record is a JSON document in a
//! `record` column beside the columns it is found by; a replace is an
//! `UPDATE ... WHERE rev = ?` in one transaction.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension as _};
use serde::de::DeserializeOwned;
use sqlarena_common::assessments::AssessmentSpec;
use sqlarena_common::UserId;

use super::{stored_now, to_json, SqliteStore};
use crate::store::assessments::{
    Assessment, AssessmentSession, AssessmentStore, NewAssessmentSession, NewScoreOverride,
    ScoreOverride,
};
use crate::store::{StoreError, StoreResult};

/// Tables of schema version 6, created idempotently with the main schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS assessments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_user_id INTEGER NOT NULL REFERENCES users(id),
    rev INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assessment_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    assessment_id INTEGER NOT NULL REFERENCES assessments(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    rev INTEGER NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (assessment_id, user_id)
);
CREATE INDEX IF NOT EXISTS assessment_sessions_by_user ON assessment_sessions (user_id, id);
CREATE TABLE IF NOT EXISTS score_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    assessment_id INTEGER NOT NULL REFERENCES assessments(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS score_overrides_by_assessment ON score_overrides (assessment_id, id);
CREATE INDEX IF NOT EXISTS score_overrides_by_user ON score_overrides (user_id, id);
";

/// Reads a record from its JSON; `id` and `rev` come from their columns.
fn record<T: DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Backend(format!("bad {what} record: {error}")))
}

pub(super) fn assessment_from(id: i64, rev: i64, text: &str) -> StoreResult<Assessment> {
    let mut assessment: Assessment = record(text, "assessment")?;
    assessment.id = id;
    assessment.rev = rev;
    Ok(assessment)
}

fn session_from(id: i64, rev: i64, text: &str) -> StoreResult<AssessmentSession> {
    let mut session: AssessmentSession = record(text, "assessment session")?;
    session.id = id;
    session.rev = rev;
    Ok(session)
}

const SESSION_SELECT: &str = "SELECT id, rev, record FROM assessment_sessions";

impl SqliteStore {
    async fn select_sessions(
        &self,
        filter: &'static str,
        key: i64,
    ) -> StoreResult<Vec<AssessmentSession>> {
        self.call(move |connection| {
            let mut statement =
                connection.prepare_cached(&format!("{SESSION_SELECT} WHERE {filter}"))?;
            let rows = statement
                .query_map([key], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter()
                .map(|(id, rev, text)| session_from(*id, *rev, text))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl AssessmentStore for SqliteStore {
    async fn create_assessment(
        &self,
        created_user_id: UserId,
        spec: AssessmentSpec,
    ) -> StoreResult<Assessment> {
        self.write(move |transaction| {
            let mut assessment = Assessment {
                id: 0,
                rev: 1,
                created_user_id,
                spec,
                overrides: Vec::new(),
                extension_s: 0,
                started: false,
                log: Vec::new(),
                created_at: stored_now(),
            };
            transaction.execute(
                "INSERT INTO assessments (created_user_id, rev, record) VALUES (?1, 1, ?2)",
                params![created_user_id, to_json(&assessment)?],
            )?;
            assessment.id = transaction.last_insert_rowid();
            Ok(assessment)
        })
        .await
    }

    async fn get_assessment(&self, id: i64) -> StoreResult<Option<Assessment>> {
        self.call(move |connection| {
            let row = connection
                .prepare_cached("SELECT rev, record FROM assessments WHERE id = ?1")?
                .query_row([id], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()?;
            row.map(|(rev, text)| assessment_from(id, rev, &text))
                .transpose()
        })
        .await
    }

    async fn replace_assessment(&self, assessment: &Assessment) -> StoreResult<bool> {
        let text = to_json(assessment)?;
        let (id, rev) = (assessment.id, assessment.rev);
        self.write(move |transaction| {
            let changed = transaction.execute(
                "UPDATE assessments SET rev = rev + 1, record = ?3 WHERE id = ?1 AND rev = ?2",
                params![id, rev, text],
            )?;
            if changed == 0 {
                let exists = transaction
                    .query_row("SELECT 1 FROM assessments WHERE id = ?1", [id], |_| Ok(()))
                    .optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("assessment {id}")));
                }
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn create_assessment_session(
        &self,
        new: NewAssessmentSession,
    ) -> StoreResult<(AssessmentSession, bool)> {
        self.write(move |transaction| {
            let existing = transaction
                .prepare_cached(&format!(
                    "{SESSION_SELECT} WHERE assessment_id = ?1 AND user_id = ?2"
                ))?
                .query_row([new.assessment_id, new.user_id.0], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            if let Some((id, rev, text)) = existing {
                return Ok((session_from(id, rev, &text)?, false));
            }
            let mut session = AssessmentSession {
                id: 0,
                rev: 1,
                assessment_id: new.assessment_id,
                user_id: new.user_id,
                seed: new.seed,
                questions: new.questions,
                started_at: new.started_at,
                finished_at: None,
                extension_s: 0,
                submissions: Vec::new(),
                log: new.log,
            };
            transaction.execute(
                "INSERT INTO assessment_sessions (assessment_id, user_id, rev, record) \
                 VALUES (?1, ?2, 1, ?3)",
                params![session.assessment_id, session.user_id, to_json(&session)?],
            )?;
            session.id = transaction.last_insert_rowid();
            Ok((session, true))
        })
        .await
    }

    async fn get_assessment_session(&self, id: i64) -> StoreResult<Option<AssessmentSession>> {
        Ok(self.select_sessions("id = ?1", id).await?.pop())
    }

    async fn find_assessment_session(
        &self,
        assessment_id: i64,
        user_id: UserId,
    ) -> StoreResult<Option<AssessmentSession>> {
        Ok(self
            .list_user_assessment_sessions(user_id)
            .await?
            .into_iter()
            .find(|session| session.assessment_id == assessment_id))
    }

    async fn list_assessment_sessions(
        &self,
        assessment_id: i64,
    ) -> StoreResult<Vec<AssessmentSession>> {
        self.select_sessions("assessment_id = ?1 ORDER BY id", assessment_id)
            .await
    }

    async fn list_user_assessment_sessions(
        &self,
        user_id: UserId,
    ) -> StoreResult<Vec<AssessmentSession>> {
        self.select_sessions("user_id = ?1 ORDER BY id", user_id.0)
            .await
    }

    async fn replace_assessment_session(&self, session: &AssessmentSession) -> StoreResult<bool> {
        let text = to_json(session)?;
        let (id, rev) = (session.id, session.rev);
        self.write(move |transaction| {
            let changed = transaction.execute(
                "UPDATE assessment_sessions SET rev = rev + 1, record = ?3 WHERE id = ?1 AND rev = ?2",
                params![id, rev, text],
            )?;
            if changed == 0 {
                let exists = transaction
                    .query_row("SELECT 1 FROM assessment_sessions WHERE id = ?1", [id], |_| {
                        Ok(())
                    })
                    .optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("assessment session {id}")));
                }
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn create_score_override(&self, score: NewScoreOverride) -> StoreResult<ScoreOverride> {
        self.write(move |transaction| {
            let mut stored = ScoreOverride {
                id: 0,
                assessment_id: score.assessment_id,
                user_id: score.user_id,
                score: score.score,
                reason: score.reason,
                created_by: score.created_by,
                created_at: stored_now(),
            };
            transaction.execute(
                "INSERT INTO score_overrides (assessment_id, user_id, record) VALUES (?1, ?2, ?3)",
                params![stored.assessment_id, stored.user_id, to_json(&stored)?],
            )?;
            stored.id = transaction.last_insert_rowid();
            Ok(stored)
        })
        .await
    }

    async fn list_score_overrides(
        &self,
        assessment_id: Option<i64>,
        user_id: Option<UserId>,
    ) -> StoreResult<Vec<ScoreOverride>> {
        self.call(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, record FROM score_overrides \
                 WHERE (?1 IS NULL OR assessment_id = ?1) AND (?2 IS NULL OR user_id = ?2) \
                 ORDER BY id",
            )?;
            let rows = statement
                .query_map(params![assessment_id, user_id], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter()
                .map(|(id, text)| {
                    let mut score: ScoreOverride = record(text, "score")?;
                    score.id = *id;
                    Ok(score)
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use rusqlite::Connection;
    use sqlarena_common::assessments::{Feedback, Scoreboard, Selection, Zone};
    use sqlarena_common::{ChallengeType, Role};
    use uuid::Uuid;

    use super::*;
    use crate::store::{ChallengeStore, NewChallenge, NewTestCase, NewUser, UserStore};

    /// A file of schema version 5 (before assessments) opens as version 6
    /// with its users and challenges intact, and takes assessments.
    #[tokio::test]
    async fn a_version_5_store_gains_the_assessment_tables() {
        let path = std::env::temp_dir()
            .join(format!(
                "sqlarena-assess-migrate-{}",
                Uuid::new_v4().simple()
            ))
            .join("store.db");
        let location = path.to_str().unwrap().to_owned();
        let store = SqliteStore::open(&location).unwrap();
        let professor = store
            .create_user(NewUser {
                email: "prof@example.com".into(),
                full_name: "Prof".into(),
                role: Role::Professor,
                password_hash: "$argon2id$hash".into(),
            })
            .await
            .unwrap();
        let challenge = store
            .create_challenge(NewChallenge {
                created_user_id: professor.id,
                name: "old".into(),
                description: None,
                challenge_type: ChallengeType::FE,
                init: "create table t (a int)".into(),
                solution: "select a from t".into(),
                times_to_run: 3,
                expires_at: stored_now() + Duration::days(1),
                test_cases: vec![NewTestCase {
                    data: "insert into t values (1)".into(),
                    is_visible: true,
                }],
            })
            .await
            .unwrap();
        drop(store);
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "DROP TABLE score_overrides; DROP TABLE assessment_sessions; \
                     DROP TABLE assessments; UPDATE schema_version SET version = 5;",
                )
                .unwrap();
        }

        let store = SqliteStore::open(&location).unwrap();
        let version: i64 = store
            .connection
            .lock()
            .unwrap()
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(version, super::super::SCHEMA_VERSION);
        assert_eq!(
            store.get_user(professor.id).await.unwrap(),
            Some(professor.clone())
        );
        assert_eq!(
            store.get_challenge(challenge.id).await.unwrap(),
            Some(challenge.clone())
        );
        let now = stored_now();
        let spec = AssessmentSpec {
            name: "after the migration".into(),
            description: None,
            zones: vec![Zone {
                pool: vec![challenge.id],
                pick: 1,
                points: 1.0,
            }],
            selection: Selection::Random,
            time_limit_s: 60,
            opens_at: now,
            closes_at: now + Duration::hours(1),
            max_submissions: None,
            min_interval_s: None,
            feedback: Feedback::Immediate,
            scoreboard: Scoreboard::Hidden,
            policy: Default::default(),
            performance_credit: 0.0,
        };
        let assessment = store.create_assessment(professor.id, spec).await.unwrap();
        assert_eq!(
            store.get_assessment(assessment.id).await.unwrap(),
            Some(assessment)
        );
    }
}
