//! Challenge affinity: which challenge bundles each grader holds, and claims
//! that prefer a grader's own bundles.
//!
//! A bundle is one challenge version's databases, named by its version hash
//! ([`crate::jobs::version_hash`]); a grader builds one before the first
//! attempt of that version it grades, which costs far more than grading
//! (hundreds of milliseconds for a few thousand rows, minutes on real data
//! sets), and keeps the last 32 it built.
//!
//! # Where a grader's bundles come from
//!
//! The grader is the only one that knows its cache (it evicts on its own,
//! and loses everything when it restarts), so **it reports the hashes it
//! holds (built, or being built) on every lease request**, and the store
//! keeps that set as the grader's ([`AffinityStore::set_grader_bundles`]).
//! Between reports the store **also remembers what it leased**: a claimed
//! job's hash joins the claimant's set at once, so other graders see the
//! new holder while the bundle is being built. Hence:
//!
//! - a grader restart registers a new grader, whose set starts empty (the
//!   old one is DEAD or deregistered, and only ALIVE graders count);
//! - an eviction is gone from the set at the grader's next lease request;
//! - a coordinator restart loses nothing (the sets are in the store), and
//!   several coordinators sharing a MongoDB store see the same holders;
//! - a grader that reports nothing (older graders, simulated ones) is known
//!   by what it was leased, which can only overstate what it holds: a job
//!   then waits for it at most the affinity wait.
//!
//! Remembering leases alone would be wrong after an eviction; reports alone
//! would miss the bundle a grader is building until its next request.
//!
//! # The claim
//!
//! Per lane, in priority order, a grader G is offered:
//!
//! - the oldest queued job whose bundle G holds (the *held* candidate);
//! - the oldest queued job G may take without holding its bundle (the
//!   *open* candidate): one without a bundle (init jobs), one queued at
//!   least [`Affinity::wait`] ago, or one whose bundle no other ALIVE
//!   grader holds. A younger job is *reserved* for its holders, and the
//!   claim answers when the first reservation ends so the long poll can
//!   come back then.
//!
//! [`choose`] takes the held candidate unless the open one was queued more
//! than [`Affinity::max_reorder`] earlier: affinity may reorder the queue,
//! within that bound, so that under load too a grader keeps grading what it
//! has built, and no job is ever passed over by more than the bound.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sqlarena_common::{GraderId, JobPayload, Lane};

use super::{Job, StoreResult};

/// How many queued jobs a claim looks at, oldest first, for one it may
/// take without holding its bundle. Only jobs reserved for other graders
/// are passed over, and they are younger than the affinity wait, so this
/// bounds the claim's work in a burst; a job further back is found once
/// the reservations ahead of it end.
pub const OPEN_SCAN_LIMIT: u32 = 32;

/// The claiming grader's side of a claim by affinity.
#[derive(Debug, Clone, PartialEq)]
pub struct Affinity {
    /// Version hashes of the bundles the grader holds.
    pub held: Vec<String>,
    /// How long a queued job is reserved for graders that hold its bundle.
    pub wait: Duration,
    /// How much earlier a job the grader would have to build may have been
    /// queued than the oldest job whose bundle it holds, before it goes
    /// first.
    pub max_reorder: Duration,
}

impl Affinity {
    /// True when the grader holds `version_hash`.
    pub fn holds(&self, version_hash: &str) -> bool {
        self.held.iter().any(|held| held == version_hash)
    }
}

/// What [`AffinityStore::claim_jobs_by_affinity`] answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AffinityClaim {
    /// The jobs now leased to the grader.
    pub jobs: Vec<Job>,
    /// When the first job the grader passed over, reserved for the graders
    /// that hold its bundle, opens to it (`None`: it passed over none).
    pub reserved_until: Option<DateTime<Utc>>,
}

/// A queued job as a claim by affinity sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub seq: i64,
    pub timeout_ms: u64,
    pub created_at: DateTime<Utc>,
    /// The bundle it needs (attempts), `None` for init jobs.
    pub version_hash: Option<String>,
}

/// Whether a queued job may go to a grader that does not hold its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Openness {
    /// Anyone may take it.
    Open,
    /// It is too young: it may go to a grader that holds its bundle, if an
    /// ALIVE one does, until this time.
    ReservedIfHeldUntil(DateTime<Utc>),
}

/// Whether `job` may go now to the grader of `affinity`, before looking
/// for other holders of its bundle.
pub fn openness(job: &QueuedJob, affinity: &Affinity, now: DateTime<Utc>) -> Openness {
    let Some(version_hash) = &job.version_hash else {
        return Openness::Open;
    };
    let opens_at = job.created_at + affinity.wait;
    if affinity.holds(version_hash) || opens_at <= now {
        Openness::Open
    } else {
        Openness::ReservedIfHeldUntil(opens_at)
    }
}

/// Picks the job to lease from the held and the open candidate of one lane
/// (see the module documentation).
pub fn choose(
    held: Option<QueuedJob>,
    open: Option<QueuedJob>,
    max_reorder: Duration,
) -> Option<QueuedJob> {
    match (held, open) {
        (Some(held), Some(open)) if held.created_at - open.created_at > max_reorder => Some(open),
        (Some(held), _) => Some(held),
        (None, open) => open,
    }
}

/// The earlier of two optional times.
pub fn earliest(
    first: Option<DateTime<Utc>>,
    second: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (first, second) => first.or(second),
    }
}

/// The bundle a job's payload needs: an attempt's version hash.
pub fn bundle_of(payload: &JobPayload) -> Option<&str> {
    match payload {
        JobPayload::Attempt(attempt) => Some(&attempt.version_hash),
        JobPayload::Init(_) => None,
    }
}

/// The bundles each grader holds, and claims that prefer them.
#[async_trait]
pub trait AffinityStore: Send + Sync {
    /// Replaces the bundles `grader_id` holds by `version_hashes` (as it
    /// reported them; duplicates count once). Writes nothing when they are
    /// the ones stored.
    async fn set_grader_bundles(
        &self,
        grader_id: GraderId,
        version_hashes: &[String],
    ) -> StoreResult<()>;
    /// The bundles `grader_id` holds: as it last reported them, plus those
    /// of the jobs leased to it by [`AffinityStore::claim_jobs_by_affinity`]
    /// since. Sorted, each once; empty for an unknown grader.
    async fn grader_bundles(&self, grader_id: GraderId) -> StoreResult<Vec<String>>;
    /// Claims up to `max` QUEUED jobs in `lanes` for `grader_id` as
    /// [`JobStore::claim_jobs`](super::JobStore::claim_jobs) does, but by
    /// affinity (see the module documentation), and adds each claimed
    /// job's bundle to the grader's. Run items (the batch share) are taken
    /// as `claim_jobs` takes them, when no live job of the lanes is queued
    /// at all (reserved ones included).
    async fn claim_jobs_by_affinity(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        max: u32,
        affinity: &Affinity,
        now: DateTime<Utc>,
    ) -> StoreResult<AffinityClaim>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(seq: i64, created_at: DateTime<Utc>, version_hash: Option<&str>) -> QueuedJob {
        QueuedJob {
            seq,
            timeout_ms: 1000,
            created_at,
            version_hash: version_hash.map(str::to_owned),
        }
    }

    fn affinity(held: &[&str]) -> Affinity {
        Affinity {
            held: held.iter().map(|hash| hash.to_string()).collect(),
            wait: Duration::milliseconds(50),
            max_reorder: Duration::seconds(1),
        }
    }

    #[test]
    fn a_young_job_is_reserved_unless_held_or_without_a_bundle() {
        let now = Utc::now();
        let young = queued(1, now - Duration::milliseconds(10), Some("a"));
        assert_eq!(
            openness(&young, &affinity(&[]), now),
            Openness::ReservedIfHeldUntil(young.created_at + Duration::milliseconds(50))
        );
        assert_eq!(openness(&young, &affinity(&["a"]), now), Openness::Open);
        let init = queued(2, now, None);
        assert_eq!(openness(&init, &affinity(&[]), now), Openness::Open);
        let old = queued(3, now - Duration::milliseconds(50), Some("a"));
        assert_eq!(openness(&old, &affinity(&[]), now), Openness::Open);
    }

    #[test]
    fn a_held_job_goes_first_within_the_reorder_bound() {
        let now = Utc::now();
        let open = queued(1, now - Duration::seconds(3), Some("b"));
        let held_close = queued(2, now - Duration::seconds(2), Some("a"));
        let held_far = queued(3, now - Duration::milliseconds(500), Some("a"));
        let bound = Duration::seconds(1);
        assert_eq!(
            choose(Some(held_close.clone()), Some(open.clone()), bound),
            Some(held_close.clone())
        );
        assert_eq!(
            choose(Some(held_far), Some(open.clone()), bound),
            Some(open.clone())
        );
        assert_eq!(choose(None, Some(open.clone()), bound), Some(open));
        assert_eq!(
            choose(Some(held_close.clone()), None, bound),
            Some(held_close)
        );
        assert_eq!(choose(None, None, bound), None);
    }

    #[test]
    fn earliest_of_optional_times() {
        let now = Utc::now();
        let later = now + Duration::seconds(1);
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, Some(now)), Some(now));
        assert_eq!(earliest(Some(later), None), Some(later));
        assert_eq!(earliest(None, None), None);
    }
}
