//! End-to-end tests of Canopy: real binaries and real swarms on loopback. One test binary for
//! the whole crate keeps link times down.

mod byzantine;
mod churn;
mod coordinator;
mod corpus;
mod corpus_swarm;
mod dashboard;
mod demo;
mod deploy;
mod interop;
mod language;
mod library;
mod limits;
mod nat;
mod node_cli;
mod polite;
mod release;
mod service;
mod soak;
mod swarm;
mod sybil;
