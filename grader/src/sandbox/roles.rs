//! The sandbox's roles: who runs what, and what each may do.
//!
//! - The **runner** (`{prefix}_runner`) logs in for student queries and
//!   reference solutions: no privilege beyond CONNECT to test-case
//!   databases and SELECT on their tables, with hardened role settings.
//! - Each challenge version gets its own **owner** (`{prefix}_o_{12 hex}`),
//!   which logs in itself to run the professor's init SQL and data, owns
//!   only that version's databases, loses its login once they are built,
//!   and is dropped with them. A professor's init can therefore touch
//!   nothing of another challenge, of the template, or of later builds.
//! - The owners' group (`{prefix}_owners`, no login) carries what every
//!   owner needs in the template: the SQL languages and `set_config`.
//!
//! Passwords are random, kept only in memory, and sent to PostgreSQL as
//! SCRAM verifiers, so no plaintext reaches its log.

use rand::distributions::{Alphanumeric, DistString};
use tokio_postgres::Client;

use super::hardening::{self, check_role_attributes, RoleAttributes};
use super::{db_message, quote_ident, SandboxError};

/// A role that logs in with a password.
#[derive(Clone)]
pub struct Login {
    pub role: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// A login for `role` with a fresh random password.
    pub fn generate(role: String) -> Login {
        Login {
            role,
            password: Alphanumeric.sample_string(&mut rand::thread_rng(), 32),
        }
    }

    /// The password as a SCRAM-SHA-256 verifier, for `PASSWORD '...'`.
    fn verifier(&self) -> String {
        postgres_protocol::password::scram_sha_256(self.password.as_bytes())
    }
}

/// The settings every owner role gets, whatever its init SQL sets for
/// itself (only the admin may change `temp_file_limit`).
fn owner_settings(statement_timeout_ms: u128) -> Vec<(&'static str, String)> {
    vec![
        ("statement_timeout", format!("{statement_timeout_ms}ms")),
        ("temp_file_limit", "1GB".into()),
        ("jit", "off".into()),
    ]
}

/// Runs a statement that carries a password; its error is reported without
/// the statement.
async fn execute_secret(
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

/// Creates a role unless it exists.
async fn ensure_role(client: &Client, role: &str) -> Result<(), SandboxError> {
    let create = format!(
        "DO $create$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) {literal}) THEN
             CREATE ROLE {ident};
           END IF;
         END $create$",
        literal = hardening::literal(role),
        ident = quote_ident(role)
    );
    client
        .batch_execute(&create)
        .await
        .map_err(|e| SandboxError::Setup {
            step: "creating roles",
            message: db_message(&e),
        })
}

/// Creates or resets the runner role and the owners' group.
///
/// # Errors
///
/// Fails when a statement fails.
pub async fn setup_shared_roles(
    client: &Client,
    runner: &Login,
    owners_group: &str,
    runner_connection_limit: u32,
    runner_statement_timeout_ms: u64,
) -> Result<(), SandboxError> {
    ensure_role(client, owners_group).await?;
    ensure_role(client, &runner.role).await?;
    client
        .batch_execute(&format!(
            "ALTER ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS",
            quote_ident(owners_group)
        ))
        .await
        .map_err(|e| SandboxError::Setup {
            step: "configuring the owners' group",
            message: db_message(&e),
        })?;
    let ident = quote_ident(&runner.role);
    let alter_runner = format!(
        "ALTER ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS \
         CONNECTION LIMIT {runner_connection_limit} PASSWORD '{}'",
        runner.verifier()
    );
    execute_secret(client, &alter_runner, "configuring the runner role").await?;
    for (name, value) in hardening::runner_settings(runner_statement_timeout_ms) {
        client
            .batch_execute(&format!("ALTER ROLE {ident} SET {name} = '{value}'"))
            .await
            .map_err(|e| SandboxError::Setup {
                step: "setting the runner role's settings",
                message: db_message(&e),
            })?;
    }
    Ok(())
}

/// Refuses to go on when the runner or the owners' group can do more than
/// it should (superuser, role or database creation, memberships).
///
/// # Errors
///
/// [`SandboxError::UnsafeRole`] naming every dangerous attribute.
pub async fn check_shared_roles(
    client: &Client,
    runner: &str,
    owners_group: &str,
) -> Result<(), SandboxError> {
    for (kind, role) in [("runner", runner), ("owners' group", owners_group)] {
        let attributes = role_attributes(client, role).await?;
        check_role_attributes(kind, role, &attributes).map_err(SandboxError::UnsafeRole)?;
    }
    Ok(())
}

/// Reads the attributes of `role` that matter to the sandbox.
///
/// # Errors
///
/// Fails when the role cannot be read.
async fn role_attributes(client: &Client, role: &str) -> Result<RoleAttributes, SandboxError> {
    let row = client
        .query_one(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,
                    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_auth_members m
                     WHERE m.member OPERATOR(pg_catalog.=) r.oid)
             FROM pg_catalog.pg_roles r WHERE rolname OPERATOR(pg_catalog.=) $1",
            &[&role],
        )
        .await
        .map_err(|e| SandboxError::Setup {
            step: "checking the sandbox's roles",
            message: db_message(&e),
        })?;
    Ok(RoleAttributes {
        superuser: row.get(0),
        create_role: row.get(1),
        create_db: row.get(2),
        replication: row.get(3),
        bypass_rls: row.get(4),
        memberships: row.get(5),
    })
}

/// Creates a challenge version's owner: it logs in with `owner`'s password,
/// belongs to the owners' group only, and gets the owner settings.
///
/// # Errors
///
/// Fails when a statement fails.
pub async fn create_owner(
    client: &Client,
    owner: &Login,
    owners_group: &str,
    statement_timeout_ms: u128,
) -> Result<(), SandboxError> {
    let ident = quote_ident(&owner.role);
    let create = format!(
        "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS \
         CONNECTION LIMIT 4 PASSWORD '{}' IN ROLE {}",
        owner.verifier(),
        quote_ident(owners_group)
    );
    execute_secret(client, &create, "creating an owner role").await?;
    let mut settings = String::new();
    for (name, value) in owner_settings(statement_timeout_ms) {
        settings.push_str(&format!("ALTER ROLE {ident} SET {name} = '{value}';"));
    }
    client
        .batch_execute(&settings)
        .await
        .map_err(|e| SandboxError::Setup {
            step: "setting an owner role's settings",
            message: db_message(&e),
        })
}

/// Resets an owner's role settings (everywhere, and in `database`) to the
/// owner settings, and its password to the one the sandbox knows: whatever
/// an init SQL set for its role in an earlier build, or in this one before
/// the grants, is gone.
///
/// # Errors
///
/// Fails when a statement fails.
pub async fn reset_owner(
    client: &Client,
    owner: &Login,
    database: &str,
    statement_timeout_ms: u128,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&reset_owner_script(owner, database, statement_timeout_ms))
        .await
}

/// The statements of [`reset_owner`].
fn reset_owner_script(owner: &Login, database: &str, statement_timeout_ms: u128) -> String {
    let ident = quote_ident(&owner.role);
    let mut script = format!(
        "ALTER ROLE {ident} RESET ALL; ALTER ROLE {ident} IN DATABASE {} RESET ALL; \
         ALTER ROLE {ident} PASSWORD '{}';",
        quote_ident(database),
        owner.verifier()
    );
    for (name, value) in owner_settings(statement_timeout_ms) {
        script.push_str(&format!(" ALTER ROLE {ident} SET {name} = '{value}';"));
    }
    script
}

/// Takes an owner's login away once its databases are built.
///
/// # Errors
///
/// Fails when the statement fails.
pub async fn seal_owner(client: &Client, owner: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(owner)))
        .await?;
    // NOLOGIN keeps out new sessions only: end any still open.
    client
        .execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE usename OPERATOR(pg_catalog.=) $1",
            &[&owner],
        )
        .await
        .map(|_| ())
}

/// Drops a role, if it exists.
///
/// # Errors
///
/// Fails when the role still owns something or the statement fails.
pub async fn drop_role(client: &Client, role: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_reach_postgresql_as_scram_verifiers_only() {
        let owner = Login::generate("sqlarena_t_o_0123456789ab".into());
        let script = reset_owner_script(&owner, "db", 1000);
        assert!(script.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{script}");
        assert!(!script.contains(&owner.password));
        assert!(!format!("{owner:?}").contains(&owner.password));
    }
}
