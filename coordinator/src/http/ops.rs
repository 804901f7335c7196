//! Operations endpoints: health, readiness, Prometheus metrics, and the
//! OpenAPI document with a docs page that works offline.
//!
//! `/metrics` may require a bearer token (`--metrics-token`) and may be
//! served on its own address instead (`--metrics-listen`).

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth;
use crate::error::{ok, ApiError, ApiResult};
use crate::state::AppState;

const OPENAPI: &str = include_str!("openapi.json");
const DOCS_PAGE: &str = include_str!("docs.html");

/// Routes of the operations endpoints but `/metrics`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/readyz", get(get_readiness))
        .route("/api/v1/openapi.json", get(get_openapi))
        .route("/api/v1/docs", get(get_docs))
        .route("/docs", get(get_docs))
}

/// The metrics route, on the API's address or its own.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

/// The scraper of `/metrics`: checks the bearer token when
/// `--metrics-token` is set.
struct MetricsAuth;

impl axum::extract::FromRequestParts<AppState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.config.metrics_token else {
            return Ok(MetricsAuth);
        };
        // Compared as hashes, in constant time.
        let sent = auth::bearer_token(parts).map(auth::token_hash);
        match sent {
            Some(sent) if auth::hashes_match(&sent, &auth::token_hash(expected)) => Ok(MetricsAuth),
            _ => Err(ApiError::Unauthorized(
                "/metrics needs `Authorization: Bearer METRICS_TOKEN`".into(),
            )),
        }
    }
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

async fn get_metrics(State(state): State<AppState>, _scraper: MetricsAuth) -> ApiResult<Response> {
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
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
