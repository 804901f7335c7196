//! The HTTP API: one module per resource, each exposing `router()`.
//!
//! `/api/v1` holds the people API (users, challenges, attempts, admin) and the
//! grader protocol (`/api/v1/grader`); operations endpoints sit at the root.

pub mod admin;
pub mod attempts;
pub mod challenges;
pub mod grader;
pub mod ops;
pub mod pagination;
pub mod users;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Builds the whole application router.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let api = Router::new()
        .merge(users::router())
        .merge(challenges::router())
        .merge(attempts::router())
        .merge(admin::router())
        .nest("/grader", grader::router());
    Router::new()
        .nest("/api/v1", api)
        .merge(ops::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not take {method}; see /docs for its methods",
        uri.path()
    ))
}
