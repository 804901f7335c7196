//! Registered graders and the cluster tokens they register with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::{GraderId, UserId};
use sqlarena_common::{GraderState, Lane};
use uuid::Uuid;

use super::{Job, Page, StoreResult};

/// A registered grader node.
#[derive(Debug, Clone, PartialEq)]
pub struct Grader {
    pub id: GraderId,
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub lanes: Vec<Lane>,
    pub slots: u32,
    pub state: GraderState,
    /// sha256 of the grader token.
    pub token_hash: String,
    pub last_heartbeat: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    pub jobs_done: u64,
    /// The cluster token the grader registered with (`None` for graders
    /// registered before tokens were recorded): revoking it cuts the grader off.
    pub cluster_token_id: Option<Uuid>,
}

/// A cluster token: graders register with it. Only its sha256 is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterToken {
    pub id: Uuid,
    pub label: String,
    pub token_hash: String,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

/// Registered graders and the cluster tokens they register with.
#[async_trait]
pub trait GraderStore: Send + Sync {
    /// Stores a newly registered grader.
    async fn create_grader(&self, grader: Grader) -> StoreResult<()>;
    /// Returns a grader.
    async fn get_grader(&self, id: GraderId) -> StoreResult<Option<Grader>>;
    /// Returns the grader with this token hash.
    async fn get_grader_by_token(&self, token_hash: &str) -> StoreResult<Option<Grader>>;
    /// Lists graders, newest first by id (ids are UUID v7, so this is the
    /// order they registered in); a page starts below the id `page.after`.
    async fn list_graders(&self, page: Page<GraderId>) -> StoreResult<Vec<Grader>>;
    /// Records a heartbeat of a grader that is not DEAD; returns it, or
    /// `None` if it is DEAD or unknown (it must register again).
    async fn touch_grader(&self, id: GraderId, now: DateTime<Utc>) -> StoreResult<Option<Grader>>;
    /// Sets a grader's state; DEAD is final (returns false if already DEAD).
    async fn set_grader_state(&self, id: GraderId, state: GraderState) -> StoreResult<bool>;
    /// Marks every ALIVE or DRAINING grader whose last heartbeat is before
    /// `cutoff` as DEAD and returns them.
    async fn mark_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<Grader>>;
    /// Forgets DEAD graders whose last heartbeat is before `cutoff` (they
    /// leave the admin lists) and returns how many.
    async fn delete_dead_graders(&self, cutoff: DateTime<Utc>) -> StoreResult<u64>;
    /// Lists the jobs a grader holds a lease on (LEASED to it), oldest first.
    async fn list_grader_leases(&self, grader_id: GraderId) -> StoreResult<Vec<Job>>;

    /// Stores a cluster token.
    async fn create_cluster_token(&self, token: ClusterToken) -> StoreResult<()>;
    /// Lists cluster tokens, newest first.
    async fn list_cluster_tokens(&self) -> StoreResult<Vec<ClusterToken>>;
    /// Returns the cluster token with this hash (revoked or not).
    async fn get_cluster_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<ClusterToken>>;
    /// Returns a cluster token by id (revoked or not).
    async fn get_cluster_token(&self, id: Uuid) -> StoreResult<Option<ClusterToken>>;
    /// Revokes a cluster token; false if there is none with this id.
    async fn revoke_cluster_token(&self, id: Uuid) -> StoreResult<bool>;
}
