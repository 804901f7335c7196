//! A small pool of idle runner connections, keyed by database and by what
//! they run, so that consecutive jobs on the same test case skip the
//! connection setup.
//!
//! A connection that ran the reference solution never comes back as a
//! student's connection (and the reverse), so the student's session holds
//! nothing but the student's statements. Only connections that finished
//! their last run cleanly come back; the pool holds at most `capacity` idle
//! connections in all (oldest dropped first) so it stays well under the
//! runner role's connection limit.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::session::RunnerSession;

/// What a runner connection is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Runs the student's query, and nothing else.
    Student,
    /// Runs the reference solution.
    Reference,
}

/// Idle runner connections.
pub struct SessionPool {
    capacity: usize,
    idle: Mutex<VecDeque<(String, SessionKind, RunnerSession)>>,
}

impl SessionPool {
    /// Creates a pool holding at most `capacity` idle connections.
    pub fn new(capacity: usize) -> SessionPool {
        SessionPool {
            capacity,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes an open idle connection of `kind` to `database`, if there is one.
    pub fn take(&self, database: &str, kind: SessionKind) -> Option<RunnerSession> {
        let mut idle = self.idle.lock().expect("session pool lock");
        idle.retain(|(_, _, session)| session.is_open());
        let index = idle
            .iter()
            .position(|(name, idle_kind, _)| name == database && *idle_kind == kind)?;
        idle.remove(index).map(|(_, _, session)| session)
    }

    /// Returns a connection after a clean run; broken ones are dropped.
    pub fn put(&self, database: &str, kind: SessionKind, session: RunnerSession) {
        if !session.is_open() || self.capacity == 0 {
            return;
        }
        let mut idle = self.idle.lock().expect("session pool lock");
        idle.push_back((database.to_string(), kind, session));
        while idle.len() > self.capacity {
            idle.pop_front();
        }
    }

    /// Drops every idle connection to `database`.
    pub fn forget(&self, database: &str) {
        self.idle
            .lock()
            .expect("session pool lock")
            .retain(|(name, _, _)| name != database);
    }
}
