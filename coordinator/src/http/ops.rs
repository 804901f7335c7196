//! Operations endpoints: health, readiness, Prometheus metrics, and the
//! OpenAPI document with a docs page that works offline.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::{ok, ApiError, ApiResult};
use crate::state::AppState;

const OPENAPI: &str = include_str!("openapi.json");
const DOCS_PAGE: &str = include_str!("docs.html");

/// Routes of the operations endpoints.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/readyz", get(get_readiness))
        .route("/metrics", get(get_metrics))
        .route("/api/v1/openapi.json", get(get_openapi))
        .route("/api/v1/docs", get(get_docs))
        .route("/docs", get(get_docs))
}

/// The process is up.
async fn get_health() -> Response {
    ok(serde_json::json!({"healthy": true}))
}

/// The store is reachable.
async fn get_readiness(State(state): State<AppState>) -> ApiResult<Response> {
    state
        .store
        .ping()
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(ok(serde_json::json!({"ready": true})))
}

async fn get_metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response())
}

async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn get_docs() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DOCS_PAGE,
    )
        .into_response()
}
