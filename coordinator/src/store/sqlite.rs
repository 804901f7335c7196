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
    AttemptStatus, CaseResult, ChallengeState, ChallengeType, GraderState, JobOutcome, JobState,
    Lane, Role,
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

/// Version of the schema created by [`SCHEMA`]; kept in `schema_version` so
/// that [`migrate`] can bring an older file up to date.
const SCHEMA_VERSION: i64 = 6;

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
    grader_id: Uuid,
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
        chosen = next_batch_item(transaction, priorities)?;
    }
    let Some((seq, timeout_ms)) = chosen else {
        return Ok(None);
    };
    let lease = lease::new_lease(u64::try_from(timeout_ms).unwrap_or(0), grader_id, now);
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
    Ok(Some(job))
}

/// The next queued run item of the lanes with `priorities`, once no live
/// job of them is queued: one range of `jobs_queued` from the batch share
/// on, in round order (`runs::batch_priority`), skipping other lanes'.
fn next_batch_item(
    transaction: &Transaction<'_>,
    priorities: &[i64],
) -> StoreResult<Option<(i64, i64)>> {
    let lanes: Vec<String> = priorities.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT seq, timeout_ms FROM jobs WHERE state = 'QUEUED' AND lane_priority >= {} \
         AND lane_priority % 4 IN ({}) ORDER BY lane_priority, seq LIMIT 1",
        super::runs::BATCH_PRIORITY_BASE,
        lanes.join(", ")
    );
    Ok(transaction
        .prepare_cached(&sql)?
        .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
        .optional()?)
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
        "BEGIN IMMEDIATE; {SCHEMA} {} COMMIT;",
        runs::SCHEMA
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
    // Version 6: grading runs (`runs::SCHEMA`), new tables only, created
    // with the schema at every open.
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

fn uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text)
        .map_err(|error| conversion_error(index, format!("bad uuid {text:?}: {error}")))
}

fn optional_uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Uuid>> {
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

fn select_user(connection: &Connection, id: i64) -> StoreResult<Option<User>> {
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
    let id = transaction.last_insert_rowid();
    select_user(transaction, id)?.ok_or_else(|| StoreError::Backend(format!("user {id} vanished")))
}

/// Deletes a user's sessions but the one with `keep_token_hash`.
fn delete_sessions_but(
    transaction: &Transaction<'_>,
    user_id: i64,
    keep_token_hash: Option<&str>,
) -> StoreResult<u64> {
    let deleted = transaction
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2")?
        .execute(params![user_id, keep_token_hash])?;
    Ok(deleted as u64)
}

fn select_challenge(connection: &Connection, id: i64) -> StoreResult<Option<Challenge>> {
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
    challenge_id: i64,
    version: i64,
) -> StoreResult<Vec<TestCase>> {
    let sql = format!(
        "SELECT {TEST_CASE_COLUMNS} FROM test_cases WHERE challenge_id = ?1 AND version = ?2 ORDER BY id"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let cases = statement
        .query_map([challenge_id, version], test_case_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cases)
}

/// Inserts the test cases of one version of a challenge.
fn insert_test_cases(
    transaction: &Transaction<'_>,
    challenge_id: i64,
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

fn select_attempt(connection: &Connection, id: i64) -> StoreResult<Option<Attempt>> {
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

fn select_job(connection: &Connection, id: Uuid) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id.to_string()], job_from)
        .optional()?)
}

/// Returns the job or `NotFound`.
fn existing_job(connection: &Connection, id: Uuid) -> StoreResult<Job> {
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

fn select_grader(connection: &Connection, id: Uuid) -> StoreResult<Option<Grader>> {
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
    transaction
        .prepare_cached(
            "INSERT INTO leaderboard (challenge_id, version, user_id, attempt_id, score, rank_key, \
             completion_time_ms, time_of_attempt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (challenge_id, version, user_id) DO UPDATE SET \
             attempt_id = excluded.attempt_id, score = excluded.score, rank_key = excluded.rank_key, \
             completion_time_ms = excluded.completion_time_ms, time_of_attempt = excluded.time_of_attempt \
             WHERE (excluded.rank_key, excluded.time_of_attempt, excluded.attempt_id) \
             < (leaderboard.rank_key, leaderboard.time_of_attempt, leaderboard.attempt_id)",
        )?
        .execute(params![
            row.challenge_id,
            row.version,
            row.user_id,
            row.attempt_id,
            row.score,
            row.rank_key,
            row.completion_time_ms,
            micros(row.time_of_attempt)
        ])?;
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
            Ok(FailOutcome::Requeued(existing_job(transaction, job.id)?))
        }
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

    // --- users, sessions, invites -------------------------------------------

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.write(move |transaction| insert_user(transaction, user))
            .await
    }

    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.call(move |connection| select_user(connection, id))
            .await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email_lower = email.to_lowercase();
        self.call(move |connection| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_lower = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([email_lower], user_from)
                .optional()?)
        })
        .await
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) \
                     VALUES (?5, ?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    session.token_hash,
                    session.user_id,
                    micros(session.created_at),
                    micros(session.expires_at),
                    session.id.to_string()
                ])?;
            Ok(())
        })
        .await
    }

    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql = format!(
                "SELECT {} FROM sessions JOIN users ON users.id = sessions.user_id \
                 WHERE sessions.token_hash = ?1 AND sessions.expires_at > ?2",
                USER_COLUMNS
                    .split(", ")
                    .map(|column| format!("users.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(connection
                .prepare_cached(&sql)?
                .query_row(params![token_hash, micros(now)], user_from)
                .optional()?)
        })
        .await
    }

    async fn list_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND expires_at > ?2 \
                 ORDER BY created_at DESC, rowid DESC"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let sessions = statement
                .query_map(params![user_id, micros(now)], session_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(sessions)
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let token_hash = token_hash.to_owned();
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
                .execute([token_hash])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn delete_user_session(&self, user_id: i64, session_id: Uuid) -> StoreResult<bool> {
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id = ?2")?
                .execute(params![user_id, session_id.to_string()])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn delete_user_sessions(
        &self,
        user_id: i64,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64> {
        let keep = keep_token_hash.map(str::to_owned);
        self.write(move |transaction| delete_sessions_but(transaction, user_id, keep.as_deref()))
            .await
    }

    async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()> {
        let password_hash = password_hash.to_owned();
        let keep = keep_token_hash.map(str::to_owned);
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![user_id, password_hash])?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("user {user_id}")));
            }
            delete_sessions_but(transaction, user_id, keep.as_deref())?;
            Ok(())
        })
        .await
    }

    async fn create_invite(&self, invite: Invite) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO invites (code_hash, role, created_by, created_at, expires_at, used_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    invite.code_hash,
                    invite.role.as_str(),
                    invite.created_by,
                    micros(invite.created_at),
                    micros(invite.expires_at),
                    invite.used_by
                ])?;
            Ok(())
        })
        .await
    }

    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let code_hash = code_hash.to_owned();
        self.write(move |transaction| {
            let role: Option<String> = transaction
                .prepare_cached(
                    "SELECT role FROM invites WHERE code_hash = ?1 AND used_by IS NULL AND expires_at > ?2",
                )?
                .query_row(params![code_hash, micros(now)], |row| row.get(0))
                .optional()?;
            let Some(role) = role.as_deref().and_then(Role::parse) else {
                return Ok(None);
            };
            let created = insert_user(transaction, NewUser { role, ..user })?;
            transaction
                .prepare_cached("UPDATE invites SET used_by = ?2 WHERE code_hash = ?1")?
                .execute(params![code_hash, created.id])?;
            Ok(Some(created))
        })
        .await
    }

    // --- challenges ---------------------------------------------------------

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
            let id = transaction.last_insert_rowid();
            insert_test_cases(transaction, id, 1, &challenge.test_cases, now)?;
            select_challenge(transaction, id)?.ok_or_else(|| StoreError::Backend(format!("challenge {id} vanished")))
        })
        .await
    }

    async fn get_challenge(&self, id: i64) -> StoreResult<Option<Challenge>> {
        self.call(move |connection| select_challenge(connection, id))
            .await
    }

    async fn list_challenges(
        &self,
        created_by: Option<i64>,
        page: Page<i64>,
    ) -> StoreResult<Vec<Challenge>> {
        self.call(move |connection| {
            let transaction = connection.transaction()?;
            let below = page.after.unwrap_or(i64::MAX);
            let limit = sql_limit(page.limit);
            let ids: Vec<i64> = match created_by {
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
        id: i64,
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

    async fn list_test_cases(&self, challenge_id: i64, version: i64) -> StoreResult<Vec<TestCase>> {
        self.call(move |connection| select_test_cases(connection, challenge_id, version))
            .await
    }

    async fn set_challenge_init(
        &self,
        id: i64,
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

    // --- attempts -----------------------------------------------------------

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
            let id = transaction.last_insert_rowid();
            let created = select_attempt(transaction, id)?
                .ok_or_else(|| StoreError::Backend(format!("attempt {id} vanished")))?;
            Ok(Admission::Created(created))
        })
        .await
    }

    async fn get_attempt(&self, id: i64) -> StoreResult<Option<Attempt>> {
        self.call(move |connection| select_attempt(connection, id))
            .await
    }

    async fn list_user_attempts(&self, user_id: i64, page: Page<i64>) -> StoreResult<Vec<Attempt>> {
        self.call(move |connection| {
            select_attempts(
                connection,
                "user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                params![
                    user_id,
                    page.after.unwrap_or(i64::MAX),
                    sql_limit(page.limit)
                ],
            )
        })
        .await
    }

    async fn list_passed_attempts(&self, challenge_id: i64) -> StoreResult<Vec<Attempt>> {
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
        challenge_id: i64,
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
        challenge_id: i64,
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

    async fn count_unfinished_attempts(&self, user_id: i64) -> StoreResult<u64> {
        self.call(move |connection| {
            let count: i64 = connection
                .prepare_cached(UNFINISHED_COUNT_SQL)?
                .query_row([user_id], |row| row.get(0))?;
            Ok(count.unsigned_abs())
        })
        .await
    }

    async fn update_attempt(&self, id: i64, update: AttemptUpdate) -> StoreResult<Attempt> {
        self.write(move |transaction| {
            let attempt = select_attempt(transaction, id)?.ok_or_else(|| StoreError::NotFound(format!("attempt {id}")))?;
            if update.reopen {
                transaction
                    .prepare_cached(
                        "UPDATE attempts SET status = 'PENDING', cases = '[]', error = NULL, \
                         error_kind = NULL, finished_at = NULL WHERE id = ?1",
                    )?
                    .execute([id])?;
                return select_attempt(transaction, id)?
                    .ok_or_else(|| StoreError::Backend(format!("attempt {id} vanished")));
            }
            if attempt.status.is_final() {
                return Ok(attempt);
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
            Ok(updated)
        })
        .await
    }

    // --- jobs ---------------------------------------------------------------

    async fn enqueue_job(&self, job: NewJob) -> StoreResult<Job> {
        self.write(move |transaction| {
            let id = Uuid::now_v7();
            transaction
                .prepare_cached(
                    "INSERT INTO jobs (id, kind, lane, lane_priority, payload, state, tries, max_tries, timeout_ms, \
                     progress, applied, cancel_requested, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'QUEUED', 0, ?6, ?7, '[]', 0, 0, ?8)",
                )?
                .execute(params![
                    id.to_string(),
                    job.payload.kind().as_str(),
                    job.lane.as_str(),
                    job.lane.priority(),
                    to_json(&job.payload)?,
                    job.max_tries,
                    to_i64(job.timeout_ms, "timeout_ms")?,
                    micros(stored_now())
                ])?;
            existing_job(transaction, id)
        })
        .await
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.call(move |connection| select_job(connection, id))
            .await
    }

    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        self.call(move |connection| {
            let limit = sql_limit(filter.limit);
            let after = filter.after.unwrap_or(0);
            // One statement per filter shape, so each can use an index
            // (`jobs_queued` or `jobs_by_lane`) instead of sorting every job.
            match (filter.state, filter.lane) {
                (Some(state), Some(lane)) => select_jobs(
                    connection,
                    "WHERE state = ?1 AND lane_priority = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                    params![state.as_str(), lane.priority(), after, limit],
                ),
                (Some(state), None) => select_jobs(
                    connection,
                    "WHERE state = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    params![state.as_str(), after, limit],
                ),
                (None, Some(lane)) => select_jobs(
                    connection,
                    "WHERE lane_priority = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    params![lane.priority(), after, limit],
                ),
                (None, None) => select_jobs(
                    connection,
                    "WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    params![after, limit],
                ),
            }
        })
        .await
    }

    async fn claim_job(
        &self,
        grader_id: Uuid,
        lanes: &[Lane],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let priorities = lane_priorities(lanes);
        self.write(move |transaction| claim_next(transaction, &priorities, grader_id, now))
            .await
    }

    async fn claim_jobs(
        &self,
        grader_id: Uuid,
        lanes: &[Lane],
        max: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        let priorities = lane_priorities(lanes);
        self.write(move |transaction| {
            let mut jobs = Vec::new();
            while jobs.len() < max as usize {
                match claim_next(transaction, &priorities, grader_id, now)? {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            Ok(jobs)
        })
        .await
    }

    async fn record_progress(&self, held: HeldLease, case: CaseResult) -> StoreResult<Job> {
        let HeldLease {
            job_id, lease_id, ..
        } = held;
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            lease::check_fence(&job, held)?;
            let mut progress = job.progress;
            progress.retain(|existing| existing.test_case_id != case.test_case_id);
            progress.push(case);
            progress.sort_by_key(|existing| existing.test_case_id);
            transaction
                .prepare_cached("UPDATE jobs SET progress = ?3 WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2")?
                .execute(params![job_id.to_string(), lease_id.to_string(), to_json(&progress)?])?;
            existing_job(transaction, job_id)
        })
        .await
    }

    async fn complete_job(
        &self,
        held: HeldLease,
        outcome: JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<Completion> {
        let HeldLease {
            job_id, lease_id, ..
        } = held;
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            if lease::check_completion(&job, held, &outcome)? == CompletionCheck::AlreadyRecorded {
                return Ok(Completion::AlreadyRecorded(job));
            }
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'DONE', outcome = ?3, finished_at = ?4, applied = 0 \
                     WHERE id = ?1 AND state = 'LEASED' AND lease_id = ?2",
                )?
                .execute(params![
                    job_id.to_string(),
                    lease_id.to_string(),
                    to_json(&outcome)?,
                    micros(now)
                ])?;
            if let Some(lease) = &job.lease {
                transaction
                    .prepare_cached("UPDATE graders SET jobs_done = jobs_done + 1 WHERE id = ?1")?
                    .execute([lease.grader_id.to_string()])?;
            }
            Ok(Completion::Recorded(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn fail_job(
        &self,
        held: HeldLease,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        let error = error.to_owned();
        self.write(move |transaction| {
            let job = existing_job(transaction, held.job_id)?;
            lease::check_fence(&job, held)?;
            let end = lease::after_failure(&job, &error, retryable);
            end_lease(transaction, &job, end, now)
        })
        .await
    }

    async fn mark_job_applied(&self, job_id: Uuid) -> StoreResult<()> {
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            let payload = match job.state {
                JobState::Done => pruned_payload(&job.payload),
                _ => job.payload,
            };
            transaction
                .prepare_cached(
                    "UPDATE jobs SET applied = 1, outcome = NULL, progress = '[]', payload = ?2 \
                     WHERE id = ?1 AND state IN ('DONE', 'FAILED', 'CANCELLED')",
                )?
                .execute(params![job_id.to_string(), to_json(&payload)?])?;
            Ok(())
        })
        .await
    }

    async fn delete_finished_jobs(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let below = first_job_id_at(created_before).to_string();
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached(
                    "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE id < ?1 AND applied = 1 \
                     AND state IN ('DONE', 'FAILED', 'CANCELLED') LIMIT ?2)",
                )?
                .execute(params![below, sql_limit(limit)])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn list_unapplied_jobs(&self) -> StoreResult<Vec<Job>> {
        self.call(|connection| select_jobs(connection, UNAPPLIED_FILTER, []))
            .await
    }

    async fn release_grader_leases(
        &self,
        grader_id: Uuid,
        tries: TryCount,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<FailOutcome>> {
        let reason = reason.to_owned();
        self.write(move |transaction| {
            let jobs = select_jobs(transaction, GRADER_LEASES_FILTER, [grader_id.to_string()])?;
            jobs.iter()
                .map(|job| {
                    let end = lease::after_take_back(job, tries, &reason);
                    end_lease(transaction, job, end, now)
                })
                .collect()
        })
        .await
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<FailOutcome>> {
        self.write(move |transaction| {
            let jobs = select_jobs(transaction, EXPIRED_LEASES_FILTER, [micros(now)])?;
            jobs.iter()
                .filter_map(|job| {
                    let end = lease::after_expiry(job, now)?;
                    Some(end_lease(transaction, job, end, now))
                })
                .collect()
        })
        .await
    }

    async fn stale_leases(
        &self,
        grader_id: Uuid,
        leases: &[(Uuid, Uuid)],
    ) -> StoreResult<Vec<Uuid>> {
        let leases = leases.to_vec();
        self.call(move |connection| {
            let transaction = connection.transaction()?;
            let mut stale = Vec::new();
            for (job_id, lease_id) in leases {
                let still_held = select_job(&transaction, job_id)?
                    .is_some_and(|job| lease::still_held(&job, lease_id, grader_id));
                if !still_held {
                    stale.push(job_id);
                }
            }
            Ok(stale)
        })
        .await
    }

    async fn cancel_job(
        &self,
        job_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let reason = reason.to_owned();
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            let cancel_requested = match job.state {
                JobState::Queued => false,
                JobState::Leased => true,
                JobState::Done | JobState::Failed | JobState::Cancelled => return Ok(None),
            };
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'CANCELLED', cancel_requested = ?2, error = ?3, finished_at = ?4, \
                     applied = 0 WHERE id = ?1 AND state IN ('QUEUED', 'LEASED')",
                )?
                .execute(params![job_id.to_string(), cancel_requested, reason, micros(now)])?;
            Ok(Some(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn retry_job(&self, job_id: Uuid) -> StoreResult<Option<Job>> {
        self.write(move |transaction| {
            let job = existing_job(transaction, job_id)?;
            if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Ok(None);
            }
            transaction
                .prepare_cached(
                    "UPDATE jobs SET state = 'QUEUED', tries = 0, lease_id = NULL, grader_id = NULL, \
                     lease_expires_at = NULL, leased_at = NULL, finished_at = NULL, outcome = NULL, \
                     progress = '[]', applied = 0, cancel_requested = 0 \
                     WHERE id = ?1 AND state IN ('FAILED', 'CANCELLED')",
                )?
                .execute([job_id.to_string()])?;
            Ok(Some(existing_job(transaction, job_id)?))
        })
        .await
    }

    async fn lane_stats(&self) -> StoreResult<Vec<LaneStats>> {
        self.call(|connection| {
            let transaction = connection.transaction()?;
            let mut stats = Vec::with_capacity(Lane::ALL.len());
            for lane in Lane::ALL {
                let count_in = |state: &str| -> StoreResult<u64> {
                    let count: i64 = transaction
                        .prepare_cached(
                            "SELECT COUNT(*) FROM jobs WHERE state = ?1 AND lane_priority = ?2",
                        )?
                        .query_row(params![state, lane.priority()], |row| row.get(0))?;
                    Ok(count.unsigned_abs())
                };
                let queued = count_in("QUEUED")?;
                let leased = count_in("LEASED")?;
                let oldest_queued_at = transaction
                    .prepare_cached(
                        "SELECT created_at FROM jobs WHERE state = 'QUEUED' AND lane_priority = ?1 \
                         ORDER BY seq LIMIT 1",
                    )?
                    .query_row([lane.priority()], |row| time_at(row, 0))
                    .optional()?;
                stats.push(LaneStats {
                    lane,
                    queued,
                    leased,
                    oldest_queued_at,
                });
            }
            Ok(stats)
        })
        .await
    }

    // --- graders ------------------------------------------------------------

    async fn create_grader(&self, grader: Grader) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO graders (id, name, hostname, version, lanes, slots, state, token_hash, \
                     last_heartbeat, registered_at, jobs_done, cluster_token_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    grader.id.to_string(),
                    grader.name,
                    grader.hostname,
                    grader.version,
                    to_json(&grader.lanes)?,
                    grader.slots,
                    grader.state.as_str(),
                    grader.token_hash,
                    micros(grader.last_heartbeat),
                    micros(grader.registered_at),
                    to_i64(grader.jobs_done, "jobs_done")?,
                    grader.cluster_token_id.map(|id| id.to_string())
                ])?;
            Ok(())
        })
        .await
    }

    async fn get_grader(&self, id: Uuid) -> StoreResult<Option<Grader>> {
        self.call(move |connection| select_grader(connection, id))
            .await
    }

    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql = format!("SELECT {GRADER_COLUMNS} FROM graders WHERE token_hash = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([token_hash], grader_from)
                .optional()?)
        })
        .await
    }

    async fn list_graders(&self, page: Page<Uuid>) -> StoreResult<Vec<Grader>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {GRADER_COLUMNS} FROM graders WHERE ?1 IS NULL OR id < ?1 \
                 ORDER BY id DESC LIMIT ?2"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let after = page.after.map(|id| id.to_string());
            let graders = statement
                .query_map(params![after, sql_limit(page.limit)], grader_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(graders)
        })
        .await
    }

    async fn touch_grader(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Grader>> {
        self.write(move |transaction| {
            let sql = format!(
                "UPDATE graders SET last_heartbeat = ?2 WHERE id = ?1 AND state != 'DEAD' RETURNING {GRADER_COLUMNS}"
            );
            Ok(transaction.prepare_cached(&sql)?.query_row(params![id.to_string(), micros(now)], grader_from).optional()?)
        })
        .await
    }

    async fn set_grader_state(&self, id: Uuid, state: GraderState) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE graders SET state = ?2 WHERE id = ?1 AND state != 'DEAD'")?
                .execute(params![id.to_string(), state.as_str()])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>> {
        self.write(move |transaction| {
            let sql = format!(
                "UPDATE graders SET state = 'DEAD' WHERE state IN ('ALIVE', 'DRAINING') AND last_heartbeat < ?1 \
                 RETURNING {GRADER_COLUMNS}"
            );
            let mut statement = transaction.prepare_cached(&sql)?;
            let graders = statement.query_map([micros(cutoff)], grader_from)?.collect::<rusqlite::Result<_>>()?;
            Ok(graders)
        })
        .await
    }

    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM graders WHERE state = 'DEAD' AND last_heartbeat < ?1")?
                .execute([micros(cutoff)])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn list_grader_leases(&self, grader_id: Uuid) -> StoreResult<Vec<Job>> {
        self.call(move |connection| {
            select_jobs(connection, GRADER_LEASES_FILTER, [grader_id.to_string()])
        })
        .await
    }

    // --- cluster tokens -----------------------------------------------------

    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO cluster_tokens (id, label, token_hash, created_by, created_at, revoked) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    token.id.to_string(),
                    token.label,
                    token.token_hash,
                    token.created_by,
                    micros(token.created_at),
                    token.revoked
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>> {
        self.call(|connection| {
            let sql = format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens ORDER BY created_at DESC, rowid DESC");
            let mut statement = connection.prepare_cached(&sql)?;
            let tokens = statement.query_map([], cluster_token_from)?.collect::<rusqlite::Result<_>>()?;
            Ok(tokens)
        })
        .await
    }

    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql =
                format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens WHERE token_hash = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([token_hash], cluster_token_from)
                .optional()?)
        })
        .await
    }

    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>> {
        self.call(move |connection| {
            let sql = format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens WHERE id = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([id.to_string()], cluster_token_from)
                .optional()?)
        })
        .await
    }

    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE cluster_tokens SET revoked = 1 WHERE id = ?1")?
                .execute([id.to_string()])?;
            Ok(changed > 0)
        })
        .await
    }
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
    fn plan(connection: &Connection, sql: &str) -> String {
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
