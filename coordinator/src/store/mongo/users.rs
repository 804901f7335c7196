//! MongoDB: users, their login sessions and invites.

use super::*;
use crate::store::invite_used;

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.check_email_free(&user.email).await?;
        let id = UserId(self.next_id("users").await?);
        self.insert_user(id, &user).await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let found = self
            .collection("users")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(user_from).transpose()
    }

    async fn missing_users(&self, ids: Vec<UserId>) -> StoreResult<Vec<UserId>> {
        let mut found = self
            .collection("users")
            .find(doc! { "_id": { "$in": ids.clone() } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(backend)?;
        let mut existing = std::collections::HashSet::new();
        while let Some(document) = found.try_next().await.map_err(backend)? {
            existing.insert(Fields::new(&document, "user").id::<UserId>("_id")?);
        }
        Ok(ids
            .into_iter()
            .filter(|id| !existing.contains(id))
            .collect())
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let filter = doc! { "email_lower": email.to_lowercase() };
        let found = self
            .collection("users")
            .find_one(filter)
            .await
            .map_err(backend)?;
        found.as_ref().map(user_from).transpose()
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        let document = doc! {
            "_id": &session.token_hash,
            "session_id": session.id.to_string(),
            "user_id": session.user_id,
            "created_at": bson_time(session.created_at),
            "expires_at": bson_time(session.expires_at),
        };
        self.collection("sessions")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_session_user(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let filter = doc! { "_id": token_hash, "expires_at": { "$gt": bson_time(now) } };
        let Some(session) = self
            .collection("sessions")
            .find_one(filter)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let user_id = Fields::new(&session, "session").id("user_id")?;
        self.get_user(user_id).await
    }

    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Session>> {
        let documents = self
            .find_many(
                "sessions",
                doc! { "user_id": user_id, "expires_at": { "$gt": bson_time(now) } },
                doc! { "created_at": -1, "_id": -1 },
                0,
            )
            .await?;
        documents.iter().map(session_from).collect()
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let deleted = self
            .collection("sessions")
            .delete_one(doc! { "_id": token_hash })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn delete_user_session(&self, user_id: UserId, session_id: Uuid) -> StoreResult<bool> {
        let deleted = self
            .collection("sessions")
            .delete_one(doc! { "user_id": user_id, "session_id": session_id.to_string() })
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id };
        if let Some(keep) = keep_token_hash {
            filter.insert("_id", doc! { "$ne": keep });
        }
        let deleted = self
            .collection("sessions")
            .delete_many(filter)
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count)
    }

    /// Two writes: the hash, then the other sessions. Between them a
    /// signed-in holder of an old session may still act for a moment, but
    /// cannot sign in with the old password.
    async fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        keep_token_hash: Option<&str>,
    ) -> StoreResult<()> {
        let updated = self
            .collection("users")
            .update_one(
                doc! { "_id": user_id },
                doc! { "$set": { "password_hash": password_hash } },
            )
            .await
            .map_err(backend)?;
        if updated.matched_count == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        self.delete_user_sessions(user_id, keep_token_hash).await?;
        Ok(())
    }

    async fn create_invite(&self, invite: Invite) -> StoreResult<()> {
        let document = doc! {
            "_id": &invite.code_hash,
            "role": invite.role.as_str(),
            "created_by": invite.created_by,
            "created_at": bson_time(invite.created_at),
            "expires_at": bson_time(invite.expires_at),
            "used_by": invite.used_by,
        };
        self.collection("invites")
            .insert_one(document)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_invites(&self, limit: usize) -> StoreResult<Vec<Invite>> {
        let documents = self
            .find_many(
                "invites",
                doc! {},
                doc! { "created_at": -1, "_id": 1 },
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await?;
        documents.iter().map(invite_from).collect()
    }

    /// One conditional delete; only when it deletes nothing is the invite
    /// read, to say why.
    async fn revoke_invite(&self, code_hash: &str) -> StoreResult<()> {
        let invites = self.collection("invites");
        let deleted = invites
            .delete_one(doc! { "_id": code_hash, "used_by": Bson::Null })
            .await
            .map_err(backend)?;
        if deleted.deleted_count == 1 {
            return Ok(());
        }
        let found = invites
            .find_one(doc! { "_id": code_hash })
            .await
            .map_err(backend)?;
        match found.as_ref().map(invite_from).transpose()? {
            Some(Invite {
                used_by: Some(user),
                ..
            }) => Err(invite_used(code_hash, user)),
            // Unused but not deleted: revoked by a concurrent call.
            _ => Err(StoreError::NotFound(format!("no invite {code_hash}"))),
        }
    }

    /// Claims the invite for the new user's id with one conditional write,
    /// then inserts the user; if the insert fails the claim is handed back,
    /// so the invite is used exactly when the user exists. (Invites stored
    /// before invites expired have no `expires_at` and are refused.)
    async fn create_invited_user(
        &self,
        user: NewUser,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        self.check_email_free(&user.email).await?;
        let id = UserId(self.next_id("users").await?);
        let invites = self.collection("invites");
        let claimed = invites
            .find_one_and_update(
                doc! {
                    "_id": code_hash,
                    "used_by": Bson::Null,
                    "expires_at": { "$gt": bson_time(now) },
                },
                doc! { "$set": { "used_by": id } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        let Some(invite) = claimed else {
            return Ok(None);
        };
        let role = Fields::new(&invite, "invite").parsed("role", Role::parse)?;
        match self.insert_user(id, &NewUser { role, ..user }).await {
            Ok(created) => Ok(Some(created)),
            Err(error) => {
                invites
                    .update_one(
                        doc! { "_id": code_hash, "used_by": id },
                        doc! { "$set": { "used_by": Bson::Null } },
                    )
                    .await
                    .map_err(backend)?;
                Err(error)
            }
        }
    }
}

fn invite_from(document: &Document) -> StoreResult<Invite> {
    let fields = Fields::new(document, "invite");
    let created_at = fields.time("created_at")?;
    Ok(Invite {
        code_hash: fields.str("_id")?.to_owned(),
        role: fields.parsed("role", Role::parse)?,
        created_by: fields.id("created_by")?,
        created_at,
        // Invites stored before invites expired have no `expires_at`; they
        // are refused, so they list as expired.
        expires_at: fields.opt_time("expires_at")?.unwrap_or(created_at),
        used_by: fields.opt_id("used_by")?,
    })
}
