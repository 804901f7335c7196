//! A small pool of idle runner connections, keyed by database, so that
//! consecutive jobs on the same test case skip the connection setup.
//!
//! Only connections that finished their last run cleanly come back; the
//! pool holds at most `capacity` idle connections in all (oldest dropped
//! first) so it stays well under the runner role's connection limit.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::query::RunnerSession;

/// Idle runner connections.
pub struct SessionPool {
    capacity: usize,
    idle: Mutex<VecDeque<(String, RunnerSession)>>,
}

impl SessionPool {
    /// Creates a pool holding at most `capacity` idle connections.
    pub fn new(capacity: usize) -> SessionPool {
        SessionPool {
            capacity,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes an open idle connection to `database`, if there is one.
    pub fn take(&self, database: &str) -> Option<RunnerSession> {
        let mut idle = self.idle.lock().expect("session pool lock");
        idle.retain(|(_, session)| session.is_open());
        let index = idle.iter().position(|(name, _)| name == database)?;
        idle.remove(index).map(|(_, session)| session)
    }

    /// Returns a connection after a clean run; broken ones are dropped.
    pub fn put(&self, database: &str, session: RunnerSession) {
        if !session.is_open() || self.capacity == 0 {
            return;
        }
        let mut idle = self.idle.lock().expect("session pool lock");
        idle.push_back((database.to_string(), session));
        while idle.len() > self.capacity {
            idle.pop_front();
        }
    }

    /// Drops every idle connection to `database`.
    pub fn forget(&self, database: &str) {
        self.idle
            .lock()
            .expect("session pool lock")
            .retain(|(name, _)| name != database);
    }
}
