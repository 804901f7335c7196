//! `coordinator migrate` and `coordinator backup` on an SQLite store.
//!
//! A migration runs when the store opens ([`SqliteStore::open`]);
//! `migrate --check` finds what it would change without touching the file:
//! it migrates a copy (`VACUUM INTO`) and compares the two schemas, so the
//! report can never disagree with the migration itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use super::{parse_location, SqliteStore, SCHEMA_VERSION};
pub use crate::store::migration::MigrationReport;

/// The schema of a database: each table, index and column with its SQL.
fn schema_of(connection: &Connection) -> anyhow::Result<BTreeMap<String, String>> {
    let mut objects = BTreeMap::new();
    let mut statement = connection.prepare(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (kind, name, sql) in rows {
        if kind == "table" {
            let mut columns = connection.prepare(&format!(
                "SELECT name, type FROM pragma_table_info('{}')",
                name.replace('\'', "''")
            ))?;
            let columns = columns
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (column, column_type) in columns {
                objects.insert(format!("column {name}.{column}"), column_type);
            }
        }
        objects.insert(format!("{kind} {name}"), sql);
    }
    Ok(objects)
}

fn version_of(connection: &Connection) -> anyhow::Result<Option<i64>> {
    let exists: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'schema_version'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(
        connection.query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })?,
    )
}

fn temporary_copy() -> PathBuf {
    std::env::temp_dir()
        .join(format!(
            "sqlarena-migrate-check-{}",
            Uuid::new_v4().simple()
        ))
        .join("store.db")
}

/// Reports what opening the store at `location` would migrate, leaving the
/// file as it is.
///
/// # Errors
/// Fails when the file cannot be read (e.g. a running coordinator holds it)
/// or its schema is newer than this coordinator's.
pub fn check_migration(location: &str) -> anyhow::Result<MigrationReport> {
    let (path, _) = parse_location(location)?;
    if !path.exists() {
        anyhow::bail!("there is no store file at {}", path.display());
    }
    let source = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {} read-only", path.display()))?;
    let from = version_of(&source).with_context(|| {
        format!(
            "reading {} (a running coordinator keeps it locked: stop it first)",
            path.display()
        )
    })?;
    let before = schema_of(&source)?;
    let copy = temporary_copy();
    let directory = copy.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&directory)?;
    let result = (|| {
        source
            .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .context("copying the store to check the migration")?;
        drop(source);
        let migrated = SqliteStore::open(&copy.to_string_lossy())?;
        let after = schema_of(
            &migrated
                .connection
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )?;
        let mut changes = Vec::new();
        for (name, sql) in &after {
            match before.get(name) {
                None => changes.push(format!("+ {name}")),
                Some(old) if old != sql => changes.push(format!("~ {name}")),
                Some(_) => {}
            }
        }
        changes.extend(
            before
                .keys()
                .filter(|name| !after.contains_key(*name))
                .map(|name| format!("- {name}")),
        );
        Ok(MigrationReport {
            from,
            to: SCHEMA_VERSION,
            changes,
        })
    })();
    let _ = std::fs::remove_dir_all(&directory);
    result
}

impl SqliteStore {
    /// The schema version of the open store.
    ///
    /// # Errors
    /// Fails when the version cannot be read.
    pub fn schema_version(&self) -> anyhow::Result<i64> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        version_of(&connection)?.context("the store has no schema version")
    }
}

/// Reads the schema version of the file at `location` without migrating it
/// (none for a new or empty file).
///
/// # Errors
/// Fails when the file cannot be read.
pub fn file_schema_version(location: &str) -> anyhow::Result<Option<i64>> {
    let (path, _) = parse_location(location)?;
    if !path.exists() {
        return Ok(None);
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    version_of(&connection)
}

/// Writes a consistent copy of the store at `location` to `to` (`VACUUM
/// INTO`) as it is, without migrating it: the copy to keep before a
/// migration. `to` must not exist.
///
/// # Errors
/// Fails when the store cannot be read (a running coordinator keeps it
/// locked), or `to` exists or cannot be written.
pub fn backup(location: &str, to: &Path) -> anyhow::Result<()> {
    let (path, _) = parse_location(location)?;
    if !path.exists() {
        anyhow::bail!("there is no store file at {}", path.display());
    }
    if to.exists() {
        anyhow::bail!("{} exists already; choose a new file", to.display());
    }
    if let Some(parent) = to.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {} read-only", path.display()))?;
    connection
        .execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .with_context(|| {
            format!(
                "writing the backup {} (a running coordinator keeps the store locked: stop it first)",
                to.display()
            )
        })?;
    Ok(())
}
