//! [`AssessmentStore`] on MongoDB: each record is a JSON document in a
//! `record` string field beside the fields it is found by (JSON text, so
//! no BSON date or boolean quirk of a server touches it); a replace is one
//! `updateOne` filtered on `{_id, rev}`.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlarena_common::assessments::AssessmentSpec;
use sqlarena_common::UserId;

use super::{backend, stored_now, Fields, MongoStore};
use crate::store::assessments::{
    Assessment, AssessmentSession, AssessmentStore, NewAssessmentSession, NewScoreOverride,
    ScoreOverride,
};
use crate::store::{StoreError, StoreResult};

const ASSESSMENTS: &str = "assessments";
const SESSIONS: &str = "assessment_sessions";
const SCORES: &str = "score_overrides";

/// The indexes of these collections, created with the others at connect
/// (idempotently).
pub(super) fn indexes() -> Vec<(&'static str, Document, Option<IndexOptions>)> {
    vec![
        (
            SESSIONS,
            doc! { "assessment_id": 1, "user_id": 1 },
            Some(IndexOptions::builder().unique(true).build()),
        ),
        (SESSIONS, doc! { "user_id": 1 }, None),
        (SCORES, doc! { "assessment_id": 1 }, None),
        (SCORES, doc! { "user_id": 1 }, None),
    ]
}

fn json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Backend(format!("serializing to JSON: {error}")))
}

/// Reads a record from its JSON; `_id` (and `rev`) come from their fields.
fn record<T: DeserializeOwned>(document: &Document, what: &'static str) -> StoreResult<T> {
    let text = Fields::new(document, what).str("record")?;
    serde_json::from_str(text)
        .map_err(|error| StoreError::Backend(format!("bad {what} record: {error}")))
}

pub(super) fn assessment_from(document: &Document) -> StoreResult<Assessment> {
    let fields = Fields::new(document, "assessment");
    let mut assessment: Assessment = record(document, "assessment")?;
    assessment.id = fields.i64("_id")?;
    assessment.rev = fields.i64("rev")?;
    Ok(assessment)
}

fn session_from(document: &Document) -> StoreResult<AssessmentSession> {
    let fields = Fields::new(document, "assessment session");
    let mut session: AssessmentSession = record(document, "assessment session")?;
    session.id = fields.i64("_id")?;
    session.rev = fields.i64("rev")?;
    Ok(session)
}

fn score_from(document: &Document) -> StoreResult<ScoreOverride> {
    let mut score: ScoreOverride = record(document, "score")?;
    score.id = Fields::new(document, "score").i64("_id")?;
    Ok(score)
}

impl MongoStore {
    async fn find_sessions(&self, filter: Document) -> StoreResult<Vec<AssessmentSession>> {
        self.find_many(SESSIONS, filter, doc! { "_id": 1 }, 0)
            .await?
            .iter()
            .map(session_from)
            .collect()
    }

    /// Writes `record` with `rev + 1` if the document is at `rev`.
    async fn replace_revised(
        &self,
        collection: &'static str,
        id: i64,
        rev: i64,
        record: String,
    ) -> StoreResult<bool> {
        let collection_handle = self.collection(collection);
        let result = collection_handle
            .update_one(
                doc! { "_id": id, "rev": rev },
                doc! { "$set": { "rev": rev + 1, "record": record } },
            )
            .await
            .map_err(backend)?;
        if result.matched_count == 1 {
            return Ok(true);
        }
        let exists = collection_handle
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("{collection} {id}"))),
        }
    }
}

#[async_trait]
impl AssessmentStore for MongoStore {
    async fn create_assessment(
        &self,
        created_user_id: UserId,
        spec: AssessmentSpec,
    ) -> StoreResult<Assessment> {
        let assessment = Assessment {
            id: self.next_id(ASSESSMENTS).await?,
            rev: 1,
            created_user_id,
            spec,
            overrides: Vec::new(),
            extension_s: 0,
            started: false,
            log: Vec::new(),
            created_at: stored_now(),
        };
        self.collection(ASSESSMENTS)
            .insert_one(doc! {
                "_id": assessment.id,
                "rev": 1_i64,
                "created_user_id": created_user_id,
                "record": json(&assessment)?,
            })
            .await
            .map_err(backend)?;
        Ok(assessment)
    }

    async fn get_assessment(&self, id: i64) -> StoreResult<Option<Assessment>> {
        self.collection(ASSESSMENTS)
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?
            .as_ref()
            .map(assessment_from)
            .transpose()
    }

    async fn replace_assessment(&self, assessment: &Assessment) -> StoreResult<bool> {
        self.replace_revised(
            ASSESSMENTS,
            assessment.id,
            assessment.rev,
            json(assessment)?,
        )
        .await
    }

    async fn create_assessment_session(
        &self,
        new: NewAssessmentSession,
    ) -> StoreResult<(AssessmentSession, bool)> {
        if let Some(existing) = self
            .find_assessment_session(new.assessment_id, new.user_id)
            .await?
        {
            return Ok((existing, false));
        }
        let session = AssessmentSession {
            id: self.next_id(SESSIONS).await?,
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
        let inserted = self
            .collection(SESSIONS)
            .insert_one(doc! {
                "_id": session.id,
                "rev": 1_i64,
                "assessment_id": session.assessment_id,
                "user_id": session.user_id,
                "record": json(&session)?,
            })
            .await
            .map_err(backend);
        match inserted {
            Ok(_) => Ok((session, true)),
            // Another call created it first (the unique index decides).
            Err(StoreError::Conflict(_)) => self
                .find_assessment_session(new.assessment_id, new.user_id)
                .await?
                .map(|existing| (existing, false))
                .ok_or_else(|| {
                    StoreError::Backend("a session conflicted but cannot be found".into())
                }),
            Err(error) => Err(error),
        }
    }

    async fn get_assessment_session(&self, id: i64) -> StoreResult<Option<AssessmentSession>> {
        Ok(self.find_sessions(doc! { "_id": id }).await?.pop())
    }

    async fn find_assessment_session(
        &self,
        assessment_id: i64,
        user_id: UserId,
    ) -> StoreResult<Option<AssessmentSession>> {
        Ok(self
            .find_sessions(doc! { "assessment_id": assessment_id, "user_id": user_id })
            .await?
            .pop())
    }

    async fn list_assessment_sessions(
        &self,
        assessment_id: i64,
    ) -> StoreResult<Vec<AssessmentSession>> {
        self.find_sessions(doc! { "assessment_id": assessment_id })
            .await
    }

    async fn list_user_assessment_sessions(
        &self,
        user_id: UserId,
    ) -> StoreResult<Vec<AssessmentSession>> {
        self.find_sessions(doc! { "user_id": user_id }).await
    }

    async fn replace_assessment_session(&self, session: &AssessmentSession) -> StoreResult<bool> {
        self.replace_revised(SESSIONS, session.id, session.rev, json(session)?)
            .await
    }

    async fn create_score_override(&self, score: NewScoreOverride) -> StoreResult<ScoreOverride> {
        let stored = ScoreOverride {
            id: self.next_id(SCORES).await?,
            assessment_id: score.assessment_id,
            user_id: score.user_id,
            score: score.score,
            reason: score.reason,
            created_by: score.created_by,
            created_at: stored_now(),
        };
        self.collection(SCORES)
            .insert_one(doc! {
                "_id": stored.id,
                "assessment_id": stored.assessment_id,
                "user_id": stored.user_id,
                "record": json(&stored)?,
            })
            .await
            .map_err(backend)?;
        Ok(stored)
    }

    async fn list_score_overrides(
        &self,
        assessment_id: Option<i64>,
        user_id: Option<UserId>,
    ) -> StoreResult<Vec<ScoreOverride>> {
        let mut filter = Document::new();
        if let Some(assessment_id) = assessment_id {
            filter.insert("assessment_id", assessment_id);
        }
        if let Some(user_id) = user_id {
            filter.insert("user_id", user_id);
        }
        self.find_many(SCORES, filter, doc! { "_id": 1 }, 0)
            .await?
            .iter()
            .map(score_from)
            .collect()
    }
}
