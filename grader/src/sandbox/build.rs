//! Building a test case's database: a clone of the hardened template owned
//! by the challenge version's owner, filled by the owner's own login with
//! the professor's init SQL and the case's data.
//!
//! No privileged session ever runs inside the database a professor built:
//! the admin only creates, re-grants and drops it from its maintenance
//! database (whose connections pin `search_path`), and the grants and
//! `ANALYZE` after init run as the owner. Every statement of init and data
//! obeys the per-statement timeout, the job's cancellation and the
//! database-size cap on the client side, whatever the SQL itself SETs.

use sqlarena_common::TestCaseId;
use std::time::Duration;

use tokio_postgres::{CancelToken, Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::roles::Login;
use super::{connect, db_message, drop_database, quote_ident, Sandbox};
use crate::sqltext::split_statements;

/// How often the size of a database being filled is checked.
const SIZE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Why a test-case database could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A statement of the challenge's init SQL failed.
    Init {
        statement: usize,
        text: String,
        message: String,
    },
    /// A statement of a test case's data failed.
    Data {
        statement: usize,
        text: String,
        message: String,
    },
    /// PostgreSQL itself failed (connection lost, out of disk...).
    Infrastructure(String),
    /// The job was cancelled (or its deadline passed) during the build.
    Cancelled,
}

impl BuildError {
    /// Describes the failure for a professor, naming the test case
    /// (`None` while building the template, before any test case).
    pub fn describe(&self, test_case: Option<TestCaseId>) -> String {
        let case = |separator: &str| match test_case {
            Some(id) => format!("test case {id}{separator} "),
            None => String::new(),
        };
        match self {
            BuildError::Init {
                statement,
                text,
                message,
            } => {
                format!("init SQL, statement {statement} ({text}): {message}")
            }
            BuildError::Data {
                statement,
                text,
                message,
            } => {
                format!(
                    "{}data statement {statement} ({text}): {message}",
                    case(",")
                )
            }
            BuildError::Infrastructure(message) => {
                format!("{}database setup failed: {message}", case(":"))
            }
            BuildError::Cancelled => format!("{}the build was cancelled", case(":")),
        }
    }

    /// Describes the failure without the statement's text or PostgreSQL's
    /// message, which can quote hidden test data: for attempts, whose
    /// errors students see.
    pub fn summary(&self, test_case: Option<TestCaseId>) -> String {
        match self {
            BuildError::Init { statement, .. } => {
                format!("init SQL statement {statement} failed on this grader")
            }
            BuildError::Data { statement, .. } => match test_case {
                Some(id) => {
                    format!("test case {id}, data statement {statement} failed on this grader")
                }
                None => format!("data statement {statement} failed on this grader"),
            },
            BuildError::Infrastructure(_) | BuildError::Cancelled => self.describe(test_case),
        }
    }
}

/// Why one statement of init or data failed.
enum StepError {
    /// PostgreSQL's (or the guard's) message for the professor.
    Statement(String),
    Infrastructure(String),
    Cancelled,
}

/// Which script a statement belongs to.
#[derive(Clone, Copy)]
enum Script {
    Init,
    Data,
}

/// Shortens a statement for an error message.
fn excerpt(statement: &str) -> String {
    let flat: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 80 {
        format!("`{}...`", flat.chars().take(77).collect::<String>())
    } else {
        format!("`{flat}`")
    }
}

/// Sends a cancel request for a connection's running statement.
async fn cancel_statement(token: &CancelToken) {
    if let Err(error) = token.cancel_query(NoTls).await {
        debug!(%error, "cancel request failed");
    }
}

/// One database being filled: the owner's connection and what guards it.
struct Filling<'a> {
    sandbox: &'a Sandbox,
    admin: &'a Client,
    database: &'a str,
    owner: Client,
    owner_cancel: CancelToken,
    cancel: &'a CancellationToken,
    size_check: tokio::time::Interval,
}

impl<'a> Filling<'a> {
    /// Guards the statements `owner` runs in `database`; the first size
    /// check comes one interval after the start.
    fn new(
        sandbox: &'a Sandbox,
        admin: &'a Client,
        database: &'a str,
        owner: Client,
        cancel: &'a CancellationToken,
    ) -> Filling<'a> {
        let mut size_check = tokio::time::interval(SIZE_CHECK_INTERVAL);
        size_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        size_check.reset();
        Filling {
            sandbox,
            admin,
            database,
            owner_cancel: owner.cancel_token(),
            owner,
            cancel,
            size_check,
        }
    }

    /// Runs one statement as the owner under the statement timeout, the
    /// job's cancellation and the size cap.
    async fn run(&mut self, statement: &str) -> Result<(), StepError> {
        let timeout = self.sandbox.build_limits.statement_timeout;
        let execute = self.owner.batch_execute(statement);
        let mut execute = std::pin::pin!(execute);
        let deadline = tokio::time::sleep(timeout);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                result = &mut execute => {
                    return result.map_err(|error| match error.as_db_error() {
                        Some(_) => StepError::Statement(db_message(&error)),
                        None => StepError::Infrastructure(error.to_string()),
                    });
                }
                () = &mut deadline => {
                    cancel_statement(&self.owner_cancel).await;
                    return Err(StepError::Statement(format!(
                        "ran longer than the {} ms limit for one statement",
                        timeout.as_millis()
                    )));
                }
                () = self.cancel.cancelled() => {
                    cancel_statement(&self.owner_cancel).await;
                    return Err(StepError::Cancelled);
                }
                _ = self.size_check.tick() => {
                    if let Err(error) = self.check_size().await {
                        cancel_statement(&self.owner_cancel).await;
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Fails when the database has grown past the size cap.
    async fn check_size(&self) -> Result<(), StepError> {
        let size: i64 = self
            .admin
            .query_one(
                "SELECT pg_catalog.pg_database_size($1::text)",
                &[&self.database],
            )
            .await
            .map_err(|e| StepError::Infrastructure(db_message(&e)))?
            .get(0);
        let cap = self.sandbox.build_limits.max_database_bytes;
        if u64::try_from(size).unwrap_or(0) > cap {
            return Err(StepError::Statement(format!(
                "the database grew past the {} MiB limit",
                cap >> 20
            )));
        }
        Ok(())
    }

    /// Runs every statement of `script`.
    async fn run_script(&mut self, sql: &str, script: Script) -> Result<(), BuildError> {
        for (index, statement) in split_statements(sql).iter().enumerate() {
            self.run(statement.text)
                .await
                .map_err(|error| match error {
                    StepError::Statement(message) => {
                        let (statement, text) = (index + 1, excerpt(statement.text));
                        match script {
                            Script::Init => BuildError::Init {
                                statement,
                                text,
                                message,
                            },
                            Script::Data => BuildError::Data {
                                statement,
                                text,
                                message,
                            },
                        }
                    }
                    StepError::Infrastructure(message) => BuildError::Infrastructure(message),
                    StepError::Cancelled => BuildError::Cancelled,
                })?;
        }
        Ok(())
    }
}

impl Sandbox {
    /// Creates one test case's database for the version owned by `owner`:
    /// a clone of the template, init SQL and data run by the owner's own
    /// login, then the owner grants the runner SELECT, and the admin
    /// leaves the runner nothing but CONNECT on the database and drops any
    /// setting the init gave the database (runner sessions there get the
    /// runner's settings only).
    ///
    /// # Errors
    ///
    /// Names the failing statement with PostgreSQL's message (or the
    /// limit it broke); the database is dropped again on failure.
    pub async fn build_case_database(
        &self,
        owner: &Login,
        init: &str,
        data: &str,
        cancel: &CancellationToken,
    ) -> Result<String, BuildError> {
        let name = format!(
            "{}_{:012x}",
            self.prefix,
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let admin = self
            .admin_client(None)
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        let database = quote_ident(&name);
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} TEMPLATE {} OWNER {}",
                quote_ident(&self.template),
                quote_ident(&owner.role)
            ))
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))?;
        let result = match admin
            .batch_execute(&format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
            .await
        {
            Ok(()) => self.fill(&admin, &name, owner, init, data, cancel).await,
            Err(error) => Err(BuildError::Infrastructure(db_message(&error))),
        };
        let result = match result {
            Ok(()) => {
                let runner = quote_ident(&self.runner.role);
                admin
                    .batch_execute(&format!(
                        "REVOKE ALL ON DATABASE {database} FROM PUBLIC, {runner}; \
                         GRANT CONNECT ON DATABASE {database} TO {runner}; \
                         ALTER DATABASE {database} RESET ALL"
                    ))
                    .await
                    .map_err(|e| BuildError::Infrastructure(db_message(&e)))
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => Ok(name),
            Err(error) => {
                if let Err(drop_error) = drop_database(&admin, &name).await {
                    warn!(database = %name, error = %drop_error, "cannot drop a failed database");
                }
                Err(error)
            }
        }
    }

    /// Runs init and data as the owner in `database`, then, on a fresh
    /// owner connection (no session state of the init), grants the runner
    /// USAGE on the owner's schemas and SELECT on their tables, and
    /// analyzes them.
    async fn fill(
        &self,
        admin: &Client,
        database: &str,
        owner: &Login,
        init: &str,
        data: &str,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let timeout_ms = self.build_limits.statement_timeout.as_millis();
        let reset = |step: &'static str| async move {
            super::roles::reset_owner(admin, owner, database, timeout_ms)
                .await
                .map_err(|e| BuildError::Infrastructure(format!("{step}: {}", db_message(&e))))
        };
        reset("resetting the owner's settings").await?;
        let config = self.login_config(owner, database, "sqlarena-owner", None);
        let client = connect(&config)
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))?;
        let mut filling = Filling::new(self, admin, database, client, cancel);
        filling.run_script(init, Script::Init).await?;
        filling.run_script(data, Script::Data).await?;
        filling.check_size().await.map_err(|error| match error {
            StepError::Statement(message) => BuildError::Data {
                statement: split_statements(data).len(),
                text: "(after the last statement)".into(),
                message,
            },
            StepError::Infrastructure(message) => BuildError::Infrastructure(message),
            StepError::Cancelled => BuildError::Cancelled,
        })?;
        drop(filling);
        let grants = format!(
            "DO $grant$
             DECLARE schema_name text;
             BEGIN
               FOR schema_name IN
                 SELECT nspname FROM pg_catalog.pg_namespace
                 WHERE nspowner OPERATOR(pg_catalog.=) CURRENT_USER::pg_catalog.regrole::pg_catalog.oid
                    OR nspname OPERATOR(pg_catalog.=) 'public'
               LOOP
                 EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, {runner});
                 EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', schema_name, {runner});
               END LOOP;
             END
             $grant$;
             ANALYZE;",
            runner = super::hardening::literal(&self.runner.role),
        );
        // The init may have set its role's settings again: reset them, and
        // pin what the grants rely on at connect time, which overrides the
        // database's settings too.
        reset("resetting the owner's settings after init").await?;
        let config = self.login_config(
            owner,
            database,
            "sqlarena-owner",
            Some("-c search_path=pg_catalog,pg_temp -c default_transaction_read_only=off"),
        );
        let client = connect(&config)
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))?;
        let mut filling = Filling::new(self, admin, database, client, cancel);
        filling.run(&grants).await.map_err(|error| match error {
            StepError::Statement(message) => {
                BuildError::Infrastructure(format!("granting the runner access: {message}"))
            }
            StepError::Infrastructure(message) => BuildError::Infrastructure(message),
            StepError::Cancelled => BuildError::Cancelled,
        })
    }
}
