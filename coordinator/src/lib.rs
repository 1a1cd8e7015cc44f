//! canopy-coordinator: the peer that runs a Canopy training project.
//!
//! It will schedule work, verify and aggregate results, keep the ledger in SQLite, build the
//! corpus and serve the dashboard (see DESIGN.md). Today it holds [`walkthrough`]: the protocol
//! walkthrough that `canopy-coordinator demo` runs until the local swarm demo replaces it.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod walkthrough;
