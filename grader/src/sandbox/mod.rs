//! The PostgreSQL sandbox: roles, the hardened template, one database per
//! test case, and the cache of built challenge bundles.
//!
//! At start the sandbox idempotently creates an owner role (runs professors'
//! init SQL through `SET ROLE` on the admin connection) and a runner role
//! (logs in for student queries, with a fresh random password kept only in
//! memory), drops stale databases carrying this grader's prefix, and builds
//! a hardened template. Test-case databases are cloned from the template
//! under opaque names `{prefix}_{12 hex digits}`.

pub mod cache;
pub mod hardening;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};
use sqlarena_common::ChallengeBundle;
use tokio::sync::Mutex;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};
use tracing::{debug, info, warn};

pub use cache::{BundleCache, CachedBundle};
pub use hardening::{check_role_attributes, RoleAttributes};

use crate::error::JobError;
use crate::run::pool::SessionPool;
use crate::run::{QueryClock, QueryError, RunnerSession};
use crate::sqltext::split_statements;

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Admin connection URL (a role that may create roles and databases).
    pub admin_url: String,
    /// Prefix of every role and database this grader creates.
    pub prefix: String,
    /// Connection limit of the runner role.
    pub runner_connection_limit: u32,
    /// Role-level statement timeout of the runner (the longest lane's).
    pub runner_statement_timeout: Duration,
    /// Statement timeout for init SQL and test data.
    pub init_timeout: Duration,
    /// Number of bundles kept built.
    pub cache_size: usize,
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid --prefix {0:?}: use 1-40 characters a-z, 0-9 or _, starting with a letter")]
    InvalidPrefix(String),
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    #[error(
        "cannot connect to PostgreSQL at {target}: {message} (is it running? see scripts/setup.sh)"
    )]
    Connect { target: String, message: String },
    #[error("sandbox setup failed while {step}: {message}")]
    Setup { step: &'static str, message: String },
    #[error("{0}")]
    UnsafeRole(String),
}

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
}

impl BuildError {
    /// Describes the failure for a professor, naming the test case.
    pub fn describe(&self, test_case_id: i64) -> String {
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
                format!("test case {test_case_id}, data statement {statement} ({text}): {message}")
            }
            BuildError::Infrastructure(message) => {
                format!("test case {test_case_id}: database setup failed: {message}")
            }
        }
    }

    /// Describes the failure without the statement's text or PostgreSQL's
    /// message, which can quote hidden test data: for attempts, whose
    /// errors students see.
    pub fn summary(&self, test_case_id: i64) -> String {
        match self {
            BuildError::Init { statement, .. } => {
                format!("init SQL statement {statement} failed on this grader")
            }
            BuildError::Data { statement, .. } => {
                format!(
                    "test case {test_case_id}, data statement {statement} failed on this grader"
                )
            }
            BuildError::Infrastructure(_) => self.describe(test_case_id),
        }
    }
}

/// The sandbox of one grader.
pub struct Sandbox {
    admin: Config,
    prefix: String,
    owner_role: String,
    runner_role: String,
    template: String,
    runner_password: String,
    owner_password: String,
    init_timeout: Duration,
    cache: Mutex<BundleCache>,
    build_lock: Mutex<()>,
    sessions: SessionPool,
    query_clock: Arc<QueryClock>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("prefix", &self.prefix)
            .field("runner_role", &self.runner_role)
            .finish_non_exhaustive()
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Returns true when `prefix` is a safe role and database name prefix.
fn valid_prefix(prefix: &str) -> bool {
    (1..=40).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Runs an ALTER ROLE that sets a password; its error is reported without
/// the statement, which carries the password.
async fn alter_with_password(
    client: &Client,
    statement: &str,
    step: &'static str,
) -> Result<(), SandboxError> {
    client
        .batch_execute(statement)
        .await
        .map_err(|e| SandboxError::Setup {
            step,
            message: e
                .as_db_error()
                .map(|db| db.message().to_string())
                .unwrap_or_else(|| e.to_string()),
        })
}

/// Connects with `config` and drives the connection in a background task.
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Formats a PostgreSQL error with its own message, position and detail.
pub fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_string();
            if let Some(tokio_postgres::error::ErrorPosition::Original(position)) = db.position() {
                message.push_str(&format!(" (at character {position})"));
            }
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; {detail}"));
            }
            message
        }
        None => error.to_string(),
    }
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

impl Sandbox {
    /// Sets up roles, settings and the hardened template, dropping stale
    /// databases of this prefix first.
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL is unreachable, a setup step fails, or the
    /// runner role turns out to be dangerous.
    pub async fn start(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !valid_prefix(&config.prefix) {
            return Err(SandboxError::InvalidPrefix(config.prefix.clone()));
        }
        let admin = Config::from_str(&config.admin_url)
            .map_err(|e| SandboxError::InvalidUrl(e.to_string()))?;
        let prefix = config.prefix.clone();
        let sandbox = Sandbox {
            admin,
            owner_role: format!("{prefix}_owner"),
            runner_role: format!("{prefix}_runner"),
            template: format!("{prefix}_template"),
            runner_password: Alphanumeric.sample_string(&mut rand::thread_rng(), 32),
            owner_password: Alphanumeric.sample_string(&mut rand::thread_rng(), 32),
            init_timeout: config.init_timeout,
            cache: Mutex::new(BundleCache::new(config.cache_size)),
            build_lock: Mutex::new(()),
            sessions: SessionPool::new((config.runner_connection_limit / 2) as usize),
            query_clock: Arc::default(),
            prefix,
        };
        let client = sandbox.admin_client(None).await?;
        sandbox.drop_stale_databases(&client).await?;
        sandbox.setup_roles(&client, config).await?;
        sandbox.check_roles(&client).await?;
        sandbox.create_template(&client).await?;
        info!(prefix = %sandbox.prefix, "sandbox ready");
        Ok(sandbox)
    }

    /// Returns the prefix of this sandbox's roles and databases.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the runner role's name.
    pub fn runner_role(&self) -> &str {
        &self.runner_role
    }

    /// Connects as the admin, to `database` or the URL's own database.
    async fn admin_client(&self, database: Option<&str>) -> Result<Client, SandboxError> {
        let mut config = self.admin.clone();
        if let Some(database) = database {
            config.dbname(database);
        }
        config
            .application_name("sqlarena-grader-admin")
            .connect_timeout(Duration::from_secs(10));
        connect(&config)
            .await
            .map_err(|error| SandboxError::Connect {
                target: describe_target(&config),
                message: error.to_string(),
            })
    }

    /// Returns the connection settings of the runner role for `database`.
    fn runner_config(&self, database: &str) -> Config {
        self.login_config(
            &self.runner_role,
            &self.runner_password,
            database,
            "sqlarena-runner",
        )
    }

    /// Returns the connection settings of the owner role for `database`.
    fn owner_config(&self, database: &str) -> Config {
        self.login_config(
            &self.owner_role,
            &self.owner_password,
            database,
            "sqlarena-owner",
        )
    }

    /// Returns the settings of a password login as `role` to `database`:
    /// TCP to the admin URL's host (127.0.0.1 when it names a socket).
    fn login_config(
        &self,
        role: &str,
        password: &str,
        database: &str,
        application: &str,
    ) -> Config {
        let host = self
            .admin
            .get_hosts()
            .iter()
            .find_map(|host| match host {
                Host::Tcp(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = self.admin.get_ports().first().copied().unwrap_or(5432);
        let mut config = Config::new();
        config
            .host(&host)
            .port(port)
            .user(role)
            .password(password)
            .dbname(database)
            .application_name(application)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Drops every database named like this grader's: `{prefix}_template`
    /// and `{prefix}_{12 hex digits}`.
    async fn drop_stale_databases(&self, client: &Client) -> Result<(), SandboxError> {
        let pattern = format!("^{}_([0-9a-f]{{12}}|template)$", self.prefix);
        let rows = client
            .query(
                "SELECT datname FROM pg_database WHERE datname ~ $1",
                &[&pattern],
            )
            .await
            .map_err(|e| setup_error("listing stale databases", &e))?;
        for row in rows {
            let name: String = row.get(0);
            info!(database = %name, "dropping stale database");
            drop_database(client, &name)
                .await
                .map_err(|e| setup_error("dropping a stale database", &e))?;
        }
        Ok(())
    }

    /// Creates or resets the owner and runner roles and the runner's settings.
    async fn setup_roles(
        &self,
        client: &Client,
        config: &SandboxConfig,
    ) -> Result<(), SandboxError> {
        for role in [&self.owner_role, &self.runner_role] {
            let create = format!(
                "DO $create$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {ident}; END IF;
                 END $create$",
                ident = quote_ident(role)
            );
            client
                .batch_execute(&create)
                .await
                .map_err(|e| setup_error("creating roles", &e))?;
        }
        let owner = quote_ident(&self.owner_role);
        // The owner logs in itself to run init SQL, never via SET ROLE from
        // the admin (RESET ROLE would undo that). INHERIT: it gets the
        // public schema through its implicit pg_database_owner membership.
        let alter_owner = format!(
            "ALTER ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {} PASSWORD '{}'",
            config.runner_connection_limit, self.owner_password
        );
        alter_with_password(client, &alter_owner, "configuring the owner role").await?;
        let runner = quote_ident(&self.runner_role);
        let alter_runner = format!(
            "ALTER ROLE {runner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {} PASSWORD '{}'",
            config.runner_connection_limit, self.runner_password
        );
        alter_with_password(client, &alter_runner, "configuring the runner role").await?;
        let timeout_ms = config.runner_statement_timeout.as_millis() as u64;
        for (name, value) in hardening::runner_settings(timeout_ms) {
            client
                .batch_execute(&format!("ALTER ROLE {runner} SET {name} = '{value}'"))
                .await
                .map_err(|e| setup_error("setting the runner role's settings", &e))?;
        }
        Ok(())
    }

    /// Refuses to go on when the owner or the runner role can do more
    /// than it should (superuser, role or database creation, memberships).
    async fn check_roles(&self, client: &Client) -> Result<(), SandboxError> {
        for (kind, role) in [("owner", &self.owner_role), ("runner", &self.runner_role)] {
            let row = client
                .query_one(
                    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,
                            (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)
                     FROM pg_roles r WHERE rolname = $1",
                    &[role],
                )
                .await
                .map_err(|e| setup_error("checking the owner and runner roles", &e))?;
            let attributes = RoleAttributes {
                superuser: row.get(0),
                create_role: row.get(1),
                create_db: row.get(2),
                replication: row.get(3),
                bypass_rls: row.get(4),
                memberships: row.get(5),
            };
            check_role_attributes(kind, role, &attributes).map_err(SandboxError::UnsafeRole)?;
        }
        Ok(())
    }

    /// Creates the hardened template database.
    async fn create_template(&self, client: &Client) -> Result<(), SandboxError> {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0 OWNER {}",
                quote_ident(&self.template),
                quote_ident(&self.owner_role)
            ))
            .await
            .map_err(|e| setup_error("creating the template database", &e))?;
        let template = self.admin_client(Some(&self.template)).await?;
        template
            .batch_execute(&hardening::template_script(&self.owner_role))
            .await
            .map_err(|e| setup_error("hardening the template database", &e))?;
        Ok(())
    }

    /// Creates one test case's database: clone of the template, init SQL
    /// and data run as the owner, then CONNECT and SELECT for the runner.
    ///
    /// # Errors
    ///
    /// Names the failing statement with PostgreSQL's message; the database
    /// is dropped again on failure.
    pub async fn build_case_database(&self, init: &str, data: &str) -> Result<String, BuildError> {
        let name = format!(
            "{}_{:012x}",
            self.prefix,
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let admin = self
            .admin_client(None)
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        let (database, owner, runner) = (
            quote_ident(&name),
            quote_ident(&self.owner_role),
            quote_ident(&self.runner_role),
        );
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} TEMPLATE {} OWNER {owner}",
                quote_ident(&self.template)
            ))
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))?;
        let result = self.fill_case_database(&name, init, data).await;
        let result = match result {
            Ok(()) => admin
                .batch_execute(&format!(
                    "REVOKE ALL ON DATABASE {database} FROM PUBLIC; GRANT CONNECT ON DATABASE {database} TO {runner}"
                ))
                .await
                .map_err(|e| BuildError::Infrastructure(db_message(&e))),
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

    /// Runs init and data on a connection logged in as the owner in
    /// `name`, then, as the admin, grants the runner USAGE on the owner's
    /// schemas and SELECT on their tables.
    async fn fill_case_database(
        &self,
        name: &str,
        init: &str,
        data: &str,
    ) -> Result<(), BuildError> {
        let owner = connect(&self.owner_config(name))
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        owner
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                self.init_timeout.as_millis()
            ))
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))?;
        for (index, statement) in split_statements(init).iter().enumerate() {
            owner
                .batch_execute(statement.text)
                .await
                .map_err(|e| BuildError::Init {
                    statement: index + 1,
                    text: excerpt(statement.text),
                    message: db_message(&e),
                })?;
        }
        for (index, statement) in split_statements(data).iter().enumerate() {
            owner
                .batch_execute(statement.text)
                .await
                .map_err(|e| BuildError::Data {
                    statement: index + 1,
                    text: excerpt(statement.text),
                    message: db_message(&e),
                })?;
        }
        drop(owner);
        let client = self
            .admin_client(Some(name))
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        let grants = format!(
            "DO $grant$
             DECLARE schema_name text;
             BEGIN
               FOR schema_name IN
                 SELECT nspname FROM pg_namespace
                 WHERE nspowner = '{owner}'::regrole OR nspname = 'public'
               LOOP
                 EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, '{runner}');
                 EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', schema_name, '{runner}');
               END LOOP;
             END
             $grant$;
             ANALYZE;",
            owner = self.owner_role,
            runner = self.runner_role
        );
        client
            .batch_execute(&grants)
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))
    }

    /// Returns a runner connection to `database`: an idle pooled one, or
    /// a new one.
    ///
    /// # Errors
    ///
    /// [`QueryError::Connection`] when PostgreSQL refuses.
    pub async fn runner_session(&self, database: &str) -> Result<RunnerSession, QueryError> {
        match self.sessions.take(database) {
            Some(session) => Ok(session),
            None => self.connect_runner(database).await,
        }
    }

    /// Opens a new runner connection to `database`, outside the pool.
    ///
    /// # Errors
    ///
    /// Returns [`QueryError::Connection`] when PostgreSQL refuses.
    pub async fn connect_runner(&self, database: &str) -> Result<RunnerSession, QueryError> {
        RunnerSession::connect(&self.runner_config(database), Arc::clone(&self.query_clock)).await
    }

    /// Returns the total time runner connections spent in runs (execute +
    /// fetch), everything the grader does around them excluded.
    pub fn query_time(&self) -> Duration {
        self.query_clock.total()
    }

    /// Gives back a runner connection after a clean run for reuse.
    pub fn release_session(&self, database: &str, session: RunnerSession) {
        self.sessions.put(database, session);
    }

    /// Drops databases, logging failures.
    pub async fn drop_databases(&self, names: impl IntoIterator<Item = String>) {
        let admin = match self.admin_client(None).await {
            Ok(admin) => admin,
            Err(error) => {
                warn!(%error, "cannot connect to drop databases");
                return;
            }
        };
        for name in names {
            self.sessions.forget(&name);
            if let Err(error) = drop_database(&admin, &name).await {
                warn!(database = %name, error = %db_message(&error), "cannot drop database");
            }
        }
    }

    /// Returns the built bundle with this version hash, if cached.
    pub async fn cached_bundle(&self, version_hash: &str) -> Option<Arc<CachedBundle>> {
        self.cache.lock().await.get(version_hash)
    }

    /// Returns the built bundle, building its databases first if needed;
    /// evicts least recently used bundles beyond the cache size.
    ///
    /// # Errors
    ///
    /// Fails (retryably) when a database cannot be built.
    pub async fn install_bundle(
        &self,
        bundle: ChallengeBundle,
    ) -> Result<Arc<CachedBundle>, JobError> {
        let _building = self.build_lock.lock().await;
        if let Some(cached) = self.cached_bundle(&bundle.version_hash).await {
            return Ok(cached);
        }
        let mut databases = std::collections::HashMap::new();
        for case in &bundle.test_cases {
            match self.build_case_database(&bundle.init, &case.data).await {
                Ok(name) => {
                    databases.insert(case.id, name);
                }
                Err(error) => {
                    self.drop_databases(databases.into_values()).await;
                    warn!(
                        challenge_id = bundle.challenge_id,
                        detail = %error.describe(case.id),
                        "cannot build a challenge's databases"
                    );
                    return Err(JobError::Retryable(format!(
                        "cannot build the databases of challenge {}: {} (the grader's log has the details)",
                        bundle.challenge_id,
                        error.summary(case.id)
                    )));
                }
            }
        }
        info!(challenge_id = bundle.challenge_id, version_hash = %bundle.version_hash, "bundle built");
        // Log the runner in now, so the first attempt does not pay for it.
        for name in databases.values() {
            if let Ok(session) = self.connect_runner(name).await {
                self.sessions.put(name, session);
            }
        }
        let built = Arc::new(CachedBundle { bundle, databases });
        let evicted = self.cache.lock().await.insert(Arc::clone(&built));
        for bundle in evicted {
            info!(version_hash = %bundle.bundle.version_hash, "evicting bundle");
            self.drop_databases(bundle.databases.values().cloned())
                .await;
        }
        Ok(built)
    }

    /// Drops every cached bundle's databases and the template.
    pub async fn shutdown(&self) {
        let bundles = self.cache.lock().await.drain();
        let names: Vec<String> = bundles
            .iter()
            .flat_map(|b| b.databases.values().cloned())
            .collect();
        self.drop_databases(names.into_iter().chain([self.template.clone()]))
            .await;
    }

    /// Returns the names of this sandbox's existing databases (template included).
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL cannot be queried.
    pub async fn list_databases(&self) -> Result<Vec<String>, SandboxError> {
        let client = self.admin_client(None).await?;
        let pattern = format!("^{}_([0-9a-f]{{12}}|template)$", self.prefix);
        let rows = client
            .query(
                "SELECT datname FROM pg_database WHERE datname ~ $1 ORDER BY 1",
                &[&pattern],
            )
            .await
            .map_err(|e| setup_error("listing databases", &e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

/// Drops a database, disconnecting its sessions.
async fn drop_database(client: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
}

/// Wraps a PostgreSQL error of a setup step.
fn setup_error(step: &'static str, error: &tokio_postgres::Error) -> SandboxError {
    SandboxError::Setup {
        step,
        message: db_message(error),
    }
}

/// Describes a connection target without its password.
fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port} as {}", config.get_user().unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("sqlarena"));
        assert!(valid_prefix("sqlarena_node_1"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("Sqlarena"));
        assert!(!valid_prefix("1abc"));
        assert!(!valid_prefix("a\"; drop"));
        assert!(!valid_prefix(&"a".repeat(41)));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn build_errors_name_the_test_case_and_statement() {
        let error = BuildError::Data {
            statement: 2,
            text: "`insert ...`".into(),
            message: "boom".into(),
        };
        assert_eq!(
            error.describe(7),
            "test case 7, data statement 2 (`insert ...`): boom"
        );
        let summary = error.summary(7);
        assert!(
            summary.contains("data statement 2")
                && !summary.contains("insert")
                && !summary.contains("boom"),
            "{summary}"
        );
    }
}
