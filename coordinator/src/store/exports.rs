//! What the store keeps of exports: the export (its spec with the filter
//! and scope fixed at creation, its state, and a cursor: the key of the
//! last row written, with the rows and bytes written up to it), never a
//! list of ids; and the paged reads exports stream from.
//!
//! A writer appends a page of rows to its file, then saves the cursor with
//! [`ExportStore::save_export_page`]; the state that call answers is how a
//! pause or cancel reaches the writer, at the next page boundary. After a
//! restart the writer cuts its file back to the bytes saved and goes on
//! from the cursor, so the file is the same byte for byte.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::exports::{ExportFormat, ExportKind, ExportState};
use sqlarena_common::{AttemptId, ChallengeId, ExportId, RunId, UserId};

use super::assessments::Assessment;
use super::{Attempt, StoreResult};

/// The filters an export was asked for (kept as asked).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportFilters {
    pub challenge_id: Option<ChallengeId>,
    pub run_id: Option<RunId>,
    pub user_id: Option<UserId>,
    /// Attempts made at or after this time.
    pub date_gte: Option<DateTime<Utc>>,
    /// Attempts made at or before this time.
    pub date_lte: Option<DateTime<Utc>>,
}

/// What an export writes, fixed when it is created so that a resumed
/// export writes what it would have written in one go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub filters: ExportFilters,
    /// The challenges the export may read: the creator's own for a
    /// professor, `None` (every one) for an admin without a challenge
    /// filter. A gradebook has a column group per challenge listed.
    pub challenge_ids: Option<Vec<ChallengeId>>,
    /// The assessments whose scores a gradebook shows.
    pub assessment_ids: Vec<i64>,
    /// Only attempts made at or before this time are read (the creation
    /// time), so attempts made while an export is paused change nothing.
    pub as_of: DateTime<Utc>,
}

impl ExportSpec {
    /// The attempts this export reads.
    pub fn attempt_scope(&self) -> AttemptScope {
        let date_lte = match self.filters.date_lte {
            Some(date_lte) => date_lte.min(self.as_of),
            None => self.as_of,
        };
        AttemptScope {
            challenge_ids: self.challenge_ids.clone(),
            user_id: self.filters.user_id,
            date_gte: self.filters.date_gte,
            date_lte: Some(date_lte),
        }
    }
}

/// A set of attempts: each condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptScope {
    /// Attempts of these challenges only (`None`: any challenge).
    pub challenge_ids: Option<Vec<ChallengeId>>,
    pub user_id: Option<UserId>,
    /// Made at or after.
    pub date_gte: Option<DateTime<Utc>>,
    /// Made at or before.
    pub date_lte: Option<DateTime<Utc>>,
}

/// An export as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub id: ExportId,
    pub spec: ExportSpec,
    pub created_by: UserId,
    pub state: ExportState,
    /// The key of the last row written (attempt id, user id or item
    /// number); `None` before the first page.
    pub cursor: Option<i64>,
    /// Rows written up to the cursor.
    pub rows: u64,
    /// Bytes of the file up to the cursor (header included).
    pub bytes: u64,
    /// Rows the export will write, counted at creation.
    pub total: u64,
    /// Why it FAILED.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When a COMPLETED export's file is deleted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An export to create (RUNNING, nothing written).
#[derive(Debug, Clone)]
pub struct NewExport {
    pub spec: ExportSpec,
    pub created_by: UserId,
    pub total: u64,
}

/// Exports, and the paged reads they stream from.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Creates a RUNNING export with the next export id.
    async fn create_export(&self, export: NewExport, now: DateTime<Utc>) -> StoreResult<Export>;
    /// Returns an export.
    async fn get_export(&self, id: ExportId) -> StoreResult<Option<Export>>;
    /// Lists RUNNING and PAUSED exports by id (what a coordinator resumes
    /// after a restart).
    async fn list_unfinished_exports(&self) -> StoreResult<Vec<Export>>;
    /// RUNNING -> PAUSED (`paused`) or PAUSED -> RUNNING; `None` when the
    /// export is not in the state to leave.
    async fn set_export_paused(&self, id: ExportId, paused: bool) -> StoreResult<Option<Export>>;
    /// RUNNING or PAUSED -> CANCELLED; `None` when it is already final.
    async fn cancel_export(&self, id: ExportId, now: DateTime<Utc>) -> StoreResult<Option<Export>>;
    /// Saves a written page (cursor, rows and bytes so far) of a RUNNING
    /// export; one in another state is left as it is. Returns the export
    /// as it stands (its state tells the writer to go on or stop), `None`
    /// when there is no such export.
    async fn save_export_page(
        &self,
        id: ExportId,
        cursor: Option<i64>,
        rows: u64,
        bytes: u64,
    ) -> StoreResult<Option<Export>>;
    /// Ends a RUNNING export as COMPLETED (with its expiry) or FAILED
    /// (with `error`). False when it was not RUNNING (nothing changed).
    async fn finish_export(
        &self,
        id: ExportId,
        state: ExportState,
        error: Option<String>,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;
    /// Lists COMPLETED exports whose expiry is at or before `now`.
    async fn list_expired_exports(&self, now: DateTime<Utc>) -> StoreResult<Vec<Export>>;
    /// COMPLETED -> EXPIRED; false when it was in another state.
    async fn expire_export(&self, id: ExportId) -> StoreResult<bool>;
    /// Lists the attempts of `scope` by id after `after`, at most `limit`
    /// (0: all).
    async fn list_scoped_attempts(
        &self,
        scope: &AttemptScope,
        after: Option<AttemptId>,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>>;
    /// Counts the attempts of `scope`.
    async fn count_scoped_attempts(&self, scope: &AttemptScope) -> StoreResult<u64>;
    /// Lists the users with an attempt in `scope`, by id after `after`, at
    /// most `limit` (0: all).
    async fn list_scoped_users(
        &self,
        scope: &AttemptScope,
        after: Option<UserId>,
        limit: u32,
    ) -> StoreResult<Vec<UserId>>;
    /// Counts the users with an attempt in `scope`.
    async fn count_scoped_users(&self, scope: &AttemptScope) -> StoreResult<u64>;
    /// Lists assessments by id, only those `created_by` when given (the
    /// assessments a gradebook shows).
    async fn list_assessments_by(&self, created_by: Option<UserId>)
        -> StoreResult<Vec<Assessment>>;
}
