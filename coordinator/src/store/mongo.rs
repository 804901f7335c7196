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
    AttemptStatus, CaseResult, ChallengeState, ChallengeType, GraderState, JobKind, JobOutcome,
    JobState, Lane, Role,
};
use uuid::Uuid;

use crate::leaderboard;

mod runs;

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
    async fn insert_user(&self, id: i64, user: &NewUser) -> StoreResult<User> {
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
        let unique = || Some(IndexOptions::builder().unique(true).build());
        // No compound index names `_id`: nx-27017 then rejects every insert
        // into the collection ("JSON path error near '_id'"); sorts by `_id`
        // use the `_id` index.
        let indexes: [(&str, Document, Option<IndexOptions>); 15] = [
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
            .map(|(name, keys)| (name, keys, None));
        for (collection, keys, options) in indexes.into_iter().chain(runs) {
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

    async fn existing_job(&self, id: Uuid) -> StoreResult<Job> {
        self.get_job(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    /// Applies `update` to the job if it is still LEASED under `lease_id`;
    /// returns the updated job, or `None` when the lease is gone.
    async fn update_leased(
        &self,
        job_id: Uuid,
        lease_id: Uuid,
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
        Ok(taken.map(|job| match job.state {
            JobState::Failed => FailOutcome::Failed(job),
            _ => FailOutcome::Requeued(job),
        }))
    }

    /// Returns new test cases of `challenge_id` as stored in its document,
    /// with ids from the test case sequence.
    async fn new_test_cases(
        &self,
        challenge_id: i64,
        cases: &[NewTestCase],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Bson>> {
        let mut test_cases = Vec::with_capacity(cases.len());
        for case in cases {
            let case = TestCase {
                id: self.next_id("test_cases").await?,
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
        user_id: i64,
        attempt_id: i64,
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
    async fn slots_of(&self, user_id: i64) -> StoreResult<Vec<i64>> {
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
                    .ok_or_else(|| StoreError::Backend(format!("attempt slot {id} is no id")))
            })
            .collect()
    }

    /// Gives back the slot of an attempt that is final (idempotent: the
    /// write applies only while the id holds a slot).
    async fn release_slot(&self, user_id: i64, attempt_id: i64) -> StoreResult<()> {
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
    async fn free_finished_slots(&self, user_id: i64) -> StoreResult<bool> {
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
        let time_ms = row.time_of_attempt.timestamp_millis();
        let fields = doc! {
            "challenge_id": row.challenge_id,
            "version": row.version,
            "user_id": row.user_id,
            "attempt_id": row.attempt_id,
            "score": row.score,
            "rank_key": row.rank_key,
            "completion_time_ms": row.completion_time_ms,
            "time_ms": time_ms,
        };
        let leaderboard = self.collection("leaderboard");
        let mut first = fields.clone();
        first.insert("_id", &id);
        match leaderboard.insert_one(first).await.map_err(backend) {
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
        leaderboard
            .update_one(better, doc! { "$set": fields })
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

    fn uuid(&self, key: &str) -> StoreResult<Uuid> {
        let text = self.str(key)?;
        Uuid::parse_str(text).map_err(|error| self.invalid(key, error))
    }

    fn opt_uuid(&self, key: &str) -> StoreResult<Option<Uuid>> {
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
        id: fields.i64("_id")?,
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
        user_id: fields.i64("user_id")?,
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

fn test_case_from(document: &Document, challenge_id: i64) -> StoreResult<TestCase> {
    let fields = Fields::new(document, "test case");
    Ok(TestCase {
        id: fields.i64("id")?,
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
    let id = fields.i64("_id")?;
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
        created_user_id: fields.i64("created_user_id")?,
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

fn attempt_from(document: &Document) -> StoreResult<Attempt> {
    let fields = Fields::new(document, "attempt");
    Ok(Attempt {
        id: fields.i64("_id")?,
        user_id: fields.i64("user_id")?,
        challenge_id: fields.i64("challenge_id")?,
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
        created_by: fields.opt_i64("created_by")?,
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

    // --- users, sessions, invites -------------------------------------------

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.check_email_free(&user.email).await?;
        let id = self.next_id("users").await?;
        self.insert_user(id, &user).await
    }

    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        let found = self
            .collection("users")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(user_from).transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let filter = doc! { "email_lower": email.to_lowercase() };
        let found = self
            .collection("users")
            .find_one(filter)
            .await
            .map_err(backend)?;
        found.as_ref().map(user_from).transpose()
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        let document = doc! {
            "_id": &session.token_hash,
            "session_id": session.id.to_string(),
            "user_id": session.user_id,
            "created_at": bson_time(session.created_at),
            "expires_at": bson_time(session.expires_at),
        };
        self.collection("sessions")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let filter = doc! { "_id": token_hash, "expires_at": { "$gt": bson_time(now) } };
        let Some(session) = self
            .collection("sessions")
            .find_one(filter)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let user_id = Fields::new(&session, "session").i64("user_id")?;
        self.get_user(user_id).await
    }

    async fn list_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
        let documents = self
            .find_many(
                "sessions",
                doc! { "user_id": user_id, "expires_at": { "$gt": bson_time(now) } },
                doc! { "created_at": -1, "_id": -1 },
                0,
            )
            .await?;
        documents.iter().map(session_from).collect()
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let deleted = self
            .collection("sessions")
            .delete_one(doc! { "_id": token_hash })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn delete_user_session(&self, user_id: i64, session_id: Uuid) -> StoreResult<bool> {
        let deleted = self
            .collection("sessions")
            .delete_one(doc! { "user_id": user_id, "session_id": session_id.to_string() })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn delete_user_sessions(
        &self,
        user_id: i64,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id };
        if let Some(keep) = keep_token_hash {
            filter.insert("_id", doc! { "$ne": keep });
        }
        let deleted = self
            .collection("sessions")
            .delete_many(filter)
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count)
    }

    /// Two writes: the hash, then the other sessions. Between them a
    /// signed-in holder of an old session may still act for a moment, but
    /// cannot sign in with the old password.
    async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()> {
        let updated = self
            .collection("users")
            .update_one(
                doc! { "_id": user_id },
                doc! { "$set": { "password_hash": password_hash } },
            )
            .await
            .map_err(backend)?;
        if updated.matched_count == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        self.delete_user_sessions(user_id, keep_token_hash).await?;
        Ok(())
    }

    async fn create_invite(&self, invite: Invite) -> StoreResult<()> {
        let document = doc! {
            "_id": &invite.code_hash,
            "role": invite.role.as_str(),
            "created_by": invite.created_by,
            "created_at": bson_time(invite.created_at),
            "expires_at": bson_time(invite.expires_at),
            "used_by": invite.used_by,
        };
        self.collection("invites")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Claims the invite for the new user's id with one conditional write,
    /// then inserts the user; if the insert fails the claim is handed back,
    /// so the invite is used exactly when the user exists. (Invites stored
    /// before invites expired have no `expires_at` and are refused.)
    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        self.check_email_free(&user.email).await?;
        let id = self.next_id("users").await?;
        let invites = self.collection("invites");
        let claimed = invites
            .find_one_and_update(
                doc! {
                    "_id": code_hash,
                    "used_by": Bson::Null,
                    "expires_at": { "$gt": bson_time(now) },
                },
                doc! { "$set": { "used_by": id } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        let Some(invite) = claimed else {
            return Ok(None);
        };
        let role = Fields::new(&invite, "invite").parsed("role", Role::parse)?;
        match self.insert_user(id, &NewUser { role, ..user }).await {
            Ok(created) => Ok(Some(created)),
            Err(error) => {
                invites
                    .update_one(
                        doc! { "_id": code_hash, "used_by": id },
                        doc! { "$set": { "used_by": Bson::Null } },
                    )
                    .await
                    .map_err(backend)?;
                Err(error)
            }
        }
    }

    // --- challenges ---------------------------------------------------------

    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<Challenge> {
        let now = stored_now();
        let id = self.next_id("challenges").await?;
        let test_cases = self.new_test_cases(id, &challenge.test_cases, now).await?;
        let document = doc! {
            "_id": id,
            "created_user_id": challenge.created_user_id,
            "name": &challenge.name,
            "description": challenge.description.as_deref(),
            "challenge_type": challenge_type_name(challenge.challenge_type),
            "init": &challenge.init,
            "solution": &challenge.solution,
            "times_to_run": i64::from(challenge.times_to_run),
            "expires_at": bson_time(challenge.expires_at),
            "version": 1_i64,
            "state": ChallengeState::Pending.as_str(),
            "init_at": Bson::Null,
            "init_errors": Bson::Null,
            "init_warnings": Bson::Array(Vec::new()),
            "created_at": bson_time(now),
            "test_cases": test_cases,
        };
        self.collection("challenges")
            .insert_one(&document)
            .await
            .map_err(backend)?;
        challenge_from(&document)
    }

    async fn get_challenge(&self, id: i64) -> StoreResult<Option<Challenge>> {
        let found = self
            .collection("challenges")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(challenge_from).transpose()
    }

    async fn list_challenges(
        &self,
        created_by: Option<i64>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Challenge>> {
        let mut filter = match created_by {
            Some(user_id) => doc! { "created_user_id": user_id },
            None => doc! {},
        };
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many(
                "challenges",
                filter,
                doc! { "_id": -1 },
                i64::from(page.limit),
            )
            .await?;
        documents.iter().map(challenge_from).collect()
    }

    async fn update_challenge(
        &self,
        id: i64,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> StoreResult<Challenge> {
        let mut filter = doc! { "_id": id, "version": expected_version };
        let mut set = Document::new();
        if let Some(name) = &update.name {
            set.insert("name", name.as_str());
        }
        if let Some(description) = &update.description {
            set.insert("description", description.as_deref());
        }
        if let Some(times_to_run) = update.times_to_run {
            set.insert("times_to_run", i64::from(times_to_run));
        }
        if let Some(expires_at) = update.expires_at {
            set.insert("expires_at", bson_time(expires_at));
        }
        if let Some(new_version) = &update.new_version {
            let current = self
                .get_challenge(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("challenge {id}")))?;
            if current.version != expected_version {
                return Err(StoreError::Conflict(format!(
                    "challenge {id} is at version {}, not {expected_version}",
                    current.version
                )));
            }
            // Kept before the switch: if the switch then misses, the copy
            // is of the still current version, which reads ignore.
            self.keep_test_cases(&current).await?;
            let test_cases = self
                .new_test_cases(id, &new_version.test_cases, stored_now())
                .await?;
            set.insert("init", new_version.init.as_str());
            set.insert("solution", new_version.solution.as_str());
            set.insert("version", expected_version + 1);
            set.insert("state", ChallengeState::Pending.as_str());
            set.insert("init_at", Bson::Null);
            set.insert("init_errors", Bson::Null);
            set.insert("init_warnings", Bson::Array(Vec::new()));
            set.insert("test_cases", test_cases);
            // An init result landing since the read changes the state (and
            // the kept copy would miss its expected results): then the
            // switch misses and the caller retries.
            filter.insert("state", current.state.as_str());
        }
        let updated = if set.is_empty() {
            self.collection("challenges")
                .find_one(filter)
                .await
                .map_err(backend)?
        } else {
            self.collection("challenges")
                .find_one_and_update(filter, doc! { "$set": set })
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?
        };
        match updated {
            Some(document) => challenge_from(&document),
            None => match self.get_challenge(id).await? {
                None => Err(StoreError::NotFound(format!("challenge {id}"))),
                Some(challenge) => Err(StoreError::Conflict(format!(
                    "challenge {id} changed meanwhile (it is at version {}, {})",
                    challenge.version, challenge.state
                ))),
            },
        }
    }

    async fn list_test_cases(&self, challenge_id: i64, version: i64) -> StoreResult<Vec<TestCase>> {
        let Some(challenge) = self.get_challenge(challenge_id).await? else {
            return Ok(Vec::new());
        };
        if challenge.version == version {
            return Ok(challenge.test_cases);
        }
        let filter = doc! { "challenge_id": challenge_id, "version": version };
        let documents = self
            .find_many("past_test_cases", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents
            .iter()
            .map(|document| test_case_from(document, challenge_id))
            .collect()
    }

    async fn set_challenge_init(
        &self,
        id: i64,
        version: i64,
        result: InitResult,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let challenge = self
            .get_challenge(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("challenge {id}")))?;
        if challenge.version != version {
            return Ok(false);
        }
        let update = match result {
            InitResult::Ready { expected, warnings } => {
                let mut cases = challenge.test_cases;
                for (case_id, result, reference_ms) in expected {
                    let case = cases
                        .iter_mut()
                        .find(|case| case.id == case_id)
                        .ok_or_else(|| {
                            StoreError::NotFound(format!("test case {case_id} of challenge {id}"))
                        })?;
                    case.expected = Some(result);
                    case.reference_ms = reference_ms;
                }
                let cases = cases
                    .iter()
                    .map(|case| test_case_document(case).map(Bson::Document))
                    .collect::<StoreResult<Vec<_>>>()?;
                doc! { "$set": {
                    "state": ChallengeState::Ready.as_str(),
                    "init_at": bson_time(at),
                    "init_errors": Bson::Null,
                    "init_warnings": to_bson(&warnings)?,
                    "test_cases": cases,
                } }
            }
            InitResult::Failed { errors } => doc! { "$set": {
                "state": ChallengeState::Failed.as_str(),
                "init_at": bson_time(at),
                "init_errors": to_bson(&errors)?,
            } },
        };
        // One write conditioned on the version read: a challenge that moved
        // on meanwhile keeps its new test cases.
        let updated = self
            .collection("challenges")
            .update_one(doc! { "_id": id, "version": version }, update)
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }

    // --- attempts -----------------------------------------------------------

    async fn admit_attempt(
        &self,
        attempt: NewAttempt,
        max_unfinished: u64,
    ) -> StoreResult<Admission> {
        if max_unfinished == 0 {
            return Ok(Admission::OverCap { unfinished: 0 });
        }
        let id = self.next_id("attempts").await?;
        let user_id = attempt.user_id;
        let document = doc! {
            "_id": id,
            "user_id": user_id,
            "challenge_id": attempt.challenge_id,
            "challenge_version": attempt.challenge_version,
            "query": &attempt.query,
            "status": AttemptStatus::Pending.as_str(),
            "cases": Bson::Array(Vec::new()),
            "error": Bson::Null,
            "error_kind": Bson::Null,
            "job_id": Bson::Null,
            "created_at": bson_time(stored_now()),
            "finished_at": Bson::Null,
        };
        // The attempt first, then its slot: a slot always names an
        // attempt that exists, and a crash in between leaves an attempt
        // without a job that takes no slot.
        self.collection("attempts")
            .insert_one(&document)
            .await
            .map_err(backend)?;
        if self.take_slot(user_id, id, max_unfinished).await?
            || (self.free_finished_slots(user_id).await?
                && self.take_slot(user_id, id, max_unfinished).await?)
        {
            return Ok(Admission::Created(attempt_from(&document)?));
        }
        self.collection("attempts")
            .delete_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        let unfinished = self.slots_of(user_id).await?.len() as u64;
        Ok(Admission::OverCap { unfinished })
    }

    async fn get_attempt(&self, id: i64) -> StoreResult<Option<Attempt>> {
        let found = self
            .collection("attempts")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(attempt_from).transpose()
    }

    async fn list_user_attempts(&self, user_id: i64, page: Page<i64>) -> StoreResult<Vec<Attempt>> {
        let mut filter = doc! { "user_id": user_id };
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many(
                "attempts",
                filter,
                doc! { "_id": -1 },
                i64::from(page.limit),
            )
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn list_passed_attempts(&self, challenge_id: i64) -> StoreResult<Vec<Attempt>> {
        let filter =
            doc! { "challenge_id": challenge_id, "status": AttemptStatus::Passed.as_str() };
        let documents = self
            .find_many("attempts", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn top_attempts(
        &self,
        challenge_id: i64,
        version: i64,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>> {
        let documents = self
            .find_many(
                "leaderboard",
                doc! { "challenge_id": challenge_id, "version": version },
                doc! { "rank_key": 1, "time_ms": 1, "attempt_id": 1 },
                i64::from(limit),
            )
            .await?;
        documents
            .iter()
            .map(|document| {
                let fields = Fields::new(document, "leaderboard row");
                let time_ms = fields.i64("time_ms")?;
                Ok(LeaderboardRow {
                    challenge_id: fields.i64("challenge_id")?,
                    version: fields.i64("version")?,
                    user_id: fields.i64("user_id")?,
                    attempt_id: fields.i64("attempt_id")?,
                    score: fields.f64("score")?,
                    rank_key: fields.f64("rank_key")?,
                    completion_time_ms: fields.f64("completion_time_ms")?,
                    time_of_attempt: DateTime::from_timestamp_millis(time_ms)
                        .ok_or_else(|| fields.invalid("time_ms", "out of range"))?,
                })
            })
            .collect()
    }

    async fn list_unfinished_challenge_attempts(
        &self,
        challenge_id: i64,
    ) -> StoreResult<Vec<Attempt>> {
        let filter = doc! {
            "challenge_id": challenge_id,
            "status": { "$in": [AttemptStatus::Pending.as_str(), AttemptStatus::Running.as_str()] },
        };
        let documents = self
            .find_many("attempts", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents.iter().map(attempt_from).collect()
    }

    async fn count_unfinished_attempts(&self, user_id: i64) -> StoreResult<u64> {
        let filter = doc! {
            "user_id": user_id,
            "status": { "$in": [AttemptStatus::Pending.as_str(), AttemptStatus::Running.as_str()] },
        };
        self.collection("attempts")
            .count_documents(filter)
            .await
            .map_err(backend)
    }

    async fn update_attempt(&self, id: i64, update: AttemptUpdate) -> StoreResult<Attempt> {
        let attempts = self.collection("attempts");
        let (filter, set) = if update.reopen {
            let set = doc! {
                "status": AttemptStatus::Pending.as_str(),
                "cases": Bson::Array(Vec::new()),
                "error": Bson::Null,
                "error_kind": Bson::Null,
                "finished_at": Bson::Null,
            };
            (doc! { "_id": id }, set)
        } else {
            let mut set = Document::new();
            if let Some(status) = update.status {
                set.insert("status", status.as_str());
            }
            if let Some(cases) = &update.cases {
                set.insert("cases", to_bson(cases)?);
            }
            if let Some(error) = &update.error {
                set.insert("error", error.as_str());
            }
            if let Some(kind) = update.error_kind {
                set.insert("error_kind", kind.as_str());
            }
            if let Some(job_id) = update.job_id {
                set.insert("job_id", job_id.to_string());
            }
            if let Some(finished_at) = update.finished_at {
                set.insert("finished_at", bson_time(finished_at));
            }
            // Only an unfinished attempt changes: the status is part of the
            // filter, so a concurrent final update wins cleanly. `$or`, not
            // `status: {$in}`: nx-27017 applies `{_id, status: {$in}}` to
            // another document when ids were inserted out of order (as
            // concurrent admissions do; `nx_27017_misapplies_id_with_in`).
            let unfinished = doc! { "$or": [
                { "status": AttemptStatus::Pending.as_str() },
                { "status": AttemptStatus::Running.as_str() },
            ] };
            let mut filter = doc! { "_id": id };
            filter.extend(unfinished);
            (filter, set)
        };
        if !set.is_empty() {
            attempts
                .update_one(filter, doc! { "$set": set })
                .await
                .map_err(backend)?;
        }
        let attempt = self
            .get_attempt(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {id}")))?;
        // Also when the attempt was final already: a repeat finishes what a
        // crash interrupted.
        if attempt.status.is_final() {
            self.release_slot(attempt.user_id, id).await?;
            if attempt.status == AttemptStatus::Passed {
                self.record_ranking(&attempt).await?;
            }
        } else if update.reopen {
            self.take_slot(attempt.user_id, id, u64::MAX).await?;
        }
        Ok(attempt)
    }

    // --- jobs ---------------------------------------------------------------

    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job> {
        let id = Uuid::now_v7();
        let seq = self.next_id("jobs").await?;
        let timeout_ms = i64::try_from(job.timeout_ms).map_err(|_| {
            StoreError::Backend(format!("timeout_ms out of range: {}", job.timeout_ms))
        })?;
        let document = doc! {
            "_id": id.to_string(),
            "seq": seq,
            "kind": job.payload.kind().as_str(),
            "lane": job.lane.as_str(),
            "lane_priority": job.lane.priority(),
            "payload": to_bson(&job.payload)?,
            "state": JobState::Queued.as_str(),
            "tries": 0_i64,
            "max_tries": i64::from(job.max_tries),
            "lease": Bson::Null,
            "lease_expires_ms": Bson::Null,
            "timeout_ms": timeout_ms,
            "progress": Bson::Array(Vec::new()),
            "progress_rev": 0_i64,
            "outcome": Bson::Null,
            "error": Bson::Null,
            "applied": false,
            "cancel_requested": false,
            "created_at": bson_time(stored_now()),
            "leased_at": Bson::Null,
            "finished_at": Bson::Null,
        };
        self.jobs().insert_one(&document).await.map_err(backend)?;
        job_from(&document)
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        let found = self
            .jobs()
            .find_one(doc! { "_id": id.to_string() })
            .await
            .map_err(backend)?;
        found.as_ref().map(job_from).transpose()
    }

    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        let mut query = Document::new();
        if let Some(state) = filter.state {
            query.insert("state", state.as_str());
        }
        if let Some(lane) = filter.lane {
            query.insert("lane", lane.as_str());
        }
        if let Some(after) = filter.after {
            query.insert("seq", doc! { "$gt": after });
        }
        self.find_jobs(query, i64::from(filter.limit)).await
    }

    /// Claims in two writes, both conditional, because the deadline depends
    /// on the claimed job's own `timeout_ms`, which a plain update cannot
    /// read (an aggregation-pipeline update could, but nx-27017 rejects
    /// those; see `nx_27017_rejects_pipeline_updates`):
    ///
    /// 1. one `findOneAndUpdate` on `{state: QUEUED, lane: {$in}}` sorted by
    ///    `{lane_priority, seq}` takes the job: LEASED, tries+1, a new lease
    ///    with a provisional deadline of `now + 60 s`. This write alone
    ///    decides who gets the job, so every job is claimed once even with
    ///    several coordinators on one database.
    /// 2. a write fenced by the new lease id sets the real deadline,
    ///    `now + timeout_ms`.
    ///
    /// Between the two, a reaper sees the provisional deadline (never an
    /// early one unless the job's timeout is over 60 s and the second write
    /// is 60 s late). If the coordinator dies in between, the lease expires
    /// after at most 60 s, or sooner when the grader is declared dead. If the
    /// lease was taken away in between (cancelled), the claim moves on to
    /// the next job.
    async fn claim_job(
        &self,
        grader_id: Uuid,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        if lanes.is_empty() {
            return Ok(None);
        }
        let lanes: Vec<&str> = lanes.iter().map(|lane| lane.as_str()).collect();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let provisional = Lease {
                lease_id: Uuid::now_v7(),
                grader_id,
                expires_at: now + chrono::Duration::milliseconds(PROVISIONAL_LEASE_MS),
            };
            let claim = doc! {
                "$set": {
                    "state": JobState::Leased.as_str(),
                    "lease": lease_document(&provisional),
            "lease_expires_ms": provisional.expires_at.timestamp_millis(),
                    "leased_at": bson_time(now),
                    "progress": Bson::Array(Vec::new()),
                    "cancel_requested": false,
                },
                "$inc": { "tries": 1_i64, "progress_rev": 1_i64 },
            };
            let claimed = self
                .jobs()
                .find_one_and_update(
                    doc! { "state": JobState::Queued.as_str(), "lane": { "$in": lanes.clone() } },
                    claim,
                )
                .sort(doc! { "lane_priority": 1, "seq": 1 })
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?;
            let Some(claimed) = claimed else {
                return Ok(None);
            };
            let job = job_from(&claimed)?;
            let lease = Lease {
                lease_id: provisional.lease_id,
                ..lease::new_lease(job.timeout_ms, grader_id, now)
            };
            let deadline = doc! { "$set": {
            "lease": lease_document(&lease),
            "lease_expires_ms": lease.expires_at.timestamp_millis(),
            } };
            if let Some(job) = self.update_leased(job.id, lease.lease_id, deadline).await? {
                return Ok(Some(job));
            }
        }
        Err(StoreError::Backend(
            "claim_job: every claimed job was taken away before its deadline was set".into(),
        ))
    }

    /// Replaces the whole case list in one write conditioned on the lease
    /// and on the progress revision read (optimistic concurrency), so two
    /// progress posts under one lease cannot lose each other's case. (A
    /// `$push` plus positional `$set` pair would do the same in MongoDB, but
    /// as two writes; nx-27017 also mishandles both, see
    /// `nx_27017_pushes_json_strings_and_ignores_positional_updates`.)
    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job> {
        let HeldLease {
            job_id, lease_id, ..
        } = held;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let document = self
                .jobs()
                .find_one(doc! { "_id": job_id.to_string() })
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
            let job = job_from(&document)?;
            lease::check_fence(&job, held)?;
            let revision = progress_revision(&document)?;
            let mut progress = job.progress;
            progress.retain(|existing| existing.test_case_id != case.test_case_id);
            progress.push(case.clone());
            progress.sort_by_key(|existing| existing.test_case_id);
            let filter = doc! {
                "_id": job_id.to_string(),
                "state": JobState::Leased.as_str(),
                "lease.lease_id": lease_id.to_string(),
                "progress_rev": revision,
            };
            let update = doc! {
                "$set": { "progress": to_bson(&progress)? },
                "$inc": { "progress_rev": 1_i64 },
            };
            if let Some(job) = self.update_job(filter, update).await? {
                return Ok(job);
            }
        }
        Err(StoreError::Backend(format!(
            "record_progress on job {job_id}: too many concurrent writers"
        )))
    }

    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        let job_id = held.job_id;
        let update = doc! { "$set": {
            "state": JobState::Done.as_str(),
            "outcome": to_bson(&outcome)?,
            "finished_at": bson_time(now),
            "applied": false,
            "lease_expires_ms": Bson::Null,
        } };
        // Fenced on the lease, its grader and the outcome's kind: whatever
        // misses is explained by the checks on the job as read below.
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": JobState::Leased.as_str(),
            "lease.lease_id": held.lease_id.to_string(),
            "lease.grader_id": held.grader_id.to_string(),
            "kind": lease::outcome_kind(&outcome).as_str(),
        };
        if let Some(job) = self.update_job(filter, update).await? {
            // Only the write that recorded the outcome gets here: counted once.
            if let Some(lease) = &job.lease {
                self.collection("graders")
                    .update_one(
                        doc! { "_id": lease.grader_id.to_string() },
                        doc! { "$inc": { "jobs_done": 1_i64 } },
                    )
                    .await
                    .map_err(backend)?;
            }
            return Ok(Completion::Recorded(job));
        }
        let job = self.existing_job(job_id).await?;
        if lease::check_completion(&job, held, &outcome)? == CompletionCheck::AlreadyRecorded {
            return Ok(Completion::AlreadyRecorded(job));
        }
        // LEASED under this lease when read, yet the fenced write missed:
        // it changed in between; report what it is now.
        Err(StoreError::StaleLease(format!(
            "job {job_id} changed while completing it"
        )))
    }

    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let job = self.existing_job(held.job_id).await?;
            lease::check_fence(&job, held)?;
            // tries and max_tries do not change while the lease is held, so
            // the decision made on what was read stays right for the fenced
            // write.
            let end = lease::after_failure(&job, error, retryable);
            if let Some(outcome) = self.end_lease(&job, &end, now).await? {
                return Ok(outcome);
            }
        }
        Err(StoreError::Backend(format!(
            "fail_job on job {}: too many concurrent writers",
            held.job_id
        )))
    }

    async fn mark_job_applied(&self, job_id: Uuid) -> StoreResult<()> {
        let job = self.existing_job(job_id).await?;
        if !matches!(
            job.state,
            JobState::Done | JobState::Failed | JobState::Cancelled
        ) {
            return Ok(());
        }
        let mut set = doc! {
            "applied": true,
            "outcome": Bson::Null,
            "progress": Bson::Array(Vec::new()),
        };
        if job.state == JobState::Done {
            set.insert("payload", to_bson(&pruned_payload(&job.payload))?);
        }
        // Conditional on the state read: a finished job's state is final.
        self.jobs()
            .update_one(
                doc! { "_id": job_id.to_string(), "state": job.state.as_str() },
                doc! { "$set": set },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let below = first_job_id_at(created_before).to_string();
        let filter = doc! {
            "_id": { "$lt": below },
            "applied": true,
            "state": { "$in": finished_states() },
        };
        let found = self
            .find_many("jobs", filter, doc! { "_id": 1 }, i64::from(limit))
            .await?;
        let mut deleted = 0;
        for document in found {
            // One by one, each still conditional on being applied.
            let id = Fields::new(&document, "job").str("_id")?.to_owned();
            let result = self
                .jobs()
                .delete_one(doc! { "_id": id, "applied": true })
                .await
                .map_err(backend)?;
            deleted += result.deleted_count;
        }
        Ok(deleted)
    }

    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>> {
        self.find_jobs(
            doc! { "applied": false, "state": { "$in": finished_states() } },
            0,
        )
        .await
    }

    async fn release_grader_leases(
        &self,
        grader_id: Uuid,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>> {
        let filter =
            doc! { "state": JobState::Leased.as_str(), "lease.grader_id": grader_id.to_string() };
        let mut outcomes = Vec::new();
        for job in self.find_jobs(filter, 0).await? {
            let end = lease::after_take_back(&job, tries, reason);
            outcomes.extend(self.end_lease(&job, &end, now).await?);
        }
        Ok(outcomes)
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>> {
        // Only LEASED jobs carry `lease_expires_ms`, so this one condition
        // is the whole filter (the state is checked again below, and the
        // take-back is fenced by the lease). It is a top-level integer copy
        // of `lease.expires_at` because nx-27017 compares dates written by
        // `$set` to the second only, and misses them when an `$in` joins
        // (tests `nx_27017_compares_set_dates_to_the_second` and
        // `nx_27017_range_filters_with_in_miss_set_dates`); integers
        // compare exactly everywhere.
        let filter = doc! { "lease_expires_ms": { "$lt": now.timestamp_millis() } };
        let mut outcomes = Vec::new();
        let expired = self.find_jobs(filter, 0).await?;
        for job in &expired {
            if let Some(end) = lease::after_expiry(job, now) {
                outcomes.extend(self.end_lease(job, &end, now).await?);
            }
        }
        Ok(outcomes)
    }

    async fn stale_leases(
        &self,
        grader_id: Uuid,
        leases: &[(Uuid, Uuid)],
    ) -> StoreResult<Vec<Uuid>> {
        let mut stale = Vec::new();
        for &(job_id, lease_id) in leases {
            let still_held = self
                .get_job(job_id)
                .await?
                .is_some_and(|job| lease::still_held(&job, lease_id, grader_id));
            if !still_held {
                stale.push(job_id);
            }
        }
        Ok(stale)
    }

    async fn cancel_job(
        &self,
        job_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let job = self.existing_job(job_id).await?;
            // Conditional on the state (and lease) read: a job claimed or
            // finished in between is looked at again.
            let (filter, cancel_requested) = match (job.state, job.lease) {
                (JobState::Queued, _) => (
                    doc! { "_id": job_id.to_string(), "state": JobState::Queued.as_str() },
                    false,
                ),
                (JobState::Leased, Some(lease)) => (
                    doc! {
                        "_id": job_id.to_string(),
                        "state": JobState::Leased.as_str(),
                        "lease.lease_id": lease.lease_id.to_string(),
                    },
                    true,
                ),
                (JobState::Leased, None) => {
                    return Err(StoreError::Backend(format!(
                        "job {job_id} is LEASED without a lease"
                    )))
                }
                (JobState::Done | JobState::Failed | JobState::Cancelled, _) => return Ok(None),
            };
            let update = doc! { "$set": {
                "state": JobState::Cancelled.as_str(),
                "cancel_requested": cancel_requested,
                "error": reason,
                "finished_at": bson_time(now),
                "applied": false,
                "lease_expires_ms": Bson::Null,
            } };
            if let Some(job) = self.update_job(filter, update).await? {
                return Ok(Some(job));
            }
        }
        Err(StoreError::Backend(format!(
            "cancel_job on job {job_id}: too many concurrent writers"
        )))
    }

    async fn retry_job(&self, job_id: Uuid) -> StoreResult<Option<Job>> {
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": { "$in": [JobState::Failed.as_str(), JobState::Cancelled.as_str()] },
        };
        let update = doc! {
            "$set": {
                "state": JobState::Queued.as_str(),
                "tries": 0_i64,
                "lease": Bson::Null,
                "lease_expires_ms": Bson::Null,
                "leased_at": Bson::Null,
                "finished_at": Bson::Null,
                "outcome": Bson::Null,
                "progress": Bson::Array(Vec::new()),
                "applied": false,
                "cancel_requested": false,
            },
            "$inc": { "progress_rev": 1_i64 },
        };
        match self.update_job(filter, update).await? {
            Some(job) => Ok(Some(job)),
            None => self.existing_job(job_id).await.map(|_| None),
        }
    }

    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>> {
        let jobs = self.jobs();
        let mut stats = Vec::with_capacity(Lane::ALL.len());
        for lane in Lane::ALL {
            let count_in = |state: JobState| {
                jobs.count_documents(doc! { "state": state.as_str(), "lane": lane.as_str() })
            };
            let queued = count_in(JobState::Queued).await.map_err(backend)?;
            let leased = count_in(JobState::Leased).await.map_err(backend)?;
            let oldest = self
                .find_jobs(
                    doc! { "state": JobState::Queued.as_str(), "lane": lane.as_str() },
                    1,
                )
                .await?;
            stats.push(LaneStats {
                lane,
                queued,
                leased,
                oldest_queued_at: oldest.first().map(|job| job.created_at),
            });
        }
        Ok(stats)
    }

    // --- graders ------------------------------------------------------------

    async fn create_grader(&self, grader: Grader) -> StoreResult<()> {
        let seq = self.next_id("graders").await?;
        let jobs_done = i64::try_from(grader.jobs_done).map_err(|_| {
            StoreError::Backend(format!("jobs_done out of range: {}", grader.jobs_done))
        })?;
        let document = doc! {
            "_id": grader.id.to_string(),
            "seq": seq,
            "name": &grader.name,
            "hostname": &grader.hostname,
            "version": &grader.version,
            "lanes": to_bson(&grader.lanes)?,
            "slots": i64::from(grader.slots),
            "state": grader.state.as_str(),
            "token_hash": &grader.token_hash,
            "last_heartbeat": bson_time(grader.last_heartbeat),
            "last_heartbeat_ms": grader.last_heartbeat.timestamp_millis(),
            "registered_at": bson_time(grader.registered_at),
            "jobs_done": jobs_done,
            "heartbeats": 0_i64,
            "cluster_token_id": grader.cluster_token_id.map(|id| id.to_string()),
        };
        self.collection("graders")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_grader(&self, id: Uuid) -> StoreResult<Option<Grader>> {
        self.find_grader(doc! { "_id": id.to_string() }).await
    }

    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>> {
        self.find_grader(doc! { "token_hash": token_hash }).await
    }

    async fn list_graders(&self, page: Page<Uuid>) -> StoreResult<Vec<Grader>> {
        // Hyphenated v7 UUIDs sort as text in the order they were made.
        let filter = match page.after {
            Some(after) => doc! { "_id": { "$lt": after.to_string() } },
            None => doc! {},
        };
        let documents = self
            .find_many("graders", filter, doc! { "_id": -1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(grader_from).collect()
    }

    async fn touch_grader(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Grader>> {
        let touched = self
            .collection("graders")
            .find_one_and_update(
                doc! { "_id": id.to_string(), "state": { "$ne": GraderState::Dead.as_str() } },
                doc! {
                    "$set": { "last_heartbeat": bson_time(now), "last_heartbeat_ms": now.timestamp_millis() },
                    "$inc": { "heartbeats": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        touched.as_ref().map(grader_from).transpose()
    }

    async fn set_grader_state(&self, id: Uuid, state: GraderState) -> StoreResult<bool> {
        let updated = self
            .collection("graders")
            .update_one(
                doc! { "_id": id.to_string(), "state": { "$ne": GraderState::Dead.as_str() } },
                doc! { "$set": { "state": state.as_str() } },
            )
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }

    /// Finds silent graders with a range filter on the heartbeat alone (an
    /// integer copy in epoch milliseconds, as for `lease_expires_ms`),
    /// then marks each one DEAD with a write conditioned on the state and
    /// heartbeat count read, so a grader that heartbeats meanwhile, or that
    /// another coordinator already marked, is left alone. (Range and `$in`
    /// conditions together miss `$set` dates on nx-27017, test
    /// `nx_27017_range_filters_with_in_miss_set_dates`.)
    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>> {
        let silent = doc! { "last_heartbeat_ms": { "$lt": cutoff.timestamp_millis() } };
        let candidates = self
            .find_many("graders", silent, doc! { "seq": 1 }, 0)
            .await?;
        let mut dead = Vec::new();
        for candidate in &candidates {
            let grader = grader_from(candidate)?;
            if grader.state == GraderState::Dead {
                continue;
            }
            let heartbeats = Fields::new(candidate, "grader")
                .opt_i64("heartbeats")?
                .unwrap_or(0);
            let filter = doc! {
                "_id": grader.id.to_string(),
                "state": grader.state.as_str(),
                "heartbeats": heartbeats,
            };
            let marked = self
                .collection("graders")
                .find_one_and_update(
                    filter,
                    doc! { "$set": { "state": GraderState::Dead.as_str() } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?;
            if let Some(marked) = marked {
                dead.push(grader_from(&marked)?);
            }
        }
        Ok(dead)
    }

    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = self
            .collection("graders")
            .delete_many(doc! {
                "state": GraderState::Dead.as_str(),
                "last_heartbeat_ms": { "$lt": cutoff.timestamp_millis() },
            })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count)
    }

    async fn list_grader_leases(&self, grader_id: Uuid) -> StoreResult<Vec<Job>> {
        let filter =
            doc! { "state": JobState::Leased.as_str(), "lease.grader_id": grader_id.to_string() };
        self.find_jobs(filter, 0).await
    }

    // --- cluster tokens -----------------------------------------------------

    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()> {
        let seq = self.next_id("cluster_tokens").await?;
        let document = doc! {
            "_id": token.id.to_string(),
            "seq": seq,
            "label": &token.label,
            "token_hash": &token.token_hash,
            "created_by": token.created_by,
            "created_at": bson_time(token.created_at),
            "revoked": token.revoked,
        };
        self.collection("cluster_tokens")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>> {
        let documents = self
            .find_many(
                "cluster_tokens",
                doc! {},
                doc! { "created_at": -1, "seq": -1 },
                0,
            )
            .await?;
        documents.iter().map(cluster_token_from).collect()
    }

    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>> {
        self.find_cluster_token(doc! { "token_hash": token_hash })
            .await
    }

    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>> {
        self.find_cluster_token(doc! { "_id": id.to_string() })
            .await
    }

    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool> {
        let updated = self
            .collection("cluster_tokens")
            .update_one(
                doc! { "_id": id.to_string() },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
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
