//! Wire names of exports and operations: an export writes a gradebook,
//! attempts or a run's results to a file page by page; an operation is the
//! one view of every long job (a run, an export, a challenge's init).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// A row per student: each challenge's result and each assessment's score.
    Gradebook,
    /// A row per attempt.
    Attempts,
    /// A row per item of one run.
    Run,
}
wire_names!(ExportKind {
    Gradebook => "gradebook",
    Attempts => "attempts",
    Run => "run",
});

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}
wire_names!(ExportFormat { Csv => "csv", Jsonl => "jsonl" });

impl ExportFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// The media type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/jsonl",
        }
    }
}

/// Lifecycle of an export: `RUNNING` <-> `PAUSED` -> `COMPLETED` (file
/// ready until its expiry, then `EXPIRED`) | `FAILED` | `CANCELLED` (no
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExportState {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
    Expired,
}
wire_names!(ExportState {
    Running => "RUNNING",
    Paused => "PAUSED",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
    Expired => "EXPIRED",
});

impl ExportState {
    /// True once the export will write no more.
    pub fn is_final(self) -> bool {
        !matches!(self, ExportState::Running | ExportState::Paused)
    }
}

/// What kind of long job an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// A grading run (`run-ID`).
    Run,
    /// An export (`export-ID`).
    Export,
    /// A challenge's init: its databases built and expected results
    /// computed (`init-CHALLENGE_ID`).
    Init,
}
wire_names!(OperationKind {
    Run => "run",
    Export => "export",
    Init => "init",
});
