//! Operations endpoints: health, readiness, Prometheus metrics, and the
//! OpenAPI document with a docs page that works offline.
//!
//! `/metrics` may require a bearer token (`--metrics-token`) and may be
//! served on its own address instead (`--metrics-listen`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth;
use crate::error::{ok, ApiError, ApiResult, Reply};
use crate::state::AppState;
use sqlarena_common::{Envelope, ErrorEnvelope};

const DOCS_PAGE: &str = include_str!("docs.html");

/// Routes of the operations endpoints but `/metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_readiness))
        .routes(routes!(get_openapi))
        .routes(routes!(get_docs))
        .routes(routes!(get_docs_alias))
}

/// The metrics route, on the API's address or its own.
pub fn metrics_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// The OpenAPI document, serialized once when the router is built.
#[derive(Clone)]
pub struct OpenApiJson(Arc<str>);

impl OpenApiJson {
    /// Serializes `document`.
    pub fn new(document: &utoipa::openapi::OpenApi) -> OpenApiJson {
        let json = serde_json::to_string(document).expect("the OpenAPI document serializes");
        OpenApiJson(json.into())
    }
}

#[derive(Serialize, ToSchema)]
struct Health {
    healthy: bool,
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    ready: bool,
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
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Envelope<Health>)))]
async fn get_health() -> Reply<Health> {
    ok(Health { healthy: true })
}

/// The store is reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Envelope<Readiness>)))]
async fn get_readiness(State(state): State<AppState>) -> ApiResult<Reply<Readiness>> {
    state
        .store
        .ping()
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(ok(Readiness { ready: true }))
}

/// Prometheus metrics (text exposition format 0.0.4). Needs the bearer
/// token when the coordinator runs with `--metrics-token`; served on its own
/// address instead with `--metrics-listen`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("metrics" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "`unauthorized`: `--metrics-token` is set and was not sent",
            body = ErrorEnvelope),
    ))]
async fn get_metrics(State(state): State<AppState>, _scraper: MetricsAuth) -> ApiResult<Response> {
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn get_openapi(Extension(document): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
        .into_response()
}

/// A page that renders this document, with no resource from elsewhere.
#[utoipa::path(get, path = "/api/v1/docs", tag = "operations",
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)))]
async fn get_docs() -> Response {
    docs_page()
}

/// The docs page, at a shorter address.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)))]
async fn get_docs_alias() -> Response {
    docs_page()
}

fn docs_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DOCS_PAGE,
    )
        .into_response()
}
