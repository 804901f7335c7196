//! The web console: server-rendered HTML pages for students, professors and
//! admins, served by the coordinator itself at `/`.
//!
//! There is no front-end build: pages are [`maud`] templates compiled into
//! the binary, with one stylesheet and one small script (`assets/`) shipped
//! inside it through `include_str!`, so the console works offline.
//!
//! **Authorization lives in one place.** A page never reads the store to
//! decide what someone may see: it calls the API's own handler with the
//! signed-in user (a [`crate::auth::CurrentUser`] made from the console's
//! cookie) and renders the view the API would have answered. A student who
//! types an admin page's URL gets the API's 403 as an HTML page. Pages that
//! have no API twin (forms) ask the same shared checks the API asks
//! (`CurrentUser::require`, `challenges::require_may_change`).
//!
//! **Sessions** are cookies apart from the API's bearer tokens (see
//! [`session`]): every form carries a CSRF token and is refused without it.

mod admin;
mod assessments;
mod assets;
mod challenges;
mod charts;
mod exams;
mod layout;
mod runs;
mod session;

use axum::http::header::{self, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{extract::Request, Router};
use sqlarena_common::Role;

use crate::state::AppState;

pub use layout::ConsoleError;
pub use session::{session_hash, ConsoleUser, SESSION_COOKIE};

/// The console's routes (HTML), to be merged at the root of the server.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(session::login_page).post(session::log_in))
        .route("/logout", post(session::log_out))
        .route("/console/style.css", get(assets::stylesheet))
        .route("/console/console.js", get(assets::script))
        .merge(challenges::router())
        .merge(admin::router())
        .merge(runs::router())
        .merge(assessments::router())
        .merge(exams::router())
        .layer(middleware::from_fn(page_headers))
}

/// Sends each signed-in person to their home page, others to sign in.
async fn home(user: Option<ConsoleUser>) -> Response {
    let target = match user.map(|user| user.role()) {
        None => "/login",
        Some(Role::Admin) => "/admin",
        Some(Role::Professor) => "/professor/challenges",
        Some(Role::Student) => "/challenges",
    };
    Redirect::to(target).into_response()
}

/// Headers on every console answer: pages are never cached (they show
/// what one person may see), never framed, and run only the console's own
/// script.
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
