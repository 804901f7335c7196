//! Challenge affinity in the jobs service: its settings, and the grader's
//! side of a claim (the bundles it holds). The rules are in
//! [`crate::store::affinity`]; the wake-ups in [`super::Dispatcher`].

use std::time::Duration;

use super::{Jobs, JobsResult};
use crate::config::Config;
use crate::store::affinity::Affinity;
use crate::store::Grader;

/// How leases prefer graders that hold a job's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinitySettings {
    /// How long a queued job is kept for the graders that hold its bundle.
    pub wait: Duration,
    /// The most a grader's own bundles may move a job ahead of older ones.
    pub max_reorder: Duration,
}

impl AffinitySettings {
    /// The coordinator's settings; `None` with `--no-affinity`.
    pub fn from_config(config: &Config) -> Option<AffinitySettings> {
        (!config.no_affinity).then(|| AffinitySettings {
            wait: Duration::from_millis(config.affinity_wait_ms),
            max_reorder: Duration::from_millis(config.affinity_max_reorder_ms),
        })
    }
}

/// A `std` duration as chrono's, saturating.
fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

impl Jobs {
    /// The grader's side of a claim by affinity. The bundles it `reported`
    /// become the ones the store keeps for it (they are the truth: it
    /// evicts and restarts on its own); a grader that reports nothing is
    /// taken to hold what the store remembers it was leased.
    ///
    /// # Errors
    /// Store failures.
    pub(super) async fn affinity_of(
        &self,
        grader: &Grader,
        reported: Option<Vec<String>>,
        settings: AffinitySettings,
    ) -> JobsResult<Affinity> {
        let held = match reported {
            Some(reported) => {
                self.store.set_grader_bundles(grader.id, &reported).await?;
                reported
            }
            None => self.store.grader_bundles(grader.id).await?,
        };
        Ok(Affinity {
            held,
            wait: chrono_duration(settings.wait),
            max_reorder: chrono_duration(settings.max_reorder),
        })
    }
}
