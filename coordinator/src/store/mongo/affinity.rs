//! MongoDB: the bundles each grader holds, and claims by affinity.
//!
//! A grader's bundles are an array `bundles` in its document ("does
//! another ALIVE grader hold this bundle" reads the ALIVE graders);
//! queued jobs are found by their payload's `version_hash`. A claim reads
//! its candidates, then takes the chosen job with the conditional write
//! every claim uses ([`MongoStore::take_queued`]); if another coordinator
//! took it first, it looks again.

use std::collections::{BTreeSet, HashMap};

use super::jobs::Taken;
use super::*;
use crate::store::affinity::{
    bundle_of, choose, earliest, openness, Affinity, AffinityClaim, AffinityStore, Openness,
    QueuedJob, OPEN_SCAN_LIMIT,
};

/// Indexes of the affinity lookups (created with the others).
pub(super) fn indexes() -> Vec<(&'static str, Document, Option<IndexOptions>)> {
    vec![(
        "jobs",
        doc! { "state": 1, "lane_priority": 1, "payload.version_hash": 1, "seq": 1 },
        None,
    )]
}

/// Reads a queued job from its whole document (nx-27017 leaves nested
/// paths such as `payload.version_hash` out of a projection).
fn queued_from(document: &Document) -> StoreResult<QueuedJob> {
    let fields = Fields::new(document, "job");
    let version_hash = match fields.document("payload")? {
        Some(payload) => Fields::new(payload, "job payload").opt_str("version_hash")?,
        None => None,
    };
    Ok(QueuedJob {
        seq: fields.i64("seq")?,
        timeout_ms: fields.i64("timeout_ms")?.unsigned_abs(),
        created_at: fields.time("created_at")?,
        version_hash,
    })
}

/// One look at the queue by affinity: the job to take, when the first job
/// passed over as reserved opens, and whether any live job is queued.
struct Choice {
    job: Option<QueuedJob>,
    reserved_until: Option<DateTime<Utc>>,
    live_queued: bool,
}

#[async_trait]
impl AffinityStore for MongoStore {
    async fn set_grader_bundles(
        &self,
        grader_id: GraderId,
        version_hashes: &[String],
    ) -> StoreResult<()> {
        let bundles: BTreeSet<&String> = version_hashes.iter().collect();
        let bundles: Vec<&String> = bundles.into_iter().collect();
        // Setting the array it already has changes nothing in MongoDB.
        self.collection("graders")
            .update_one(
                doc! { "_id": grader_id.to_string() },
                doc! { "$set": { "bundles": bundles } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn grader_bundles(&self, grader_id: GraderId) -> StoreResult<Vec<String>> {
        let found = self
            .collection("graders")
            .find_one(doc! { "_id": grader_id.to_string() })
            .projection(doc! { "bundles": 1 })
            .await
            .map_err(backend)?;
        let Some(document) = found else {
            return Ok(Vec::new());
        };
        let fields = Fields::new(&document, "grader");
        let bundles: BTreeSet<String> = fields
            .array("bundles")?
            .iter()
            .map(|hash| match hash {
                Bson::String(hash) => Ok(hash.clone()),
                other => Err(fields.invalid("bundles", format!("expected strings, found {other}"))),
            })
            .collect::<StoreResult<_>>()?;
        Ok(bundles.into_iter().collect())
    }

    async fn claim_jobs_by_affinity(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        max: u32,
        affinity: &Affinity,
        now: DateTime<Utc>,
    ) -> StoreResult<AffinityClaim> {
        let mut priorities: Vec<i64> = lanes.iter().map(|lane| lane.priority()).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut affinity = affinity.clone();
        let mut claim = AffinityClaim::default();
        'claims: while claim.jobs.len() < max as usize {
            let mut leased = None;
            for _ in 0..MAX_CONFLICT_RETRIES {
                let choice = self
                    .choose_by_affinity(&priorities, grader_id, &affinity, now)
                    .await?;
                claim.reserved_until = earliest(claim.reserved_until, choice.reserved_until);
                let Some(chosen) = choice.job else {
                    if choice.live_queued {
                        break 'claims;
                    }
                    // Only run items (or nothing) are queued: as any claim.
                    leased = self.claim_job(grader_id, lanes, now).await?;
                    break;
                };
                let filter = doc! { "state": JobState::Queued.as_str(), "seq": chosen.seq };
                match self.take_queued(filter, grader_id, now).await? {
                    Taken::Leased(job) => {
                        leased = Some(*job);
                        break;
                    }
                    // Another claim got it first: look again.
                    Taken::Nothing | Taken::Lost => continue,
                }
            }
            let Some(job) = leased else { break };
            if let Some(hash) = bundle_of(&job.payload) {
                if !affinity.holds(hash) {
                    self.collection("graders")
                        .update_one(
                            doc! { "_id": grader_id.to_string() },
                            doc! { "$addToSet": { "bundles": hash } },
                        )
                        .await
                        .map_err(backend)?;
                    affinity.held.push(hash.to_owned());
                }
            }
            claim.jobs.push(job);
        }
        Ok(claim)
    }
}

impl MongoStore {
    /// Looks at the queue of each lane, in priority order, as the module
    /// documentation of [`crate::store::affinity`] says.
    async fn choose_by_affinity(
        &self,
        priorities: &[i64],
        grader_id: GraderId,
        affinity: &Affinity,
        now: DateTime<Utc>,
    ) -> StoreResult<Choice> {
        let mut choice = Choice {
            job: None,
            reserved_until: None,
            live_queued: false,
        };
        for &priority in priorities {
            let held = self.oldest_held(priority, affinity).await?;
            let open = self.oldest_open(priority, grader_id, affinity, now).await?;
            choice.reserved_until = earliest(choice.reserved_until, open.reserved_until);
            choice.live_queued |= open.live_queued;
            choice.job = choose(held, open.job, affinity.max_reorder);
            if choice.job.is_some() {
                break;
            }
        }
        Ok(choice)
    }

    async fn oldest_held(
        &self,
        priority: i64,
        affinity: &Affinity,
    ) -> StoreResult<Option<QueuedJob>> {
        if affinity.held.is_empty() {
            return Ok(None);
        }
        let found = self
            .jobs()
            .find_one(doc! {
                "state": JobState::Queued.as_str(),
                "lane_priority": priority,
                "payload.version_hash": { "$in": &affinity.held },
            })
            .sort(doc! { "seq": 1 })
            .await
            .map_err(backend)?;
        found.as_ref().map(queued_from).transpose()
    }

    async fn oldest_open(
        &self,
        priority: i64,
        grader_id: GraderId,
        affinity: &Affinity,
        now: DateTime<Utc>,
    ) -> StoreResult<Choice> {
        let mut choice = Choice {
            job: None,
            reserved_until: None,
            live_queued: false,
        };
        let mut cursor = self
            .jobs()
            .find(doc! { "state": JobState::Queued.as_str(), "lane_priority": priority })
            .sort(doc! { "seq": 1 })
            .limit(i64::from(OPEN_SCAN_LIMIT))
            .await
            .map_err(backend)?;
        let mut holders_known: HashMap<String, bool> = HashMap::new();
        while let Some(document) = cursor.try_next().await.map_err(backend)? {
            let job = queued_from(&document)?;
            choice.live_queued = true;
            let until = match openness(&job, affinity, now) {
                Openness::Open => {
                    choice.job = Some(job);
                    break;
                }
                Openness::ReservedIfHeldUntil(until) => until,
            };
            let hash = job.version_hash.clone().unwrap_or_default();
            let held = match holders_known.get(&hash) {
                Some(held) => *held,
                None => {
                    let held = self.held_elsewhere(&hash, grader_id).await?;
                    holders_known.insert(hash, held);
                    held
                }
            };
            if !held {
                choice.job = Some(job);
                break;
            }
            choice.reserved_until = earliest(choice.reserved_until, Some(until));
        }
        Ok(choice)
    }

    /// Whether an ALIVE grader other than `grader_id` holds `version_hash`.
    ///
    /// Reads the ALIVE graders' bundles and looks in Rust: nx-27017 does
    /// not match an array field by one of its elements (`{bundles: hash}`),
    /// and the ALIVE graders are few.
    async fn held_elsewhere(&self, version_hash: &str, grader_id: GraderId) -> StoreResult<bool> {
        let graders = self
            .find_many(
                "graders",
                doc! {
                    "state": GraderState::Alive.as_str(),
                    "_id": { "$ne": grader_id.to_string() },
                },
                doc! { "_id": 1 },
                0,
            )
            .await?;
        for document in &graders {
            let fields = Fields::new(document, "grader");
            if fields
                .array("bundles")?
                .iter()
                .any(|held| matches!(held, Bson::String(held) if held == version_hash))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
