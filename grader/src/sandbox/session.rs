//! Running one SQL query as the runner role, safely.
//!
//! A [`RunnerSession`] is one connection that logs in as the runner. A
//! query is checked to be a single SELECT-like statement, prepared with the
//! extended protocol (which rejects several statements), and must return at
//! least one column. Each run happens inside its own `BEGIN ISOLATION LEVEL
//! REPEATABLE READ, READ ONLY` with `SET LOCAL` statement and lock timeouts,
//! streams its rows through the unnamed portal under row and byte caps, and
//! rolls back; the three are pipelined into one round trip. A client-side
//! deadline, a cap (or a job cancellation) cancels the query with the
//! connection's CancelToken; after any error the connection is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlarena_common::{Column, QueryResult};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{CancelToken, Client, Config, NoTls, Row, RowStream, Statement};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::cells::{decode, decoded_len, needs_text_cast, RawCell};
use crate::sqltext::{first_keyword, split_statements};

/// How much longer than the server-side timeout the client waits before
/// cancelling the query itself.
const CLIENT_DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// The default cap on one decoded value (see [`Limits::max_cell_bytes`]).
pub const DEFAULT_MAX_CELL_BYTES: usize = 1 << 20;

/// The default of [`Limits::precision_time`].
pub const DEFAULT_PRECISION_TIME: Duration = Duration::from_secs(2);

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub lock_timeout: Duration,
    pub max_rows: usize,
    /// Cap on a result's size, counted twice: as received, and as decoded
    /// (a 10-byte numeric can print as 128 KiB).
    pub max_bytes: usize,
    /// Cap on one decoded value.
    pub max_cell_bytes: usize,
    /// Longest an attempt's case may go on timing, beyond its planned
    /// rounds, to make its ratio precise; zero runs the planned rounds only.
    pub precision_time: Duration,
}

impl Limits {
    /// Limits with the given timeout and caps, a lock timeout of at most
    /// one second, and a per-value cap of at most
    /// [`DEFAULT_MAX_CELL_BYTES`].
    pub fn new(timeout: Duration, max_rows: usize, max_bytes: usize) -> Limits {
        Limits {
            timeout,
            lock_timeout: timeout.min(Duration::from_secs(1)),
            max_rows,
            max_bytes,
            max_cell_bytes: max_bytes.min(DEFAULT_MAX_CELL_BYTES),
            precision_time: DEFAULT_PRECISION_TIME,
        }
    }

    /// The same limits with another precision time.
    pub fn with_precision_time(self, precision_time: Duration) -> Limits {
        Limits {
            precision_time,
            ..self
        }
    }

    /// The same limits with another per-value cap.
    pub fn with_max_cell_bytes(self, max_cell_bytes: usize) -> Limits {
        Limits {
            max_cell_bytes,
            ..self
        }
    }
}

/// Why a query produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query is not something students may run (wrong shape).
    #[error("{0}")]
    Rejected(String),
    /// The query failed in PostgreSQL or broke a limit: the student's fault.
    #[error("{0}")]
    Failed(String),
    /// The job was cancelled while the query ran.
    #[error("the run was cancelled")]
    Cancelled,
    /// PostgreSQL could not be reached or the connection broke: not the
    /// student's fault.
    #[error("database connection problem: {0}")]
    Connection(String),
}

/// A prepared query and how to read its columns.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    statement: Statement,
    columns: Vec<Column>,
}

impl PreparedQuery {
    /// Returns the result columns (names and original type names).
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Returns the types of the columns as PostgreSQL sends them (after
    /// the text-cast wrapper, if any).
    fn types(&self) -> Vec<Type> {
        self.statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect()
    }
}

/// One run's result and its client-side wall time (execute + fetch-all).
#[derive(Debug, Clone)]
pub struct Execution {
    pub result: Option<QueryResult>,
    pub elapsed: Duration,
}

/// A connection logged in as the runner role.
pub struct RunnerSession {
    client: Option<Client>,
    cancel: CancelToken,
    clock: Arc<QueryClock>,
    /// The BEGIN of the last limits a run used, kept so that a run does
    /// not format it again.
    begin: Option<(Limits, Arc<str>)>,
    /// The statement [`RunnerSession::prepare_kept`] prepared last, with
    /// its text: the reference's connection to a test-case database runs
    /// only that case's solution, so it prepares it once.
    kept: Option<(String, PreparedQuery)>,
}

/// The total time of the runs (execute + fetch) of the sessions sharing
/// it, so the time spent around them can be told apart.
#[derive(Debug, Default)]
pub struct QueryClock {
    nanos: AtomicU64,
}

impl QueryClock {
    /// Adds one run's time.
    fn add(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Returns the time of all runs so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// Formats a limit for a student: `5 s` or `250 ms`.
pub fn describe_duration(duration: Duration) -> String {
    if duration.as_millis().is_multiple_of(1000) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Checks the shape of a student query before it reaches PostgreSQL: one
/// statement starting with SELECT, WITH, VALUES or TABLE. Returns that
/// statement without its semicolon.
///
/// # Errors
///
/// Returns [`QueryError::Rejected`] with a message for the student.
pub fn check_query_shape(sql: &str) -> Result<&str, QueryError> {
    if sql.contains('\0') {
        return Err(QueryError::Rejected(
            "the query contains a NUL character, which PostgreSQL does not accept".into(),
        ));
    }
    let statements = split_statements(sql);
    match statements.len() {
        0 => return Err(QueryError::Rejected("the query is empty".into())),
        1 => {}
        count => {
            return Err(QueryError::Rejected(format!(
                "only a single SELECT statement is allowed (found {count} statements)"
            )))
        }
    }
    match first_keyword(statements[0].text).as_deref() {
        Some("select" | "with" | "values" | "table") => Ok(statements[0].text),
        Some(keyword) if !keyword.is_empty() => Err(QueryError::Rejected(format!(
            "only a single SELECT statement is allowed (found {})",
            keyword.to_uppercase()
        ))),
        _ => Err(QueryError::Rejected(
            "only a single SELECT statement is allowed".into(),
        )),
    }
}

/// Maps a PostgreSQL error to a message for the student.
fn failure(error: &tokio_postgres::Error, limits: &Limits) -> QueryError {
    let Some(db) = error.as_db_error() else {
        return QueryError::Connection(error.to_string());
    };
    let code = db.code();
    let message = crate::sandbox::db_message(error);
    if *code == SqlState::QUERY_CANCELED {
        QueryError::Failed(format!(
            "your query ran longer than the {} limit",
            describe_duration(limits.timeout)
        ))
    } else if *code == SqlState::LOCK_NOT_AVAILABLE {
        QueryError::Failed(format!("your query waited too long for a lock: {message}"))
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        QueryError::Failed(format!("only read-only queries are allowed: {message}"))
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        QueryError::Failed(format!("not allowed: {message}"))
    } else if *code == SqlState::CONFIGURATION_LIMIT_EXCEEDED || *code == SqlState::DISK_FULL {
        QueryError::Failed(format!(
            "your query used too much temporary space: {message}"
        ))
    } else if *code == SqlState::OUT_OF_MEMORY || *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        QueryError::Failed(format!("your query used too many resources: {message}"))
    } else if code.code().starts_with("08")
        || code.code().starts_with("57P")
        || code.code().starts_with("53300")
    {
        QueryError::Connection(message)
    } else {
        QueryError::Failed(message)
    }
}

impl RunnerSession {
    /// Connects as the runner with `config`; its runs add to `clock`.
    ///
    /// # Errors
    ///
    /// Returns [`QueryError::Connection`] when PostgreSQL refuses.
    pub async fn connect(
        config: &Config,
        clock: Arc<QueryClock>,
    ) -> Result<RunnerSession, QueryError> {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| QueryError::Connection(crate::sandbox::db_message(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "runner connection ended");
            }
        });
        let cancel = client.cancel_token();
        Ok(RunnerSession {
            client: Some(client),
            cancel,
            clock,
            begin: None,
            kept: None,
        })
    }

    /// Returns true while the connection is usable.
    pub fn is_open(&self) -> bool {
        self.client
            .as_ref()
            .is_some_and(|client| !client.is_closed())
    }

    /// Returns the live client, or an error once the connection was dropped.
    fn client(&mut self) -> Result<&mut Client, QueryError> {
        self.client.as_mut().ok_or_else(|| {
            QueryError::Connection("the connection was closed after an earlier error".into())
        })
    }

    /// Checks and prepares a query. Columns whose type has no typed reading
    /// are cast to text by a wrapper query.
    ///
    /// # Errors
    ///
    /// [`QueryError::Rejected`] for a query of the wrong shape (several
    /// statements, not a SELECT, no columns), [`QueryError::Failed`] with
    /// PostgreSQL's message for an invalid query. Any error drops the
    /// connection.
    pub async fn prepare(&mut self, sql: &str) -> Result<PreparedQuery, QueryError> {
        let result = prepare_checked(self.client()?, sql).await;
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// As [`RunnerSession::prepare`], but a text this connection prepared
    /// last is not prepared again: its statement is kept for the
    /// connection's life. For the reference only; a student's statement
    /// is closed when its attempt ends.
    ///
    /// # Errors
    ///
    /// As [`RunnerSession::prepare`].
    pub async fn prepare_kept(&mut self, sql: &str) -> Result<PreparedQuery, QueryError> {
        if let Some((text, query)) = &self.kept {
            if text == sql {
                return Ok(query.clone());
            }
        }
        let query = self.prepare(sql).await?;
        self.kept = Some((sql.to_owned(), query.clone()));
        Ok(query)
    }

    /// Runs a prepared query once. With `keep_rows`, the decoded result is
    /// returned; otherwise rows are fetched (and capped) but not decoded.
    ///
    /// # Errors
    ///
    /// [`QueryError::Failed`] for PostgreSQL errors, timeouts and caps,
    /// [`QueryError::Cancelled`] when `cancel` fires. Any error drops the
    /// connection.
    pub async fn execute(
        &mut self,
        query: &PreparedQuery,
        limits: &Limits,
        keep_rows: bool,
        cancel: &CancellationToken,
    ) -> Result<Execution, QueryError> {
        let cancel_token = self.cancel.clone();
        if self.begin.as_ref().is_none_or(|(used, _)| used != limits) {
            self.begin = Some((*limits, begin_statement(limits).into()));
        }
        let begin = self
            .begin
            .as_ref()
            .map_or_else(|| Arc::from(""), |(_, begin)| Arc::clone(begin));
        let client = self.client()?;
        let deadline = limits.timeout + CLIENT_DEADLINE_GRACE;
        let outcome = tokio::select! {
            outcome = run_once(client, &cancel_token, query, limits, &begin) => outcome,
            () = tokio::time::sleep(deadline) => {
                cancel_query(&cancel_token).await;
                Err(QueryError::Failed(format!(
                    "your query ran longer than the {} limit",
                    describe_duration(limits.timeout)
                )))
            }
            () = cancel.cancelled() => {
                cancel_query(&cancel_token).await;
                Err(QueryError::Cancelled)
            }
        };
        let (rows, elapsed) = match outcome {
            Ok(fetched) => fetched,
            Err(error) => {
                self.client = None;
                return Err(error);
            }
        };
        self.clock.add(elapsed);
        let result = if keep_rows {
            let (types, columns, limits) = (query.types(), query.columns.clone(), *limits);
            // Decoding is CPU work proportional to the decoded size: a
            // small result is read at once, a large one off the async
            // runtime, so heartbeats and other jobs go on meanwhile.
            let decoded = if decoded_size(&types, &rows) <= INLINE_DECODE_BYTES {
                decode_rows(&types, columns, &rows, &limits)
            } else {
                tokio::task::spawn_blocking(move || decode_rows(&types, columns, &rows, &limits))
                    .await
                    .unwrap_or_else(|error| {
                        Err(QueryError::Failed(format!(
                            "cannot read the result: {error}"
                        )))
                    })
            };
            match decoded {
                Ok(result) => Some(result),
                Err(error) => {
                    self.client = None;
                    return Err(error);
                }
            }
        } else {
            None
        };
        Ok(Execution { result, elapsed })
    }
}

/// Checks the shape of a query and prepares it.
async fn prepare_checked(client: &Client, sql: &str) -> Result<PreparedQuery, QueryError> {
    let statement_text = check_query_shape(sql)?;
    let limits = Limits::new(Duration::from_secs(10), 0, 0);
    let statement = client.prepare(sql).await.map_err(|error| {
        let multiple = error
            .as_db_error()
            .is_some_and(|db| db.message().contains("cannot insert multiple commands"));
        if multiple {
            QueryError::Rejected(
                "only a single SELECT statement is allowed (found several statements)".into(),
            )
        } else {
            failure(&error, &limits)
        }
    })?;
    if statement.columns().is_empty() {
        return Err(QueryError::Rejected(
            "the query must be a SELECT that returns at least one column".into(),
        ));
    }
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            type_name: c.type_().name().to_string(),
        })
        .collect();
    if !statement
        .columns()
        .iter()
        .any(|c| needs_text_cast(c.type_()))
    {
        return Ok(PreparedQuery { statement, columns });
    }
    let selected: Vec<String> = statement
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if needs_text_cast(c.type_()) {
                format!("c{i}::text")
            } else {
                format!("c{i}")
            }
        })
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let wrapped = format!(
        "SELECT {} FROM (\n{statement_text}\n) AS sqlarena_query({})",
        selected.join(", "),
        aliases.join(", ")
    );
    let statement = client
        .prepare(&wrapped)
        .await
        .map_err(|error| failure(&error, &limits))?;
    Ok(PreparedQuery { statement, columns })
}

/// Sends a cancel request for the connection's running query.
async fn cancel_query(token: &CancelToken) {
    if let Err(error) = token.cancel_query(NoTls).await {
        debug!(%error, "cancel request failed");
    }
}

/// One run in its own transaction, sent as one pipeline: `BEGIN ... READ
/// ONLY` with `SET LOCAL` timeouts, then the query (bind and execute), then
/// `ROLLBACK`. PostgreSQL runs the three in order, so the run pays one
/// round trip, not three; the rows stream back under the caps. Returns the
/// rows and the time from sending to the last row.
///
/// If BEGIN failed, the query would run outside the transaction but still
/// under the runner role's own settings (read-only, statement timeout); the
/// failure is reported and the connection dropped.
async fn run_once(
    client: &Client,
    cancel: &CancelToken,
    query: &PreparedQuery,
    limits: &Limits,
    begin: &str,
) -> Result<(Vec<Row>, Duration), QueryError> {
    let started = Instant::now();
    let fetch = async {
        let stream = client
            .query_raw(&query.statement, NO_PARAMETERS)
            .await
            .map_err(|e| failure(&e, limits))?;
        let rows = fetch_capped(stream, limits).await;
        if rows.is_err() {
            // The server may still be producing rows nobody will read.
            cancel_query(cancel).await;
        }
        Ok::<_, QueryError>((rows?, started.elapsed()))
    };
    // Biased: the first poll of each sends it, so the three must be polled
    // in this order; try_join gives up as soon as one fails.
    let ((), fetched, ()) = tokio::try_join!(
        biased;
        async {
            client
                .batch_execute(begin)
                .await
                .map_err(|e| failure(&e, limits))
        },
        fetch,
        async {
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| failure(&e, limits))
        },
    )?;
    Ok(fetched)
}

/// The BEGIN of a run under `limits`, with its `SET LOCAL` timeouts.
fn begin_statement(limits: &Limits) -> String {
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
         SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
        limits.timeout.as_millis().max(1),
        limits.lock_timeout.as_millis().max(1)
    )
}

/// No query parameters: student queries take none.
const NO_PARAMETERS: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];

/// Reads a result stream, failing as soon as it passes the row or byte cap.
async fn fetch_capped(stream: RowStream, limits: &Limits) -> Result<Vec<Row>, QueryError> {
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.try_next().await.map_err(|e| failure(&e, limits))? {
        for index in 0..row.len() {
            let raw = match row.try_get::<_, Option<RawCell>>(index) {
                Ok(Some(RawCell(raw))) => raw.len(),
                _ => 0,
            };
            bytes = bytes.saturating_add(raw + VALUE_OVERHEAD);
        }
        rows.push(row);
        if rows.len() > limits.max_rows {
            return Err(QueryError::Failed(format!(
                "your query returned more than {} rows (the limit)",
                limits.max_rows
            )));
        }
        if bytes > limits.max_bytes {
            return Err(too_many_bytes(limits));
        }
    }
    Ok(rows)
}

/// What every value of a result costs the grader beyond its bytes, NULLs
/// and empty strings included (its range in the row, its JSON value): a
/// result of millions of NULLs is large though it carries no bytes.
const VALUE_OVERHEAD: usize = 32;

/// Results up to this decoded size are decoded on the async runtime
/// (microseconds of work); larger ones on the blocking pool.
const INLINE_DECODE_BYTES: usize = 64 << 10;

/// The decoded size of fetched rows, computed from their headers without
/// decoding them.
fn decoded_size(types: &[Type], rows: &[Row]) -> usize {
    rows.iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(
                    |(index, ty)| match row.try_get::<_, Option<RawCell>>(index) {
                        Ok(Some(RawCell(raw))) => decoded_len(ty, raw) + VALUE_OVERHEAD,
                        _ => VALUE_OVERHEAD,
                    },
                )
                .fold(0usize, usize::saturating_add)
        })
        .fold(0usize, usize::saturating_add)
}

/// Converts fetched rows into a typed result, counting each value's
/// decoded size against the per-value and per-result caps before it is
/// built.
fn decode_rows(
    types: &[Type],
    columns: Vec<Column>,
    rows: &[Row],
    limits: &Limits,
) -> Result<QueryResult, QueryError> {
    let mut decoded = Vec::with_capacity(rows.len());
    let mut total = 0usize;
    for row in rows {
        let mut cells = Vec::with_capacity(types.len());
        for (index, ty) in types.iter().enumerate() {
            let raw = row.try_get::<_, Option<RawCell>>(index).map_err(|e| {
                QueryError::Failed(format!("cannot read column {}: {e}", index + 1))
            })?;
            total = total.saturating_add(VALUE_OVERHEAD);
            if total > limits.max_bytes {
                return Err(too_many_bytes(limits));
            }
            let cell = match raw {
                None => serde_json::Value::Null,
                Some(RawCell(raw)) => {
                    let size = decoded_len(ty, raw);
                    if size > limits.max_cell_bytes {
                        return Err(QueryError::Failed(format!(
                            "a value in column {} of your result is larger than {} bytes (the limit per value)",
                            index + 1,
                            limits.max_cell_bytes
                        )));
                    }
                    total = total.saturating_add(size);
                    if total > limits.max_bytes {
                        return Err(too_many_bytes(limits));
                    }
                    decode(ty, raw).map_err(|e| {
                        QueryError::Failed(format!(
                            "cannot read a value of type {} in column {}: {e}",
                            ty.name(),
                            index + 1
                        ))
                    })?
                }
            };
            cells.push(cell);
        }
        decoded.push(cells);
    }
    Ok(QueryResult {
        columns,
        rows: decoded,
        ordered: false,
    })
}

/// The error of a result over the byte cap.
fn too_many_bytes(limits: &Limits) -> QueryError {
    QueryError::Failed(format!(
        "your query returned more than {} bytes of data (the limit)",
        limits.max_bytes
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_select_like_statements_pass_the_shape_check() {
        for ok in [
            "select 1",
            "  WITH a AS (select 1) select * from a",
            "(select 1)",
            "values (1)",
            "table t",
            "select 1;",
        ] {
            assert!(check_query_shape(ok).is_ok(), "{ok}");
        }
        let message = check_query_shape("select 1; select 2")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("single SELECT") && message.contains("2 statements"),
            "{message}"
        );
        let message = check_query_shape("delete from t").unwrap_err().to_string();
        assert!(message.contains("found DELETE"), "{message}");
        assert!(check_query_shape("  -- nothing\n").is_err());
        assert_eq!(
            check_query_shape("select 1; -- done\n").unwrap(),
            "select 1"
        );
        let message = check_query_shape("select '\0'").unwrap_err().to_string();
        assert!(message.contains("NUL"), "{message}");
    }

    #[test]
    fn durations_are_described_for_students() {
        assert_eq!(describe_duration(Duration::from_secs(5)), "5 s");
        assert_eq!(describe_duration(Duration::from_millis(250)), "250 ms");
    }
}
