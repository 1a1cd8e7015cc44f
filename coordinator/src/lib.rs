//! canopy-coordinator: the peer that runs a Canopy training project.
//!
//! - [`config`]: the project's `canopy.toml`.
//! - [`corpus`]: the corpus pipeline: governed sources, opt-outs, chunks, quality filters,
//!   exact and near dedup, training shards and the data card (plan / compute / decide).
//! - [`corpus_swarm`]: the corpus build on the swarm (`[corpus]` in canopy.toml): corpus
//!   tasks, two distinct peers per chunk, tie-breaks, then the pipeline's outputs.
//! - [`state`]: the SQLite state database (rounds, tasks, leases, peers, results, ledger).
//! - [`scheduler`]: leases, deadlines from measured throughput, tiers, bans.
//! - [`aggregate`]: robust aggregation (norm clipping, trimmed mean / median) and the
//!   Nesterov outer optimizer of DiLoCo.
//! - [`outer`]: the outer step as one pure function (aggregate, outer optimizer, int8 model
//!   step), shared by the coordinator and the benches.
//! - [`project`]: a project directory: data, model versions, opening and closing rounds.
//! - [`training`]: the training text and shards, the learning-rate schedule and each round's
//!   training tasks.
//! - [`service`]: the coordinator on the network: answering nodes, judging results.
//! - [`refusal`]: why a result is refused (one typed list for training and corpus results),
//!   the checks both judges run first, and how a refusal is recorded.
//! - [`run()`]: the coordinator as a library: a project served until it finishes or is shut
//!   down, reporting [`RunEvent`]s (`canopy-coordinator run` prints them).
//! - [`demo`]: the local swarm demo and its centralized baseline.
//! - [`dashboard`]: the HTTP server: dashboard page, JSON API, `/metrics`, guarded actions.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admission;
pub mod aggregate;
pub mod backup;
pub mod config;
pub mod corpus;
pub mod corpus_swarm;
pub mod dashboard;
pub mod demo;
pub mod export;
pub mod judge;
pub mod outer;
pub mod project;
pub mod refusal;
mod run;
pub use run::{Outcome, RunError, RunEvent, RunOptions, run};
mod retention;
pub mod samples;
pub mod sampling;
pub mod scheduler;
pub mod service;
pub mod state;
pub mod training;
