//! The sqlarena grader: pulls jobs from a coordinator and runs them in a
//! hardened local PostgreSQL sandbox.
//!
//! - [`sandbox`]: roles, the hardened template, per-test-case databases,
//!   the bundle cache;
//! - [`run`]: init and attempt execution on runner connections;
//! - [`compare`] and [`timing`]: checking and timing results;
//! - [`client`] and [`daemon`]: the coordinator protocol and the job loop;
//! - [`config`]: the command line.

pub mod client;
pub mod compare;
pub mod config;
pub mod daemon;
pub mod error;
pub mod run;
pub mod sandbox;
pub mod sqltext;
pub mod timing;

pub use error::JobError;
