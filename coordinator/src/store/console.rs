//! What the web console reads beyond the other aggregates: a challenge's
//! attempts with filters, for its professor.

use async_trait::async_trait;
use sqlarena_common::AttemptStatus;

use super::{Attempt, Page, StoreResult};

/// Which attempts of a challenge to list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChallengeAttemptFilter {
    /// (An i64 until the id newtypes of `common/src/ids.rs` land here.)
    pub challenge_id: i64,
    /// Only attempts with this status.
    pub status: Option<AttemptStatus>,
    /// Only this user's attempts.
    pub user_id: Option<i64>,
}

/// Lists for the console.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Lists a challenge's attempts matching `filter`, newest first (by id),
    /// one page after `page.after`.
    async fn list_challenge_attempts(
        &self,
        filter: ChallengeAttemptFilter,
        page: Page<i64>,
    ) -> StoreResult<Vec<Attempt>>;
}
