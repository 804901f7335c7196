//! The PostgreSQL sandbox: the rules student and professor SQL run under.
//!
//! - [`roles`]: the runner, the per-version owners and their group;
//! - [`hardening`]: the template's revocations and the runner's settings;
//! - [`build`]: test-case databases built by a version's owner;
//! - [`session`], [`pool`] and [`cells`]: runner connections, the runs
//!   they make and how their results are read under caps;
//! - [`cache`]: which challenge versions are built on this grader.
//!
//! At start the sandbox drops stale databases and owner roles carrying its
//! prefix, (re)creates the runner role (with a fresh random password kept
//! only in memory) and the owners' group, and builds a hardened template
//! owned by the admin. Test-case databases are cloned from it under opaque
//! names `{prefix}_{12 hex digits}`. Every admin connection pins
//! `search_path=pg_catalog, pg_temp` at connect time, so no privileged
//! session resolves a name through objects a professor made.

pub mod build;
pub mod cache;
pub mod cells;
pub mod hardening;
pub mod pool;
pub mod roles;
pub mod session;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlarena_common::{ChallengeBundle, TestCaseId};
use tokio::sync::Mutex;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use build::BuildError;
pub use cache::{BundleCache, CachedBundle};
pub use hardening::{check_role_attributes, RoleAttributes};
pub use pool::SessionKind;
pub use roles::Login;
pub use session::{Limits, QueryClock, QueryError, RunnerSession};

use crate::error::JobError;
use pool::SessionPool;

/// Options of every admin connection: names resolve in `pg_catalog` and
/// nowhere a professor could have put an object.
const ADMIN_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp";

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Admin connection URL (a role that may create databases and roles).
    pub admin_url: String,
    /// Prefix of every role and database this grader creates.
    pub prefix: String,
    /// Connection limit of the runner role.
    pub runner_connection_limit: u32,
    /// Role-level statement timeout of the runner (the longest lane's).
    pub runner_statement_timeout: Duration,
    /// Client-side timeout of each init and data statement.
    pub init_timeout: Duration,
    /// Largest size a test-case database may reach while it is built.
    pub max_database_bytes: u64,
    /// Number of bundles kept built.
    pub cache_size: usize,
}

/// Limits of database builds.
#[derive(Debug, Clone, Copy)]
struct BuildLimits {
    statement_timeout: Duration,
    max_database_bytes: u64,
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

/// The sandbox of one grader.
pub struct Sandbox {
    admin: Config,
    prefix: String,
    runner: Login,
    owners_group: String,
    template: String,
    build_limits: BuildLimits,
    cache: Mutex<BundleCache>,
    /// One lock per challenge version being built, so that two jobs never
    /// build the same version twice and one slow build holds up no other.
    builds: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    sessions: SessionPool,
    query_clock: Arc<QueryClock>,
    /// `server_version` of the PostgreSQL, read at start, for the audit of
    /// every case measured here.
    postgres_version: String,
    /// The admin connection that holds this prefix's advisory lock for as
    /// long as the sandbox lives.
    _prefix_lock: Client,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("prefix", &self.prefix)
            .field("runner_role", &self.runner.role)
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

impl Sandbox {
    /// Sets up roles, settings and the hardened template, dropping stale
    /// databases and owner roles of this prefix first.
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
        let prefix_lock = lock_prefix(&admin, &prefix).await?;
        let mut sandbox = Sandbox {
            admin,
            runner: Login::generate(format!("{prefix}_runner")),
            owners_group: format!("{prefix}_owners"),
            template: format!("{prefix}_template"),
            build_limits: BuildLimits {
                statement_timeout: config.init_timeout,
                max_database_bytes: config.max_database_bytes,
            },
            cache: Mutex::new(BundleCache::new(config.cache_size)),
            builds: std::sync::Mutex::default(),
            sessions: SessionPool::new((config.runner_connection_limit / 2) as usize),
            query_clock: Arc::default(),
            postgres_version: String::new(),
            _prefix_lock: prefix_lock,
            prefix,
        };
        let client = sandbox.admin_client(None).await?;
        sandbox.postgres_version = server_version(&client).await?;
        sandbox.drop_stale(&client).await?;
        roles::setup_shared_roles(
            &client,
            &sandbox.runner,
            &sandbox.owners_group,
            config.runner_connection_limit,
            config.runner_statement_timeout.as_millis() as u64,
        )
        .await?;
        roles::check_shared_roles(&client, &sandbox.runner.role, &sandbox.owners_group).await?;
        sandbox.create_template(&client).await?;
        info!(prefix = %sandbox.prefix, "sandbox ready");
        Ok(sandbox)
    }

    /// Returns the prefix of this sandbox's roles and databases.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the `server_version` of this sandbox's PostgreSQL.
    pub fn postgres_version(&self) -> &str {
        &self.postgres_version
    }

    /// Returns the runner role's name.
    pub fn runner_role(&self) -> &str {
        &self.runner.role
    }

    /// Connects as the admin, to `database` or the URL's own database,
    /// with `search_path` pinned.
    async fn admin_client(&self, database: Option<&str>) -> Result<Client, SandboxError> {
        admin_connect(&self.admin, database).await
    }

    /// Returns the settings of a password login to `database`: TCP to the
    /// admin URL's host (127.0.0.1 when it names a socket), with startup
    /// `options` if given.
    fn login_config(
        &self,
        login: &Login,
        database: &str,
        application: &str,
        options: Option<&str>,
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
            .user(&login.role)
            .password(&login.password)
            .dbname(database)
            .application_name(application)
            .connect_timeout(Duration::from_secs(10));
        if let Some(options) = options {
            config.options(options);
        }
        config
    }

    /// The pattern of this sandbox's database names.
    fn database_pattern(&self) -> String {
        format!("^{}_([0-9a-f]{{12}}|template)$", self.prefix)
    }

    /// Drops every database named like this grader's (`{prefix}_template`,
    /// `{prefix}_{12 hex digits}`), then every owner role (and the single
    /// owner role of older versions).
    async fn drop_stale(&self, client: &Client) -> Result<(), SandboxError> {
        let rows = client
            .query(
                "SELECT datname FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.~) $1",
                &[&self.database_pattern()],
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
        let owners = format!("^{}_(o_[0-9a-f]{{12}}|owner)$", self.prefix);
        let rows = client
            .query(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.~) $1",
                &[&owners],
            )
            .await
            .map_err(|e| setup_error("listing stale owner roles", &e))?;
        for row in rows {
            let role: String = row.get(0);
            info!(%role, "dropping stale owner role");
            roles::drop_role(client, &role)
                .await
                .map_err(|e| setup_error("dropping a stale owner role", &e))?;
        }
        Ok(())
    }

    /// Creates the hardened template database, owned by the admin.
    async fn create_template(&self, client: &Client) -> Result<(), SandboxError> {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&self.template)
            ))
            .await
            .map_err(|e| setup_error("creating the template database", &e))?;
        let template = self.admin_client(Some(&self.template)).await?;
        template
            .batch_execute(&hardening::template_script(&self.owners_group))
            .await
            .map_err(|e| setup_error("hardening the template database", &e))?;
        Ok(())
    }

    /// Creates the owner role of a new challenge version build.
    ///
    /// # Errors
    ///
    /// [`BuildError::Infrastructure`] when PostgreSQL refuses.
    pub async fn create_owner(&self) -> Result<Login, BuildError> {
        let owner = Login::generate(format!(
            "{}_o_{:012x}",
            self.prefix,
            rand::random::<u64>() & 0xffff_ffff_ffff
        ));
        let admin = self
            .admin_client(None)
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        roles::create_owner(
            &admin,
            &owner,
            &self.owners_group,
            self.build_limits.statement_timeout.as_millis(),
        )
        .await
        .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        Ok(owner)
    }

    /// Takes the login of a version's owner away once its databases are
    /// built.
    ///
    /// # Errors
    ///
    /// [`BuildError::Infrastructure`] when PostgreSQL refuses.
    pub async fn seal_owner(&self, owner: &Login) -> Result<(), BuildError> {
        let admin = self
            .admin_client(None)
            .await
            .map_err(|e| BuildError::Infrastructure(e.to_string()))?;
        roles::seal_owner(&admin, &owner.role)
            .await
            .map_err(|e| BuildError::Infrastructure(db_message(&e)))
    }

    /// Returns a runner connection of `kind` to `database`: an idle pooled
    /// one, or a new one.
    ///
    /// # Errors
    ///
    /// [`QueryError::Connection`] when PostgreSQL refuses.
    pub async fn runner_session(
        &self,
        database: &str,
        kind: SessionKind,
    ) -> Result<RunnerSession, QueryError> {
        match self.sessions.take(database, kind) {
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
        let config = self.login_config(&self.runner, database, "sqlarena-runner", None);
        RunnerSession::connect(&config, Arc::clone(&self.query_clock)).await
    }

    /// Returns the total time runner connections spent in runs (execute +
    /// fetch), everything the grader does around them excluded.
    pub fn query_time(&self) -> Duration {
        self.query_clock.total()
    }

    /// Gives back a runner connection of `kind` after a clean run for reuse.
    pub fn release_session(&self, database: &str, kind: SessionKind, session: RunnerSession) {
        self.sessions.put(database, kind, session);
    }

    /// Drops a version's databases, then its owner role, logging failures.
    pub async fn drop_version(&self, owner: &str, databases: impl IntoIterator<Item = String>) {
        let admin = match self.admin_client(None).await {
            Ok(admin) => admin,
            Err(error) => {
                warn!(%error, "cannot connect to drop databases");
                return;
            }
        };
        for name in databases {
            self.sessions.forget(&name);
            if let Err(error) = drop_database(&admin, &name).await {
                warn!(database = %name, error = %db_message(&error), "cannot drop database");
            }
        }
        if let Err(error) = roles::drop_role(&admin, owner).await {
            warn!(%owner, error = %db_message(&error), "cannot drop an owner role");
        }
    }

    /// Returns the built bundle with this version hash, if cached.
    pub async fn cached_bundle(&self, version_hash: &str) -> Option<Arc<CachedBundle>> {
        self.cache.lock().await.get(version_hash)
    }

    /// Returns the version hashes of the built bundles, most recently used
    /// first (what the grader reports to the coordinator for affinity).
    pub async fn cached_hashes(&self) -> Vec<String> {
        self.cache.lock().await.hashes()
    }

    /// Returns the lock of one version's build.
    fn build_lock(&self, version_hash: &str) -> Arc<Mutex<()>> {
        let mut builds = self.builds.lock().expect("build locks");
        builds.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(builds.entry(version_hash.to_string()).or_default())
    }

    /// Returns the built bundle, building its databases first if needed
    /// (under a new owner role); evicts least recently used bundles beyond
    /// the cache size.
    ///
    /// # Errors
    ///
    /// Fails (retryably) when a database cannot be built,
    /// [`JobError::Cancelled`] when `cancel` fires first.
    pub async fn install_bundle(
        &self,
        bundle: ChallengeBundle,
        cancel: &CancellationToken,
    ) -> Result<Arc<CachedBundle>, JobError> {
        let lock = self.build_lock(&bundle.version_hash);
        let _building = tokio::select! {
            guard = lock.lock() => guard,
            () = cancel.cancelled() => return Err(JobError::Cancelled),
        };
        if let Some(cached) = self.cached_bundle(&bundle.version_hash).await {
            return Ok(cached);
        }
        let owner = self
            .create_owner()
            .await
            .map_err(|e| build_failure(&bundle, None, &e))?;
        let mut databases = HashMap::new();
        for case in &bundle.test_cases {
            match self
                .build_case_database(&owner, &bundle.init, &case.data, cancel)
                .await
            {
                Ok(name) => {
                    databases.insert(case.id, name);
                }
                Err(error) => {
                    self.drop_version(&owner.role, databases.into_values())
                        .await;
                    return Err(build_failure(&bundle, Some(case.id), &error));
                }
            }
        }
        if let Err(error) = self.seal_owner(&owner).await {
            self.drop_version(&owner.role, databases.into_values())
                .await;
            return Err(build_failure(&bundle, None, &error));
        }
        info!(challenge_id = %bundle.challenge_id, version_hash = %bundle.version_hash, "bundle built");
        // Log the runner in now, so the first attempt does not pay for it.
        for name in databases.values() {
            for kind in [SessionKind::Student, SessionKind::Reference] {
                if let Ok(session) = self.connect_runner(name).await {
                    self.sessions.put(name, kind, session);
                }
            }
        }
        let built = Arc::new(CachedBundle {
            bundle,
            owner: owner.role,
            databases,
        });
        let evicted = self.cache.lock().await.insert(Arc::clone(&built));
        for bundle in evicted {
            info!(version_hash = %bundle.bundle.version_hash, "evicting bundle");
            self.drop_version(&bundle.owner, bundle.databases.values().cloned())
                .await;
        }
        Ok(built)
    }

    /// Drops every cached bundle's databases and owners, and the template.
    pub async fn shutdown(&self) {
        let bundles = self.cache.lock().await.drain();
        for bundle in bundles {
            self.drop_version(&bundle.owner, bundle.databases.values().cloned())
                .await;
        }
        match self.admin_client(None).await {
            Ok(admin) => {
                if let Err(error) = drop_database(&admin, &self.template).await {
                    warn!(error = %db_message(&error), "cannot drop the template");
                }
            }
            Err(error) => warn!(%error, "cannot connect to drop the template"),
        }
    }

    /// Returns the names of this sandbox's existing databases (template included).
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL cannot be queried.
    pub async fn list_databases(&self) -> Result<Vec<String>, SandboxError> {
        let client = self.admin_client(None).await?;
        let rows = client
            .query(
                "SELECT datname FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.~) $1 ORDER BY 1",
                &[&self.database_pattern()],
            )
            .await
            .map_err(|e| setup_error("listing databases", &e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

/// What `grader cleanup` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub databases: Vec<String>,
    pub roles: Vec<String>,
}

/// Drops every database and role a grader with `prefix` made, refusing
/// while such a grader runs (it holds the prefix's lock).
///
/// # Errors
///
/// [`SandboxError::Setup`] when a grader with this prefix is running or a
/// statement fails; connection and prefix errors as [`Sandbox::start`].
pub async fn cleanup(admin_url: &str, prefix: &str) -> Result<Removed, SandboxError> {
    if !valid_prefix(prefix) {
        return Err(SandboxError::InvalidPrefix(prefix.to_string()));
    }
    let admin = Config::from_str(admin_url).map_err(|e| SandboxError::InvalidUrl(e.to_string()))?;
    let _lock = lock_prefix(&admin, prefix).await?;
    let client = admin_connect(&admin, None).await?;
    let mut removed = Removed::default();
    let databases = client
        .query(
            "SELECT datname FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.~) $1 ORDER BY 1",
            &[&format!("^{prefix}_([0-9a-f]{{12}}|template)$")],
        )
        .await
        .map_err(|e| setup_error("listing databases", &e))?;
    for row in databases {
        let name: String = row.get(0);
        drop_database(&client, &name)
            .await
            .map_err(|e| setup_error("dropping a database", &e))?;
        removed.databases.push(name);
    }
    let roles = client
        .query(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.~) $1
             ORDER BY rolname OPERATOR(pg_catalog.=) $2, 1",
            &[
                &format!("^{prefix}_(o_[0-9a-f]{{12}}|owner|owners|runner)$"),
                &format!("{prefix}_owners"),
            ],
        )
        .await
        .map_err(|e| setup_error("listing roles", &e))?;
    for row in roles {
        let role: String = row.get(0);
        roles::drop_role(&client, &role)
            .await
            .map_err(|e| setup_error("dropping a role", &e))?;
        removed.roles.push(role);
    }
    Ok(removed)
}

/// Connects as the admin with `search_path` pinned.
/// Reads the server's `server_version` (e.g. `16.4 (Debian 16.4-1)`).
async fn server_version(client: &Client) -> Result<String, SandboxError> {
    let row = client
        .query_one("SELECT pg_catalog.current_setting('server_version')", &[])
        .await
        .map_err(|error| SandboxError::Setup {
            step: "reading the server version",
            message: db_message(&error),
        })?;
    Ok(row.get(0))
}

async fn admin_connect(admin: &Config, database: Option<&str>) -> Result<Client, SandboxError> {
    let mut config = admin.clone();
    if let Some(database) = database {
        config.dbname(database);
    }
    config
        .application_name("sqlarena-grader-admin")
        .options(ADMIN_OPTIONS)
        .connect_timeout(Duration::from_secs(10));
    connect(&config)
        .await
        .map_err(|error| SandboxError::Connect {
            target: describe_target(&config),
            message: error.to_string(),
        })
}

/// Takes the session-level advisory lock of `prefix` on a new admin
/// connection, which holds it until dropped: two graders never share a
/// prefix (each would drop the other's databases), and cleanup never runs
/// under a live grader.
async fn lock_prefix(admin: &Config, prefix: &str) -> Result<Client, SandboxError> {
    let client = admin_connect(admin, None).await?;
    let locked: bool = client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext($1))",
            &[&format!("sqlarena-grader:{prefix}")],
        )
        .await
        .map_err(|e| setup_error("locking the prefix", &e))?
        .get(0);
    if !locked {
        return Err(SandboxError::Setup {
            step: "locking the prefix",
            message: format!(
                "a grader with prefix {prefix:?} is running on this PostgreSQL; stop it first, or give this one another --name or --prefix"
            ),
        });
    }
    Ok(client)
}

/// A bundle build's failure as a job error: retryable, without the
/// statement's text or PostgreSQL's message (they can quote hidden test
/// data, and attempts' errors reach students); the log has the details.
fn build_failure(
    bundle: &ChallengeBundle,
    case_id: Option<TestCaseId>,
    error: &BuildError,
) -> JobError {
    if *error == BuildError::Cancelled {
        return JobError::Cancelled;
    }
    warn!(
        challenge_id = %bundle.challenge_id,
        detail = %error.describe(case_id),
        "cannot build a challenge's databases"
    );
    JobError::Retryable(format!(
        "cannot build the databases of challenge {}: {} (the grader's log has the details)",
        bundle.challenge_id,
        error.summary(case_id)
    ))
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
            error.describe(Some(TestCaseId(7))),
            "test case 7, data statement 2 (`insert ...`): boom"
        );
        let summary = error.summary(Some(TestCaseId(7)));
        assert!(
            summary.contains("data statement 2")
                && !summary.contains("insert")
                && !summary.contains("boom"),
            "{summary}"
        );
    }
}
