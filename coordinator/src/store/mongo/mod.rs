//! The MongoDB store: several coordinators may share one database.
//!
//! Every state change is a single-document conditional write, so no two
//! coordinators can both apply the same transition:
//!
//! - integer ids come from a `counters` collection (`$inc`, upserted);
//! - a claim is one `findOneAndUpdate` on `{state: QUEUED, lane: {$in}}`
//!   sorted by `{lane_priority, seq}` (indexed);
//! - fenced calls (`record_progress`, `complete_job`, `fail_job`) filter on
//!   `{_id, state: LEASED, "lease.lease_id"}` and read the job only to
//!   explain a miss;
//! - reapers, cancels and retries filter on the state (and lease) they read,
//!   so concurrent reapers cannot requeue a job twice;
//! - the per-user cap on unfinished attempts is a conditional `$inc` on the
//!   user's `attempt_slots` document (`MongoStore::take_slot`);
//! - a leaderboard row changes only by an insert of a user's first row or
//!   an update conditional on ranking better, both repeatable.
//!
//! Layout: UUIDs are stored as strings (hyphenated, readable in a shell), times as BSON dates
//! (millisecond precision), payloads, outcomes, results and case lists as
//! BSON documents converted with serde. Test cases live inside their
//! challenge document, so an init result for one version is one atomic
//! write conditioned on that version, and so is the switch to a new
//! version; the test cases of earlier versions are kept, for their attempts,
//! in `past_test_cases` (one document per test case).
//!
//! The tests run against nx-27017, a MongoDB wire-protocol server backed by
//! SQLite, which deviates from MongoDB in a few places (see the quirk tests
//! in `coordinator/tests/store_mongo.rs`). The code is written for MongoDB;
//! where nx-27017 stores a value in another representation, the decoders
//! below say so next to the tolerance.

mod affinity;
mod assessments;
mod attempts;
mod audit;
mod challenges;
mod console;
mod exports;
mod graders;
mod history;
mod job_tries;
mod jobs;
pub mod maintenance;
mod runs;
mod users;

use crate::store::{AttemptStore, ChallengeStore, GraderStore, JobStore, Retry, UserStore};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlarena_common::{
    AttemptId, AttemptStatus, CaseResult, ChallengeId, ChallengeState, ChallengeType, GraderId,
    GraderState, JobId, JobKind, JobOutcome, JobState, Lane, LeaseId, Role, TestCaseId, UserId,
};
use uuid::Uuid;

use crate::leaderboard;

use super::job_tries::TryOutcome;
use super::lease::{self, CompletionCheck, HeldLease, LeaseEnd, TryCount};
use super::{
    first_job_id_at, pruned_payload, Admission, Attempt, AttemptErrorKind, AttemptUpdate,
    Challenge, ChallengeUpdate, ClusterToken, Completion, FailOutcome, Grader, InitResult, Invite,
    Job, JobFilter, LaneStats, LeaderboardRow, Lease, NewAttempt, NewChallenge, NewJob,
    NewTestCase, NewUser, Page, Session, Store, StoreError, StoreResult, TestCase, User,
};

/// Database used when the URI names none.
const DEFAULT_DATABASE: &str = "sqlarena";

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

/// How long a claim's provisional lease lasts before the claim's second
/// write sets the job's real deadline (see [`MongoStore::claim_job`]).
const PROVISIONAL_LEASE_MS: i64 = 60_000;

/// How often a read-then-conditional-write retries when another writer got
/// in between.
const MAX_CONFLICT_RETRIES: usize = 100;

/// A [`Store`] on a MongoDB database.
#[derive(Debug, Clone)]
pub struct MongoStore {
    database: Database,
}

impl MongoStore {
    /// Connects to the database named by `uri` (its path; `sqlarena` when it
    /// names none), checks it answers, and creates the indexes (idempotent:
    /// several coordinators may start at once).
    ///
    /// # Errors
    /// Fails when the URI is malformed, the server does not answer, or an
    /// index cannot be created.
    pub async fn connect(uri: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let store = MongoStore::connect_unmigrated(uri).await?;
        maintenance::refuse_newer(&store).await?;
        store
            .create_indexes()
            .await
            .context("create the MongoDB indexes")?;
        store
            .backfill_leaderboard()
            .await
            .context("fill the leaderboard from the passed attempts")?;
        store
            .name_sessions()
            .await
            .context("name the sessions made before session ids")?;
        maintenance::record_version(&store).await?;
        Ok(store)
    }

    /// Connects to the database named by `uri` and checks it answers,
    /// changing nothing (for `coordinator migrate --check`).
    ///
    /// # Errors
    /// Fails when the URI is malformed or the server does not answer.
    pub async fn connect_unmigrated(uri: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut options = ClientOptions::parse(uri)
            .await
            .context("parse the MongoDB URI")?;
        options
            .app_name
            .get_or_insert_with(|| "sqlarena-coordinator".to_owned());
        let database_name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options).context("create the MongoDB client")?;
        let store = MongoStore {
            database: client.database(&database_name),
        };
        store.ping().await.context("reach MongoDB")?;
        Ok(store)
    }

    /// Gives every session without a `session_id` one (sessions made
    /// before sessions had ids); idempotent, and a no-op once done.
    async fn name_sessions(&self) -> StoreResult<()> {
        let sessions = self.collection("sessions");
        let unnamed = self
            .find_many(
                "sessions",
                doc! { "session_id": { "$exists": false } },
                doc! {},
                0,
            )
            .await?;
        for session in unnamed {
            let hash = Fields::new(&session, "session").str("_id")?.to_owned();
            sessions
                .update_one(
                    doc! { "_id": hash, "session_id": { "$exists": false } },
                    doc! { "$set": { "session_id": Uuid::new_v4().to_string() } },
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Inserts a user with an id from the `users` sequence; `Conflict` when
    /// the email is taken.
    async fn insert_user(&self, id: UserId, user: &NewUser) -> StoreResult<User> {
        let document = doc! {
            "_id": id,
            "email": &user.email,
            "email_lower": user.email.to_lowercase(),
            "full_name": &user.full_name,
            "role": user.role.as_str(),
            "password_hash": &user.password_hash,
            "created_at": bson_time(stored_now()),
        };
        match self
            .collection("users")
            .insert_one(&document)
            .await
            .map_err(backend)
        {
            Err(StoreError::Conflict(_)) => Err(email_taken(&user.email)),
            Err(error) => Err(error),
            Ok(_) => user_from(&document),
        }
    }

    /// `Conflict` when a user has this email (checked before taking a user
    /// id, so a taken email does not use one up; the unique index decides
    /// races).
    async fn check_email_free(&self, email: &str) -> StoreResult<()> {
        let taken = self
            .collection("users")
            .find_one(doc! { "email_lower": email.to_lowercase() })
            .await
            .map_err(backend)?;
        match taken {
            Some(_) => Err(email_taken(email)),
            None => Ok(()),
        }
    }

    /// Creates every index the queries rely on; creating an existing index
    /// is a no-op in MongoDB.
    async fn create_indexes(&self) -> StoreResult<()> {
        for (collection, keys, options) in wanted_indexes() {
            let model = IndexModel::builder().keys(keys).options(options).build();
            self.collection(collection)
                .create_index(model)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.database.collection(name)
    }

    fn jobs(&self) -> Collection<Document> {
        self.collection("jobs")
    }

    /// Returns the next value of the sequence `name` (1, 2, ...).
    async fn next_id(&self, name: &str) -> StoreResult<i64> {
        let counters = self.collection("counters");
        // Two first uses racing on MongoDB may both try to insert the
        // counter; the loser gets a duplicate key error and simply retries.
        for _ in 0..2 {
            let updated = counters
                .find_one_and_update(doc! { "_id": name }, doc! { "$inc": { "seq": 1_i64 } })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match updated.map_err(backend) {
                Ok(Some(counter)) => return Fields::new(&counter, "counter").i64("seq"),
                Ok(None) => return Err(StoreError::Backend(format!("counter {name} vanished"))),
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Backend(format!(
            "counter {name} could not be incremented"
        )))
    }

    async fn find_many(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> StoreResult<Vec<Document>> {
        let collection = self.collection(collection);
        let mut find = collection.find(filter).sort(sort);
        if limit > 0 {
            find = find.limit(limit);
        }
        let cursor = find.await.map_err(backend)?;
        cursor.try_collect().await.map_err(backend)
    }

    async fn find_jobs(&self, filter: Document, limit: i64) -> StoreResult<Vec<Job>> {
        let documents = self
            .find_many("jobs", filter, doc! { "seq": 1 }, limit)
            .await?;
        documents.iter().map(job_from).collect()
    }

    async fn existing_job(&self, id: JobId) -> StoreResult<Job> {
        self.get_job(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    /// Applies `update` to the job if it is still LEASED under `lease_id`;
    /// returns the updated job, or `None` when the lease is gone.
    async fn update_leased(
        &self,
        job_id: JobId,
        lease_id: LeaseId,
        update: Document,
    ) -> StoreResult<Option<Job>> {
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": JobState::Leased.as_str(),
            "lease.lease_id": lease_id.to_string(),
        };
        self.update_job(filter, update).await
    }

    async fn update_job(&self, filter: Document, update: Document) -> StoreResult<Option<Job>> {
        let updated = self
            .jobs()
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        updated.as_ref().map(job_from).transpose()
    }

    /// Persists how a LEASED job's lease ends. Conditional on the lease the
    /// caller read, so a job taken back concurrently (another reaper, a
    /// completion) is left alone and `None` is returned.
    async fn end_lease(
        &self,
        job: &Job,
        end: &LeaseEnd,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<FailOutcome>> {
        let Some(lease) = job.lease else {
            return Ok(None);
        };
        let update = lease_end_update(end, now);
        let taken = self.update_leased(job.id, lease.lease_id, update).await?;
        if taken.is_some() {
            let (outcome, error) = job_tries::outcome_of(end);
            self.close_try(lease.lease_id, outcome, error, now).await?;
        }
        Ok(taken.map(|job| match job.state {
            JobState::Failed => FailOutcome::Failed(job),
            _ => FailOutcome::Requeued(job),
        }))
    }

    /// Returns new test cases of `challenge_id` as stored in its document,
    /// with ids from the test case sequence.
    async fn new_test_cases(
        &self,
        challenge_id: ChallengeId,
        cases: &[NewTestCase],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Bson>> {
        let mut test_cases = Vec::with_capacity(cases.len());
        for case in cases {
            let case = TestCase {
                id: TestCaseId(self.next_id("test_cases").await?),
                challenge_id,
                data: case.data.clone(),
                is_visible: case.is_visible,
                expected: None,
                reference_ms: None,
                created_at: now,
            };
            test_cases.push(Bson::Document(test_case_document(&case)?));
        }
        Ok(test_cases)
    }

    /// Copies the test cases of `challenge`'s current version into
    /// `past_test_cases`. Idempotent (one upsert per test case id), so it
    /// can run before the switch to the next version and again on a retry.
    async fn keep_test_cases(&self, challenge: &Challenge) -> StoreResult<()> {
        let past = self.collection("past_test_cases");
        for case in &challenge.test_cases {
            let mut document = test_case_document(case)?;
            document.insert("_id", case.id);
            document.insert("challenge_id", challenge.id);
            document.insert("version", challenge.version);
            past.replace_one(doc! { "_id": case.id }, document)
                .upsert(true)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Takes one of the user's unfinished-attempt slots for `attempt_id`,
    /// if fewer than `max_unfinished` are taken (`u64::MAX`: no cap).
    ///
    /// The cap is one conditional write on the user's `attempt_slots`
    /// document, `{_id: user_id, taken: N, active: [attempt ids]}`:
    /// `$inc` of `taken` and `$push` of the id apply only while `taken` is
    /// below the cap and the id is not in `active`, so concurrent callers
    /// (several coordinators included) never take more slots than the cap.
    /// (`active.<cap - 1>: {$exists: false}` would do without the counter,
    /// but nx-27017 ignores array-index paths.) A slot is given back when
    /// its attempt is final ([`MongoStore::release_slot`]).
    async fn take_slot(
        &self,
        user_id: UserId,
        attempt_id: AttemptId,
        max_unfinished: u64,
    ) -> StoreResult<bool> {
        let slots = self.collection("attempt_slots");
        // The document exists first, so the capped write needs no upsert
        // (an upsert that misses the cap would try a duplicate insert).
        match slots
            .update_one(
                doc! { "_id": user_id },
                doc! { "$setOnInsert": { "taken": 0_i64, "active": Bson::Array(Vec::new()) } },
            )
            .upsert(true)
            .await
            .map_err(backend)
        {
            // Another first use inserted it at the same moment.
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
        let mut filter = doc! { "_id": user_id, "active": { "$ne": attempt_id } };
        if let Ok(cap) = i64::try_from(max_unfinished) {
            filter.insert("taken", doc! { "$lt": cap });
        }
        let taken = slots
            .update_one(
                filter,
                doc! { "$push": { "active": attempt_id }, "$inc": { "taken": 1_i64 } },
            )
            .await
            .map_err(backend)?;
        Ok(taken.matched_count == 1)
    }

    /// Returns the attempt ids holding the user's slots.
    async fn slots_of(&self, user_id: UserId) -> StoreResult<Vec<AttemptId>> {
        let found = self
            .collection("attempt_slots")
            .find_one(doc! { "_id": user_id })
            .await
            .map_err(backend)?;
        let Some(document) = found else {
            return Ok(Vec::new());
        };
        Fields::new(&document, "attempt slots")
            .array("active")?
            .iter()
            .map(|id| {
                id.as_i64()
                    .or_else(|| id.as_i32().map(i64::from))
                    .map(AttemptId)
                    .ok_or_else(|| StoreError::Backend(format!("attempt slot {id} is no id")))
            })
            .collect()
    }

    /// Gives back the slot of an attempt that is final (idempotent: the
    /// write applies only while the id holds a slot).
    async fn release_slot(&self, user_id: UserId, attempt_id: AttemptId) -> StoreResult<()> {
        self.collection("attempt_slots")
            .update_one(
                doc! { "_id": user_id, "active": attempt_id },
                doc! { "$pull": { "active": attempt_id }, "$inc": { "taken": -1_i64 } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Gives back slots whose attempt is final or gone but kept its slot (a
    /// coordinator died between finishing it and releasing the slot).
    /// Returns true if any was freed.
    async fn free_finished_slots(&self, user_id: UserId) -> StoreResult<bool> {
        let mut freed = false;
        for attempt_id in self.slots_of(user_id).await? {
            let finished = self
                .get_attempt(attempt_id)
                .await?
                .is_none_or(|attempt| attempt.status.is_final());
            if finished {
                self.release_slot(user_id, attempt_id).await?;
                freed = true;
            }
        }
        Ok(freed)
    }

    /// Fills an empty leaderboard from the attempts that passed before the
    /// leaderboard existed (a database from an older coordinator).
    /// Idempotent, so coordinators starting together may both do it.
    async fn backfill_leaderboard(&self) -> StoreResult<()> {
        let has_rows = self
            .collection("leaderboard")
            .find_one(doc! {})
            .await
            .map_err(backend)?
            .is_some();
        if has_rows {
            return Ok(());
        }
        let passed = doc! { "status": AttemptStatus::Passed.as_str() };
        for document in self
            .find_many("attempts", passed, doc! { "_id": 1 }, 0)
            .await?
        {
            self.record_ranking(&attempt_from(&document)?).await?;
        }
        Ok(())
    }

    /// Keeps `attempt`'s leaderboard row if it qualifies and beats its
    /// user's row for that challenge version. Two writes, each atomic: an
    /// insert that only the first row of a user gets past (its `_id` names
    /// challenge, version and user), else an update conditional on ranking
    /// better. Repeating it changes nothing.
    async fn record_ranking(&self, attempt: &Attempt) -> StoreResult<()> {
        let Some(challenge) = self.get_challenge(attempt.challenge_id).await? else {
            return Ok(());
        };
        let cases = if challenge.version == attempt.challenge_version {
            challenge.test_cases
        } else {
            self.list_test_cases(challenge.id, attempt.challenge_version)
                .await?
        };
        let Some(row) = leaderboard::row_for(attempt, challenge.challenge_type, &cases) else {
            return Ok(());
        };
        let id = format!("{}:{}:{}", row.challenge_id, row.version, row.user_id);
        self.keep_better_row("leaderboard", id, leaderboard_fields(&row), &row)
            .await?;
        if let Some(grader_id) = crate::store::audit::graded_by(attempt) {
            let id = format!(
                "{grader_id}:{}:{}:{}",
                row.challenge_id, row.version, row.user_id
            );
            let mut fields = leaderboard_fields(&row);
            fields.insert("grader_id", grader_id.to_string());
            self.keep_better_row("grader_leaderboard", id, fields, &row)
                .await?;
        }
        Ok(())
    }

    /// Keeps `row` (stored as `fields`) as the document `id` of
    /// `collection` when it is the first there or ranks better. Two
    /// writes, each atomic: an insert only the first row gets past, else
    /// an update conditional on ranking better. Repeating it changes
    /// nothing.
    async fn keep_better_row(
        &self,
        collection: &str,
        id: String,
        fields: Document,
        row: &LeaderboardRow,
    ) -> StoreResult<()> {
        let time_ms = row.time_of_attempt.timestamp_millis();
        let rows = self.collection(collection);
        let mut first = fields.clone();
        first.insert("_id", &id);
        match rows.insert_one(first).await.map_err(backend) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
        let better = doc! {
            "_id": &id,
            "$or": [
                { "rank_key": { "$gt": row.rank_key } },
                { "rank_key": row.rank_key, "time_ms": { "$gt": time_ms } },
                { "rank_key": row.rank_key, "time_ms": time_ms, "attempt_id": { "$gt": row.attempt_id } },
            ],
        };
        rows.update_one(better, doc! { "$set": fields })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn find_grader(&self, filter: Document) -> StoreResult<Option<Grader>> {
        let found = self
            .collection("graders")
            .find_one(filter)
            .await
            .map_err(backend)?;
        found.as_ref().map(grader_from).transpose()
    }

    async fn find_cluster_token(&self, filter: Document) -> StoreResult<Option<ClusterToken>> {
        let found = self
            .collection("cluster_tokens")
            .find_one(filter)
            .await
            .map_err(backend)?;
        found.as_ref().map(cluster_token_from).transpose()
    }
}

// ---------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------

/// Every index the queries rely on, by collection.
pub(crate) fn wanted_indexes() -> Vec<(&'static str, Document, Option<IndexOptions>)> {
    let unique = || Some(IndexOptions::builder().unique(true).build());
    // No compound index names `_id`: nx-27017 then rejects every insert
    // into the collection ("JSON path error near '_id'"); sorts by `_id`
    // use the `_id` index.
    let indexes: [(&'static str, Document, Option<IndexOptions>); 16] = [
        // Case-insensitive email uniqueness: the lower-cased copy.
        ("users", doc! { "email_lower": 1 }, unique()),
        // Sessions and invites are keyed by their hash (`_id`); a
        // user's sessions are listed and revoked together.
        ("sessions", doc! { "user_id": 1 }, None),
        ("graders", doc! { "token_hash": 1 }, unique()),
        ("graders", doc! { "last_heartbeat_ms": 1 }, None),
        ("cluster_tokens", doc! { "token_hash": 1 }, unique()),
        ("challenges", doc! { "created_user_id": 1 }, None),
        (
            "past_test_cases",
            doc! { "challenge_id": 1, "version": 1 },
            None,
        ),
        ("attempts", doc! { "user_id": 1 }, None),
        ("attempts", doc! { "challenge_id": 1, "status": 1 }, None),
        // Claims: the next QUEUED job by lane priority, then age.
        (
            "jobs",
            doc! { "state": 1, "lane_priority": 1, "seq": 1 },
            None,
        ),
        // Expired leases: only LEASED jobs carry `lease_expires_ms`, the
        // deadline in epoch milliseconds (see `requeue_expired`).
        ("jobs", doc! { "lease_expires_ms": 1 }, None),
        ("jobs", doc! { "state": 1, "lane": 1 }, None),
        ("jobs", doc! { "lease.grader_id": 1 }, None),
        // The console's jobs of one challenge.
        ("jobs", doc! { "payload.challenge_id": 1, "seq": 1 }, None),
        ("jobs", doc! { "applied": 1, "state": 1, "seq": 1 }, None),
        // The best rows of a challenge version, in ranking order.
        (
            "leaderboard",
            doc! { "challenge_id": 1, "version": 1, "rank_key": 1, "time_ms": 1, "attempt_id": 1 },
            None,
        ),
    ];
    let runs = runs::indexes()
        .into_iter()
        .chain(exports::indexes())
        .map(|(name, keys)| (name, keys, None));
    let console = history::indexes()
        .into_iter()
        .chain(job_tries::indexes())
        .map(|(name, keys)| (name, keys, None));
    indexes
        .into_iter()
        .chain(assessments::indexes())
        .chain(affinity::indexes())
        .chain(audit::indexes())
        .chain(runs)
        .chain(console)
        .collect()
}

/// Maps a driver error: duplicate keys are `Conflict`, the rest `Backend`.
fn backend(error: mongodb::error::Error) -> StoreError {
    let duplicate = match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|write| write.code == DUPLICATE_KEY)),
        _ => false,
    };
    if duplicate {
        StoreError::Conflict(error.to_string())
    } else {
        let transient = is_transient(&error);
        StoreError::database(error, transient)
    }
}

/// True for MongoDB errors that say the server is unreachable or busy
/// rather than that the call is wrong: no server selected in time, a
/// connection lost or refused, a pool cleared after a network error, or an
/// error the server labels retryable.
fn is_transient(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
    ) || [
        mongodb::error::RETRYABLE_WRITE_ERROR,
        mongodb::error::TRANSIENT_TRANSACTION_ERROR,
        mongodb::error::RETRYABLE_ERROR,
    ]
    .iter()
    .any(|label| error.contains_label(label))
}

fn bson_time(time: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(time.timestamp_millis())
}

/// Returns now, truncated to the millisecond precision BSON dates keep.
fn stored_now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

fn to_bson<T: Serialize>(value: &T) -> StoreResult<Bson> {
    bson::to_bson(value).map_err(|error| StoreError::Backend(format!("encode BSON: {error}")))
}

fn to_u32(value: i64, field: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Backend(format!("{field} out of range: {value}")))
}

/// The update that persists how a LEASED job's lease ends (decided by
/// [`lease`]); FAILED keeps the lease, so a late report hears it is
/// already FAILED under it.
fn lease_end_update(end: &LeaseEnd, now: DateTime<Utc>) -> Document {
    match end {
        LeaseEnd::Fail { error } => doc! { "$set": {
            "state": JobState::Failed.as_str(),
            "error": error,
            "finished_at": bson_time(now),
            "applied": false,
            "lease_expires_ms": Bson::Null,
        } },
        LeaseEnd::Requeue { tries, error } => {
            let mut set = doc! {
                "state": JobState::Queued.as_str(),
                "tries": i64::from(*tries),
                "lease": Bson::Null,
                "lease_expires_ms": Bson::Null,
            };
            if let Some(error) = error {
                set.insert("error", error);
            }
            doc! { "$set": set }
        }
    }
}

/// Typed access to a stored document's fields, with errors naming the
/// field and record.
struct Fields<'a> {
    document: &'a Document,
    record: &'static str,
}

impl<'a> Fields<'a> {
    fn new(document: &'a Document, record: &'static str) -> Self {
        Fields { document, record }
    }

    fn invalid(&self, key: &str, why: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(format!("{} field {key}: {why}", self.record))
    }

    /// Returns the field, or `None` when it is missing or null.
    fn get(&self, key: &str) -> Option<&'a Bson> {
        match self.document.get(key) {
            None | Some(Bson::Null) => None,
            Some(value) => Some(value),
        }
    }

    fn required(&self, key: &str) -> StoreResult<&'a Bson> {
        self.get(key).ok_or_else(|| self.invalid(key, "missing"))
    }

    fn str(&self, key: &str) -> StoreResult<&'a str> {
        match self.required(key)? {
            Bson::String(text) => Ok(text),
            other => Err(self.invalid(key, format!("expected a string, found {other}"))),
        }
    }

    fn opt_str(&self, key: &str) -> StoreResult<Option<String>> {
        self.get(key)
            .map(|_| self.str(key).map(str::to_owned))
            .transpose()
    }

    fn i64(&self, key: &str) -> StoreResult<i64> {
        match self.required(key)? {
            Bson::Int64(value) => Ok(*value),
            Bson::Int32(value) => Ok(i64::from(*value)),
            Bson::Double(value) if value.fract() == 0.0 => Ok(*value as i64),
            other => Err(self.invalid(key, format!("expected an integer, found {other}"))),
        }
    }

    /// A number; nx-27017 may hand back a whole double as an integer.
    fn f64(&self, key: &str) -> StoreResult<f64> {
        match self.required(key)? {
            Bson::Double(value) => Ok(*value),
            Bson::Int64(value) => Ok(*value as f64),
            Bson::Int32(value) => Ok(f64::from(*value)),
            other => Err(self.invalid(key, format!("expected a number, found {other}"))),
        }
    }

    fn opt_i64(&self, key: &str) -> StoreResult<Option<i64>> {
        self.get(key).map(|_| self.i64(key)).transpose()
    }

    /// An integer id, as whichever id type it is.
    fn id<T: From<i64>>(&self, key: &str) -> StoreResult<T> {
        self.i64(key).map(T::from)
    }

    fn opt_id<T: From<i64>>(&self, key: &str) -> StoreResult<Option<T>> {
        self.opt_i64(key).map(|id| id.map(T::from))
    }

    fn bool(&self, key: &str) -> StoreResult<bool> {
        match self.required(key)? {
            Bson::Boolean(value) => Ok(*value),
            // nx-27017 stores a boolean written by `$set` as 0 or 1
            // (test `nx_27017_stores_set_booleans_as_integers`); MongoDB
            // keeps the boolean.
            Bson::Int32(value) if matches!(value, 0 | 1) => Ok(*value == 1),
            Bson::Int64(value) if matches!(value, 0 | 1) => Ok(*value == 1),
            other => Err(self.invalid(key, format!("expected a boolean, found {other}"))),
        }
    }

    fn time(&self, key: &str) -> StoreResult<DateTime<Utc>> {
        match self.required(key)? {
            Bson::DateTime(time) => DateTime::from_timestamp_millis(time.timestamp_millis())
                .ok_or_else(|| self.invalid(key, "date out of range")),
            // nx-27017 stores a date written by `$set` as the text
            // "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) (test
            // `nx_27017_stores_set_dates_as_strings`); MongoDB keeps the
            // BSON date.
            Bson::String(text) => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .map(|naive| naive.and_utc())
                .map_err(|error| {
                    self.invalid(key, format!("expected a date, found {text:?}: {error}"))
                }),
            other => Err(self.invalid(key, format!("expected a date, found {other}"))),
        }
    }

    fn opt_time(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.get(key).map(|_| self.time(key)).transpose()
    }

    /// A UUID kept as text, as whichever id type it is.
    fn uuid<T: From<Uuid>>(&self, key: &str) -> StoreResult<T> {
        let text = self.str(key)?;
        Uuid::parse_str(text)
            .map(T::from)
            .map_err(|error| self.invalid(key, error))
    }

    fn opt_uuid<T: From<Uuid>>(&self, key: &str) -> StoreResult<Option<T>> {
        self.get(key).map(|_| self.uuid(key)).transpose()
    }

    fn document(&self, key: &str) -> StoreResult<Option<&'a Document>> {
        match self.get(key) {
            None => Ok(None),
            Some(Bson::Document(document)) => Ok(Some(document)),
            Some(other) => Err(self.invalid(key, format!("expected a document, found {other}"))),
        }
    }

    fn array(&self, key: &str) -> StoreResult<&'a [Bson]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Bson::Array(items)) => Ok(items),
            Some(other) => Err(self.invalid(key, format!("expected an array, found {other}"))),
        }
    }

    /// Decodes a serde value stored as BSON.
    fn value<T: DeserializeOwned>(&self, key: &str) -> StoreResult<T> {
        bson::from_bson(self.required(key)?.clone()).map_err(|error| self.invalid(key, error))
    }

    fn opt_value<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        self.get(key).map(|_| self.value(key)).transpose()
    }

    fn parsed<T>(&self, key: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
        let text = self.str(key)?;
        parse(text).ok_or_else(|| self.invalid(key, format!("unknown value {text:?}")))
    }
}

fn challenge_type_name(challenge_type: ChallengeType) -> &'static str {
    match challenge_type {
        ChallengeType::FE => "FE",
        ChallengeType::SE => "SE",
    }
}

fn parse_challenge_type(text: &str) -> Option<ChallengeType> {
    match text {
        "FE" => Some(ChallengeType::FE),
        "SE" => Some(ChallengeType::SE),
        _ => None,
    }
}

fn user_from(document: &Document) -> StoreResult<User> {
    let fields = Fields::new(document, "user");
    Ok(User {
        id: fields.id("_id")?,
        email: fields.str("email")?.to_owned(),
        full_name: fields.str("full_name")?.to_owned(),
        role: fields.parsed("role", Role::parse)?,
        password_hash: fields.str("password_hash")?.to_owned(),
        created_at: fields.time("created_at")?,
    })
}

fn session_from(document: &Document) -> StoreResult<Session> {
    let fields = Fields::new(document, "session");
    Ok(Session {
        id: fields.uuid("session_id")?,
        token_hash: fields.str("_id")?.to_owned(),
        user_id: fields.id("user_id")?,
        created_at: fields.time("created_at")?,
        expires_at: fields.time("expires_at")?,
    })
}

fn email_taken(email: &str) -> StoreError {
    StoreError::Conflict(format!("the email {email} is already registered"))
}

fn test_case_document(case: &TestCase) -> StoreResult<Document> {
    Ok(doc! {
        "id": case.id,
        "data": &case.data,
        "is_visible": case.is_visible,
        "expected": case.expected.as_ref().map(to_bson).transpose()?,
        "reference_ms": case.reference_ms,
        "created_at": bson_time(case.created_at),
    })
}

fn test_case_from(document: &Document, challenge_id: ChallengeId) -> StoreResult<TestCase> {
    let fields = Fields::new(document, "test case");
    Ok(TestCase {
        id: fields.id("id")?,
        challenge_id,
        data: fields.str("data")?.to_owned(),
        is_visible: fields.bool("is_visible")?,
        expected: fields.opt_value("expected")?,
        reference_ms: fields.opt_value("reference_ms")?,
        created_at: fields.time("created_at")?,
    })
}

fn challenge_from(document: &Document) -> StoreResult<Challenge> {
    let fields = Fields::new(document, "challenge");
    let id = fields.id("_id")?;
    let mut test_cases = fields
        .array("test_cases")?
        .iter()
        .map(|item| match item {
            Bson::Document(case) => test_case_from(case, id),
            other => {
                Err(fields.invalid("test_cases", format!("expected documents, found {other}")))
            }
        })
        .collect::<StoreResult<Vec<_>>>()?;
    test_cases.sort_by_key(|case| case.id);
    Ok(Challenge {
        id,
        created_user_id: fields.id("created_user_id")?,
        name: fields.str("name")?.to_owned(),
        description: fields.opt_str("description")?,
        challenge_type: fields.parsed("challenge_type", parse_challenge_type)?,
        init: fields.str("init")?.to_owned(),
        solution: fields.str("solution")?.to_owned(),
        times_to_run: to_u32(fields.i64("times_to_run")?, "times_to_run")?,
        expires_at: fields.time("expires_at")?,
        version: fields.i64("version")?,
        state: fields.parsed("state", ChallengeState::parse)?,
        init_at: fields.opt_time("init_at")?,
        init_errors: fields.opt_value("init_errors")?,
        init_warnings: fields.opt_value("init_warnings")?.unwrap_or_default(),
        created_at: fields.time("created_at")?,
        test_cases,
    })
}

/// A leaderboard row as stored (without its `_id`).
fn leaderboard_fields(row: &LeaderboardRow) -> Document {
    doc! {
        "challenge_id": row.challenge_id,
        "version": row.version,
        "user_id": row.user_id,
        "attempt_id": row.attempt_id,
        "score": row.score,
        "rank_key": row.rank_key,
        "completion_time_ms": row.completion_time_ms,
        "time_ms": row.time_of_attempt.timestamp_millis(),
    }
}

fn leaderboard_row_from(document: &Document) -> StoreResult<LeaderboardRow> {
    let fields = Fields::new(document, "leaderboard row");
    let time_ms = fields.i64("time_ms")?;
    Ok(LeaderboardRow {
        challenge_id: fields.id("challenge_id")?,
        version: fields.i64("version")?,
        user_id: fields.id("user_id")?,
        attempt_id: fields.id("attempt_id")?,
        score: fields.f64("score")?,
        rank_key: fields.f64("rank_key")?,
        completion_time_ms: fields.f64("completion_time_ms")?,
        time_of_attempt: DateTime::from_timestamp_millis(time_ms)
            .ok_or_else(|| fields.invalid("time_ms", "out of range"))?,
    })
}

fn attempt_from(document: &Document) -> StoreResult<Attempt> {
    let fields = Fields::new(document, "attempt");
    Ok(Attempt {
        id: fields.id("_id")?,
        user_id: fields.id("user_id")?,
        challenge_id: fields.id("challenge_id")?,
        challenge_version: fields.i64("challenge_version")?,
        query: fields.str("query")?.to_owned(),
        status: fields.parsed("status", AttemptStatus::parse)?,
        cases: fields.opt_value("cases")?.unwrap_or_default(),
        error: fields.opt_str("error")?,
        error_kind: fields
            .opt_str("error_kind")?
            .map(|text| {
                AttemptErrorKind::parse(&text)
                    .ok_or_else(|| fields.invalid("error_kind", format!("unknown kind {text:?}")))
            })
            .transpose()?,
        job_id: fields.opt_uuid("job_id")?,
        created_at: fields.time("created_at")?,
        finished_at: fields.opt_time("finished_at")?,
    })
}

fn lease_from(document: &Document) -> StoreResult<Lease> {
    let fields = Fields::new(document, "lease");
    Ok(Lease {
        lease_id: fields.uuid("lease_id")?,
        grader_id: fields.uuid("grader_id")?,
        expires_at: fields.time("expires_at")?,
    })
}

fn lease_document(lease: &Lease) -> Document {
    doc! {
        "lease_id": lease.lease_id.to_string(),
        "grader_id": lease.grader_id.to_string(),
        "expires_at": bson_time(lease.expires_at),
    }
}

fn job_from(document: &Document) -> StoreResult<Job> {
    let fields = Fields::new(document, "job");
    Ok(Job {
        id: fields.uuid("_id")?,
        seq: fields.i64("seq")?,
        kind: fields.parsed("kind", JobKind::parse)?,
        lane: fields.parsed("lane", Lane::parse)?,
        payload: fields.value("payload")?,
        state: fields.parsed("state", JobState::parse)?,
        tries: to_u32(fields.i64("tries")?, "tries")?,
        max_tries: to_u32(fields.i64("max_tries")?, "max_tries")?,
        lease: fields.document("lease")?.map(lease_from).transpose()?,
        timeout_ms: fields.i64("timeout_ms")?.unsigned_abs(),
        progress: fields.opt_value("progress")?.unwrap_or_default(),
        outcome: fields.opt_value::<JobOutcome>("outcome")?,
        error: fields.opt_str("error")?,
        applied: fields.bool("applied")?,
        cancel_requested: fields.bool("cancel_requested")?,
        created_at: fields.time("created_at")?,
        leased_at: fields.opt_time("leased_at")?,
        finished_at: fields.opt_time("finished_at")?,
    })
}

/// Returns the job's progress revision (bumped by every progress write).
fn progress_revision(document: &Document) -> StoreResult<i64> {
    Ok(Fields::new(document, "job")
        .opt_i64("progress_rev")?
        .unwrap_or(0))
}

fn grader_from(document: &Document) -> StoreResult<Grader> {
    let fields = Fields::new(document, "grader");
    Ok(Grader {
        id: fields.uuid("_id")?,
        name: fields.str("name")?.to_owned(),
        hostname: fields.str("hostname")?.to_owned(),
        version: fields.str("version")?.to_owned(),
        lanes: fields.value("lanes")?,
        slots: to_u32(fields.i64("slots")?, "slots")?,
        state: fields.parsed("state", GraderState::parse)?,
        token_hash: fields.str("token_hash")?.to_owned(),
        last_heartbeat: fields.time("last_heartbeat")?,
        registered_at: fields.time("registered_at")?,
        jobs_done: fields.i64("jobs_done")?.unsigned_abs(),
        cluster_token_id: fields.opt_uuid("cluster_token_id")?,
    })
}

fn cluster_token_from(document: &Document) -> StoreResult<ClusterToken> {
    let fields = Fields::new(document, "cluster token");
    Ok(ClusterToken {
        id: fields.uuid("_id")?,
        label: fields.str("label")?.to_owned(),
        token_hash: fields.str("token_hash")?.to_owned(),
        created_by: fields.opt_id("created_by")?,
        created_at: fields.time("created_at")?,
        revoked: fields.bool("revoked")?,
    })
}

fn finished_states() -> Bson {
    Bson::Array(
        [JobState::Done, JobState::Failed, JobState::Cancelled]
            .iter()
            .map(|state| Bson::String(state.as_str().to_owned()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nx_27017_date_text_is_read_as_utc() {
        let document =
            doc! { "at": "2026-01-01 12:00:00.123000", "real": bson::DateTime::from_millis(5) };
        let fields = Fields::new(&document, "test");
        assert_eq!(
            fields.time("at").unwrap().timestamp_millis(),
            1_767_268_800_123
        );
        assert_eq!(fields.time("real").unwrap().timestamp_millis(), 5);
        assert!(fields.time("missing").is_err());
    }
}
