//! The HTTP API: one module per resource, each exposing `router()`.
//!
//! `/api/v1` holds the people API (users, challenges, attempts, admin) and the
//! grader protocol (`/api/v1/grader`); operations endpoints sit at the root.
//! Every route but the grader's long-poll lease answers within
//! `--request-timeout-ms`.
//!
//! The web console (`crate::console`, HTML at `/`) is merged here too,
//! outside the OpenAPI document.
//!
//! Routes are registered through `utoipa_axum`'s `OpenApiRouter`, which
//! collects the OpenAPI document as it goes (see [`openapi`]): the document
//! served at `/api/v1/openapi.json` lists exactly the routes served.

pub mod admin;
pub mod assessments;
pub mod attempts;
pub mod challenges;
pub mod download;
pub mod exports;
pub mod grader;
pub mod openapi;
pub mod operations;
pub mod ops;
pub mod pagination;
pub mod runs;
pub mod server;
pub mod users;
pub mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Builds the whole application router (with `/metrics` unless it is
/// served on its own address, see [`metrics_router`]).
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let request_timeout = state.config.request_timeout();
    let (router, document) = documented_router(&state).split_for_parts();
    let document = ops::OpenApiJson::new(&document);
    // The web console's HTML pages: not part of the API's document.
    let console =
        crate::console::router().layer(middleware::from_fn_with_state(request_timeout, limit_time));
    router
        .merge(console)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_request,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// Every route, each with its documentation.
fn documented_router(state: &AppState) -> OpenApiRouter<AppState> {
    let request_timeout = state.config.request_timeout();
    let api = OpenApiRouter::new()
        .merge(users::router())
        .merge(challenges::router())
        .merge(attempts::router())
        .merge(admin::router())
        .merge(assessments::router())
        .merge(runs::router())
        .merge(exports::router())
        .merge(operations::router())
        .nest("/grader", grader::router());
    let mut timed = OpenApiRouter::new()
        .nest("/api/v1", api)
        .merge(ops::router());
    if state.config.metrics_listen.is_none() {
        timed = timed.merge(ops::metrics_router());
    }
    let timed = timed.layer(middleware::from_fn_with_state(request_timeout, limit_time));
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1/grader", grader::long_poll_router())
        .merge(timed);
    openapi::finish(router.get_openapi_mut());
    router
}

/// The router of the separate metrics address (`--metrics-listen`).
pub fn metrics_router(state: AppState) -> Router {
    let request_timeout = state.config.request_timeout();
    Router::from(ops::metrics_router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(request_timeout, limit_time))
        .with_state(state)
}

/// The span of a request: its method, the route template it matched
/// (`/api/v1/challenges/{id}`, so that traces group by route) and its URI.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route, uri = %request.uri())
}

/// Counts an answered request and its duration by method, matched route
/// and status.
async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(
        method.as_str(),
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Answers 503 when a request (reading its body included) takes longer
/// than `limit`.
async fn limit_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Overloaded {
            message: format!(
                "the request took longer than {} ms and was abandoned",
                limit.as_millis()
            ),
            retry_after_secs: 1,
        }
        .into_response(),
    }
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
