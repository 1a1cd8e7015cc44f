//! The `canopy-node` binary: a Canopy peer.

use clap::Parser;

/// A Canopy peer: contributes its GPU or CPU to a Canopy training project.
#[derive(Parser)]
#[command(name = "canopy-node", version = canopy_node::VERSION)]
struct Args {}

fn main() {
    let _args = Args::parse();
    eprintln!(
        "canopy-node {}: joining a swarm is not built yet; see the README for what runs today",
        canopy_node::VERSION
    );
}
