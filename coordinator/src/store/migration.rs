//! What a migration of a store does (or would do), as `coordinator
//! migrate` reports it for either backend.

/// What a migration of a store would do (or did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The file's schema version (none for an empty file).
    pub from: Option<i64>,
    pub to: i64,
    /// One line per table, index or column added, dropped or changed.
    pub changes: Vec<String>,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.from {
            Some(from) if from == self.to => {
                write!(f, "schema version {from}: up to date")?;
            }
            Some(from) => write!(f, "schema version {from} -> {}", self.to)?,
            None => write!(f, "no schema yet -> version {}", self.to)?,
        }
        for change in &self.changes {
            write!(f, "\n  {change}")?;
        }
        Ok(())
    }
}
