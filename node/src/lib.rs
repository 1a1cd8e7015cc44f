//! canopy-node: the peer that volunteers run on desktops and institutions run on cluster nodes.
//!
//! This library will hold the libp2p swarm, the content-addressed chunk store, the task worker
//! and the CLI behind the `canopy-node` binary; the coordinator reuses it for its own swarm and
//! store. Today it holds what the binary needs to describe itself.

/// The version string this build reports to peers and prints in `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
