//! Presence: a grader holds one long-lived request open (the presence
//! stream) for as long as it runs. When its process dies the kernel closes
//! the socket, the coordinator sees the stream end, and after a short grace
//! (a reconnect after a network blip keeps the leases) it declares the
//! grader dead and takes its leases back, counting a try against each job.
//! A grader that goes silent with its socket still open (a partition) is
//! still found by the heartbeat timeout.
//!
//! The stream lives on one coordinator; the grader's other requests may go
//! to another sharing the store. The take-back is therefore decided through
//! the store: a grader that reconnected or heartbeated anywhere after the
//! stream ended has a `last_heartbeat` later than the end and keeps its
//! leases; otherwise it is made DEAD (every later call of it is refused)
//! and its leases are requeued under the lease fence (a result posted under
//! a lease taken back is refused as stale).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlarena_common::{GraderId, GraderState};

use super::{Jobs, JobsResult};
use crate::metrics::Metrics;
use crate::store::{Grader, TryCount};

/// How long after its presence stream ends a grader keeps its leases.
pub const PRESENCE_GRACE: Duration = Duration::from_millis(1000);
/// How often the presence stream sends a byte (a write to a socket whose
/// peer is gone fails, which ends the stream if no read noticed first).
pub const PRESENCE_TICK: Duration = Duration::from_millis(100);
/// The tick at which a new stream touches its grader again (half a grace
/// after it opened; see [`PresenceGuard::confirm`]).
pub const PRESENCE_CONFIRM_TICK: u32 = 5;

/// The presence streams open on this coordinator: per grader, a counter
/// bumped by each new stream, so an ending stream knows whether a newer one
/// replaced it here.
#[derive(Debug, Default)]
pub struct Presence {
    streams: Mutex<HashMap<GraderId, u64>>,
}

impl Presence {
    /// Records a new stream of `grader_id`; returns its generation.
    fn open(&self, grader_id: GraderId) -> u64 {
        let mut streams = self.streams.lock().expect("presence lock");
        let generation = streams.entry(grader_id).or_default();
        *generation += 1;
        *generation
    }

    /// True while the stream `generation` is the newest of `grader_id` here.
    fn is_newest(&self, grader_id: GraderId, generation: u64) -> bool {
        self.streams.lock().expect("presence lock").get(&grader_id) == Some(&generation)
    }

    /// Forgets `grader_id` unless a newer stream replaced `generation`.
    fn forget(&self, grader_id: GraderId, generation: u64) {
        let mut streams = self.streams.lock().expect("presence lock");
        if streams.get(&grader_id) == Some(&generation) {
            streams.remove(&grader_id);
        }
    }
}

/// Held by an open presence stream; when the stream ends (the response body
/// is dropped: the connection closed) it schedules the take-back.
pub struct PresenceGuard {
    jobs: Jobs,
    grader_id: GraderId,
    generation: u64,
}

impl PresenceGuard {
    /// Touches the grader once more, half a grace after the stream opened.
    /// A coordinator notices a closed stream a little after the close (at
    /// its next read or failed write, within two ticks); a grader that
    /// reconnected to another coordinator at once must still show up as
    /// seen after that coordinator noticed, and before its grace ends.
    pub async fn confirm(&self) {
        if let Err(error) = self
            .jobs
            .store
            .touch_grader(self.grader_id, Utc::now())
            .await
        {
            tracing::warn!(grader_id = %self.grader_id, %error, "presence confirmation failed");
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let (jobs, grader_id, generation) = (self.jobs.clone(), self.grader_id, self.generation);
        if jobs.shutdown.is_cancelled() {
            // The coordinator is stopping, not the grader.
            return;
        }
        // Dropped outside a runtime: it is going away with the coordinator.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A dead process can no longer be seen after this moment.
        let ended_at = Utc::now();
        runtime.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(PRESENCE_GRACE) => {}
                () = jobs.shutdown.cancelled() => return,
            }
            let replaced = !jobs.presence.is_newest(grader_id, generation);
            jobs.presence.forget(grader_id, generation);
            if replaced {
                return;
            }
            if let Err(error) = jobs.take_back_absent(grader_id, ended_at).await {
                tracing::warn!(%grader_id, %error, "taking back an absent grader's leases failed");
            }
        });
    }
}

/// True when a heartbeat must write the grader's `last_heartbeat`: at most
/// once per heartbeat `interval`. Between writes a heartbeat writes
/// nothing. A grader heartbeating every `interval` then has a stored
/// `last_heartbeat` at most about two intervals old, within the timeout of
/// `missed_heartbeats` (3) intervals, so a live grader is never declared
/// dead, and a silent one still is (by any coordinator, after a restart
/// too: the decision reads only the store).
pub fn heartbeat_write_due(grader: &Grader, now: DateTime<Utc>, interval: Duration) -> bool {
    let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    now - grader.last_heartbeat >= interval
}

impl Jobs {
    /// Opens a presence stream for a grader (touching it, so a coordinator
    /// whose stream of it just ended sees the reconnection); the guard
    /// schedules the take-back when dropped.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open_presence(&self, grader_id: GraderId) -> JobsResult<PresenceGuard> {
        self.store.touch_grader(grader_id, Utc::now()).await?;
        let generation = self.presence.open(grader_id);
        Ok(PresenceGuard {
            jobs: self.clone(),
            grader_id,
            generation,
        })
    }

    /// Declares a grader whose presence stream was seen closed at `ended_at`
    /// dead and takes its leases back, unless it showed up since (a heartbeat, a new
    /// stream on any coordinator) or is already dead.
    async fn take_back_absent(
        &self,
        grader_id: GraderId,
        ended_at: DateTime<Utc>,
    ) -> JobsResult<()> {
        let Some(grader) = self.store.get_grader(grader_id).await? else {
            return Ok(());
        };
        if grader.state == GraderState::Dead || grader.last_heartbeat > ended_at {
            return Ok(());
        }
        if !self
            .store
            .set_grader_state(grader_id, GraderState::Dead)
            .await?
        {
            return Ok(());
        }
        Metrics::incr(&self.metrics.graders_declared_dead);
        tracing::warn!(grader_id = %grader.id, name = %grader.name, "grader's presence stream closed, declared dead");
        let reason = format!(
            "grader {} ({}) went away (its connection closed)",
            grader.name, grader.hostname
        );
        self.release_grader(grader_id, TryCount::Counts, &reason)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grader_seen_at(last_heartbeat: DateTime<Utc>) -> Grader {
        Grader {
            id: GraderId::new_v7(),
            name: "g".into(),
            hostname: "h".into(),
            version: "v".into(),
            lanes: Vec::new(),
            slots: 1,
            state: GraderState::Alive,
            token_hash: String::new(),
            last_heartbeat,
            registered_at: last_heartbeat,
            jobs_done: 0,
            cluster_token_id: None,
        }
    }

    #[test]
    fn heartbeats_write_at_most_once_per_interval() {
        let interval = Duration::from_secs(2);
        let seen = Utc::now();
        let grader = grader_seen_at(seen);
        let at = |ms: i64| seen + chrono::Duration::milliseconds(ms);
        assert!(!heartbeat_write_due(&grader, at(0), interval));
        assert!(!heartbeat_write_due(&grader, at(1999), interval));
        assert!(heartbeat_write_due(&grader, at(2000), interval));
        assert!(heartbeat_write_due(&grader, at(60_000), interval));
    }
}
