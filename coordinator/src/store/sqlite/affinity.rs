//! SQLite: the bundles each grader holds, and claims by affinity.
//!
//! A grader's bundles are rows of `grader_bundles`, keyed by version hash
//! first, so "does another ALIVE grader hold this bundle" is one seek (and
//! a lookup of each holder's state). Queued jobs are indexed by bundle
//! (`jobs_queued_by_bundle`, over the payload's `version_hash`), so the
//! oldest queued job of a held bundle is one seek per bundle.

use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::store::affinity::{
    bundle_of, choose, earliest, openness, Affinity, AffinityClaim, AffinityStore, Openness,
    QueuedJob, OPEN_SCAN_LIMIT,
};

/// Created with the main schema at every open (schema version 9).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS grader_bundles (
    version_hash TEXT NOT NULL,
    grader_id TEXT NOT NULL,
    PRIMARY KEY (version_hash, grader_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grader_bundles_by_grader ON grader_bundles (grader_id);
-- A forgotten grader's bundles go with it.
CREATE TRIGGER IF NOT EXISTS grader_bundles_forgotten AFTER DELETE ON graders
BEGIN
    DELETE FROM grader_bundles WHERE grader_id = OLD.id;
END;
CREATE INDEX IF NOT EXISTS jobs_queued_by_bundle
    ON jobs (lane_priority, json_extract(payload, '$.version_hash'), seq) WHERE state = 'QUEUED';
";

/// The oldest queued job of one bundle in one lane: one seek in
/// `jobs_queued_by_bundle`.
const OLDEST_OF_BUNDLE_SQL: &str = "SELECT seq, timeout_ms, created_at, \
     json_extract(payload, '$.version_hash') FROM jobs \
     WHERE state = 'QUEUED' AND lane_priority = ?1 AND json_extract(payload, '$.version_hash') = ?2 \
     ORDER BY seq LIMIT 1";
/// The oldest queued jobs of one lane: a range of `jobs_queued`.
const OLDEST_QUEUED_SQL: &str = "SELECT seq, timeout_ms, created_at, \
     json_extract(payload, '$.version_hash') FROM jobs \
     WHERE state = 'QUEUED' AND lane_priority = ?1 ORDER BY seq LIMIT ?2";
/// Whether an ALIVE grader other than ?2 holds bundle ?1.
const HELD_ELSEWHERE_SQL: &str = "SELECT EXISTS (SELECT 1 FROM grader_bundles b \
     JOIN graders g ON g.id = b.grader_id \
     WHERE b.version_hash = ?1 AND b.grader_id <> ?2 AND g.state = 'ALIVE')";

fn queued_from(row: &Row<'_>) -> rusqlite::Result<QueuedJob> {
    Ok(QueuedJob {
        seq: row.get(0)?,
        timeout_ms: row.get::<_, i64>(1)?.unsigned_abs(),
        created_at: time_at(row, 2)?,
        version_hash: row.get(3)?,
    })
}

fn bundles_of(connection: &Connection, grader_id: GraderId) -> StoreResult<BTreeSet<String>> {
    Ok(connection
        .prepare_cached("SELECT version_hash FROM grader_bundles WHERE grader_id = ?1")?
        .query_map([grader_id.to_string()], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

fn add_bundle(transaction: &Transaction<'_>, grader_id: GraderId, hash: &str) -> StoreResult<()> {
    transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO grader_bundles (version_hash, grader_id) VALUES (?1, ?2)",
        )?
        .execute(params![hash, grader_id.to_string()])?;
    Ok(())
}

#[async_trait]
impl AffinityStore for SqliteStore {
    async fn set_grader_bundles(
        &self,
        grader_id: GraderId,
        version_hashes: &[String],
    ) -> StoreResult<()> {
        let wanted: BTreeSet<String> = version_hashes.iter().cloned().collect();
        self.write(move |transaction| {
            let stored = bundles_of(transaction, grader_id)?;
            for gone in stored.difference(&wanted) {
                transaction
                    .prepare_cached(
                        "DELETE FROM grader_bundles WHERE version_hash = ?1 AND grader_id = ?2",
                    )?
                    .execute(params![gone, grader_id.to_string()])?;
            }
            for new in wanted.difference(&stored) {
                add_bundle(transaction, grader_id, new)?;
            }
            Ok(())
        })
        .await
    }

    async fn grader_bundles(&self, grader_id: GraderId) -> StoreResult<Vec<String>> {
        self.call(move |connection| Ok(bundles_of(connection, grader_id)?.into_iter().collect()))
            .await
    }

    async fn claim_jobs_by_affinity(
        &self,
        grader_id: GraderId,
        lanes: &[Lane],
        max: u32,
        affinity: &Affinity,
        now: DateTime<Utc>,
    ) -> StoreResult<AffinityClaim> {
        let priorities = lane_priorities(lanes);
        let mut affinity = affinity.clone();
        self.write(move |transaction| {
            let mut claim = AffinityClaim::default();
            while claim.jobs.len() < max as usize {
                let (job, reserved_until) =
                    claim_by_affinity(transaction, &priorities, grader_id, &affinity, now)?;
                claim.reserved_until = earliest(claim.reserved_until, reserved_until);
                let Some(job) = job else { break };
                if let Some(hash) = bundle_of(&job.payload) {
                    if !affinity.holds(hash) {
                        add_bundle(transaction, grader_id, hash)?;
                        affinity.held.push(hash.to_owned());
                    }
                }
                claim.jobs.push(job);
            }
            Ok(claim)
        })
        .await
    }
}

/// Claims one job by affinity (see [`crate::store::affinity`]); also
/// answers when the first job passed over as reserved opens.
fn claim_by_affinity(
    transaction: &Transaction<'_>,
    priorities: &[i64],
    grader_id: GraderId,
    affinity: &Affinity,
    now: DateTime<Utc>,
) -> StoreResult<(Option<Job>, Option<DateTime<Utc>>)> {
    let mut reserved_until = None;
    let mut live_queued = false;
    for &priority in priorities {
        let held = oldest_held(transaction, priority, affinity)?;
        let (open, lane_reserved_until, lane_queued) =
            oldest_open(transaction, priority, grader_id, affinity, now)?;
        reserved_until = earliest(reserved_until, lane_reserved_until);
        live_queued |= lane_queued;
        if let Some(chosen) = choose(held, open, affinity.max_reorder) {
            let job = lease_queued(transaction, chosen.seq, chosen.timeout_ms, grader_id, now)?;
            return Ok((Some(job), reserved_until));
        }
    }
    if live_queued {
        return Ok((None, reserved_until));
    }
    let job = match runs::next_batch_item(transaction, priorities)? {
        Some((seq, timeout_ms)) => Some(lease_queued(
            transaction,
            seq,
            timeout_ms.unsigned_abs(),
            grader_id,
            now,
        )?),
        None => None,
    };
    Ok((job, reserved_until))
}

/// The oldest queued job of lane `priority` whose bundle the grader holds.
fn oldest_held(
    transaction: &Transaction<'_>,
    priority: i64,
    affinity: &Affinity,
) -> StoreResult<Option<QueuedJob>> {
    let mut statement = transaction.prepare_cached(OLDEST_OF_BUNDLE_SQL)?;
    let mut oldest: Option<QueuedJob> = None;
    for hash in &affinity.held {
        let found = statement
            .query_row(params![priority, hash], queued_from)
            .optional()?;
        if let Some(found) = found {
            if oldest.as_ref().is_none_or(|oldest| found.seq < oldest.seq) {
                oldest = Some(found);
            }
        }
    }
    Ok(oldest)
}

/// The oldest queued job of lane `priority` that the grader may take
/// without holding its bundle, when the first reservation it passed over
/// ends, and whether the lane has any queued job.
fn oldest_open(
    transaction: &Transaction<'_>,
    priority: i64,
    grader_id: GraderId,
    affinity: &Affinity,
    now: DateTime<Utc>,
) -> StoreResult<(Option<QueuedJob>, Option<DateTime<Utc>>, bool)> {
    let mut scan = transaction.prepare_cached(OLDEST_QUEUED_SQL)?;
    let mut held_elsewhere = transaction.prepare_cached(HELD_ELSEWHERE_SQL)?;
    let mut holders_known: HashMap<String, bool> = HashMap::new();
    let mut reserved_until = None;
    let mut any_queued = false;
    // Read lazily: the first job is usually the one.
    for job in scan.query_map(params![priority, OPEN_SCAN_LIMIT], queued_from)? {
        let job = job?;
        any_queued = true;
        let until = match openness(&job, affinity, now) {
            Openness::Open => return Ok((Some(job), reserved_until, true)),
            Openness::ReservedIfHeldUntil(until) => until,
        };
        let hash = job.version_hash.clone().unwrap_or_default();
        let held = match holders_known.get(&hash) {
            Some(held) => *held,
            None => {
                let held: bool = held_elsewhere
                    .query_row(params![hash, grader_id.to_string()], |row| row.get(0))?;
                holders_known.insert(hash, held);
                held
            }
        };
        if !held {
            return Ok((Some(job), reserved_until, true));
        }
        reserved_until = earliest(reserved_until, Some(until));
    }
    Ok((None, reserved_until, any_queued))
}

#[cfg(test)]
mod tests {
    use super::super::tests::plan;
    use super::*;

    /// The claim's lookups are index seeks, not scans or sorts.
    #[test]
    fn affinity_queries_use_their_indexes() {
        let path = std::env::temp_dir()
            .join(format!(
                "sqlarena-affinity-plan-{}",
                Uuid::new_v4().simple()
            ))
            .join("store.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let connection = store.connection.lock().unwrap();
        for (sql, index) in [
            (OLDEST_OF_BUNDLE_SQL, "jobs_queued_by_bundle"),
            (OLDEST_QUEUED_SQL, "jobs_queued"),
            (HELD_ELSEWHERE_SQL, "PRIMARY KEY"),
        ] {
            let found = plan(&connection, sql);
            // `SCAN CONSTANT ROW` is the EXISTS wrapper, not a table scan.
            let scans = found.replace("SCAN CONSTANT ROW", "").contains("SCAN");
            assert!(
                found.contains(index) && !found.contains("TEMP B-TREE") && !scans,
                "{sql}: {found}"
            );
        }
    }
}
