//! SQLite: registered graders and the cluster tokens they register with.

use super::*;

#[async_trait]
impl GraderStore for SqliteStore {
    async fn create_grader(&self, grader: Grader) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO graders (id, name, hostname, version, lanes, slots, state, token_hash, \
                     last_heartbeat, registered_at, jobs_done, cluster_token_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    grader.id.to_string(),
                    grader.name,
                    grader.hostname,
                    grader.version,
                    to_json(&grader.lanes)?,
                    grader.slots,
                    grader.state.as_str(),
                    grader.token_hash,
                    micros(grader.last_heartbeat),
                    micros(grader.registered_at),
                    to_i64(grader.jobs_done, "jobs_done")?,
                    grader.cluster_token_id.map(|id| id.to_string())
                ])?;
            Ok(())
        })
        .await
    }

    async fn get_grader(&self, id: GraderId) -> StoreResult<Option<Grader>> {
        self.call(move |connection| select_grader(connection, id))
            .await
    }

    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql = format!("SELECT {GRADER_COLUMNS} FROM graders WHERE token_hash = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([token_hash], grader_from)
                .optional()?)
        })
        .await
    }

    async fn list_graders(&self, page: Page<GraderId>) -> StoreResult<Vec<Grader>> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {GRADER_COLUMNS} FROM graders WHERE ?1 IS NULL OR id < ?1 \
                 ORDER BY id DESC LIMIT ?2"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let after = page.after.map(|id| id.to_string());
            let graders = statement
                .query_map(params![after, sql_limit(page.limit)], grader_from)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(graders)
        })
        .await
    }

    async fn touch_grader(&self, id: GraderId, now: DateTime<Utc>) -> StoreResult<Option<Grader>> {
        self.write(move |transaction| {
            let sql = format!(
                "UPDATE graders SET last_heartbeat = ?2 WHERE id = ?1 AND state != 'DEAD' RETURNING {GRADER_COLUMNS}"
            );
            Ok(transaction.prepare_cached(&sql)?.query_row(params![id.to_string(), micros(now)], grader_from).optional()?)
        })
        .await
    }

    async fn set_grader_state(&self, id: GraderId, state: GraderState) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE graders SET state = ?2 WHERE id = ?1 AND state != 'DEAD'")?
                .execute(params![id.to_string(), state.as_str()])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>> {
        self.write(move |transaction| {
            let sql = format!(
                "UPDATE graders SET state = 'DEAD' WHERE state IN ('ALIVE', 'DRAINING') AND last_heartbeat < ?1 \
                 RETURNING {GRADER_COLUMNS}"
            );
            let mut statement = transaction.prepare_cached(&sql)?;
            let graders = statement.query_map([micros(cutoff)], grader_from)?.collect::<rusqlite::Result<_>>()?;
            Ok(graders)
        })
        .await
    }

    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM graders WHERE state = 'DEAD' AND last_heartbeat < ?1")?
                .execute([micros(cutoff)])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn list_grader_leases(&self, grader_id: GraderId) -> StoreResult<Vec<Job>> {
        self.call(move |connection| {
            select_jobs(connection, GRADER_LEASES_FILTER, [grader_id.to_string()])
        })
        .await
    }

    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()> {
        self.write(move |transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO cluster_tokens (id, label, token_hash, created_by, created_at, revoked) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    token.id.to_string(),
                    token.label,
                    token.token_hash,
                    token.created_by,
                    micros(token.created_at),
                    token.revoked
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>> {
        self.call(|connection| {
            let sql = format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens ORDER BY created_at DESC, rowid DESC");
            let mut statement = connection.prepare_cached(&sql)?;
            let tokens = statement.query_map([], cluster_token_from)?.collect::<rusqlite::Result<_>>()?;
            Ok(tokens)
        })
        .await
    }

    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>> {
        let token_hash = token_hash.to_owned();
        self.call(move |connection| {
            let sql =
                format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens WHERE token_hash = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([token_hash], cluster_token_from)
                .optional()?)
        })
        .await
    }

    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>> {
        self.call(move |connection| {
            let sql = format!("SELECT {CLUSTER_TOKEN_COLUMNS} FROM cluster_tokens WHERE id = ?1");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([id.to_string()], cluster_token_from)
                .optional()?)
        })
        .await
    }

    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool> {
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached("UPDATE cluster_tokens SET revoked = 1 WHERE id = ?1")?
                .execute([id.to_string()])?;
            Ok(changed > 0)
        })
        .await
    }
}
