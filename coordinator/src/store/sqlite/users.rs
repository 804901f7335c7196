//! SQLite: users, their login sessions and invites.

use super::*;
use crate::store::invite_used;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.write(move |transaction| insert_user(transaction, user))
            .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.call(move |connection| select_user(connection, id))
            .await
    }

    async fn missing_users(&self, ids: Vec<UserId>) -> StoreResult<Vec<UserId>> {
        self.call(move |connection| {
            let mut exists = connection.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?;
            let mut missing = Vec::new();
            for id in ids {
                if !exists.exists([id])? {
                    missing.push(id);
                }
            }
            Ok(missing)
        })
        .await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email_lower = email.to_lowercase();
        self.call(move |connection| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_lower = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([email_lower], user_from)
                .optional()?)
        })
        .await
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) \
                     VALUES (?5, ?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    session.token_hash,
                    session.user_id,
                    micros(session.created_at),
                    micros(session.expires_at),
                    session.id.to_string()
                ])?;
            Ok(())
        })
        .await
    }

    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql = format!(
                "SELECT {} FROM sessions JOIN users ON users.id = sessions.user_id \
                 WHERE sessions.token_hash = ?1 AND sessions.expires_at > ?2",
                USER_COLUMNS
                    .split(", ")
                    .map(|column| format!("users.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(connection
                .prepare_cached(&sql)?
                .query_row(params![token_hash, micros(now)], user_from)
                .optional()?)
        })
        .await
    }

    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Session>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND expires_at > ?2 \
                 ORDER BY created_at DESC, rowid DESC"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let sessions = statement
                .query_map(params![user_id, micros(now)], session_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(sessions)
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let token_hash = token_hash.to_owned();
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
                .execute([token_hash])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn delete_user_session(&self, user_id: UserId, session_id: Uuid) -> StoreResult<bool> {
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id = ?2")?
                .execute(params![user_id, session_id.to_string()])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64> {
        let keep = keep_token_hash.map(str::to_owned);
        self.write(move |transaction| delete_sessions_but(transaction, user_id, keep.as_deref()))
            .await
    }

    async fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()> {
        let password_hash = password_hash.to_owned();
        let keep = keep_token_hash.map(str::to_owned);
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![user_id, password_hash])?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("user {user_id}")));
            }
            delete_sessions_but(transaction, user_id, keep.as_deref())?;
            Ok(())
        })
        .await
    }

    async fn create_invite(&self, invite: Invite) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO invites (code_hash, role, created_by, created_at, expires_at, used_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    invite.code_hash,
                    invite.role.as_str(),
                    invite.created_by,
                    micros(invite.created_at),
                    micros(invite.expires_at),
                    invite.used_by
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_invites(&self, limit: usize) -> StoreResult<Vec<Invite>> {
        self.call(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT code_hash, role, created_by, created_at, expires_at, used_by FROM invites \
                 ORDER BY created_at DESC, code_hash LIMIT ?1",
            )?;
            let invites = statement
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    let role: String = row.get(1)?;
                    Ok(Invite {
                        code_hash: row.get(0)?,
                        role: Role::parse(&role)
                            .ok_or_else(|| conversion_error(1, format!("unknown role {role:?}")))?,
                        created_by: row.get(2)?,
                        created_at: time_at(row, 3)?,
                        expires_at: time_at(row, 4)?,
                        used_by: row.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(invites)
        })
        .await
    }

    async fn revoke_invite(&self, code_hash: &str) -> StoreResult<()> {
        let code_hash = code_hash.to_owned();
        self.write(move |transaction| {
            let used_by: Option<Option<UserId>> = transaction
                .prepare_cached("SELECT used_by FROM invites WHERE code_hash = ?1")?
                .query_row([&code_hash], |row| row.get(0))
                .optional()?;
            match used_by {
                None => Err(StoreError::NotFound(format!("no invite {code_hash}"))),
                Some(Some(user)) => Err(invite_used(&code_hash, user)),
                Some(None) => {
                    transaction
                        .prepare_cached("DELETE FROM invites WHERE code_hash = ?1")?
                        .execute([&code_hash])?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let code_hash = code_hash.to_owned();
        self.write(move |transaction| {
            let role: Option<String> = transaction
                .prepare_cached(
                    "SELECT role FROM invites WHERE code_hash = ?1 AND used_by IS NULL AND expires_at > ?2",
                )?
                .query_row(params![code_hash, micros(now)], |row| row.get(0))
                .optional()?;
            let Some(role) = role.as_deref().and_then(Role::parse) else {
                return Ok(None);
            };
            let created = insert_user(transaction, NewUser { role, ..user })?;
            transaction
                .prepare_cached("UPDATE invites SET used_by = ?2 WHERE code_hash = ?1")?
                .execute(params![code_hash, created.id])?;
            Ok(Some(created))
        })
        .await
    }
}
