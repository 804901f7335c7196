//! Users, their login sessions and invites.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{Role, UserId};
use uuid::Uuid;

use super::{StoreError, StoreResult};

/// A user as stored, including the password hash. Never serialize this to a
/// client: the HTTP layer has its own views.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    /// As the user typed it; uniqueness is case-insensitive.
    pub email: String,
    pub full_name: String,
    pub role: Role,
    /// PHC-format argon2 hash.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Fields of a user to be created; the store assigns `id` and `created_at`.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub password_hash: String,
}

/// A bearer session: the sha256 of the token, never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Names the session to admins (list, revoke) without revealing anything
    /// of the token.
    pub id: Uuid,
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A single-use invitation to register with a given role, until it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub code_hash: String,
    pub role: Role,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_by: Option<UserId>,
}

/// Users, their login sessions and invites.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user with the next user id.
    /// `Conflict` if the email is taken, compared case-insensitively.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    /// Returns the user with this id.
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Returns those of `ids` that are no user's, in the order given: one
    /// store call for a run's list of ten thousand students.
    async fn missing_users(&self, ids: Vec<UserId>) -> StoreResult<Vec<UserId>>;
    /// Returns the user with this email, compared case-insensitively.
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Stores a session (by token hash).
    async fn create_session(&self, session: Session) -> StoreResult<()>;
    /// Returns the user of an unexpired session with this token hash.
    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;
    /// Lists a user's unexpired sessions, newest first.
    async fn list_sessions(&self, user_id: UserId, now: DateTime<Utc>)
        -> StoreResult<Vec<Session>>;
    /// Deletes the session with this token hash (logout); false if none.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool>;
    /// Deletes the user's session with this id; false if the user has none.
    async fn delete_user_session(&self, user_id: UserId, session_id: Uuid) -> StoreResult<bool>;
    /// Deletes every session of the user but the one with `keep_token_hash`
    /// (when given) and returns how many went.
    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64>;
    /// Replaces a user's password hash and deletes the user's sessions but
    /// the one with `keep_token_hash`, so a changed password signs every
    /// other holder out. `NotFound` if there is no such user.
    async fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()>;
    /// Stores an invite.
    async fn create_invite(&self, invite: Invite) -> StoreResult<()>;
    /// The newest `limit` invites, used, expired or open, newest first.
    async fn list_invites(&self, limit: usize) -> StoreResult<Vec<Invite>>;
    /// Deletes the invite with `code_hash` if no one has used it yet.
    /// `Conflict` if it is used (it stays, as the record of who registered
    /// with it), `NotFound` if there is no such invite.
    async fn revoke_invite(&self, code_hash: &str) -> StoreResult<()>;
    /// Creates a user with the role of an unused invite unexpired at `now`,
    /// and marks the invite used by that user, as one step: either both
    /// happen or neither. `None` (nothing changed) if there is no such
    /// invite; `Conflict` (the invite stays unused) if the email is taken.
    /// `user.role` is replaced by the invite's role.
    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;
}

/// The refusal to revoke an invite someone registered with.
pub fn invite_used(code_hash: &str, user: UserId) -> StoreError {
    StoreError::Conflict(format!(
        "invite {code_hash} was used by user {user}: it stays as the record of who registered with it"
    ))
}
