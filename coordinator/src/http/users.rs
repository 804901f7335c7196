//! Users: registration, login and logout, sessions, passwords, invites,
//! and a user's own record and attempts.
//!
//! Passwords arrive as `password` or the seed's `unsafe_password` (an input
//! alias, never echoed) and are kept only as argon2 hashes. Login tokens and
//! invite codes are shown once and stored as sha256. Every endpoint that
//! checks or sets a password is throttled per client and per account, and
//! its hashing bounded (see [`crate::throttle`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::{
    AttemptId, ChallengeId, Envelope, ErrorEnvelope, PageEnvelope, Role, UserId,
};
use tokio::sync::OnceCell;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::assessments::withheld_attempts;
use crate::auth::{self, CurrentUser};
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery, Reply};
use crate::http::assessments::withhold;
use crate::http::openapi::{Conflict, Forbidden, NotFound, RateLimited};
use crate::http::pagination::{page, PageParams, PageRequest, Paged};
use crate::http::views::{AttemptView, LoginView, Revoked, UserView};
use crate::state::AppState;
use crate::store::{Challenge, Invite, NewUser, Session, StoreError, User};

/// Longest accepted full name, in characters.
const MAX_FULL_NAME: usize = 200;
/// Longest accepted email, in bytes (RFC 5321).
const MAX_EMAIL: usize = 254;
/// Accepted password lengths, in characters.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=256;

/// Routes of users, sessions and invites.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_user))
        .routes(routes!(login_user))
        .routes(routes!(logout_user))
        .routes(routes!(create_invite, list_invites))
        .routes(routes!(revoke_invite))
        .routes(routes!(get_user))
        .routes(routes!(change_password))
        .routes(routes!(list_sessions, revoke_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(list_user_attempts))
        .routes(routes!(get_user_attempt))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    /// Whitespace around it is ignored.
    #[schema(
        max_length = 254,
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f]+(\.[^\s@.\x00-\x1f\x7f-\x9f]+)+[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    email: String,
    /// Whitespace around it is ignored; no control characters.
    #[schema(
        max_length = 200,
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f])?[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    full_name: String,
    /// `STUD` unless an invite decides otherwise; `PROF` needs an invite
    /// (unless the coordinator allows professor sign-up), `ADMIN` always does.
    #[serde(default)]
    role: Option<Role>,
    /// Send `password` or its alias `unsafe_password`, exactly one.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 256)]
    password: Option<String>,
    /// The seed API's name for `password`.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 256)]
    unsafe_password: Option<String>,
    /// An invite code from an admin; it decides the role. Blank means none.
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    /// Send `password` or its alias `unsafe_password`, exactly one.
    #[serde(default)]
    password: Option<String>,
    /// The seed API's name for `password`.
    #[serde(default)]
    unsafe_password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteRequest {
    /// The role the invitee gets; `PROF` when absent or null.
    #[serde(default)]
    pub(crate) role: Option<Role>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct InviteView {
    /// The invite's id, to list and revoke it by: the sha256 of the code.
    pub(crate) id: String,
    /// The code to hand to the invitee; shown only here.
    pub(crate) code: String,
    pub(crate) role: Role,
    /// The code is refused after this.
    pub(crate) expires_at: DateTime<Utc>,
}

/// Whether an invite can still register someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum InviteState {
    /// Unused and unexpired: it registers whoever brings the code.
    Open,
    /// Someone registered with it (`used_by`).
    Used,
    /// Unused, past `expires_at`.
    Expired,
}

impl InviteState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InviteState::Open => "OPEN",
            InviteState::Used => "USED",
            InviteState::Expired => "EXPIRED",
        }
    }
}

/// An invite as listed to admins: never the code.
#[derive(Serialize, ToSchema)]
pub(crate) struct InviteRecord {
    /// The sha256 of the code; `DELETE /invites/{id}` revokes it.
    pub(crate) id: String,
    pub(crate) role: Role,
    pub(crate) state: InviteState,
    #[schema(value_type = i64)]
    pub(crate) created_by: UserId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    #[schema(value_type = Option<i64>)]
    pub(crate) used_by: Option<UserId>,
}

impl InviteRecord {
    pub(crate) fn new(invite: Invite, now: DateTime<Utc>) -> Self {
        let state = match invite.used_by {
            Some(_) => InviteState::Used,
            None if invite.expires_at <= now => InviteState::Expired,
            None => InviteState::Open,
        };
        InviteRecord {
            id: invite.code_hash,
            role: invite.role,
            state,
            created_by: invite.created_by,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            used_by: invite.used_by,
        }
    }
}

/// The reply to revoking an invite.
#[derive(Serialize, ToSchema)]
pub(crate) struct InviteRevoked {
    pub(crate) id: String,
    pub(crate) revoked: bool,
}

/// Most invites `GET /invites` lists.
pub(crate) const LISTED_INVITES: usize = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    /// The new password: send `password` or its alias `unsafe_password`,
    /// exactly one.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 256)]
    password: Option<String>,
    /// The seed API's name for `password`.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 256)]
    unsafe_password: Option<String>,
    /// Required when changing one's own password (422 without it: a rule
    /// that depends on the caller, which no schema can state).
    #[serde(default)]
    current_password: Option<String>,
}

/// A session as shown to its user and to admins: never the token.
#[derive(Serialize, ToSchema)]
struct SessionView {
    id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// True for the session this request was made with.
    current: bool,
}

/// The reply to a logout.
#[derive(Serialize, ToSchema)]
struct SignedOut {
    signed_out: bool,
}

/// The reply to a password change.
#[derive(Serialize, ToSchema)]
struct PasswordChanged {
    id: UserId,
    password_changed: bool,
}

/// The reply to revoking every session of a user.
#[derive(Serialize, ToSchema)]
struct SessionsRevoked {
    /// The user.
    id: UserId,
    /// How many sessions were revoked.
    revoked: u64,
}

/// Picks the password from `password` or its alias `unsafe_password`.
fn pick_password(password: Option<String>, unsafe_password: Option<String>) -> ApiResult<String> {
    match (password, unsafe_password) {
        (Some(password), None) | (None, Some(password)) => Ok(password),
        // As documented: exactly one of the two (a schema cannot say "or
        // both when equal").
        (Some(_), Some(_)) => Err(ApiError::Unprocessable(
            "password: send either `password` or `unsafe_password`, not both".into(),
        )),
        (None, None) => Err(ApiError::Unprocessable(
            "password: missing (send `password`)".into(),
        )),
    }
}

/// Checks an email's shape: one `@`, a local part, a dotted domain, no spaces
/// (the `pattern` of [`RegisterRequest::email`]). The length counts
/// characters as sent, whitespace around included, as JSON Schema does.
fn validate_email(email: &str) -> ApiResult<String> {
    let too_long = email.chars().count() > MAX_EMAIL;
    let email = email.trim();
    let invalid = || ApiError::Unprocessable(format!("email: {email:?} is not an email address"));
    if email.is_empty() {
        return Err(ApiError::Unprocessable("email: must not be empty".into()));
    }
    if too_long {
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

/// Checks a full name (the `pattern` of [`RegisterRequest::full_name`]); the
/// length counts characters as sent.
fn validate_full_name(full_name: &str) -> ApiResult<String> {
    let too_long = full_name.chars().count() > MAX_FULL_NAME;
    let full_name = full_name.trim();
    if full_name.is_empty() {
        return Err(ApiError::Unprocessable(
            "full_name: must not be empty".into(),
        ));
    }
    if too_long {
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

/// Registers a person. Throttled per client and per account.
#[utoipa::path(post, path = "/register", tag = "users", request_body = RegisterRequest,
    responses((status = 201, body = Envelope<UserView>), Forbidden, Conflict, RateLimited))]
async fn register_user(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppJson(request): AppJson<RegisterRequest>,
) -> ApiResult<Reply<UserView>> {
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
    let attempt = state.throttle.admit(peer.ip(), &email).await?;
    if state.store.get_user_by_email(&email).await?.is_some() {
        return Err(email_taken(&email));
    }
    let password_hash = state.hashing.hash(password).await?;
    let new_user = NewUser {
        email: email.clone(),
        full_name,
        role: request.role.unwrap_or(Role::Student),
        password_hash,
    };
    // With an invite, the store creates the user and uses the invite up in
    // one step, so a refused registration leaves the invite usable.
    let outcome = match invite {
        Some(code) => state
            .store
            .create_invited_user(new_user, &auth::token_hash(code), Utc::now())
            .await
            .map(|user| {
                user.ok_or_else(|| {
                    ApiError::Forbidden(
                        "the invite code is unknown, expired or already used: ask an admin for a new one"
                            .into(),
                    )
                })
            }),
        None => state.store.create_user(new_user).await.map(Ok),
    };
    let user = match outcome {
        Ok(user) => user?,
        Err(StoreError::Conflict(_)) => return Err(email_taken(&email)),
        Err(error) => return Err(error.into()),
    };
    attempt.succeeded();
    tracing::info!(
        user_id = %user.id,
        role = user.role.as_str(),
        "user registered"
    );
    Ok(created(UserView::from(&user)))
}

fn email_taken(email: &str) -> ApiError {
    ApiError::Conflict(format!(
        "the email {email} is already registered: sign in instead"
    ))
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

/// Checks an email and password, throttled per client and per account
/// (the console's sign-in uses it too, so both obey the same limits).
///
/// # Errors
/// 401 for a wrong email or password, 429 or 503 when throttled.
pub(crate) async fn authenticate(
    state: &AppState,
    peer: SocketAddr,
    email: &str,
    password: String,
) -> ApiResult<User> {
    let email = email.trim();
    let attempt = state.throttle.admit(peer.ip(), email).await?;
    let user = state.store.get_user_by_email(email).await?;
    let hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => dummy_hash().await.to_string(),
    };
    let verified = state.hashing.verify(password, hash).await?;
    let user = match user {
        Some(user) if verified => user,
        _ => return Err(ApiError::Unauthorized("wrong email or password".into())),
    };
    attempt.succeeded();
    Ok(user)
}

/// Signs in: the reply carries the bearer token, shown once. Throttled per
/// client and per account.
#[utoipa::path(post, path = "/login", tag = "users", request_body = LoginRequest,
    responses((status = 200, body = Envelope<LoginView>),
        (status = 401, description = "`unauthorized`: wrong email or password", body = ErrorEnvelope),
        RateLimited))]
async fn login_user(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppJson(request): AppJson<LoginRequest>,
) -> ApiResult<Reply<LoginView>> {
    let password = pick_password(request.password, request.unsafe_password)?;
    let user = authenticate(&state, peer, &request.email, password).await?;
    let token = auth::new_token("sqa_");
    let now = Utc::now();
    let expires_at = now + Duration::hours(state.config.session_ttl_hours.max(1));
    let session = Session {
        id: Uuid::new_v4(),
        token_hash: auth::token_hash(&token),
        user_id: user.id,
        created_at: now,
        expires_at,
    };
    state.store.create_session(session).await?;
    tracing::info!(user_id = %user.id, "user signed in");
    Ok(ok(LoginView {
        user: UserView::from(&user),
        token,
        expires_at,
    }))
}

/// Revokes the token the request was made with.
#[utoipa::path(post, path = "/logout", tag = "users", security(("session" = [])),
    responses((status = 200, body = Envelope<SignedOut>)))]
async fn logout_user(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Reply<SignedOut>> {
    state.store.delete_session(user.token_hash()).await?;
    tracing::info!(user_id = %user.0.id, "user signed out");
    Ok(ok(SignedOut { signed_out: true }))
}

/// Sets a new password: one's own (with the current password) or, for an
/// admin, anyone's. Every other session of the user is revoked (all of
/// them when an admin resets another user's password).
#[utoipa::path(post, path = "/users/{id}/password", tag = "users", security(("session" = [])),
    params(("id" = i64, Path, description = "The user")), request_body = PasswordRequest,
    responses((status = 200, body = Envelope<PasswordChanged>), Forbidden, RateLimited))]
async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    viewer: CurrentUser,
    AppPath(id): AppPath<UserId>,
    AppJson(request): AppJson<PasswordRequest>,
) -> ApiResult<Reply<PasswordChanged>> {
    require_self_or_admin(&viewer, id)?;
    let password = pick_password(request.password, request.unsafe_password)?;
    validate_password(&password)?;
    let user = find_user(&state, id).await?;
    let is_self = viewer.0.id == id;
    let keep = if is_self {
        let current = request.current_password.ok_or_else(|| {
            ApiError::Unprocessable("current_password: required to change your own password".into())
        })?;
        let attempt = state.throttle.admit(peer.ip(), &user.email).await?;
        if !state
            .hashing
            .verify(current, user.password_hash.clone())
            .await?
        {
            return Err(ApiError::Forbidden(
                "current_password: that is not your current password".into(),
            ));
        }
        attempt.succeeded();
        Some(viewer.token_hash())
    } else {
        None
    };
    let password_hash = state.hashing.hash(password).await?;
    state.store.set_password(id, &password_hash, keep).await?;
    tracing::info!(
        user_id = %id,
        by = %viewer.0.id,
        "password changed, other sessions revoked"
    );
    Ok(ok(PasswordChanged {
        id,
        password_changed: true,
    }))
}

/// Lists a user's live sessions (their own, or anyone's for an admin).
#[utoipa::path(get, path = "/users/{id}/sessions", tag = "users", security(("session" = [])),
    params(("id" = i64, Path, description = "The user")),
    responses((status = 200, body = Envelope<Vec<SessionView>>), Forbidden))]
async fn list_sessions(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<UserId>,
) -> ApiResult<Reply<Vec<SessionView>>> {
    require_self_or_admin(&viewer, id)?;
    find_user(&state, id).await?;
    let sessions: Vec<SessionView> = state
        .store
        .list_sessions(id, Utc::now())
        .await?
        .into_iter()
        .map(|session| SessionView {
            current: auth::hashes_match(&session.token_hash, viewer.token_hash()),
            id: session.id,
            created_at: session.created_at,
            expires_at: session.expires_at,
        })
        .collect();
    Ok(ok(sessions))
}

/// Revokes every session of a user.
#[utoipa::path(delete, path = "/users/{id}/sessions", tag = "users", security(("session" = [])),
    params(("id" = i64, Path, description = "The user")),
    responses((status = 200, body = Envelope<SessionsRevoked>), Forbidden))]
async fn revoke_sessions(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<UserId>,
) -> ApiResult<Reply<SessionsRevoked>> {
    require_self_or_admin(&viewer, id)?;
    find_user(&state, id).await?;
    let revoked = state.store.delete_user_sessions(id, None).await?;
    tracing::info!(user_id = %id, by = %viewer.0.id, revoked, "sessions revoked");
    Ok(ok(SessionsRevoked { id, revoked }))
}

/// Revokes one session of a user.
#[utoipa::path(delete, path = "/users/{id}/sessions/{session_id}", tag = "users",
    security(("session" = [])),
    params(("id" = i64, Path, description = "The user"),
        ("session_id" = Uuid, Path, description = "The session")),
    responses((status = 200, body = Envelope<Revoked>), Forbidden))]
async fn revoke_session(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath((id, session_id)): AppPath<(UserId, Uuid)>,
) -> ApiResult<Reply<Revoked>> {
    require_self_or_admin(&viewer, id)?;
    if !state.store.delete_user_session(id, session_id).await? {
        return Err(ApiError::NotFound(format!(
            "user {id} has no session {session_id}"
        )));
    }
    tracing::info!(user_id = %id, by = %viewer.0.id, session_id = %session_id, "session revoked");
    Ok(ok(Revoked {
        id: session_id,
        revoked: true,
    }))
}

/// Makes an invite code (ADMIN only); the code is shown once.
#[utoipa::path(post, path = "/invites", tag = "users", security(("session" = [])),
    request_body = InviteRequest,
    responses((status = 201, body = Envelope<InviteView>), Forbidden))]
pub(crate) async fn create_invite(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<InviteRequest>,
) -> ApiResult<Reply<InviteView>> {
    user.require(&[Role::Admin])?;
    let role = request.role.unwrap_or(Role::Professor);
    let code = auth::new_token("sqi_");
    let now = Utc::now();
    let invite = Invite {
        code_hash: auth::token_hash(&code),
        role,
        created_by: user.0.id,
        created_at: now,
        expires_at: now + Duration::hours(state.config.invite_ttl_hours.max(1)),
        used_by: None,
    };
    state.store.create_invite(invite.clone()).await?;
    tracing::info!(admin = %user.0.id, role = role.as_str(), "invite created");
    Ok(created(InviteView {
        id: invite.code_hash,
        code,
        role,
        expires_at: invite.expires_at,
    }))
}

/// The newest invites (ADMIN only), open, used or expired, without their
/// codes: at most 500.
#[utoipa::path(get, path = "/invites", tag = "users", security(("session" = [])),
    responses((status = 200, body = Envelope<Vec<InviteRecord>>), Forbidden))]
pub(crate) async fn list_invites(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Reply<Vec<InviteRecord>>> {
    user.require(&[Role::Admin])?;
    let now = Utc::now();
    let invites = state.store.list_invites(LISTED_INVITES).await?;
    Ok(ok(invites
        .into_iter()
        .map(|invite| InviteRecord::new(invite, now))
        .collect()))
}

/// Revokes an unused invite (ADMIN only): its code then registers no one.
/// A used invite stays, as the record of who registered with it (409).
#[utoipa::path(delete, path = "/invites/{id}", tag = "users", security(("session" = [])),
    params(("id" = String, Path, description = "The invite's id (the sha256 of its code)")),
    responses((status = 200, body = Envelope<InviteRevoked>), Forbidden, NotFound, Conflict))]
pub(crate) async fn revoke_invite(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Reply<InviteRevoked>> {
    user.require(&[Role::Admin])?;
    state.store.revoke_invite(&id).await?;
    tracing::info!(admin = %user.0.id, invite = %id, "invite revoked");
    Ok(ok(InviteRevoked { id, revoked: true }))
}

/// Returns 403 unless `viewer` is the user `id` or an admin.
fn require_self_or_admin(viewer: &CurrentUser, id: UserId) -> ApiResult<()> {
    if viewer.0.id == id || viewer.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "you may only see your own account".into(),
        ))
    }
}

async fn find_user(state: &AppState, id: UserId) -> ApiResult<User> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))
}

/// A user's record: one's own, or anyone's for an admin.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("session" = [])),
    params(("id" = i64, Path, description = "The user")),
    responses((status = 200, body = Envelope<UserView>), Forbidden))]
async fn get_user(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<UserId>,
) -> ApiResult<Reply<UserView>> {
    require_self_or_admin(&viewer, id)?;
    let user = find_user(&state, id).await?;
    Ok(ok(UserView::from(&user)))
}

/// A user's attempts, newest first: one's own, or anyone's for an admin.
#[utoipa::path(get, path = "/users/{id}/attempts", tag = "users", security(("session" = [])),
    params(("id" = i64, Path, description = "The user"), PageParams),
    responses((status = 200, body = PageEnvelope<AttemptView>), Forbidden))]
pub(crate) async fn list_user_attempts(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath(id): AppPath<UserId>,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Paged<AttemptView>> {
    let request = PageRequest::from_params("user-attempts", &params)?;
    require_self_or_admin(&viewer, id)?;
    find_user(&state, id).await?;
    let attempts = state
        .store
        .list_user_attempts(id, request.store_page())
        .await?;
    let (attempts, next_cursor) = request.finish(attempts, |attempt| attempt.id);
    // By challenge and version: attempts show their version's test cases.
    let mut challenges: HashMap<(ChallengeId, i64), Option<Challenge>> = HashMap::new();
    let mut views = Vec::new();
    let withheld = withheld_attempts(state.store.as_ref(), &viewer.0, id).await?;
    for attempt in attempts {
        let key = (attempt.challenge_id, attempt.challenge_version);
        let challenge = match challenges.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(state.jobs.attempt_challenge(&attempt).await?),
        };
        let challenge = challenge.as_ref();
        let attempt = state.jobs.live_attempt(attempt).await?;
        let mut view = AttemptView::new(&attempt, challenge, &viewer.0);
        if withheld.contains(&attempt.id) {
            withhold(&mut view);
        }
        views.push(view);
    }
    Ok(page(views, next_cursor))
}

/// One attempt of a user: for its owner, the challenge's professor or an
/// admin.
#[utoipa::path(get, path = "/users/{id}/attempts/{attempt_id}", tag = "users",
    security(("session" = [])),
    params(("id" = i64, Path, description = "The user"),
        ("attempt_id" = i64, Path, description = "The attempt")),
    responses((status = 200, body = Envelope<AttemptView>), Forbidden))]
async fn get_user_attempt(
    State(state): State<AppState>,
    viewer: CurrentUser,
    AppPath((id, attempt_id)): AppPath<(UserId, AttemptId)>,
) -> ApiResult<Reply<AttemptView>> {
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
    let challenge = state.jobs.attempt_challenge(&attempt).await?;
    let is_professor = challenge
        .as_ref()
        .is_some_and(|challenge| challenge.created_user_id == viewer.0.id);
    if !(viewer.0.id == id || viewer.is_admin() || is_professor) {
        return Err(ApiError::Forbidden(
            "only its owner, the challenge's professor or an admin may see this attempt".into(),
        ));
    }
    let attempt = state.jobs.live_attempt(attempt).await?;
    let mut view = AttemptView::new(&attempt, challenge.as_ref(), &viewer.0);
    if withheld_attempts(state.store.as_ref(), &viewer.0, id)
        .await?
        .contains(&attempt.id)
    {
        withhold(&mut view);
    }
    Ok(ok(view))
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
        assert!(pick_password(Some("p".into()), Some("p".into())).is_err());
        assert!(pick_password(Some("p".into()), Some("q".into())).is_err());
        assert!(pick_password(None, None).is_err());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(257)).is_err());
        assert!(validate_password("long enough").is_ok());
    }
}
