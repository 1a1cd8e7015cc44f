//! canopy-node: the peer that volunteers run on desktops and institutions run on cluster nodes.
//!
//! - [`identity`]: the node's ed25519 identity on disk (also its libp2p identity).
//! - [`gpus`]: which GPUs the workers run on (`--gpus`, the scheduler's variables).
//! - [`lock`]: one node per data directory and per identity.
//! - [`store`]: the content-addressed chunk store with a size cap.
//! - [`network`]: the libp2p swarm, chunk exchange and peer scoring, behind a [`network::Client`].
//! - [`metrics`]: Prometheus metrics (libp2p's, the node's) and a node's `/metrics`.
//! - [`polite`]: low priority, and the rules for when the node works (battery, idle, hours,
//!   a share of the time), as a background program should.
//! - [`objects`]: how model weights and updates are laid out as objects.
//! - [`worker`]: the task worker that runs leases from the coordinator.
//! - [`control`]: the status file and pause flag that `status`, `pause` and `resume` use.
//! - [`cli`]: the command line of the `canopy-node` binary.
//! - [`settings`]: `canopy-node.toml`, the node's settings file in its data directory.
//! - [`service`]: `canopy-node service install|uninstall`, the node as a service of the user
//!   (systemd user unit, launchd agent, Windows scheduled task).
//! - [`logging`]: log output of both binaries (`--log-format`, `RUST_LOG`, no colour off a
//!   terminal).
//!
//! The coordinator reuses this library for its own swarm, store and object layouts.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod buffers;
pub mod cli;
pub mod control;
pub mod error;
pub mod gpus;
pub mod identity;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod node;
pub mod objects;
pub mod polite;
pub mod service;
pub mod settings;
pub mod store;
pub mod worker;

pub use error::NodeError;
pub use node::{Node, NodeSettings};

/// The version string this build reports to peers and prints in `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
