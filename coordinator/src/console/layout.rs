//! The page frame (header, navigation by role, sign-out form), error pages
//! and small pieces every page uses.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use sqlarena_common::Role;

use crate::console::session::ConsoleUser;
use crate::error::ApiError;

/// What a console handler returns.
pub type PageResult = Result<Response, ConsoleError>;

/// Wraps a whole page (or fragment) as an HTML response.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The navigation links of a role: (path, label).
fn navigation(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Student => &[("/challenges", "Challenges"), ("/attempts", "My attempts")],
        Role::Professor => &[
            ("/professor/challenges", "My challenges"),
            ("/professor/challenges/new", "New challenge"),
            ("/professor/runs", "Runs"),
            ("/professor/assessments", "Assessments"),
            ("/challenges", "All challenges"),
        ],
        Role::Admin => &[
            ("/admin", "Overview"),
            ("/admin/jobs", "Jobs"),
            ("/admin/tokens", "Cluster tokens"),
            ("/admin/users", "Users"),
            ("/professor/challenges", "Challenges"),
            ("/professor/runs", "Runs"),
            ("/professor/assessments", "Assessments"),
        ],
    }
}

/// A full page: header with the role's navigation, the body in `main`.
pub fn page(title: &str, user: Option<&ConsoleUser>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sqlarena" }
                link rel="stylesheet" href="/console/style.css";
                script src="/console/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "sqlarena" }
                    @if let Some(user) = user {
                        nav aria-label="Main" {
                            @for (path, label) in navigation(user.role()) {
                                a href=(path) { (label) }
                            }
                        }
                        div.who {
                            span { (user.user.0.full_name) " (" (user.role().as_str()) ")" }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(user.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

/// An API error shown as an HTML page with the API's status and message.
#[derive(Debug)]
pub struct ConsoleError(pub ApiError);

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        ConsoleError(error)
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(error: crate::store::StoreError) -> Self {
        ConsoleError(error.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = self.0.public_message();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (status.as_u16()) " " (title) }
            p.alert role="alert" data-code=(self.0.code().as_str()) { (message) }
            p { a href="/" { "Back to your home page" } }
        };
        html_response(status, page(title, None, body))
    }
}

/// A state or status as a coloured badge (the colour comes from the name).
pub fn badge(name: &str) -> Markup {
    html! { span class={ "badge " (name) } { (name) } }
}

/// A time as people read it, in UTC.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long ago `at` was, compactly ("4 s", "3 min", "2 h", "5 d").
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7199 => format!("{} min", seconds / 60),
        7200..=172_799 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// A number of milliseconds, or a dash.
pub fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |ms| format!("{ms:.2}"))
}

/// A "next page" link keeping the page's other (non-empty) query parameters.
pub fn next_page(path: &str, query: &[(&str, String)], cursor: Option<&str>) -> Markup {
    let Some(cursor) = cursor else {
        return html! {};
    };
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    pairs.push(("cursor", cursor));
    let href = format!(
        "{path}?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    );
    html! {
        nav.pager aria-label="Pages" { a href=(href) rel="next" { "Next page →" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_compactly() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5 s");
        assert_eq!(age(now - chrono::Duration::minutes(3), now), "3 min");
        assert_eq!(age(now - chrono::Duration::hours(5), now), "5 h");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0 s");
    }
}
