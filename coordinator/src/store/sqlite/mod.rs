//! The embedded store: one SQLite file in WAL mode, one coordinator at a time.
//!
//! `SqliteStore::open("data/sqlarena.db")` creates the parent directory and
//! the schema (idempotently), and takes an exclusive lock on the sibling file
//! `data/sqlarena.db.lock` for the store's lifetime, so a second coordinator on
//! the same file refuses to start.
//!
//! # Durability
//!
//! The journal is WAL with `synchronous=NORMAL` by default: every
//! acknowledged write survives the coordinator process being killed
//! (SIGKILL included), but the last transactions may be lost if the machine
//! loses power. For power-loss durability, append `?synchronous=full` to the
//! path (`--store sqlite://data/sqlarena.db?synchronous=full`): each commit
//! then waits for the disk.
//!
//! # Concurrency
//!
//! rusqlite is synchronous: one connection sits behind a mutex and every call
//! runs on tokio's blocking pool as one short transaction (`BEGIN IMMEDIATE`
//! for writes), so a read-check-write inside one call is atomic. Times are
//! stored as integer microseconds since the epoch; ids of users, challenges,
//! test cases and attempts come from `AUTOINCREMENT` columns (never reused);
//! job payloads, progress and outcomes are JSON text.

mod affinity;
mod attempts;
mod audit;
mod challenges;
mod console;
mod exports;
mod graders;
mod history;
mod job_tries;
mod jobs;
mod runs;
mod users;

use crate::store::{AttemptStore, ChallengeStore, GraderStore, JobStore, Retry, UserStore};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fs2::FileExt as _;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension as _, Row, Transaction, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlarena_common::{
    AttemptId, AttemptStatus, CaseResult, ChallengeId, ChallengeState, ChallengeType, GraderId,
    GraderState, JobId, JobOutcome, JobPayload, JobState, Lane, LeaseId, Role, UserId,
};
use uuid::Uuid;

use crate::leaderboard;

mod assessments;
pub mod maintenance;

use super::job_tries::TryOutcome;
use super::lease::{self, CompletionCheck, HeldLease, LeaseEnd, TryCount};
use super::{
    first_job_id_at, pruned_payload, Admission, Attempt, AttemptErrorKind, AttemptUpdate,
    Challenge, ChallengeUpdate, ClusterToken, Completion, FailOutcome, Grader, InitResult, Invite,
    Job, JobFilter, LaneStats, LeaderboardRow, Lease, NewAttempt, NewChallenge, NewJob,
    NewTestCase, NewUser, Page, Session, Store, StoreError, StoreResult, TestCase, User,
};

/// Version of the schema created by [`SCHEMA`]; kept in `schema_version` so
/// that [`migrate`] can bring an older file up to date.
const SCHEMA_VERSION: i64 = 12;

/// The schema, created idempotently at every open.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL,
    email_lower TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    id TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, created_at);
CREATE TABLE IF NOT EXISTS invites (
    code_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_by INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    used_by INTEGER,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    description TEXT,
    challenge_type TEXT NOT NULL,
    init TEXT NOT NULL,
    solution TEXT NOT NULL,
    times_to_run INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    init_at INTEGER,
    init_errors TEXT,
    init_warnings TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS challenges_by_user ON challenges (created_user_id, id);
CREATE TABLE IF NOT EXISTS test_cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge_id INTEGER NOT NULL REFERENCES challenges(id),
    version INTEGER NOT NULL DEFAULT 1,
    data TEXT NOT NULL,
    is_visible INTEGER NOT NULL,
    expected TEXT,
    reference_ms REAL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS test_cases_by_challenge ON test_cases (challenge_id, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id),
    challenge_id INTEGER NOT NULL REFERENCES challenges(id),
    challenge_version INTEGER NOT NULL,
    query TEXT NOT NULL,
    status TEXT NOT NULL,
    cases TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    job_id TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    error_kind TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_user ON attempts (user_id, status);
CREATE INDEX IF NOT EXISTS attempts_by_challenge ON attempts (challenge_id, status);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    lane TEXT NOT NULL,
    lane_priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    tries INTEGER NOT NULL,
    max_tries INTEGER NOT NULL,
    lease_id TEXT,
    grader_id TEXT,
    lease_expires_at INTEGER,
    timeout_ms INTEGER NOT NULL,
    progress TEXT NOT NULL DEFAULT '[]',
    outcome TEXT,
    error TEXT,
    applied INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    leased_at INTEGER,
    finished_at INTEGER
);
-- Partial indexes over the few live jobs: a state change of a job touches
-- small, hot index pages, however many finished jobs the table holds.
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (lane_priority, seq) WHERE state = 'QUEUED';
CREATE INDEX IF NOT EXISTS jobs_by_lane ON jobs (lane_priority, seq);
CREATE INDEX IF NOT EXISTS jobs_leased_expiry ON jobs (lease_expires_at) WHERE state = 'LEASED';
CREATE INDEX IF NOT EXISTS jobs_by_grader ON jobs (grader_id) WHERE state = 'LEASED';
CREATE INDEX IF NOT EXISTS jobs_unapplied_finished ON jobs (seq)
    WHERE applied = 0 AND state IN ('DONE', 'FAILED', 'CANCELLED');
-- Each user's best passing attempt per challenge version, kept as attempts
-- finish; `leaderboard_top` reads the best N in order.
CREATE TABLE IF NOT EXISTS leaderboard (
    challenge_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    score REAL NOT NULL,
    rank_key REAL NOT NULL,
    completion_time_ms REAL NOT NULL,
    time_of_attempt INTEGER NOT NULL,
    PRIMARY KEY (challenge_id, version, user_id)
);
CREATE INDEX IF NOT EXISTS leaderboard_top
    ON leaderboard (challenge_id, version, rank_key, time_of_attempt, attempt_id);
CREATE TABLE IF NOT EXISTS graders (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    lanes TEXT NOT NULL,
    slots INTEGER NOT NULL,
    state TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    last_heartbeat INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    jobs_done INTEGER NOT NULL,
    cluster_token_id TEXT
);
CREATE INDEX IF NOT EXISTS graders_by_heartbeat ON graders (state, last_heartbeat);
CREATE TABLE IF NOT EXISTS cluster_tokens (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by INTEGER,
    created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);
";

/// The oldest queued job of one lane: one seek in `jobs_queued`.
const NEXT_QUEUED_SQL: &str =
    "SELECT seq, timeout_ms FROM jobs WHERE state = 'QUEUED' AND lane_priority = ?1 ORDER BY seq LIMIT 1";
/// A grader's leases: the partial index `jobs_by_grader`.
const GRADER_LEASES_FILTER: &str = "WHERE state = 'LEASED' AND grader_id = ?1 ORDER BY seq";
/// Leases past their deadline, earliest deadline first: a range of
/// `jobs_leased_expiry` (whose entries end with the rowid, `seq`).
const EXPIRED_LEASES_FILTER: &str =
    "WHERE state = 'LEASED' AND lease_expires_at < ?1 ORDER BY lease_expires_at, seq";
/// Finished jobs not yet applied: the partial index `jobs_unapplied_finished`.
/// Without statistics the planner would rather search `state` and sort, which
/// reads every finished job; `INDEXED BY` fails loudly if the index is gone.
const UNAPPLIED_FILTER: &str = "INDEXED BY jobs_unapplied_finished \
     WHERE applied = 0 AND state IN ('DONE', 'FAILED', 'CANCELLED') ORDER BY seq";

/// A user's PENDING or RUNNING attempts: a range of `attempts_by_user`.
const UNFINISHED_COUNT_SQL: &str =
    "SELECT COUNT(*) FROM attempts WHERE user_id = ?1 AND status IN ('PENDING', 'RUNNING')";

const USER_COLUMNS: &str = "id, email, full_name, role, password_hash, created_at";
const SESSION_COLUMNS: &str = "id, token_hash, user_id, created_at, expires_at";
const CHALLENGE_COLUMNS: &str =
    "id, created_user_id, name, description, challenge_type, init, solution, \
     times_to_run, expires_at, version, state, init_at, init_errors, init_warnings, created_at";
const TEST_CASE_COLUMNS: &str =
    "id, challenge_id, data, is_visible, expected, reference_ms, created_at";
const ATTEMPT_COLUMNS: &str =
    "id, user_id, challenge_id, challenge_version, query, status, cases, \
     error, job_id, created_at, finished_at, error_kind";
const JOB_COLUMNS: &str = "id, kind, lane, payload, state, tries, max_tries, lease_id, grader_id, \
     lease_expires_at, timeout_ms, progress, outcome, error, applied, cancel_requested, created_at, \
     leased_at, finished_at, seq";
const GRADER_COLUMNS: &str = "id, name, hostname, version, lanes, slots, state, token_hash, \
     last_heartbeat, registered_at, jobs_done, cluster_token_id";
const CLUSTER_TOKEN_COLUMNS: &str = "id, label, token_hash, created_by, created_at, revoked";

/// The embedded SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    /// Held (locked) for the store's lifetime; the lock goes with the file.
    _lock_file: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// How hard SQLite waits for the disk at each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synchronous {
    Normal,
    Full,
}

/// Splits `PATH[?synchronous=normal|full]` into the file path and the mode.
fn parse_location(location: &str) -> anyhow::Result<(PathBuf, Synchronous)> {
    let (path, query) = match location.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (location, None),
    };
    if path.is_empty() {
        anyhow::bail!("the sqlite store needs a file path, e.g. sqlite://data/sqlarena.db");
    }
    let mut synchronous = Synchronous::Normal;
    for option in query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|option| !option.is_empty())
    {
        match option.split_once('=') {
            Some(("synchronous", value)) if value.eq_ignore_ascii_case("normal") => {
                synchronous = Synchronous::Normal
            }
            Some(("synchronous", value)) if value.eq_ignore_ascii_case("full") => synchronous = Synchronous::Full,
            _ => anyhow::bail!(
                "unknown sqlite store option {option:?} in {location:?}: the only option is synchronous=normal|full"
            ),
        }
    }
    Ok((PathBuf::from(path), synchronous))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `location`, a file path
    /// optionally followed by `?synchronous=full`.
    ///
    /// # Errors
    /// Fails when the directory or file cannot be created, when another
    /// process holds the store's lock file, or when the schema cannot be set
    /// up (e.g. the file is not a SQLite database).
    pub fn open(location: &str) -> anyhow::Result<SqliteStore> {
        let (path, synchronous) = parse_location(location)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the store directory {}", parent.display()))?;
        }
        let lock_path = lock_path(&path);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("creating the store lock file {}", lock_path.display()))?;
        if lock_file.try_lock_exclusive().is_err() {
            anyhow::bail!(
                "the store {} is in use by another coordinator (it holds the lock file {}); \
                 stop that coordinator or choose another --store path",
                path.display(),
                lock_path.display()
            );
        }
        let connection = Connection::open(&path)
            .with_context(|| format!("opening the sqlite store {}", path.display()))?;
        configure(&connection, synchronous)
            .with_context(|| format!("setting up the sqlite store {}", path.display()))?;
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            _lock_file: lock_file,
        })
    }

    /// Runs `work` on the connection, inline on the calling task.
    ///
    /// Calls are short transactions (tens of microseconds with WAL and
    /// `synchronous=NORMAL`), so they run on the async worker rather than on
    /// the blocking pool: the two thread hand-offs a `spawn_blocking` costs
    /// per call took more CPU than the calls themselves (BENCHMARKS.md).
    async fn call<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send,
    {
        // A panic while holding the lock rolled its transaction back (the
        // transaction guard is dropped while unwinding): the connection
        // itself is still usable.
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut connection)
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction, committed when it
    /// returns `Ok`, rolled back otherwise.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send,
    {
        self.call(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = work(&transaction)?;
            transaction.commit()?;
            Ok(value)
        })
        .await
    }
}

/// The distinct priorities of `lanes`, highest first.
fn lane_priorities(lanes: &[Lane]) -> Vec<i64> {
    let mut priorities: Vec<i64> = lanes.iter().map(|lane| lane.priority()).collect();
    priorities.sort_unstable();
    priorities.dedup();
    priorities
}

/// Claims the next QUEUED job of the lanes with `priorities` (in priority
/// order, oldest first) for `grader_id`, inside `transaction`.
fn claim_next(
    transaction: &Transaction<'_>,
    priorities: &[i64],
    grader_id: GraderId,
    now: DateTime<Utc>,
) -> StoreResult<Option<Job>> {
    // One index seek per lane, in priority order: cheap however deep the
    // queue is.
    let mut next = transaction.prepare_cached(NEXT_QUEUED_SQL)?;
    let mut chosen = None;
    for priority in priorities {
        chosen = next
            .query_row([priority], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?;
        if chosen.is_some() {
            break;
        }
    }
    if chosen.is_none() {
        chosen = runs::next_batch_item(transaction, priorities)?;
    }
    let Some((seq, timeout_ms)) = chosen else {
        return Ok(None);
    };
    lease_queued(
        transaction,
        seq,
        u64::try_from(timeout_ms).unwrap_or(0),
        grader_id,
        now,
    )
    .map(Some)
}

/// Leases the QUEUED job `seq` (whose lease lasts `timeout_ms`) to
/// `grader_id`: LEASED, tries+1, a new lease id.
fn lease_queued(
    transaction: &Transaction<'_>,
    seq: i64,
    timeout_ms: u64,
    grader_id: GraderId,
    now: DateTime<Utc>,
) -> StoreResult<Job> {
    let lease = lease::new_lease(timeout_ms, grader_id, now);
    let sql = format!(
        "UPDATE jobs SET state = 'LEASED', tries = tries + 1, lease_id = ?2, grader_id = ?3, \
         lease_expires_at = ?5, leased_at = ?4, progress = '[]', \
         cancel_requested = 0 WHERE seq = ?1 AND state = 'QUEUED' RETURNING {JOB_COLUMNS}"
    );
    let job = transaction.prepare_cached(&sql)?.query_row(
        params![
            seq,
            lease.lease_id.to_string(),
            grader_id.to_string(),
            micros(now),
            micros(lease.expires_at)
        ],
        job_from,
    )?;
    job_tries::open_try(transaction, &job, now)?;
    Ok(job)
}

/// Returns the path of the lock file guarding the store at `path`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Sets the connection's pragmas and creates the schema.
fn configure(connection: &Connection, synchronous: Synchronous) -> anyhow::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    // One coordinator per file (the lock file enforces it), so SQLite may
    // keep its locks for the connection's lifetime: no fcntl lock and
    // unlock around every transaction, and the WAL index lives in memory.
    connection.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))?;
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!("could not switch the journal to WAL (it is {mode})");
    }
    let synchronous = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    connection.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 10000;"
    ))?;
    connection.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} {} {} {} {} {} {} {} {} COMMIT;",
        assessments::SCHEMA,
        console::SCHEMA,
        runs::SCHEMA,
        affinity::SCHEMA,
        exports::SCHEMA,
        audit::SCHEMA,
        history::SCHEMA,
        job_tries::SCHEMA
    ))?;
    let version: Option<i64> =
        connection.query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })?;
    match version {
        None => {
            connection.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(version) if version < SCHEMA_VERSION => {
            migrate(connection, version)?;
            if version < 4 {
                backfill_leaderboard(connection)
                    .context("filling the leaderboard from the passed attempts")?;
            }
        }
        Some(SCHEMA_VERSION) => {}
        Some(version) => anyhow::bail!(
            "the store has schema version {version}, newer than this coordinator's \
             {SCHEMA_VERSION}: run a newer coordinator"
        ),
    }
    Ok(())
}

/// Brings a store file from schema `from` up to [`SCHEMA_VERSION`], in one
/// transaction.
fn migrate(connection: &Connection, from: i64) -> anyhow::Result<()> {
    let mut steps = String::from("BEGIN IMMEDIATE;");
    if from < 2 {
        // Version 2: test cases belong to one version of their challenge,
        // so that an update keeps the old ones for old attempts.
        steps.push_str("ALTER TABLE test_cases ADD COLUMN version INTEGER NOT NULL DEFAULT 1;");
    }
    if from < 3 {
        // Version 3: the claim and expiry indexes cover live jobs only
        // (`jobs_queued`, `jobs_leased_expiry`, created with the schema).
        steps.push_str("DROP INDEX IF EXISTS jobs_claim; DROP INDEX IF EXISTS jobs_lease_expiry;");
    }
    if from < 4 {
        // Version 4: an attempt's error has a kind, so students see a fixed
        // message per kind (older errors count as grading failures).
        steps.push_str("ALTER TABLE attempts ADD COLUMN error_kind TEXT;");
    }
    if from < 5 {
        // Version 5: sessions get an id admins can name, invites expire
        // (those made before expire a week after they were made), graders
        // remember their cluster token.
        steps.push_str(&format!(
            "ALTER TABLE sessions ADD COLUMN id TEXT; \
             ALTER TABLE invites ADD COLUMN expires_at INTEGER; \
             UPDATE invites SET expires_at = created_at + {LEGACY_INVITE_TTL_MICROS}; \
             ALTER TABLE graders ADD COLUMN cluster_token_id TEXT;"
        ));
    }
    // Version 6: assessments, their sessions and manual scores
    // (`assessments::SCHEMA`): new tables only, created with the schema
    // before this runs, so nothing to change here.
    // Version 7: the console lists a challenge's attempts newest first
    // (`attempts_by_challenge_id`, created with the console's schema).
    // Version 8: grading runs (`runs::SCHEMA`), new tables only, created
    // with the schema at every open.
    // Version 9: challenge affinity (`affinity::SCHEMA`): the bundles each
    // grader holds and an index of queued jobs by bundle, created with the
    // schema at every open.
    // Version 10: exports (`exports::SCHEMA`), a new table only, created
    // with the schema at every open.
    // Version 11: the audit's init records and per-grader leaderboard
    // (`audit::SCHEMA`), new tables only, likewise.
    if from < 12 {
        // Version 12: the console's counts per job state and lane, kept by
        // triggers from now on (`console::SCHEMA`), start from the jobs
        // there are; the per-minute history (`history::SCHEMA`) and the
        // tries of jobs (`job_tries::SCHEMA`) are new tables (tries of
        // older jobs were not kept).
        steps.push_str(console::BACKFILL_JOB_COUNTS);
    }
    steps.push_str(&format!(
        "UPDATE schema_version SET version = {SCHEMA_VERSION}; COMMIT;"
    ));
    connection
        .execute_batch(&steps)
        .with_context(|| format!("migrating the schema from version {from} to {SCHEMA_VERSION}"))?;
    if from < 5 {
        name_sessions(connection).context("naming the sessions of schema version 4")?;
    }
    Ok(())
}

/// How long invites made before schema version 5 stay usable, in microseconds
/// (7 days, the default `--invite-ttl-hours`).
const LEGACY_INVITE_TTL_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

/// Gives every session without an id one (sessions made before version 5).
fn name_sessions(connection: &Connection) -> anyhow::Result<()> {
    let hashes: Vec<String> = connection
        .prepare("SELECT token_hash FROM sessions WHERE id IS NULL")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = connection.prepare("UPDATE sessions SET id = ?2 WHERE token_hash = ?1")?;
    for hash in hashes {
        update.execute(params![hash, Uuid::new_v4().to_string()])?;
    }
    Ok(())
}

/// Fills the leaderboard (new in schema version 4) from the attempts that
/// passed before it existed, in one transaction.
fn backfill_leaderboard(connection: &Connection) -> StoreResult<()> {
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    for attempt in select_attempts(&transaction, "status = 'PASSED' ORDER BY id", [])? {
        record_ranking(&transaction, &attempt)?;
    }
    transaction.commit()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors and column conversions
// ---------------------------------------------------------------------------

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        if let rusqlite::Error::SqliteFailure(failure, message) = &error {
            let code = failure.extended_code;
            if code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            {
                return StoreError::Conflict(
                    message
                        .clone()
                        .unwrap_or_else(|| "duplicate key".to_owned()),
                );
            }
        }
        let transient = error.sqlite_error_code().is_some_and(is_transient_code);
        StoreError::database(error, transient)
    }
}

/// True for the SQLite result codes that say the database is busy, not
/// broken: another connection holds a lock (beyond the busy timeout), or
/// the disk is full.
fn is_transient_code(code: rusqlite::ErrorCode) -> bool {
    matches!(
        code,
        rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::DiskFull
    )
}

fn conversion_error(index: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, message.into())
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time_at(row: &Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    let value: i64 = row.get(index)?;
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| conversion_error(index, format!("bad time {value}")))
}

fn optional_time_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(_) => time_at(row, index).map(Some),
    }
}

fn json_at<T: DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text)
        .map_err(|error| conversion_error(index, format!("bad JSON: {error}")))
}

fn optional_json_at<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(_) => json_at(row, index).map(Some),
    }
}

fn wire_at<T>(row: &Row<'_>, index: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| conversion_error(index, format!("unknown value {text:?}")))
}

/// Reads a UUID stored as text, as whichever id type it is.
fn uuid_at<T: From<Uuid>>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text)
        .map(T::from)
        .map_err(|error| conversion_error(index, format!("bad uuid {text:?}: {error}")))
}

fn optional_uuid_at<T: From<Uuid>>(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(_) => uuid_at(row, index).map(Some),
    }
}

fn u32_at(row: &Row<'_>, index: usize) -> rusqlite::Result<u32> {
    let value: i64 = row.get(index)?;
    u32::try_from(value).map_err(|_| conversion_error(index, format!("{value} is out of range")))
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Backend(format!("serializing to JSON: {error}")))
}

/// A page's limit as SQLite takes it: 0 (no limit) is -1.
fn sql_limit(limit: u32) -> i64 {
    if limit == 0 {
        -1
    } else {
        i64::from(limit)
    }
}

fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("{what} {value} is too large to store")))
}

fn user_from(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        full_name: row.get(2)?,
        role: wire_at(row, 3, Role::parse)?,
        password_hash: row.get(4)?,
        created_at: time_at(row, 5)?,
    })
}

fn session_from(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: uuid_at(row, 0)?,
        token_hash: row.get(1)?,
        user_id: row.get(2)?,
        created_at: time_at(row, 3)?,
        expires_at: time_at(row, 4)?,
    })
}

fn parse_challenge_type(text: &str) -> Option<ChallengeType> {
    match text {
        "FE" => Some(ChallengeType::FE),
        "SE" => Some(ChallengeType::SE),
        _ => None,
    }
}

fn challenge_type_name(challenge_type: ChallengeType) -> &'static str {
    match challenge_type {
        ChallengeType::FE => "FE",
        ChallengeType::SE => "SE",
    }
}

/// Reads a challenge row; its test cases are filled in separately.
fn challenge_from(row: &Row<'_>) -> rusqlite::Result<Challenge> {
    Ok(Challenge {
        id: row.get(0)?,
        created_user_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        challenge_type: wire_at(row, 4, parse_challenge_type)?,
        init: row.get(5)?,
        solution: row.get(6)?,
        times_to_run: u32_at(row, 7)?,
        expires_at: time_at(row, 8)?,
        version: row.get(9)?,
        state: wire_at(row, 10, ChallengeState::parse)?,
        init_at: optional_time_at(row, 11)?,
        init_errors: optional_json_at(row, 12)?,
        init_warnings: json_at(row, 13)?,
        created_at: time_at(row, 14)?,
        test_cases: Vec::new(),
    })
}

fn test_case_from(row: &Row<'_>) -> rusqlite::Result<TestCase> {
    Ok(TestCase {
        id: row.get(0)?,
        challenge_id: row.get(1)?,
        data: row.get(2)?,
        is_visible: row.get(3)?,
        expected: optional_json_at(row, 4)?,
        reference_ms: row.get(5)?,
        created_at: time_at(row, 6)?,
    })
}

fn attempt_from(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: row.get(0)?,
        user_id: row.get(1)?,
        challenge_id: row.get(2)?,
        challenge_version: row.get(3)?,
        query: row.get(4)?,
        status: wire_at(row, 5, AttemptStatus::parse)?,
        cases: json_at(row, 6)?,
        error: row.get(7)?,
        job_id: optional_uuid_at(row, 8)?,
        created_at: time_at(row, 9)?,
        finished_at: optional_time_at(row, 10)?,
        error_kind: row
            .get::<_, Option<String>>(11)?
            .map(|text| {
                AttemptErrorKind::parse(&text)
                    .ok_or_else(|| conversion_error(11, format!("bad error kind {text:?}")))
            })
            .transpose()?,
    })
}

fn job_from(row: &Row<'_>) -> rusqlite::Result<Job> {
    let lease = match (
        optional_uuid_at(row, 7)?,
        optional_uuid_at(row, 8)?,
        optional_time_at(row, 9)?,
    ) {
        (Some(lease_id), Some(grader_id), Some(expires_at)) => Some(Lease {
            lease_id,
            grader_id,
            expires_at,
        }),
        _ => None,
    };
    let timeout_ms: i64 = row.get(10)?;
    Ok(Job {
        id: uuid_at(row, 0)?,
        seq: row.get(19)?,
        kind: wire_at(row, 1, sqlarena_common::JobKind::parse)?,
        lane: wire_at(row, 2, Lane::parse)?,
        payload: json_at(row, 3)?,
        state: wire_at(row, 4, JobState::parse)?,
        tries: u32_at(row, 5)?,
        max_tries: u32_at(row, 6)?,
        lease,
        timeout_ms: u64::try_from(timeout_ms)
            .map_err(|_| conversion_error(10, format!("bad timeout {timeout_ms}")))?,
        progress: json_at(row, 11)?,
        outcome: optional_json_at(row, 12)?,
        error: row.get(13)?,
        applied: row.get(14)?,
        cancel_requested: row.get(15)?,
        created_at: time_at(row, 16)?,
        leased_at: optional_time_at(row, 17)?,
        finished_at: optional_time_at(row, 18)?,
    })
}

fn grader_from(row: &Row<'_>) -> rusqlite::Result<Grader> {
    let jobs_done: i64 = row.get(10)?;
    Ok(Grader {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        hostname: row.get(2)?,
        version: row.get(3)?,
        lanes: json_at(row, 4)?,
        slots: u32_at(row, 5)?,
        state: wire_at(row, 6, GraderState::parse)?,
        token_hash: row.get(7)?,
        last_heartbeat: time_at(row, 8)?,
        registered_at: time_at(row, 9)?,
        jobs_done: u64::try_from(jobs_done)
            .map_err(|_| conversion_error(10, format!("bad count {jobs_done}")))?,
        cluster_token_id: optional_uuid_at(row, 11)?,
    })
}

fn cluster_token_from(row: &Row<'_>) -> rusqlite::Result<ClusterToken> {
    Ok(ClusterToken {
        id: uuid_at(row, 0)?,
        label: row.get(1)?,
        token_hash: row.get(2)?,
        created_by: row.get(3)?,
        created_at: time_at(row, 4)?,
        revoked: row.get(5)?,
    })
}

// ---------------------------------------------------------------------------
// Queries shared by several calls
// ---------------------------------------------------------------------------

/// Returns the current time truncated to the microseconds the store keeps.
fn stored_now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn select_user(connection: &Connection, id: UserId) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id], user_from)
        .optional()?)
}

/// Inserts a user; `Conflict` when the email is taken.
fn insert_user(transaction: &Transaction<'_>, user: NewUser) -> StoreResult<User> {
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO users (email, email_lower, full_name, role, password_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            user.email,
            user.email.to_lowercase(),
            user.full_name,
            user.role.as_str(),
            user.password_hash,
            micros(stored_now())
        ]);
    match inserted.map_err(StoreError::from) {
        Err(StoreError::Conflict(_)) => {
            return Err(StoreError::Conflict(format!(
                "the email {} is already registered",
                user.email
            )))
        }
        other => other?,
    };
    let id = UserId(transaction.last_insert_rowid());
    select_user(transaction, id)?.ok_or_else(|| StoreError::Backend(format!("user {id} vanished")))
}

/// Deletes a user's sessions but the one with `keep_token_hash`.
fn delete_sessions_but(
    transaction: &Transaction<'_>,
    user_id: UserId,
    keep_token_hash: Option<&str>,
) -> StoreResult<u64> {
    let deleted = transaction
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2")?
        .execute(params![user_id, keep_token_hash])?;
    Ok(deleted as u64)
}

fn select_challenge(connection: &Connection, id: ChallengeId) -> StoreResult<Option<Challenge>> {
    let sql = format!("SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = ?1");
    let challenge = connection
        .prepare_cached(&sql)?
        .query_row([id], challenge_from)
        .optional()?;
    match challenge {
        None => Ok(None),
        Some(mut challenge) => {
            challenge.test_cases = select_test_cases(connection, id, challenge.version)?;
            Ok(Some(challenge))
        }
    }
}

fn select_test_cases(
    connection: &Connection,
    challenge_id: ChallengeId,
    version: i64,
) -> StoreResult<Vec<TestCase>> {
    let sql = format!(
        "SELECT {TEST_CASE_COLUMNS} FROM test_cases WHERE challenge_id = ?1 AND version = ?2 ORDER BY id"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let cases = statement
        .query_map(params![challenge_id, version], test_case_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cases)
}

/// Inserts the test cases of one version of a challenge.
fn insert_test_cases(
    transaction: &Transaction<'_>,
    challenge_id: ChallengeId,
    version: i64,
    cases: &[NewTestCase],
    now: i64,
) -> StoreResult<()> {
    let mut insert_case = transaction.prepare_cached(
        "INSERT INTO test_cases (challenge_id, version, data, is_visible, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for case in cases {
        insert_case.execute(params![
            challenge_id,
            version,
            case.data,
            case.is_visible,
            now
        ])?;
    }
    Ok(())
}

fn select_attempt(connection: &Connection, id: AttemptId) -> StoreResult<Option<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id], attempt_from)
        .optional()?)
}

fn select_attempts(
    connection: &Connection,
    filter_sql: &str,
    parameters: impl rusqlite::Params,
) -> StoreResult<Vec<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {filter_sql}");
    let mut statement = connection.prepare_cached(&sql)?;
    let attempts = statement
        .query_map(parameters, attempt_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(attempts)
}

fn select_job(connection: &Connection, id: JobId) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id.to_string()], job_from)
        .optional()?)
}

/// Returns the job or `NotFound`.
fn existing_job(connection: &Connection, id: JobId) -> StoreResult<Job> {
    select_job(connection, id)?.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
}

/// Selects jobs; `filter_sql` follows `FROM jobs` (an optional index hint,
/// then `WHERE ...`).
fn select_jobs(
    connection: &Connection,
    filter_sql: &str,
    parameters: impl rusqlite::Params,
) -> StoreResult<Vec<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filter_sql}");
    let mut statement = connection.prepare_cached(&sql)?;
    let jobs = statement
        .query_map(parameters, job_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(jobs)
}

fn select_grader(connection: &Connection, id: GraderId) -> StoreResult<Option<Grader>> {
    let sql = format!("SELECT {GRADER_COLUMNS} FROM graders WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id.to_string()], grader_from)
        .optional()?)
}

/// Keeps `attempt`'s leaderboard row if it qualifies and beats its user's
/// row for that challenge version (one upsert, conditional on ranking
/// better).
fn record_ranking(transaction: &Connection, attempt: &Attempt) -> StoreResult<()> {
    let challenge_type: Option<String> = transaction
        .prepare_cached("SELECT challenge_type FROM challenges WHERE id = ?1")?
        .query_row([attempt.challenge_id], |row| row.get(0))
        .optional()?;
    let Some(challenge_type) = challenge_type.as_deref().and_then(parse_challenge_type) else {
        return Ok(());
    };
    let cases = select_test_cases(transaction, attempt.challenge_id, attempt.challenge_version)?;
    let Some(row) = leaderboard::row_for(attempt, challenge_type, &cases) else {
        return Ok(());
    };
    keep_better_row(transaction, None, &row)?;
    if let Some(grader_id) = crate::store::audit::graded_by(attempt) {
        keep_better_row(transaction, Some(grader_id), &row)?;
    }
    Ok(())
}

/// Keeps `row` as its user's row of the whole leaderboard (`grader:
/// None`) or of one grader's (`grader_leaderboard`) when it is the user's
/// first there or ranks better: one upsert, conditional on ranking better.
fn keep_better_row(
    transaction: &Connection,
    grader: Option<GraderId>,
    row: &LeaderboardRow,
) -> StoreResult<()> {
    let (table, grader_column, grader_value, grader_key) = match grader {
        None => ("leaderboard", "", "", ""),
        Some(_) => ("grader_leaderboard", "grader_id, ", "?9, ", "grader_id, "),
    };
    let sql = format!(
        "INSERT INTO {table} ({grader_column}challenge_id, version, user_id, attempt_id, score, rank_key, \
         completion_time_ms, time_of_attempt) VALUES ({grader_value}?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT ({grader_key}challenge_id, version, user_id) DO UPDATE SET \
         attempt_id = excluded.attempt_id, score = excluded.score, rank_key = excluded.rank_key, \
         completion_time_ms = excluded.completion_time_ms, time_of_attempt = excluded.time_of_attempt \
         WHERE (excluded.rank_key, excluded.time_of_attempt, excluded.attempt_id) \
         < ({table}.rank_key, {table}.time_of_attempt, {table}.attempt_id)"
    );
    let mut statement = transaction.prepare_cached(&sql)?;
    let common = params![
        row.challenge_id,
        row.version,
        row.user_id,
        row.attempt_id,
        row.score,
        row.rank_key,
        row.completion_time_ms,
        micros(row.time_of_attempt)
    ];
    match grader {
        None => statement.execute(common)?,
        Some(grader_id) => {
            let mut values: Vec<&dyn rusqlite::ToSql> = common.to_vec();
            let grader_text = grader_id.to_string();
            values.push(&grader_text);
            statement.execute(values.as_slice())?
        }
    };
    Ok(())
}

fn leaderboard_row_from(row: &Row<'_>) -> rusqlite::Result<LeaderboardRow> {
    Ok(LeaderboardRow {
        challenge_id: row.get(0)?,
        version: row.get(1)?,
        user_id: row.get(2)?,
        attempt_id: row.get(3)?,
        score: row.get(4)?,
        rank_key: row.get(5)?,
        completion_time_ms: row.get(6)?,
        time_of_attempt: time_at(row, 7)?,
    })
}

/// The best rows of one challenge version: a range of `leaderboard_top`.
const TOP_ATTEMPTS_SQL: &str =
    "SELECT challenge_id, version, user_id, attempt_id, score, rank_key, \
     completion_time_ms, time_of_attempt FROM leaderboard WHERE challenge_id = ?1 AND version = ?2 \
     ORDER BY rank_key, time_of_attempt, attempt_id LIMIT ?3";

/// Persists how a LEASED job's lease ends (decided by [`lease`]),
/// conditional on the lease read: requeued, or FAILED keeping its lease (so
/// a late report hears it is already FAILED under that lease).
fn end_lease(
    transaction: &Transaction<'_>,
    job: &Job,
    end: LeaseEnd,
    now: DateTime<Utc>,
) -> StoreResult<FailOutcome> {
    let id = job.id.to_string();
    let lease_id = job.lease.map(|lease| lease.lease_id.to_string());
    match end {
        LeaseEnd::Fail { error } => {
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'FAILED', error = ?3, finished_at = ?4, applied = 0 \
                     WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2",
                )?
                .execute(params![id, lease_id, error, micros(now)])?;
            close_lease_try(transaction, job, TryOutcome::Failed, Some(&error), now)?;
            Ok(FailOutcome::Failed(existing_job(transaction, job.id)?))
        }
        LeaseEnd::Requeue { tries, error } => {
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'QUEUED', tries = ?3, error = COALESCE(?4, error), \
                     lease_id = NULL, grader_id = NULL, lease_expires_at = NULL \
                     WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2",
                )?
                .execute(params![id, lease_id, tries, error])?;
            close_lease_try(
                transaction,
                job,
                TryOutcome::Requeued,
                error.as_deref(),
                now,
            )?;
            Ok(FailOutcome::Requeued(existing_job(transaction, job.id)?))
        }
    }
}

/// Closes the try of `job`'s current lease (read before it ended).
fn close_lease_try(
    transaction: &Transaction<'_>,
    job: &Job,
    outcome: TryOutcome,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    match job.lease {
        Some(lease) => {
            job_tries::close_try(transaction, job.id, lease.lease_id, outcome, error, now)
        }
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.call(|connection| {
            connection
                .prepare_cached("SELECT 1")?
                .query_row([], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    async fn complete_attempt_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        update: AttemptUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        self.write(move |transaction| {
            let job = existing_job(transaction, held.job_id)?;
            if lease::check_completion(&job, held, &outcome)? == CompletionCheck::AlreadyRecorded {
                return Ok(Completion::AlreadyRecorded(job));
            }
            let JobPayload::Attempt(payload) = &job.payload else {
                return Err(StoreError::Invalid(format!("job {} is no attempt job", job.id)));
            };
            if payload.run_item.is_some() {
                // A run item's result goes to its item, never to the
                // attempt: recorded only (as `complete_job`), and
                // `Jobs::apply_finished_job` applies it to the item.
                jobs::record_completion_in(transaction, &job, held, &outcome, now)?;
                return Ok(Completion::Recorded(existing_job(transaction, held.job_id)?));
            }
            // Applied at once: the outcome goes straight into the attempt,
            // so the job keeps neither it nor its progress.
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'DONE', outcome = NULL, progress = '[]', payload = ?3, \
                     finished_at = ?4, applied = 1 \
                     WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2",
                )?
                .execute(params![
                    held.job_id.to_string(),
                    held.lease_id.to_string(),
                    to_json(&pruned_payload(&job.payload))?,
                    micros(now)
                ])?;
            count_job_done(transaction, &job)?;
            job_tries::close_try(transaction, job.id, held.lease_id, TryOutcome::Done, None, now)?;
            attempts::update_attempt_in(transaction, payload.attempt_id, update)?;
            Ok(Completion::Recorded(existing_job(transaction, held.job_id)?))
        })
        .await
    }
}

/// Counts a completed job in its grader's `jobs_done`.
fn count_job_done(transaction: &Transaction<'_>, job: &Job) -> StoreResult<()> {
    if let Some(lease) = &job.lease {
        transaction
            .prepare_cached("UPDATE graders SET jobs_done = jobs_done + 1 WHERE id = ?1")?
            .execute([lease.grader_id.to_string()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database another connection holds an EXCLUSIVE lock on (beyond
    /// the busy timeout) is a transient fault: 503 with `Retry-After`, and
    /// the same write succeeds once the lock is released. A bug (here a
    /// constraint no retry satisfies) stays a 500.
    ///
    /// Two plain connections, not the store: the store keeps its file's
    /// lock for the connection's lifetime (`locking_mode = EXCLUSIVE`), so
    /// no other connection can ever lock it while a coordinator runs.
    #[test]
    fn a_locked_database_is_a_transient_fault_and_a_bug_is_not() {
        use axum::response::IntoResponse as _;

        use crate::error::ApiError;

        let dir = std::env::temp_dir().join(format!("sqlarena-busy-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busy.db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (a INTEGER NOT NULL); BEGIN EXCLUSIVE;")
            .unwrap();
        let writer = Connection::open(&path).unwrap();
        writer
            .busy_timeout(std::time::Duration::from_millis(20))
            .unwrap();
        let busy = writer
            .execute("INSERT INTO t (a) VALUES (1)", [])
            .unwrap_err();
        let response = ApiError::from(StoreError::from(busy)).into_response();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            response
                .headers()
                .contains_key(axum::http::header::RETRY_AFTER),
            "{:?}",
            response.headers()
        );

        holder.execute_batch("COMMIT").unwrap();
        writer.execute("INSERT INTO t (a) VALUES (1)", []).unwrap();

        let bug = writer
            .execute("INSERT INTO t (a) VALUES (NULL)", [])
            .unwrap_err();
        let response = ApiError::from(StoreError::from(bug)).into_response();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn locations_accept_only_the_synchronous_option() {
        assert_eq!(
            parse_location("data/a.db").unwrap(),
            (PathBuf::from("data/a.db"), Synchronous::Normal)
        );
        assert_eq!(
            parse_location("/tmp/a.db?synchronous=full").unwrap(),
            (PathBuf::from("/tmp/a.db"), Synchronous::Full)
        );
        let error = parse_location("a.db?cache=shared").unwrap_err().to_string();
        assert!(error.contains("synchronous=normal|full"), "{error}");
        assert!(parse_location("").is_err());
    }

    /// Returns SQLite's query plan for `sql`, its parameters bound to NULL.
    pub(super) fn plan(connection: &Connection, sql: &str) -> String {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
        let details = statement
            .query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        details
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("; ")
    }

    #[test]
    fn job_and_leaderboard_queries_use_their_indexes() {
        let path = std::env::temp_dir()
            .join(format!("sqlarena-plan-{}", Uuid::new_v4().simple()))
            .join("store.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let connection = store.connection.lock().unwrap();
        let claim = plan(&connection, NEXT_QUEUED_SQL);
        assert!(
            claim.contains("jobs_queued") && !claim.contains("TEMP B-TREE"),
            "claim: {claim}"
        );
        let select = |filter: &str| format!("SELECT {JOB_COLUMNS} FROM jobs {filter}");
        let listing = plan(
            &connection,
            &select("WHERE state = ?1 AND lane_priority = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"),
        );
        assert!(
            listing.contains("jobs_by_lane") && !listing.contains("TEMP B-TREE"),
            "listing: {listing}"
        );
        let by_lane = plan(
            &connection,
            &select("WHERE lane_priority = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
        );
        assert!(
            by_lane.contains("jobs_by_lane") && !by_lane.contains("TEMP B-TREE"),
            "by lane: {by_lane}"
        );
        let top = plan(&connection, TOP_ATTEMPTS_SQL);
        assert!(
            top.contains("leaderboard_top") && !top.contains("TEMP B-TREE"),
            "leaderboard: {top}"
        );
        for (filter, index) in [
            (GRADER_LEASES_FILTER, "jobs_by_grader"),
            (EXPIRED_LEASES_FILTER, "jobs_leased_expiry"),
            (UNAPPLIED_FILTER, "jobs_unapplied_finished"),
        ] {
            let found = plan(&connection, &select(filter));
            assert!(found.contains(index), "{filter}: {found}");
        }
    }

    /// A file of schema version 1 (test cases without a version, attempts
    /// without an error kind, no leaderboard, sessions without ids, invites
    /// that never expire, graders without a cluster token) opens, keeps its
    /// data, fills the leaderboard and becomes the current version; a newer
    /// file is refused.
    #[tokio::test]
    async fn older_schemas_are_migrated_and_newer_ones_refused() {
        let path = std::env::temp_dir()
            .join(format!("sqlarena-migrate-{}", Uuid::new_v4().simple()))
            .join("store.db");
        let location = path.to_str().unwrap().to_owned();
        let store = SqliteStore::open(&location).unwrap();
        let user = store
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
                created_user_id: user.id,
                name: "old".into(),
                description: None,
                challenge_type: ChallengeType::FE,
                init: "create table t (a int)".into(),
                solution: "select a from t".into(),
                times_to_run: 3,
                expires_at: stored_now() + chrono::Duration::days(1),
                test_cases: vec![NewTestCase {
                    data: "insert into t values (1)".into(),
                    is_visible: true,
                }],
            })
            .await
            .unwrap();
        let passed = store
            .create_attempt(NewAttempt {
                user_id: user.id,
                challenge_id: challenge.id,
                challenge_version: 1,
                query: "select a from t".into(),
            })
            .await
            .unwrap();
        let case = CaseResult {
            test_case_id: challenge.test_cases[0].id,
            status: sqlarena_common::CaseStatus::Passed,
            execution_ms: Some(3.0),
            min_ms: None,
            reference_ms: Some(2.0),
            ratio: Some(1.5),
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: None,
        };
        store
            .update_attempt(
                passed.id,
                AttemptUpdate {
                    status: Some(AttemptStatus::Passed),
                    cases: Some(vec![case]),
                    ..AttemptUpdate::default()
                },
            )
            .await
            .unwrap();
        let session_created = stored_now();
        store
            .create_session(Session {
                id: Uuid::new_v4(),
                token_hash: "old-session".into(),
                user_id: user.id,
                created_at: session_created,
                expires_at: session_created + chrono::Duration::days(1),
            })
            .await
            .unwrap();
        drop(store);
        let schema_version = |connection: &Connection| -> i64 {
            connection
                .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                    row.get(0)
                })
                .unwrap()
        };
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "ALTER TABLE test_cases DROP COLUMN version; \
                     ALTER TABLE attempts DROP COLUMN error_kind; \
                     DROP TABLE leaderboard; \
                     ALTER TABLE sessions DROP COLUMN id; \
                     ALTER TABLE invites DROP COLUMN expires_at; \
                     ALTER TABLE graders DROP COLUMN cluster_token_id; \
                     UPDATE schema_version SET version = 1;",
                )
                .unwrap();
        }

        let store = SqliteStore::open(&location).unwrap();
        assert_eq!(
            store.get_challenge(challenge.id).await.unwrap(),
            Some(challenge.clone())
        );
        assert_eq!(
            store.list_test_cases(challenge.id, 1).await.unwrap(),
            challenge.test_cases
        );
        let sessions = store.list_sessions(user.id, stored_now()).await.unwrap();
        assert_eq!(sessions.len(), 1, "the old session is kept");
        assert_eq!(sessions[0].token_hash, "old-session");
        assert!(!sessions[0].id.is_nil(), "and named");
        assert_eq!(
            schema_version(&store.connection.lock().unwrap()),
            SCHEMA_VERSION
        );
        let board = store.top_attempts(challenge.id, 1, 10).await.unwrap();
        assert_eq!(
            board.iter().map(|row| row.attempt_id).collect::<Vec<_>>(),
            vec![passed.id],
            "the leaderboard is filled from attempts passed before it existed"
        );
        drop(store);

        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        let error = format!("{:#}", SqliteStore::open(&location).unwrap_err());
        assert!(error.contains("schema version 99"), "{error}");
    }

    #[test]
    fn lock_files_sit_next_to_the_store() {
        assert_eq!(
            lock_path(Path::new("data/sqlarena.db")),
            PathBuf::from("data/sqlarena.db.lock")
        );
    }
}
