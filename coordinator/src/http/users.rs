//! Users: registration, login, invites, and a user's own record and
//! attempts.
//!
//! Passwords arrive as `password` or the seed's `unsafe_password` (an input
//! alias, never echoed) and are kept only as argon2 hashes. Login tokens and
//! invite codes are shown once and stored as sha256.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::Role;
use tokio::sync::OnceCell;

use crate::auth::{self, CurrentUser};
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery};
use crate::http::pagination::{page, PageParams, PageRequest};
use crate::http::views::{AttemptView, LoginView, UserView};
use crate::jobs;
use crate::state::AppState;
use crate::store::{Challenge, Invite, NewUser, Session, StoreError, User};

/// Longest accepted full name, in characters.
const MAX_FULL_NAME: usize = 200;
/// Longest accepted email, in bytes (RFC 5321).
const MAX_EMAIL: usize = 254;
/// Accepted password lengths, in characters.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=256;

/// Routes of users, sessions and invites.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register_user))
        .route("/login", post(login_user))
        .route("/invites", post(create_invite))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/attempts", get(list_user_attempts))
        .route("/users/{id}/attempts/{attempt_id}", get(get_user_attempt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    email: String,
    full_name: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    unsafe_password: Option<String>,
    /// An invite code from an admin; it decides the role.
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    unsafe_password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    #[serde(default)]
    role: Option<Role>,
}

#[derive(Serialize)]
struct InviteView {
    /// The code to hand to the invitee; shown only here.
    code: String,
    role: Role,
}

/// Picks the password from `password` or its alias `unsafe_password`.
fn pick_password(password: Option<String>, unsafe_password: Option<String>) -> ApiResult<String> {
    match (password, unsafe_password) {
        (Some(password), None) | (None, Some(password)) => Ok(password),
        (Some(password), Some(alias)) if password == alias => Ok(password),
        (Some(_), Some(_)) => Err(ApiError::Unprocessable(
            "password: send either `password` or `unsafe_password`, not two different ones".into(),
        )),
        (None, None) => Err(ApiError::Unprocessable(
            "password: missing (send `password`)".into(),
        )),
    }
}

/// Checks an email's shape: one `@`, a local part, a dotted domain, no spaces.
fn validate_email(email: &str) -> ApiResult<String> {
    let email = email.trim();
    let invalid = || ApiError::Unprocessable(format!("email: {email:?} is not an email address"));
    if email.is_empty() {
        return Err(ApiError::Unprocessable("email: must not be empty".into()));
    }
    if email.len() > MAX_EMAIL {
        return Err(ApiError::Unprocessable(format!(
            "email: at most {MAX_EMAIL} characters"
        )));
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || !domain_ok || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    Ok(email.to_string())
}

fn validate_full_name(full_name: &str) -> ApiResult<String> {
    let full_name = full_name.trim();
    if full_name.is_empty() {
        return Err(ApiError::Unprocessable(
            "full_name: must not be empty".into(),
        ));
    }
    if full_name.chars().count() > MAX_FULL_NAME {
        return Err(ApiError::Unprocessable(format!(
            "full_name: at most {MAX_FULL_NAME} characters"
        )));
    }
    if full_name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "full_name: must not contain control characters".into(),
        ));
    }
    Ok(full_name.to_string())
}

fn validate_password(password: &str) -> ApiResult<()> {
    let length = password.chars().count();
    if !PASSWORD_CHARS.contains(&length) {
        return Err(ApiError::Unprocessable(format!(
            "password: must be {} to {} characters long",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )));
    }
    Ok(())
}

async fn register_user(
    State(state): State<AppState>,
    AppJson(request): AppJson<RegisterRequest>,
) -> ApiResult<Response> {
    let email = validate_email(&request.email)?;
    let full_name = validate_full_name(&request.full_name)?;
    let password = pick_password(request.password, request.unsafe_password)?;
    validate_password(&password)?;
    let invite = request
        .invite
        .as_deref()
        .map(str::trim)
        .filter(|code| !code.is_empty());
    if invite.is_none() {
        match request.role.unwrap_or(Role::Student) {
            Role::Student => {}
            Role::Professor if state.config.allow_professor_signup => {}
            Role::Professor => {
                return Err(ApiError::Forbidden(
                    "registering as a professor needs an invite code from an admin (`invite`)".into(),
                ))
            }
            Role::Admin => {
                return Err(ApiError::Forbidden(
                    "admins cannot register themselves: an admin invite or `coordinator create-admin` is needed".into(),
                ))
            }
        }
    }
    if state.store.get_user_by_email(&email).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "the email {email} is already registered: sign in instead"
        )));
    }
    let password_hash = auth::hash_password(password).await?;
    // The store has no way to look an invite up without using it, so it is
    // claimed before the user exists (recorded as used by user 0).
    let role = match invite {
        Some(code) => match state.store.use_invite(&auth::token_hash(code), 0).await? {
            Some(Invite { role, .. }) => role,
            None => {
                return Err(ApiError::Forbidden(
                    "the invite code is unknown or was already used".into(),
                ))
            }
        },
        None => request.role.unwrap_or(Role::Student),
    };
    let user = match state
        .store
        .create_user(NewUser {
            email,
            full_name,
            role,
            password_hash,
        })
        .await
    {
        Ok(user) => user,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(
                "this email is already registered: sign in instead".into(),
            ))
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(user_id = user.id, role = role.as_str(), "user registered");
    Ok(created(UserView::from(&user)))
}

/// An argon2 hash to verify against when the email is unknown, so a wrong
/// email takes as long as a wrong password.
async fn dummy_hash() -> &'static str {
    static HASH: OnceCell<String> = OnceCell::const_new();
    HASH.get_or_init(|| async {
        auth::hash_password("not-a-real-password".into())
            .await
            .unwrap_or_else(|_| "invalid".into())
    })
    .await
}

async fn login_user(
    State(state): State<AppState>,
    AppJson(request): AppJson<LoginRequest>,
) -> ApiResult<Response> {
    let password = pick_password(request.password, request.unsafe_password)?;
    let user = state.store.get_user_by_email(request.email.trim()).await?;
    let hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => dummy_hash().await.to_string(),
    };
    let verified = auth::verify_password(password, hash).await;
    let user = match user {
        Some(user) if verified => user,
        _ => return Err(ApiError::Unauthorized("wrong email or password".into())),
    };
    let token = auth::new_token("sqa_");
    let now = Utc::now();
    let expires_at = now + Duration::hours(state.config.session_ttl_hours.max(1));
    let session = Session {
        token_hash: auth::token_hash(&token),
        user_id: user.id,
        created_at: now,
        expires_at,
    };
    state.store.create_session(session).await?;
    tracing::info!(user_id = user.id, "user signed in");
    Ok(ok(LoginView {
        user: UserView::from(&user),
        token,
        expires_at,
    }))
}

async fn create_invite(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<InviteRequest>,
) -> ApiResult<Response> {
    user.require(&[Role::Admin])?;
    let role = request.role.unwrap_or(Role::Professor);
    let code = auth::new_token("sqi_");
    let invite = Invite {
        code_hash: auth::token_hash(&code),
        role,
        created_by: user.0.id,
        created_at: Utc::now(),
        used_by: None,
    };
    state.store.create_invite(invite).await?;
    tracing::info!(admin = user.0.id, role = role.as_str(), "invite created");
    Ok(created(InviteView { code, role }))
}

/// Returns 403 unless `viewer` is the user `id` or an admin.
fn require_self_or_admin(viewer: &CurrentUser, id: i64) -> ApiResult<()> {
    if viewer.0.id == id || viewer.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "you may only see your own account".into(),
        ))
    }
}

async fn find_user(state: &AppState, id: i64) -> ApiResult<User> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))
}

async fn get_user(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Response> {
    require_self_or_admin(&viewer, id)?;
    let user = find_user(&state, id).await?;
    Ok(ok(UserView::from(&user)))
}

async fn list_user_attempts(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Response> {
    let request = PageRequest::from_params("user-attempts", &params)?;
    require_self_or_admin(&viewer, id)?;
    find_user(&state, id).await?;
    let attempts = state
        .store
        .list_user_attempts(id, request.store_page())
        .await?;
    let (attempts, next_cursor) = request.finish(attempts, |attempt| attempt.id);
    // By challenge and version: attempts show their version's test cases.
    let mut challenges: HashMap<(i64, i64), Option<Challenge>> = HashMap::new();
    let mut views = Vec::new();
    for attempt in attempts {
        let key = (attempt.challenge_id, attempt.challenge_version);
        let challenge = match challenges.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(jobs::attempt_challenge(&state, &attempt).await?),
        };
        let challenge = challenge.as_ref();
        let attempt = jobs::live_attempt(&state, attempt).await?;
        views.push(AttemptView::new(&attempt, challenge, &viewer.0));
    }
    Ok(page(views, next_cursor))
}

async fn get_user_attempt(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath((id, attempt_id)): AppPath<(i64, i64)>,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound(format!("user {id} has no attempt {attempt_id}"));
    let attempt = state
        .store
        .get_attempt(attempt_id)
        .await?
        .filter(|attempt| attempt.user_id == id);
    let attempt = match attempt {
        Some(attempt) => attempt,
        // Others learn nothing about which attempts exist.
        None if viewer.0.id == id || viewer.is_admin() => return Err(not_found()),
        None => {
            return Err(ApiError::Forbidden(
                "you may only see your own attempts".into(),
            ))
        }
    };
    let challenge = jobs::attempt_challenge(&state, &attempt).await?;
    let is_professor = challenge
        .as_ref()
        .is_some_and(|challenge| challenge.created_user_id == viewer.0.id);
    if !(viewer.0.id == id || viewer.is_admin() || is_professor) {
        return Err(ApiError::Forbidden(
            "only its owner, the challenge's professor or an admin may see this attempt".into(),
        ));
    }
    let attempt = jobs::live_attempt(&state, attempt).await?;
    Ok(ok(AttemptView::new(
        &attempt,
        challenge.as_ref(),
        &viewer.0,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(
            validate_email("  Ada@Example.com ").unwrap(),
            "Ada@Example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@.com",
            "a da@example.com",
            "a@b@c.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_password_alias_is_accepted_once() {
        assert_eq!(pick_password(None, Some("p".into())).unwrap(), "p");
        assert_eq!(
            pick_password(Some("p".into()), Some("p".into())).unwrap(),
            "p"
        );
        assert!(pick_password(Some("p".into()), Some("q".into())).is_err());
        assert!(pick_password(None, None).is_err());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(257)).is_err());
        assert!(validate_password("long enough").is_ok());
    }
}
