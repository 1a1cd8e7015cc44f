//! canopy-node: the peer that volunteers run on desktops and institutions run on cluster nodes.
//!
//! - [`identity`]: the node's ed25519 identity on disk (also its libp2p identity).
//! - [`store`]: the content-addressed chunk store with a size cap.
//! - [`network`]: the libp2p swarm, chunk exchange and peer scoring, behind a [`network::Client`].
//! - [`cli`]: the command line of the `canopy-node` binary.
//!
//! The coordinator reuses this library for its own swarm and store. The task worker and the
//! volunteer CLI build on it.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod error;
pub mod identity;
pub mod network;
pub mod store;

pub use error::NodeError;

/// The version string this build reports to peers and prints in `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
