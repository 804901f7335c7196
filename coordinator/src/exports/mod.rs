//! Exports: a gradebook, attempts or a run's results written to a file
//! under the coordinator's data directory, page by page from the store.
//!
//! The export keeps its spec (filter and scope, fixed at creation) and a
//! cursor in the store, never a list of ids. A writer task appends a page
//! to `ID.EXT.part`, then saves the cursor with the bytes written; the
//! state that save answers is how a pause or a cancel reaches the writer,
//! at the page boundary. A pause stops the task (nothing is held); resume,
//! or a coordinator restart with the export RUNNING, starts a new one,
//! which cuts the file back to the bytes saved and goes on from the
//! cursor, so the output is the same byte for byte. A finished file is
//! renamed to `ID.EXT` (never seen half-written), a cancelled one deleted,
//! and a finished one deleted at its expiry.
//!
//! With MongoDB and several coordinators, each writes and serves the files
//! of its own data directory: give them a shared one.

mod file;
pub mod rows;
pub mod source;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlarena_common::exports::{ExportKind, ExportState};
use sqlarena_common::{ExportId, Role};
use tokio_util::sync::CancellationToken;

use crate::assessments::Assessments;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::runs::{Runs, RunsError};
use crate::store::exports::{Export, ExportFilters, ExportSpec, NewExport};
use crate::store::runs::Run;
use crate::store::{Page, Store, StoreError, StoreResult, User};

/// Rows read and written per page.
pub const PAGE_ROWS: u32 = 2000;

/// What the exports service refuses, and faults beneath it.
#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A field of the request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The file was deleted at its expiry.
    #[error("{0}")]
    Gone(String),
    #[error(transparent)]
    Runs(#[from] RunsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias of the exports service.
pub type ExportsResult<T> = Result<T, ExportsError>;

/// An export asked for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub kind: ExportKind,
    pub format: sqlarena_common::exports::ExportFormat,
    pub filters: ExportFilters,
}

/// The exports service; cheap to clone.
#[derive(Clone)]
pub struct Exports {
    store: Arc<dyn Store>,
    assessments: Assessments,
    runs: Runs,
    files: file::Files,
    /// How long a finished file is kept.
    ttl: chrono::Duration,
    page_rows: u32,
    /// The wait between two pages.
    page_pause: Duration,
    sweep_interval: Duration,
    /// Exports this process is writing now (one task each).
    writing: Arc<Mutex<HashSet<ExportId>>>,
    shutdown: CancellationToken,
}

impl Exports {
    /// Creates the service; files go to `exports/` under the data directory.
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Jobs,
        runs: Runs,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Exports {
        Exports {
            assessments: Assessments::new(store.clone(), jobs, config.request_timeout()),
            store,
            runs,
            files: file::Files::new(config.data_dir().join("exports")),
            ttl: chrono::Duration::seconds(
                i64::try_from(config.export_ttl.as_secs()).unwrap_or(i64::MAX / 1000),
            ),
            page_rows: config.export_page_rows.max(1),
            page_pause: Duration::from_millis(config.export_page_pause_ms),
            sweep_interval: Duration::from_millis(config.reaper_interval_ms.max(50) * 4),
            writing: Arc::default(),
            shutdown,
        }
    }

    /// Creates an export for `creator` and starts writing it.
    ///
    /// Professors export only their challenges' data (and their runs),
    /// admins anything, students nothing.
    ///
    /// # Errors
    /// `Forbidden` for students or someone else's challenge or run;
    /// `NotFound` for an unknown challenge, run or user; `Invalid` for
    /// filters that do not fit the kind or dates out of order.
    pub async fn create(&self, creator: &User, request: ExportRequest) -> ExportsResult<Export> {
        if creator.role == Role::Student {
            return Err(ExportsError::Forbidden(
                "exports are for professors and admins".into(),
            ));
        }
        let spec = self.spec_for(creator, request).await?;
        let total = self.count_rows(&spec).await?;
        let export = self
            .store
            .create_export(
                NewExport {
                    spec,
                    created_by: creator.id,
                    total,
                },
                Utc::now(),
            )
            .await?;
        tracing::info!(export_id = %export.id, kind = %export.spec.kind, total, "export created");
        self.spawn_writer(export.id);
        Ok(export)
    }

    /// Checks the request and fixes what the export reads.
    async fn spec_for(&self, creator: &User, request: ExportRequest) -> ExportsResult<ExportSpec> {
        let filters = request.filters;
        if let (Some(gte), Some(lte)) = (filters.date_gte, filters.date_lte) {
            if gte > lte {
                return Err(ExportsError::Invalid(
                    "filters: date_gte is after date_lte".into(),
                ));
            }
        }
        if let Some(user_id) = filters.user_id {
            if self.store.get_user(user_id).await?.is_none() {
                return Err(ExportsError::NotFound(format!(
                    "filters.user_id: no user {user_id}"
                )));
            }
        }
        let run = match filters.run_id {
            Some(run_id) => Some(self.runs.visible_run(creator, run_id).await?),
            None if request.kind == ExportKind::Run => {
                return Err(ExportsError::Invalid(
                    "filters.run_id: a run export names its run".into(),
                ))
            }
            None => None,
        };
        if run.is_some() && request.kind == ExportKind::Attempts {
            return Err(ExportsError::Invalid(
                "filters.run_id: an attempts export takes no run; export kind \"run\"".into(),
            ));
        }
        let challenge_ids = match (&run, filters.challenge_id) {
            (Some(run), _) => Some(vec![run.spec.challenge_id]),
            (None, Some(challenge_id)) => {
                let challenge = self
                    .store
                    .get_challenge(challenge_id)
                    .await?
                    .ok_or_else(|| {
                        ExportsError::NotFound(format!(
                            "filters.challenge_id: no challenge {challenge_id}"
                        ))
                    })?;
                if creator.role != Role::Admin && challenge.created_user_id != creator.id {
                    return Err(ExportsError::Forbidden(format!(
                        "challenge {challenge_id} is another professor's: only its professor or an admin may export it"
                    )));
                }
                Some(vec![challenge_id])
            }
            (None, None) if creator.role == Role::Admin && request.kind == ExportKind::Attempts => {
                None
            }
            (None, None) => {
                let created_by = (creator.role != Role::Admin).then_some(creator.id);
                let mut ids: Vec<_> = self
                    .store
                    .list_challenges(created_by, Page::all())
                    .await?
                    .into_iter()
                    .map(|challenge| challenge.id)
                    .collect();
                ids.sort();
                Some(ids)
            }
        };
        let assessment_ids = if request.kind == ExportKind::Gradebook && run.is_none() {
            let created_by = (creator.role != Role::Admin).then_some(creator.id);
            self.store
                .list_assessments_by(created_by)
                .await?
                .into_iter()
                .filter(|assessment| {
                    filters.challenge_id.is_none_or(|challenge_id| {
                        assessment
                            .spec
                            .zones
                            .iter()
                            .any(|zone| zone.pool.contains(&challenge_id))
                    })
                })
                .map(|assessment| assessment.id)
                .collect()
        } else {
            Vec::new()
        };
        Ok(ExportSpec {
            kind: request.kind,
            format: request.format,
            filters,
            challenge_ids,
            assessment_ids,
            as_of: Utc::now(),
        })
    }

    /// How many rows the export will write.
    async fn count_rows(&self, spec: &ExportSpec) -> StoreResult<u64> {
        if let Some(run_id) = spec.filters.run_id {
            let run = self.store.get_run(run_id).await?;
            return Ok(run.map_or(0, |run| run.counts.total));
        }
        match spec.kind {
            ExportKind::Gradebook => self.store.count_scoped_users(&spec.attempt_scope()).await,
            _ => {
                self.store
                    .count_scoped_attempts(&spec.attempt_scope())
                    .await
            }
        }
    }

    /// Returns an export `viewer` may see and control: their own, or any
    /// for an admin.
    ///
    /// # Errors
    /// `NotFound`, or `Forbidden` for anyone else.
    pub async fn visible(&self, viewer: &User, id: ExportId) -> ExportsResult<Export> {
        let export = self
            .store
            .get_export(id)
            .await?
            .ok_or_else(|| ExportsError::NotFound(format!("no export {id}")))?;
        if viewer.role == Role::Admin || export.created_by == viewer.id {
            Ok(export)
        } else {
            Err(ExportsError::Forbidden(
                "only the export's creator or an admin may see or control it".into(),
            ))
        }
    }

    /// Pauses a RUNNING export at its next page boundary.
    ///
    /// # Errors
    /// `Conflict` when it is not RUNNING.
    pub async fn pause(&self, export: &Export) -> ExportsResult<Export> {
        self.store
            .set_export_paused(export.id, true)
            .await?
            .ok_or_else(|| not_in_state(export, "paused", "RUNNING"))
    }

    /// Resumes a PAUSED export from its cursor.
    ///
    /// # Errors
    /// `Conflict` when it is not PAUSED.
    pub async fn resume(&self, export: &Export) -> ExportsResult<Export> {
        let resumed = self
            .store
            .set_export_paused(export.id, false)
            .await?
            .ok_or_else(|| not_in_state(export, "resumed", "PAUSED"))?;
        self.spawn_writer(resumed.id);
        Ok(resumed)
    }

    /// Cancels a RUNNING or PAUSED export: no file is left.
    ///
    /// # Errors
    /// `Conflict` once it has ended.
    pub async fn cancel(&self, export: &Export) -> ExportsResult<Export> {
        let cancelled = self
            .store
            .cancel_export(export.id, Utc::now())
            .await?
            .ok_or_else(|| not_in_state(export, "cancelled", "RUNNING or PAUSED"))?;
        // A running writer deletes its file at the next page; a paused
        // export has no writer, so its partial file goes now.
        if !self.is_writing(export.id) {
            self.files.remove_partial(&cancelled);
        }
        Ok(cancelled)
    }

    /// The finished file of a COMPLETED export.
    ///
    /// # Errors
    /// `Gone` after its expiry; `Conflict` while it is being written, or
    /// when it ended without a file.
    pub fn finished_file(&self, export: &Export) -> ExportsResult<PathBuf> {
        match export.state {
            ExportState::Completed => Ok(self.files.finished(export)),
            ExportState::Expired => Err(ExportsError::Gone(format!(
                "export {} expired at {}: its file was deleted",
                export.id,
                export
                    .expires_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default()
            ))),
            state => Err(ExportsError::Conflict(format!(
                "export {} is {state}: only a COMPLETED export has a file",
                export.id
            ))),
        }
    }

    fn is_writing(&self, id: ExportId) -> bool {
        self.writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&id)
    }

    /// Starts a writer task for `id` unless this process runs one already.
    fn spawn_writer(&self, id: ExportId) {
        {
            let mut writing = self
                .writing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !writing.insert(id) {
                return;
            }
        }
        let exports = self.clone();
        tokio::spawn(async move {
            if let Err(error) = exports.write(id).await {
                tracing::warn!(export_id = %id, error = %error, "export writer stopped; the sweep tries again");
            }
            exports
                .writing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
        });
    }

    /// Writes export `id` from its cursor until it ends, is paused or
    /// cancelled, or the coordinator shuts down.
    #[tracing::instrument(skip_all, fields(export_id = %id))]
    async fn write(&self, id: ExportId) -> ExportsResult<()> {
        let Some(mut export) = self.store.get_export(id).await? else {
            return Ok(());
        };
        let columns = source::columns(&export.spec);
        let format = export.spec.format;
        let mut output = match self.files.open_partial(&export) {
            Ok(output) => output,
            Err(error) => return self.fail(&export, &error).await,
        };
        loop {
            match export.state {
                ExportState::Running => {}
                ExportState::Cancelled => {
                    self.files.remove_partial(&export);
                    tracing::info!("export cancelled: file removed");
                    return Ok(());
                }
                _ => return Ok(()),
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let mut buffer = Vec::new();
            if export.bytes == 0 {
                rows::write_header(&mut buffer, format, &columns);
            }
            let page = source::next_page(
                self.store.as_ref(),
                &self.assessments,
                &export.spec,
                export.cursor,
                self.page_rows,
            )
            .await?;
            let Some(last_key) = page.last_key else {
                if let Err(error) = output.append(&buffer) {
                    return self.fail(&export, &error).await;
                }
                return self.complete(export, output).await;
            };
            for row in &page.rows {
                rows::write_row(&mut buffer, format, &columns, row);
            }
            if let Err(error) = output.append(&buffer) {
                return self.fail(&export, &error).await;
            }
            let rows_written = export.rows + page.rows.len() as u64;
            export = self
                .store
                .save_export_page(id, Some(last_key), rows_written, output.len())
                .await?
                .ok_or_else(|| ExportsError::NotFound(format!("export {id} vanished")))?;
            if !self.page_pause.is_zero() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(self.page_pause) => {}
                }
                // A pause or cancel asked for during the wait.
                export = self
                    .store
                    .get_export(id)
                    .await?
                    .ok_or_else(|| ExportsError::NotFound(format!("export {id} vanished")))?;
            }
        }
    }

    /// Renames the finished file into place and ends the export.
    async fn complete(&self, export: Export, output: file::Output) -> ExportsResult<()> {
        if let Err(error) = self.files.finish(&export, output) {
            return self.fail(&export, &error).await;
        }
        let now = Utc::now();
        let finished = self
            .store
            .finish_export(
                export.id,
                ExportState::Completed,
                None,
                now,
                Some(now + self.ttl),
            )
            .await?;
        if finished {
            tracing::info!(rows = export.rows, "export completed");
        } else {
            // Cancelled at the last moment: no file is left.
            self.files.remove_finished(&export);
        }
        Ok(())
    }

    async fn fail(&self, export: &Export, error: &std::io::Error) -> ExportsResult<()> {
        tracing::warn!(error = %error, "export failed writing its file");
        self.files.remove_partial(export);
        self.store
            .finish_export(
                export.id,
                ExportState::Failed,
                Some(format!("writing the file failed: {error}")),
                Utc::now(),
                None,
            )
            .await?;
        Ok(())
    }

    /// Runs until shutdown: resumes RUNNING exports no task writes (after a
    /// restart) and deletes expired files.
    pub async fn run_loop(self) {
        loop {
            if let Err(error) = self.sweep().await {
                tracing::warn!(error = %error, "exports sweep failed");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(self.sweep_interval) => {}
            }
        }
    }

    /// One pass: writers for RUNNING exports, expiry of finished ones.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep(&self) -> StoreResult<()> {
        for export in self.store.list_unfinished_exports().await? {
            if export.state == ExportState::Running {
                self.spawn_writer(export.id);
            }
        }
        for export in self.store.list_expired_exports(Utc::now()).await? {
            if self.store.expire_export(export.id).await? {
                self.files.remove_finished(&export);
                tracing::info!(export_id = %export.id, "export expired: file removed");
            }
        }
        Ok(())
    }
}

/// The gradebook of a run: what a run's postprocessing stores, written by
/// the same writer as a gradebook export.
///
/// # Errors
/// Store failures.
pub async fn run_gradebook(
    store: &dyn Store,
    assessments: &Assessments,
    run: &Run,
) -> StoreResult<String> {
    let spec = ExportSpec {
        kind: ExportKind::Gradebook,
        format: sqlarena_common::exports::ExportFormat::Csv,
        filters: ExportFilters {
            run_id: Some(run.id),
            ..ExportFilters::default()
        },
        challenge_ids: Some(vec![run.spec.challenge_id]),
        assessment_ids: Vec::new(),
        as_of: Utc::now(),
    };
    let columns = source::columns(&spec);
    let mut out = Vec::new();
    rows::write_header(&mut out, spec.format, &columns);
    let mut cursor = None;
    loop {
        let page = source::next_page(store, assessments, &spec, cursor, PAGE_ROWS).await?;
        let Some(last_key) = page.last_key else {
            break;
        };
        for row in &page.rows {
            rows::write_row(&mut out, spec.format, &columns, row);
        }
        cursor = Some(last_key);
    }
    String::from_utf8(out).map_err(|error| StoreError::Backend(error.to_string()))
}

/// Estimated seconds until a RUNNING export has written every row, from
/// its pace so far; `None` for others and before the first page.
pub fn eta_seconds(export: &Export) -> Option<f64> {
    if export.state != ExportState::Running || export.rows == 0 {
        return None;
    }
    let elapsed = (Utc::now() - export.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    let remaining = export.total.saturating_sub(export.rows) as f64;
    Some((elapsed / export.rows as f64 * remaining * 10.0).round() / 10.0)
}

fn not_in_state(export: &Export, verb: &str, needed: &str) -> ExportsError {
    ExportsError::Conflict(format!(
        "export {} is {}: only a {needed} export can be {verb}",
        export.id, export.state
    ))
}
