//! canopy-tests: end-to-end tests of real Canopy processes and real swarms on loopback.
//!
//! Shared helpers for those tests live here (building and locating binaries, running them with
//! a deadline), so the test files in `tests/` do not copy them.

pub mod adversary;
pub mod browser;
pub mod harness;
pub mod http;
pub mod netns;
pub mod processes;
pub mod report;
