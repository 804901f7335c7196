//! Console sessions: a cookie apart from the API's bearer tokens, and a CSRF
//! token on every form.
//!
//! Signing in checks the password exactly as `POST /api/v1/login` does (same
//! throttles, same hashing gate) and stores a session in the store's session
//! list, so a user's session list, "revoke all" and a password change cover
//! console sessions too. The two kinds cannot stand in for each other: the
//! store keeps `sha256("console:" + cookie)` for a console session, so a
//! cookie sent as a bearer token, or a bearer token put in the cookie,
//! matches nothing. Cookies therefore never authenticate an API call, and
//! the API needs no CSRF defence.
//!
//! The cookie is `HttpOnly`, `SameSite=Strict`, and `Secure` when the request
//! came over TLS (a proxy in front says so with `X-Forwarded-Proto: https`).
//! Each form carries `csrf`, derived from the session secret
//! (`sha256("csrf:" + cookie)`), checked in constant time by [`SignedForm`];
//! the sign-in form, which has no session yet, carries a random token that
//! must match a short-lived cookie of its own (double submit).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::html;
use sqlarena_common::{Role, UserId};
use uuid::Uuid;

use crate::auth::{self, CurrentUser};
use crate::console::layout::{self, ConsoleError};
use crate::error::ApiError;
use crate::http::users::authenticate;
use crate::state::AppState;
use crate::store::Session;

/// The session cookie.
pub const SESSION_COOKIE: &str = "sqlarena_console";
/// The sign-in form's CSRF cookie.
const LOGIN_COOKIE: &str = "sqlarena_login";
/// How long the sign-in form's token lasts, in seconds.
const LOGIN_FORM_SECS: i64 = 3600;

/// The store's key of a console session: never the hash an API token has.
/// (Public for benchmarks that sign in without the form.)
pub fn session_hash(secret: &str) -> String {
    auth::token_hash(&format!("console:{secret}"))
}

/// The CSRF token of a console session.
fn csrf_token(secret: &str) -> String {
    auth::token_hash(&format!("csrf:{secret}"))
}

/// Returns the value of cookie `name`, if the request sent it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// True when the request reached us over TLS (directly or through a proxy
/// that says so): cookies then get `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the console's attributes.
fn set_cookie(name: &str, value: &str, path: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn same_secret(sent: &str, expected: &str) -> bool {
    auth::hashes_match(sent, expected)
}

/// The person signed in to the console, as the API's handlers take them,
/// with the CSRF token their forms must carry.
#[derive(Clone)]
pub struct ConsoleUser {
    pub user: CurrentUser,
    pub csrf: String,
}

impl ConsoleUser {
    pub fn role(&self) -> Role {
        self.user.0.role
    }

    pub fn id(&self) -> UserId {
        self.user.0.id
    }
}

/// Finds the console session of a request, if it has a live one.
async fn signed_in(parts: &Parts, state: &AppState) -> Result<Option<ConsoleUser>, ApiError> {
    let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = session_hash(secret);
    let user = state.store.get_session_user(&hash, Utc::now()).await?;
    Ok(user.map(|user| ConsoleUser {
        user: CurrentUser::from_session(user, hash),
        csrf: csrf_token(secret),
    }))
}

impl FromRequestParts<AppState> for ConsoleUser {
    /// Pages send the signed-out to the sign-in page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match signed_in(parts, state).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => Err(ConsoleError::from(error).into_response()),
        }
    }
}

impl OptionalFromRequestParts<AppState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Response> {
        signed_in(parts, state)
            .await
            .map_err(|error| ConsoleError::from(error).into_response())
    }
}

/// The fields of a submitted form, in order.
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Returns the first value of `name`, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// Returns every value of `name` (ticked checkboxes sharing a name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// True when `name` was sent (a ticked checkbox).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }
}

/// Reads an `application/x-www-form-urlencoded` body.
async fn read_form(
    request: axum::extract::Request,
    state: &AppState,
) -> Result<FormFields, ConsoleError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::BadRequest(
            "expected a form (application/x-www-form-urlencoded)".into(),
        )
        .into());
    }
    let body = Bytes::from_request(request, state)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("the form is larger than the limit".into()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|error| ApiError::BadRequest(format!("could not read the form: {error}")))?;
    Ok(FormFields(fields))
}

/// A form posted by a signed-in person, with a valid CSRF token: the only
/// way console handlers read forms, so none can forget the check.
pub struct SignedForm {
    pub user: ConsoleUser,
    pub fields: FormFields,
}

impl FromRequest<AppState> for SignedForm {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let user =
            <ConsoleUser as FromRequestParts<AppState>>::from_request_parts(&mut parts, state)
                .await?;
        let request = axum::extract::Request::from_parts(parts, body);
        let fields = read_form(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same_secret(fields.get("csrf"), &user.csrf) {
            return Err(csrf_refused().into_response());
        }
        Ok(SignedForm { user, fields })
    }
}

fn csrf_refused() -> ConsoleError {
    ConsoleError::from(ApiError::Forbidden(
        "this form's CSRF token is missing or wrong: reload the page and send it again".into(),
    ))
}

/// The sign-in page. Sets a fresh form token (cookie and hidden field).
pub async fn login_page(user: Option<ConsoleUser>, headers: HeaderMap) -> Response {
    if user.is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&headers, "", None, StatusCode::OK)
}

fn login_form(
    headers: &HeaderMap,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = auth::new_token("");
    let body = html! {
        h1 { "Sign in" }
        form.card method="post" action="/login" {
            input type="hidden" name="csrf" value=(token);
            @if let Some(error) = error {
                p.alert role="alert" { (error) }
            }
            label for="email" { "Email" }
            input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            p { button type="submit" { "Sign in" } }
        }
        p.hint { "Students register with the API or the `sqlarena` command line; professors and admins need an invite." }
    };
    let mut response = layout::html_response(status, layout::page("Sign in", None, body));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &token,
            "/login",
            LOGIN_FORM_SECS,
            over_tls(headers),
        ),
    );
    response
}

/// Signs in from the form: the same checks and throttles as the API's login.
pub async fn log_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers().clone();
    let fields = match read_form(request, &state).await {
        Ok(fields) => fields,
        Err(error) => return error.into_response(),
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(fields.get("csrf"), expected) {
        return csrf_refused().into_response();
    }
    let email = fields.get("email").trim().to_string();
    let password = fields.get("password").to_string();
    let user = match authenticate(&state, peer, &email, password).await {
        Ok(user) => user,
        Err(error) => {
            let status = error.status();
            let message = error.public_message();
            let mut response = login_form(&headers, &email, Some(&message), status);
            if let Some(seconds) = error.retry_after_secs() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
    };
    let secret = auth::new_token("sqw_");
    let now = Utc::now();
    let ttl_hours = state.config.session_ttl_hours.max(1);
    let session = Session {
        id: Uuid::new_v4(),
        token_hash: session_hash(&secret),
        user_id: user.id,
        created_at: now,
        expires_at: now + Duration::hours(ttl_hours),
    };
    if let Err(error) = state.store.create_session(session).await {
        return ConsoleError::from(ApiError::from(error)).into_response();
    }
    tracing::info!(user_id = %user.id, "user signed in to the console");
    let secure = over_tls(&headers);
    let mut response = Redirect::to("/").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &secret, "/", ttl_hours * 3600, secure),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0, secure),
    );
    response
}

/// Signs out: the session is deleted from the store and the cookie cleared.
pub async fn log_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: SignedForm,
) -> Response {
    if let Err(error) = state
        .store
        .delete_session(form.user.user.token_hash())
        .await
    {
        return ConsoleError::from(ApiError::from(error)).into_response();
    }
    tracing::info!(user_id = %form.user.id(), "user signed out of the console");
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/", 0, over_tls(&headers)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sessions_and_api_tokens_never_share_a_key() {
        let secret = auth::new_token("sqw_");
        assert_ne!(session_hash(&secret), auth::token_hash(&secret));
        assert_ne!(csrf_token(&secret), session_hash(&secret));
        assert_eq!(csrf_token(&secret), csrf_token(&secret));
    }

    #[test]
    fn cookies_are_read_by_name_and_carry_their_attributes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sqlarena_console=abc; b="),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        let plain = set_cookie(SESSION_COOKIE, "abc", "/", 60, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&headers));
        assert!(set_cookie(SESSION_COOKIE, "abc", "/", 60, true)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }
}
