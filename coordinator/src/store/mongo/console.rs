//! The console's lists on MongoDB.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::{attempt_from, MongoStore};
use crate::store::console::{ChallengeAttemptFilter, ConsoleStore};
use crate::store::{Attempt, Page, StoreResult};

#[async_trait]
impl ConsoleStore for MongoStore {
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<i64>,
    ) -> StoreResult<Vec<Attempt>> {
        // Served by the `{challenge_id, status}` index.
        let mut query = doc! { "challenge_id": filter.challenge_id };
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        if let Some(user_id) = filter.user_id {
            query.insert("user_id", user_id);
        }
        if let Some(after) = page.after {
            query.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many("attempts", query, doc! { "_id": -1 }, i64::from(page.limit))
            .await?;
        documents.iter().map(attempt_from).collect()
    }
}
