//! The coordinator's store: one async [`Store`] trait for everything the
//! coordinator keeps, with two backends chosen by URI scheme.
//!
//! - `sqlite://PATH`: the embedded default ([`sqlite::SqliteStore`]), one file
//!   in WAL mode, one coordinator at a time.
//! - `mongodb://...`: [`mongo::MongoStore`], several coordinators may share it.
//!
//! Both pass the one conformance suite (`conformance.rs`, behind the
//! `testsuite` feature, run per backend by [`store_conformance_suite!`]). The store knows
//! nothing of HTTP or of grading rules; the fenced job operations
//! (`record_progress`, `complete_job`, `fail_job`) are atomic so that a result
//! is recorded exactly once.

#[cfg(feature = "testsuite")]
mod conformance;
pub mod lease;
pub mod mongo;
pub mod runs;
#[cfg(feature = "testsuite")]
pub mod runs_conformance;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::{
    AttemptStatus, CaseResult, ChallengeState, ChallengeType, GraderState, JobKind, JobOutcome,
    JobPayload, JobState, Lane, QueryResult, Role,
};
use uuid::Uuid;

pub use self::lease::{HeldLease, TryCount};
pub use crate::leaderboard::LeaderboardRow;
#[cfg(feature = "testsuite")]
pub use conformance::{Check, CheckFuture, CHECKS};

/// Returns the conformance check named `name`, for
/// [`store_conformance_suite!`](crate::store_conformance_suite).
///
/// # Panics
/// When no check has that name.
#[cfg(feature = "testsuite")]
pub fn conformance_check(name: &str) -> fn(Arc<dyn Store>) -> conformance::CheckFuture {
    CHECKS
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no conformance check is named {name}"))
        .run
}

/// Errors a store reports. `Conflict`, `NotFound`, `StaleLease` and
/// `Invalid` are expected outcomes a caller turns into 409/404/422;
/// `Database` and `Backend` are faults, and [`StoreError::is_transient`]
/// says whether trying again later may work.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. an email already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A fenced job call carried a lease that is no longer the job's current
    /// lease (requeued, cancelled, finished, or another grader's). Nothing
    /// was changed.
    #[error("stale lease: {0}")]
    StaleLease(String),
    /// The call contradicts the record (e.g. an outcome of the wrong kind
    /// for its job). Nothing was changed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database failed; `transient` when trying again later may work
    /// (SQLite busy or locked, MongoDB unreachable or timing out), not when
    /// it is a bug or corruption.
    #[error("store database error: {source}")]
    Database {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
        transient: bool,
    },
    /// What the store read breaks an invariant it relies on (a record
    /// vanished inside a transaction, a value out of range): a bug or
    /// corruption.
    #[error("store backend error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Wraps a database error; `transient` when trying again later may work.
    pub fn database(
        source: impl std::error::Error + Send + Sync + 'static,
        transient: bool,
    ) -> StoreError {
        StoreError::Database {
            source: Box::new(source),
            transient,
        }
    }

    /// True for a fault that may go away when the call is tried again
    /// later (the database is busy or unreachable), false for expected
    /// outcomes and for faults that will not (bugs, corruption).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                transient: true,
                ..
            }
        )
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store named by `uri`.
///
/// # Errors
/// Fails when the scheme is unknown or the backend cannot be opened (e.g. a
/// second coordinator on the same SQLite file).
pub async fn open(uri: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = uri.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(path)?;
        Ok(Arc::new(store))
    } else if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        let store = mongo::MongoStore::connect(uri).await?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "unknown store URI {:?}: use sqlite://PATH or mongodb://HOST:PORT/DB",
            crate::redact(uri)
        )
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// A user as stored, including the password hash. Never serialize this to a
/// client: the HTTP layer has its own views.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    /// As the user typed it; uniqueness is case-insensitive.
    pub email: String,
    pub full_name: String,
    pub role: Role,
    /// PHC-format argon2 hash.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Fields of a user to be created; the store assigns `id` and `created_at`.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub password_hash: String,
}

/// A bearer session: the sha256 of the token, never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Names the session to admins (list, revoke) without revealing anything
    /// of the token.
    pub id: Uuid,
    pub token_hash: String,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A single-use invitation to register with a given role, until it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub code_hash: String,
    pub role: Role,
    pub created_by: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_by: Option<i64>,
}

/// A test case as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub id: i64,
    pub challenge_id: i64,
    pub data: String,
    pub is_visible: bool,
    /// Filled by the init job.
    pub expected: Option<QueryResult>,
    pub reference_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
}

/// A challenge with its test cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub id: i64,
    pub created_user_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub challenge_type: ChallengeType,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub expires_at: DateTime<Utc>,
    pub version: i64,
    pub state: ChallengeState,
    pub init_at: Option<DateTime<Utc>>,
    pub init_errors: Option<Vec<String>>,
    pub init_warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub test_cases: Vec<TestCase>,
}

/// A test case to be created with its challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTestCase {
    pub data: String,
    pub is_visible: bool,
}

/// A challenge to be created: the store assigns ids, `version = 1`,
/// `state = PENDING` and timestamps.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub created_user_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub challenge_type: ChallengeType,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub expires_at: DateTime<Utc>,
    pub test_cases: Vec<NewTestCase>,
}

/// What a version of a challenge is built from: the init SQL, the reference
/// solution and the test cases. Changing any of it makes a new version.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeVersion {
    pub init: String,
    pub solution: String,
    pub test_cases: Vec<NewTestCase>,
}

/// Changes to a challenge for [`Store::update_challenge`]; `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct ChallengeUpdate {
    pub name: Option<String>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<String>>,
    pub times_to_run: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Moves the challenge to its next version, built from this.
    pub new_version: Option<ChallengeVersion>,
}

/// What an init job established for one version of a challenge.
#[derive(Debug, Clone, PartialEq)]
pub enum InitResult {
    /// Expected results per test case id; the challenge becomes READY.
    Ready {
        expected: Vec<(i64, QueryResult, Option<f64>)>,
        warnings: Vec<String>,
    },
    /// The challenge becomes FAILED with these messages.
    Failed { errors: Vec<String> },
}

/// An attempt with its per-test-case results.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub user_id: i64,
    pub challenge_id: i64,
    pub challenge_version: i64,
    pub query: String,
    pub status: AttemptStatus,
    /// One entry per test case once results arrive (ordered by test case id).
    pub cases: Vec<CaseResult>,
    /// Why the attempt is ERROR or CANCELLED, when it is, in full (for the
    /// challenge's professor and admins).
    pub error: Option<String>,
    /// What kind of failure `error` describes: students see a fixed message
    /// per kind, never the text.
    pub error_kind: Option<AttemptErrorKind>,
    /// The attempt's grading job.
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The kind of failure an attempt's `error` describes. The text can name
/// graders, hosts, databases, roles, admins or the reference's errors; its
/// kind is what a student is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptErrorKind {
    /// The grader rejected the student's query itself (e.g. not a single
    /// read-only statement): the text is about the student's own SQL.
    Query,
    /// Grading failed for reasons outside the query (grader lost, deadline,
    /// database or reference failure).
    Grading,
    /// Cancelled by its owner, the challenge's professor or an admin.
    Cancelled,
    /// Cancelled because the challenge moved to a new version first.
    Outdated,
}

impl AttemptErrorKind {
    /// Returns the stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptErrorKind::Query => "query",
            AttemptErrorKind::Grading => "grading",
            AttemptErrorKind::Cancelled => "cancelled",
            AttemptErrorKind::Outdated => "outdated",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<AttemptErrorKind> {
        [
            AttemptErrorKind::Query,
            AttemptErrorKind::Grading,
            AttemptErrorKind::Cancelled,
            AttemptErrorKind::Outdated,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// An attempt to be created with status PENDING.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub user_id: i64,
    pub challenge_id: i64,
    pub challenge_version: i64,
    pub query: String,
}

/// Outcome of [`Store::admit_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The attempt was created, PENDING.
    Created(Attempt),
    /// Nothing was created: the user already has this many unfinished
    /// attempts, the cap or more.
    OverCap { unfinished: u64 },
}

/// Changes to an attempt; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AttemptUpdate {
    pub status: Option<AttemptStatus>,
    pub cases: Option<Vec<CaseResult>>,
    pub error: Option<String>,
    pub error_kind: Option<AttemptErrorKind>,
    pub job_id: Option<Uuid>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Reopens the attempt (an admin retried its job): status PENDING, no
    /// cases, no error, no finished_at, even when it was final. The other
    /// fields of the update are ignored.
    pub reopen: bool,
}

/// A job's current lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub lease_id: Uuid,
    pub grader_id: Uuid,
    /// The job's deadline: past it, the lease is taken back.
    pub expires_at: DateTime<Utc>,
}

/// A unit of work for a grader.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    /// Position in the order jobs were queued (the key of job listings).
    pub seq: i64,
    pub kind: JobKind,
    pub lane: Lane,
    pub payload: JobPayload,
    pub state: JobState,
    /// Times leased so far (a clean release does not count).
    pub tries: u32,
    pub max_tries: u32,
    pub lease: Option<Lease>,
    /// How long one lease may run before it is taken back, in milliseconds.
    pub timeout_ms: u64,
    /// Per-test-case results posted as progress under the current lease.
    pub progress: Vec<CaseResult>,
    /// The final outcome, once DONE.
    pub outcome: Option<JobOutcome>,
    /// Why the job FAILED or was CANCELLED; the last failure while queued.
    pub error: Option<String>,
    /// False between recording an outcome and applying it to the domain
    /// (challenge or attempt); the reaper re-applies after a crash.
    pub applied: bool,
    /// Set when an admin or owner cancels a LEASED job, so the grader learns
    /// it from its next heartbeat.
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub leased_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to be queued.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub lane: Lane,
    pub payload: JobPayload,
    pub max_tries: u32,
    pub timeout_ms: u64,
}

/// Outcome of [`Store::complete_job`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// This call recorded the outcome; the job is DONE.
    Recorded(Job),
    /// The same lease already completed the job; nothing changed.
    AlreadyRecorded(Job),
}

/// Outcome of [`Store::fail_job`] and of lease expiry.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    /// Back in the queue for another try.
    Requeued(Job),
    /// No tries left (or not retryable): the job is FAILED.
    Failed(Job),
}

/// Queue depth and age of the oldest queued job of a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneStats {
    pub lane: Lane,
    pub queued: u64,
    pub leased: u64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// A filter for [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub lane: Option<Lane>,
    /// At most this many jobs; 0 lists every one.
    pub limit: u32,
    /// Only jobs queued after the one with this `seq` (the last of the
    /// previous page).
    pub after: Option<i64>,
}

/// One page of a list, in the list's order: the entries after the key
/// `after` (the last key of the previous page), at most `limit` of them
/// (0: all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: u32,
}

impl<K> Page<K> {
    /// The whole list.
    pub const fn all() -> Page<K> {
        Page {
            after: None,
            limit: 0,
        }
    }
}

/// A registered grader node.
#[derive(Debug, Clone, PartialEq)]
pub struct Grader {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub lanes: Vec<Lane>,
    pub slots: u32,
    pub state: GraderState,
    /// sha256 of the grader token.
    pub token_hash: String,
    pub last_heartbeat: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    pub jobs_done: u64,
    /// The cluster token the grader registered with (`None` for graders
    /// registered before tokens were recorded): revoking it cuts the grader off.
    pub cluster_token_id: Option<Uuid>,
}

/// A cluster token: graders register with it. Only its sha256 is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterToken {
    pub id: Uuid,
    pub label: String,
    pub token_hash: String,
    pub created_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

/// What an applied DONE job keeps of its payload: the ids and names that
/// say what it was for. The SQL, test data and query are gone: the
/// challenge and the attempt keep them.
pub fn pruned_payload(payload: &JobPayload) -> JobPayload {
    match payload {
        JobPayload::Init(init) => JobPayload::Init(sqlarena_common::InitPayload {
            init: String::new(),
            solution: String::new(),
            test_cases: init
                .test_cases
                .iter()
                .map(|case| sqlarena_common::TestCaseData {
                    id: case.id,
                    data: String::new(),
                })
                .collect(),
            ..init.clone()
        }),
        JobPayload::Attempt(attempt) => JobPayload::Attempt(sqlarena_common::AttemptPayload {
            query: String::new(),
            ..attempt.clone()
        }),
    }
}

/// The smallest job id made at `at` (a UUID v7 with every random bit
/// zero): every job queued before `at` has a smaller id.
pub fn first_job_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

/// Everything the coordinator keeps. Implementations must be safe to share
/// between tasks; the MongoDB one between coordinator processes too.
#[async_trait]
pub trait Store: runs::RunStore + Send + Sync + 'static {
    /// Checks the backend is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    // --- users, sessions, invites -------------------------------------------

    /// Creates a user with the next user id.
    /// `Conflict` if the email is taken, compared case-insensitively.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    /// Returns the user with this id.
    async fn get_user(&self, id: i64) -> StoreResult<Option<User>>;
    /// Returns the user with this email, compared case-insensitively.
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Stores a session (by token hash).
    async fn create_session(&self, session: Session) -> StoreResult<()>;
    /// Returns the user of an unexpired session with this token hash.
    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;
    /// Lists a user's unexpired sessions, newest first.
    async fn list_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<Session>>;
    /// Deletes the session with this token hash (logout); false if none.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool>;
    /// Deletes the user's session with this id; false if the user has none.
    async fn delete_user_session(&self, user_id: i64, session_id: Uuid) -> StoreResult<bool>;
    /// Deletes every session of the user but the one with `keep_token_hash`
    /// (when given) and returns how many went.
    async fn delete_user_sessions(
        &self,
        user_id: i64,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64>;
    /// Replaces a user's password hash and deletes the user's sessions but
    /// the one with `keep_token_hash`, so a changed password signs every
    /// other holder out. `NotFound` if there is no such user.
    async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()>;
    /// Stores an invite.
    async fn create_invite(&self, invite: Invite) -> StoreResult<()>;
    /// Creates a user with the role of an unused invite unexpired at `now`,
    /// and marks the invite used by that user, as one step: either both
    /// happen or neither. `None` (nothing changed) if there is no such
    /// invite; `Conflict` (the invite stays unused) if the email is taken.
    /// `user.role` is replaced by the invite's role.
    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;

    // --- challenges ---------------------------------------------------------

    /// Creates a challenge (version 1, PENDING) and its test cases, with ids
    /// from the challenge and test case sequences.
    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<Challenge>;
    /// Returns a challenge with its test cases (ordered by id).
    async fn get_challenge(&self, id: i64) -> StoreResult<Option<Challenge>>;
    /// Lists challenges, newest first (by id), optionally only those
    /// `created_by`; a page starts below the id `page.after`.
    async fn list_challenges(
        &self,
        created_by: Option<i64>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Challenge>>;
    /// Applies `update` to a challenge that is still at `expected_version`
    /// and returns the challenge as updated. With `update.new_version` the
    /// challenge moves to `expected_version + 1`: PENDING, init result
    /// cleared (init_at, init_errors, init_warnings), the new test cases
    /// with new ids from the test case sequence; the previous version's test
    /// cases are kept for [`Store::list_test_cases`].
    ///
    /// `NotFound` if there is no such challenge; `Conflict` (nothing
    /// changed) if it is at another version, so of two concurrent updates
    /// made from the same version only one moves it to the next. A backend
    /// may also answer `Conflict` to a new version when an init result for
    /// the current one lands at the same moment; a retry then succeeds.
    async fn update_challenge(
        &self,
        id: i64,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> StoreResult<Challenge>;
    /// Returns the test cases of one version of a challenge, ordered by id
    /// (the current ones for the current version; empty for an unknown
    /// challenge or version).
    async fn list_test_cases(&self, challenge_id: i64, version: i64) -> StoreResult<Vec<TestCase>>;
    /// Records an init job's result for `version`. Returns false (and changes
    /// nothing) if the challenge has moved on to another version.
    async fn set_challenge_init(
        &self,
        id: i64,
        version: i64,
        result: InitResult,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // --- attempts -----------------------------------------------------------

    /// Creates a PENDING attempt with the next attempt id, whatever its
    /// user has unfinished (counted all the same by `admit_attempt`).
    async fn create_attempt(&self, attempt: NewAttempt) -> StoreResult<Attempt> {
        match self.admit_attempt(attempt, u64::MAX).await? {
            Admission::Created(attempt) => Ok(attempt),
            Admission::OverCap { unfinished } => Err(StoreError::Backend(format!(
                "{unfinished} unfinished attempts exceed any cap"
            ))),
        }
    }
    /// Creates a PENDING attempt unless its user already has
    /// `max_unfinished` attempts PENDING or RUNNING. Counting and creating
    /// are one atomic step: of any number of concurrent calls for one user,
    /// exactly as many succeed as the cap leaves room for.
    async fn admit_attempt(
        &self,
        attempt: NewAttempt,
        max_unfinished: u64,
    ) -> StoreResult<Admission>;
    /// Returns an attempt.
    async fn get_attempt(&self, id: i64) -> StoreResult<Option<Attempt>>;
    /// Lists a user's attempts, newest first (by id); a page starts below
    /// the id `page.after`.
    async fn list_user_attempts(&self, user_id: i64, page: Page<i64>) -> StoreResult<Vec<Attempt>>;
    /// Lists a challenge's PASSED attempts (for the leaderboard).
    async fn list_passed_attempts(&self, challenge_id: i64) -> StoreResult<Vec<Attempt>>;
    /// Returns the best `limit` leaderboard rows of one version of a
    /// challenge, best first: by `rank_key`, then earlier submission, then
    /// attempt id; one row per user.
    async fn top_attempts(
        &self,
        challenge_id: i64,
        version: i64,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>>;
    /// Lists a challenge's attempts that are PENDING or RUNNING, oldest first.
    async fn list_unfinished_challenge_attempts(
        &self,
        challenge_id: i64,
    ) -> StoreResult<Vec<Attempt>>;
    /// Counts a user's attempts that are PENDING or RUNNING.
    async fn count_unfinished_attempts(&self, user_id: i64) -> StoreResult<u64>;
    /// Applies `update` unless the attempt is already final (then returns the
    /// attempt unchanged); `update.reopen` applies even then. `NotFound` if there is no such attempt.
    ///
    /// An attempt that becomes PASSED and qualifies for the leaderboard
    /// ([`crate::leaderboard::row_for`] with its version's test cases)
    /// replaces its user's row for that challenge version if it ranks
    /// better, in the same step as the result.
    async fn update_attempt(&self, id: i64, update: AttemptUpdate) -> StoreResult<Attempt>;

    // --- jobs ---------------------------------------------------------------

    /// Queues a job (QUEUED, tries 0) with a new v7 id.
    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job>;
    /// Returns a job.
    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>>;
    /// Lists jobs, oldest first (by `seq`), filtered by state and lane,
    /// after `filter.after`.
    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>>;
    /// Atomically claims the next QUEUED job in `lanes` (by lane priority,
    /// then age) for `grader_id`: LEASED, tries+1, a new lease id, lease
    /// expiring at `now + timeout_ms`. Every job is claimed by one caller only.
    async fn claim_job(
        &self,
        grader_id: Uuid,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>>;
    /// Claims up to `max` QUEUED jobs in `lanes` for `grader_id`, each as
    /// [`Store::claim_job`] would, in the order it would take them. The
    /// default claims them one at a time; a backend may claim them in one
    /// transaction.
    async fn claim_jobs(
        &self,
        grader_id: Uuid,
        lanes: &[Lane],
        max: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::new();
        while jobs.len() < max as usize {
            match self.claim_job(grader_id, lanes, now).await? {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
        Ok(jobs)
    }
    /// Appends or replaces (by test case id) one case result under the
    /// current lease. `StaleLease` if `held` is not the job's LEASED lease
    /// or not its grader's ([`lease::check_fence`]).
    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job>;
    /// Records the outcome: LEASED with this lease -> DONE, `applied = false`,
    /// and counts the job in the lease holder's `jobs_done`. A repeat by the
    /// same lease is `AlreadyRecorded`; any other lease is `StaleLease`; an
    /// outcome of the wrong kind is `Invalid` ([`lease::check_completion`]).
    /// Nothing changes in those cases.
    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion>;
    /// A grader reports failure under its lease: requeued when `retryable`
    /// and tries < max_tries, else FAILED with `error`. `StaleLease` as above.
    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome>;
    /// Marks a DONE/FAILED/CANCELLED job's result as applied to the domain
    /// and prunes what the domain now holds: the outcome and progress go,
    /// and a DONE job's payload becomes [`pruned_payload`] (FAILED and
    /// CANCELLED jobs keep theirs: an admin may retry them).
    async fn mark_job_applied(&self, job_id: Uuid) -> StoreResult<()>;
    /// Deletes up to `limit` finished jobs whose result is applied and that
    /// were queued before `created_before` (job ids are UUID v7, so this is
    /// a range of ids); returns how many were deleted.
    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Lists finished jobs whose result is not yet applied (crash recovery).
    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>>;
    /// Takes back every lease of `grader_id` ([`lease::after_take_back`]).
    /// When the try counts (the grader died) jobs out of tries become FAILED
    /// with `reason`; refunded (clean release), tries is decremented and the
    /// job requeued.
    async fn release_grader_leases(
        &self,
        grader_id: Uuid,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>>;
    /// Takes back every LEASED job whose lease expired before `now`: requeued,
    /// or FAILED once out of tries, with a reason saying the deadline passed.
    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>>;
    /// Returns the job ids among `leases` (job id, lease id) that the grader
    /// must stop: the lease is no longer its own (requeued, finished, given
    /// to another grader) or a cancel was requested. Leases are not extended:
    /// a job's deadline is fixed when it is leased.
    async fn stale_leases(
        &self,
        grader_id: Uuid,
        leases: &[(Uuid, Uuid)],
    ) -> StoreResult<Vec<Uuid>>;
    /// Cancels a QUEUED or LEASED job: QUEUED becomes CANCELLED at once;
    /// LEASED becomes CANCELLED (so its lease is stale) with
    /// `cancel_requested` set. `None` if the job is already finished.
    async fn cancel_job(
        &self,
        job_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>>;
    /// Puts a FAILED or CANCELLED job back in the queue with tries 0.
    /// `None` if the job is in another state.
    async fn retry_job(&self, job_id: Uuid) -> StoreResult<Option<Job>>;
    /// Queue depth, leases held and oldest queued job per lane (every lane
    /// is listed, even when empty).
    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>>;

    // --- graders ------------------------------------------------------------

    /// Stores a newly registered grader.
    async fn create_grader(&self, grader: Grader) -> StoreResult<()>;
    /// Returns a grader.
    async fn get_grader(&self, id: Uuid) -> StoreResult<Option<Grader>>;
    /// Returns the grader with this token hash.
    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>>;
    /// Lists graders, newest first by id (ids are UUID v7, so this is the
    /// order they registered in); a page starts below the id `page.after`.
    async fn list_graders(&self, page: Page<Uuid>) -> StoreResult<Vec<Grader>>;
    /// Records a heartbeat of a grader that is not DEAD; returns it, or
    /// `None` if it is DEAD or unknown (it must register again).
    async fn touch_grader(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Grader>>;
    /// Sets a grader's state; DEAD is final (returns false if already DEAD).
    async fn set_grader_state(&self, id: Uuid, state: GraderState) -> StoreResult<bool>;
    /// Marks every ALIVE or DRAINING grader whose last heartbeat is before
    /// `cutoff` as DEAD and returns them.
    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>>;
    /// Forgets DEAD graders whose last heartbeat is before `cutoff` (they
    /// leave the admin lists) and returns how many.
    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64>;
    /// Lists the jobs a grader holds a lease on (LEASED to it), oldest first.
    async fn list_grader_leases(&self, grader_id: Uuid) -> StoreResult<Vec<Job>>;

    // --- cluster tokens -----------------------------------------------------

    /// Stores a cluster token.
    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()>;
    /// Lists cluster tokens, newest first.
    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>>;
    /// Returns the cluster token with this hash (revoked or not).
    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>>;
    /// Returns a cluster token by id (revoked or not).
    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>>;
    /// Revokes a cluster token; false if there is none with this id.
    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool>;
}
