//! Test and benchmark support shared by the workspace: starting the real
//! binaries ([`harness`]), the one HTTP test client ([`client`]), the demo
//! flow, a MongoDB test server, a headless browser ([`browser`]), and what
//! the end-to-end benchmarks share ([`bench`]) and where their time goes
//! ([`cost`]).

pub mod bench;
pub mod browser;
pub mod client;
pub mod cost;
pub mod demo;
pub mod harness;
pub mod mongo;
