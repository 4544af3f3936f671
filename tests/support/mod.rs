//! Helpers shared by the integration tests. Each test binary uses a different subset.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod fake_server;
pub mod processes;
pub mod stage;
pub mod swallower;

pub use cluster::*;
pub use fake_server::*;
pub use processes::*;
