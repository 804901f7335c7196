//! End-to-end support: starting the real binaries, the demo flow, a MongoDB test server.

pub mod demo;
pub mod harness;
pub mod mongo;
