//! Exports in MongoDB: `exports` (one document per export, the spec as
//! JSON text), every state change one conditional `findOneAndUpdate`; and
//! the paged reads of attempts an export streams from, by `_id`.
//!
//! Dates of the scope are checked here, not in the filter: nx-27017 misses
//! range conditions on dates beside `$or` (see `graders.rs`), so a page is
//! read in batches until it is full or the attempts run out.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use sqlarena_common::exports::ExportState;
use sqlarena_common::{AttemptId, ExportId, UserId};

use super::super::assessments::Assessment;
use super::super::exports::{AttemptScope, Export, ExportStore, NewExport};
use super::super::{Attempt, StoreError, StoreResult};
use super::{attempt_from, backend, bson_time, Fields, MongoStore};

const EXPORTS: &str = "exports";
/// Attempts read per batch while filling a page.
const BATCH: i64 = 1000;

/// Indexes of the exports collection (created with the others).
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![(EXPORTS, doc! { "state": 1 })]
}

fn count(fields: &Fields<'_>, key: &str) -> StoreResult<u64> {
    u64::try_from(fields.i64(key)?).map_err(|_| fields.invalid(key, "negative"))
}

fn export_from(document: &Document) -> StoreResult<Export> {
    let fields = Fields::new(document, "export");
    Ok(Export {
        id: ExportId(fields.i64("_id")?),
        spec: serde_json::from_str(fields.str("spec")?)
            .map_err(|error| fields.invalid("spec", error))?,
        created_by: UserId(fields.i64("created_by")?),
        state: fields.parsed("state", ExportState::parse)?,
        cursor: fields.opt_i64("cursor")?,
        rows: count(&fields, "rows")?,
        bytes: count(&fields, "bytes")?,
        total: count(&fields, "total")?,
        error: fields.opt_str("error")?,
        created_at: fields.time("created_at")?,
        finished_at: fields.opt_time("finished_at")?,
        expires_at: fields.opt_time("expires_at")?,
    })
}

fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend(format!("{what} {value} is too large")))
}

/// The filter of `scope` without its dates.
fn scope_filter(scope: &AttemptScope) -> Document {
    let mut filter = Document::new();
    if let Some(challenge_ids) = &scope.challenge_ids {
        let options: Vec<Bson> = challenge_ids
            .iter()
            .map(|id| Bson::Document(doc! { "challenge_id": id.0 }))
            .collect();
        if !options.is_empty() {
            filter.insert("$or", options);
        }
    }
    if let Some(user_id) = scope.user_id {
        filter.insert("user_id", user_id.0);
    }
    filter
}

/// True when the scope lists no challenge at all: nothing matches (an
/// empty `$or` is no filter).
fn matches_nothing(scope: &AttemptScope) -> bool {
    scope.challenge_ids.as_ref().is_some_and(Vec::is_empty)
}

/// True when `attempt` was made within the scope's dates.
fn within_dates(scope: &AttemptScope, attempt: &Attempt) -> bool {
    scope.date_gte.is_none_or(|gte| attempt.created_at >= gte)
        && scope.date_lte.is_none_or(|lte| attempt.created_at <= lte)
}

impl MongoStore {
    async fn update_export(
        &self,
        filter: Document,
        update: Document,
    ) -> StoreResult<Option<Export>> {
        let updated = self
            .collection(EXPORTS)
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        updated.as_ref().map(export_from).transpose()
    }

    /// The attempts of `scope` by id after `after`, read in batches until
    /// `limit` (0: all) are found.
    async fn scoped_attempts(
        &self,
        scope: &AttemptScope,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>> {
        let mut found = Vec::new();
        if matches_nothing(scope) {
            return Ok(found);
        }
        let mut after_id = after;
        loop {
            let mut filter = scope_filter(scope);
            filter.insert("_id", doc! { "$gt": after_id });
            let documents = self
                .find_many("attempts", filter, doc! { "_id": 1 }, BATCH)
                .await?;
            let Some(last) = documents.last() else {
                return Ok(found);
            };
            after_id = Fields::new(last, "attempt").i64("_id")?;
            for document in &documents {
                let attempt = attempt_from(document)?;
                if within_dates(scope, &attempt) {
                    found.push(attempt);
                    if limit > 0 && found.len() == limit as usize {
                        return Ok(found);
                    }
                }
            }
        }
    }

    /// Whether user `user_id` has an attempt in `scope`.
    async fn has_scoped_attempt(&self, scope: &AttemptScope, user_id: UserId) -> StoreResult<bool> {
        let own = AttemptScope {
            user_id: Some(user_id),
            ..scope.clone()
        };
        Ok(!self.scoped_attempts(&own, 0, 1).await?.is_empty())
    }
}

#[async_trait]
impl ExportStore for MongoStore {
    async fn create_export(&self, export: NewExport, now: DateTime<Utc>) -> StoreResult<Export> {
        let id = self.next_id(EXPORTS).await?;
        let spec = serde_json::to_string(&export.spec)
            .map_err(|error| StoreError::Backend(format!("serializing to JSON: {error}")))?;
        let document = doc! {
            "_id": id,
            "spec": spec,
            "created_by": export.created_by.0,
            "state": ExportState::Running.as_str(),
            "cursor": Bson::Null,
            "rows": 0_i64,
            "bytes": 0_i64,
            "total": to_i64(export.total, "export total")?,
            "error": Bson::Null,
            "created_at": bson_time(now),
            "finished_at": Bson::Null,
            "expires_at": Bson::Null,
        };
        self.collection(EXPORTS)
            .insert_one(&document)
            .await
            .map_err(backend)?;
        export_from(&document)
    }

    async fn get_export(&self, id: ExportId) -> StoreResult<Option<Export>> {
        let found = self
            .collection(EXPORTS)
            .find_one(doc! { "_id": id.0 })
            .await
            .map_err(backend)?;
        found.as_ref().map(export_from).transpose()
    }

    async fn list_unfinished_exports(&self) -> StoreResult<Vec<Export>> {
        let filter = doc! { "$or": [
            { "state": ExportState::Running.as_str() },
            { "state": ExportState::Paused.as_str() },
        ] };
        let documents = self
            .find_many(EXPORTS, filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(export_from).collect()
    }

    async fn set_export_paused(&self, id: ExportId, paused: bool) -> StoreResult<Option<Export>> {
        let (from, to) = if paused {
            (ExportState::Running, ExportState::Paused)
        } else {
            (ExportState::Paused, ExportState::Running)
        };
        self.update_export(
            doc! { "_id": id.0, "state": from.as_str() },
            doc! { "$set": { "state": to.as_str() } },
        )
        .await
    }

    async fn cancel_export(&self, id: ExportId, now: DateTime<Utc>) -> StoreResult<Option<Export>> {
        for from in [ExportState::Running, ExportState::Paused] {
            let cancelled = self
                .update_export(
                    doc! { "_id": id.0, "state": from.as_str() },
                    doc! { "$set": {
                        "state": ExportState::Cancelled.as_str(),
                        "finished_at": bson_time(now),
                    } },
                )
                .await?;
            if cancelled.is_some() {
                return Ok(cancelled);
            }
        }
        Ok(None)
    }

    async fn save_export_page(
        &self,
        id: ExportId,
        cursor: Option<i64>,
        rows: u64,
        bytes: u64,
    ) -> StoreResult<Option<Export>> {
        let saved = self
            .update_export(
                doc! { "_id": id.0, "state": ExportState::Running.as_str() },
                doc! { "$set": {
                    "cursor": cursor,
                    "rows": to_i64(rows, "export rows")?,
                    "bytes": to_i64(bytes, "export bytes")?,
                } },
            )
            .await?;
        match saved {
            Some(export) => Ok(Some(export)),
            None => self.get_export(id).await,
        }
    }

    async fn finish_export(
        &self,
        id: ExportId,
        state: ExportState,
        error: Option<String>,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let finished = self
            .update_export(
                doc! { "_id": id.0, "state": ExportState::Running.as_str() },
                doc! { "$set": {
                    "state": state.as_str(),
                    "error": error,
                    "finished_at": bson_time(now),
                    "expires_at": expires_at.map(bson_time),
                    "expires_ms": expires_at.map(|at| at.timestamp_millis()),
                } },
            )
            .await?;
        Ok(finished.is_some())
    }

    async fn list_expired_exports(&self, now: DateTime<Utc>) -> StoreResult<Vec<Export>> {
        // Dates compared as integer milliseconds (`expires_ms`), as leases'.
        let filter = doc! {
            "state": ExportState::Completed.as_str(),
            "expires_ms": { "$lte": now.timestamp_millis() },
        };
        let documents = self
            .find_many(EXPORTS, filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(export_from).collect()
    }

    async fn expire_export(&self, id: ExportId) -> StoreResult<bool> {
        let expired = self
            .update_export(
                doc! { "_id": id.0, "state": ExportState::Completed.as_str() },
                doc! { "$set": { "state": ExportState::Expired.as_str() } },
            )
            .await?;
        Ok(expired.is_some())
    }

    async fn list_scoped_attempts(
        &self,
        scope: &AttemptScope,
        after: Option<AttemptId>,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>> {
        self.scoped_attempts(scope, after.map_or(0, |id| id.0), limit)
            .await
    }

    async fn count_scoped_attempts(&self, scope: &AttemptScope) -> StoreResult<u64> {
        if matches_nothing(scope) {
            return Ok(0);
        }
        if scope.date_gte.is_none() && scope.date_lte.is_none() {
            return self
                .collection("attempts")
                .count_documents(scope_filter(scope))
                .await
                .map_err(backend);
        }
        Ok(self.scoped_attempts(scope, 0, 0).await?.len() as u64)
    }

    async fn list_scoped_users(
        &self,
        scope: &AttemptScope,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserId>> {
        // One user at a time: the next attempt by user id, then a check of
        // that user's attempts against the dates.
        let mut users = Vec::new();
        if matches_nothing(scope) {
            return Ok(users);
        }
        let mut after = after.map_or(0, |id| id.0);
        if let Some(user_id) = scope.user_id {
            if user_id.0 > after && self.has_scoped_attempt(scope, user_id).await? {
                users.push(user_id);
            }
            return Ok(users);
        }
        loop {
            let mut filter = scope_filter(scope);
            filter.insert("user_id", doc! { "$gt": after });
            let next = self
                .find_many("attempts", filter, doc! { "user_id": 1 }, 1)
                .await?;
            let Some(document) = next.first() else {
                return Ok(users);
            };
            let user_id = UserId(Fields::new(document, "attempt").i64("user_id")?);
            after = user_id.0;
            if self.has_scoped_attempt(scope, user_id).await? {
                users.push(user_id);
                if limit > 0 && users.len() == limit as usize {
                    return Ok(users);
                }
            }
        }
    }

    async fn count_scoped_users(&self, scope: &AttemptScope) -> StoreResult<u64> {
        Ok(self.list_scoped_users(scope, None, 0).await?.len() as u64)
    }

    async fn list_assessments_by(
        &self,
        created_by: Option<UserId>,
    ) -> StoreResult<Vec<Assessment>> {
        let filter = match created_by {
            Some(user_id) => doc! { "created_user_id": user_id.0 },
            None => Document::new(),
        };
        let documents = self
            .find_many("assessments", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents
            .iter()
            .map(super::assessments::assessment_from)
            .collect()
    }
}
