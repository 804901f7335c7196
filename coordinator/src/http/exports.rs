//! Exports: a professor (their challenges' data) or an admin (anything)
//! asks for a gradebook, attempts or a run's results as CSV or JSON lines;
//! the file is written in the background (an operation, `export-ID`, to
//! follow, pause, resume or cancel) and downloaded with `Range` until it
//! expires. Students export nothing.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::exports::{ExportFormat, ExportKind, ExportState};
use sqlarena_common::{ChallengeId, Envelope, ExportId, RunId, UserId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, Reply};
use crate::exports::ExportRequest;
use crate::http::download::{serve_file, Named};
use crate::http::openapi::{Conflict, Forbidden, Gone, NotFound, RangeNotSatisfiable};
use crate::state::AppState;
use crate::store::exports::{Export, ExportFilters};

/// Routes of exports.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_export))
        .routes(routes!(get_export))
        .routes(routes!(download_export))
}

/// What to export. Dates are `YYYY-MM-DD` (a whole day, UTC, as the
/// long-running-task seed's `date_gte`/`date_lte`) or RFC 3339 times;
/// both bounds are included.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FiltersRequest {
    #[serde(default)]
    challenge_id: Option<ChallengeId>,
    /// Required for `kind: "run"`; a `gradebook` of one run otherwise.
    #[serde(default)]
    run_id: Option<RunId>,
    #[serde(default)]
    user_id: Option<UserId>,
    /// Attempts made on or after.
    #[serde(default)]
    #[schema(example = "2026-01-31")]
    date_gte: Option<String>,
    /// Attempts made on or before.
    #[serde(default)]
    #[schema(example = "2026-12-31")]
    date_lte: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateExportRequest {
    kind: ExportKind,
    #[serde(default)]
    filters: Option<FiltersRequest>,
    /// `csv` (default) or `jsonl`.
    #[serde(default)]
    format: Option<ExportFormat>,
}

/// A date (a whole day: its start for `gte`, its end for `lte`) or a time.
fn parse_bound(field: &str, text: &str, end_of_day: bool) -> ApiResult<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ApiError::Unprocessable(format!(
            "filters.{field}: give a date YYYY-MM-DD or an RFC 3339 time, not {text:?}"
        ))
    })?;
    let time = if end_of_day {
        NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap_or(NaiveTime::MIN)
    } else {
        NaiveTime::MIN
    };
    Ok(date.and_time(time).and_utc())
}

impl FiltersRequest {
    fn into_filters(self) -> ApiResult<ExportFilters> {
        Ok(ExportFilters {
            challenge_id: self.challenge_id,
            run_id: self.run_id,
            user_id: self.user_id,
            date_gte: self
                .date_gte
                .as_deref()
                .map(|text| parse_bound("date_gte", text, false))
                .transpose()?,
            date_lte: self
                .date_lte
                .as_deref()
                .map(|text| parse_bound("date_lte", text, true))
                .transpose()?,
        })
    }
}

/// The filters as the export keeps them.
#[derive(Debug, Serialize, ToSchema)]
struct FiltersView {
    challenge_id: Option<ChallengeId>,
    run_id: Option<RunId>,
    user_id: Option<UserId>,
    date_gte: Option<DateTime<Utc>>,
    date_lte: Option<DateTime<Utc>>,
}

/// An export.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportView {
    id: ExportId,
    /// Follow, pause, resume or cancel it at `/operations/{operation_id}`.
    operation_id: String,
    kind: ExportKind,
    format: ExportFormat,
    state: ExportState,
    filters: FiltersView,
    /// Rows written so far.
    rows: u64,
    /// Rows it will write (counted when it was created).
    total: u64,
    /// Bytes of the file so far.
    bytes: u64,
    /// Estimated seconds until the file is complete.
    eta_seconds: Option<f64>,
    /// Where the file is, once COMPLETED.
    download_url: Option<String>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// When the file is deleted.
    expires_at: Option<DateTime<Utc>>,
}

/// The view of an export.
pub(crate) fn export_view(export: Export) -> ExportView {
    let eta_seconds = crate::exports::eta_seconds(&export);
    let filters = export.spec.filters;
    ExportView {
        id: export.id,
        operation_id: format!("export-{}", export.id),
        kind: export.spec.kind,
        format: export.spec.format,
        state: export.state,
        filters: FiltersView {
            challenge_id: filters.challenge_id,
            run_id: filters.run_id,
            user_id: filters.user_id,
            date_gte: filters.date_gte,
            date_lte: filters.date_lte,
        },
        rows: export.rows,
        total: export.total,
        bytes: export.bytes,
        eta_seconds,
        download_url: (export.state == ExportState::Completed).then(|| download_url(export.id)),
        error: export.error,
        created_at: export.created_at,
        finished_at: export.finished_at,
        expires_at: export.expires_at,
    }
}

/// Where an export's file is downloaded.
pub(crate) fn download_url(id: ExportId) -> String {
    format!("/api/v1/exports/{id}/download")
}

/// Starts an export: 201 with it RUNNING; the file is written page by page
/// in the background. Professors export their own challenges' data (and
/// runs they may see), admins anything; students nothing (403). Unknown
/// challenge, run or user: 404; filters that do not fit: 422.
#[utoipa::path(post, path = "/exports", tag = "exports", security(("session" = [])),
    request_body = CreateExportRequest,
    responses((status = 201, body = Envelope<ExportView>), Forbidden, NotFound))]
async fn create_export(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateExportRequest>,
) -> ApiResult<Reply<ExportView>> {
    let filters = request.filters.unwrap_or_default().into_filters()?;
    let export = state
        .exports
        .create(
            &user.0,
            ExportRequest {
                kind: request.kind,
                format: request.format.unwrap_or(ExportFormat::Csv),
                filters,
            },
        )
        .await?;
    Ok(created(export_view(export)))
}

/// An export: state, rows written of the total, ETA, download link.
#[utoipa::path(get, path = "/exports/{id}", tag = "exports", security(("session" = [])),
    params(("id" = i64, Path, description = "The export")),
    responses((status = 200, body = Envelope<ExportView>), Forbidden))]
async fn get_export(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<ExportId>,
) -> ApiResult<Reply<ExportView>> {
    let export = state.exports.visible(&user.0, id).await?;
    Ok(ok(export_view(export)))
}

/// Downloads a COMPLETED export's file (409 before, 410 after its
/// expiry), whole (200) or one `Range` of it (206 with `Content-Range`;
/// 416 for a malformed range or one outside the file).
#[utoipa::path(get, path = "/exports/{id}/download", tag = "exports", security(("session" = [])),
    params(("id" = i64, Path, description = "The export")),
    responses((status = 200, content_type = "text/csv", body = String),
        (status = 206, description = "The range asked for", content_type = "text/csv", body = String),
        Forbidden, Conflict, Gone, RangeNotSatisfiable))]
async fn download_export(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<ExportId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let export = state.exports.visible(&user.0, id).await?;
    let path = state.exports.finished_file(&export)?;
    let filename = format!(
        "{}-{}.{}",
        export.spec.kind,
        export.id,
        export.spec.format.extension()
    );
    let named = Named {
        content_type: export.spec.format.content_type(),
        filename: &filename,
    };
    serve_file(&path, &named, &headers).await
}
