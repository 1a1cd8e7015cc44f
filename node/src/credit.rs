//! A volunteer's credit: `canopy-node credit` asks the coordinator for this identity's totals
//! in the contribution ledger, and a joined node asks every few minutes so that its status
//! (and `canopy-node status`) shows them. The answer is signed by the coordinator's key, as
//! every message is, and nobody can ask for another identity's: the query is signed by it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use canopy_node::network::{self, Client, NetworkConfig};
use canopy_node::store::ChunkStore;
use canopy_node::{identity, lock};
use canopy_protocol::messages::{CreditQuery, CreditReport, Message};
use libp2p::{Multiaddr, PeerId};

/// How often a joined node asks for its credit.
const EVERY: Duration = Duration::from_secs(120);
/// How long `canopy-node credit` tries to reach the coordinator.
const REACH: Duration = Duration::from_secs(30);

/// Asks `coordinator` for this node's credit once.
async fn ask(client: &Client, coordinator: PeerId) -> anyhow::Result<CreditReport> {
    match client
        .request(coordinator, 0, Message::CreditQuery(CreditQuery {}))
        .await?
    {
        Message::CreditReport(report) => Ok(report),
        other => anyhow::bail!("the coordinator answered {:?}", other.kind()),
    }
}

/// The credit in a volunteer's words.
pub(crate) fn words(report: &CreditReport) -> String {
    if !report.known {
        return "no credit yet: the coordinator has no record of this identity".into();
    }
    format!(
        "{} tokens trained in {} accepted result(s) ({} confirmed by a re-run), {} refused, {:.1} min of compute",
        report.tokens,
        report.accepted,
        report.verified,
        report.rejected,
        report.compute_ms as f64 / 60_000.0
    )
}

/// Keeps asking `coordinator` for this node's credit in the background; the last answer is
/// in the returned cell.
pub(crate) fn watch(client: Client, coordinator: PeerId) -> Arc<Mutex<Option<CreditReport>>> {
    let cell = Arc::new(Mutex::new(None));
    let last = cell.clone();
    tokio::spawn(async move {
        // The first answer once the node has joined, then every EVERY.
        tokio::time::sleep(Duration::from_secs(5)).await;
        loop {
            match ask(&client, coordinator).await {
                Ok(report) => *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report),
                Err(e) => tracing::debug!("asking for this node's credit: {e:#}"),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    cell
}

/// `canopy-node credit`: this identity's credit from the coordinator at `addr`.
pub(crate) async fn command(
    dir: &Path,
    identity: Option<&Path>,
    addr: Multiaddr,
    json: bool,
) -> anyhow::Result<()> {
    let coordinator = canopy_node::cli::coordinator_peer(&addr)?;
    let key_file = lock::identity_file(dir, identity);
    let (keys, _) = identity::load_or_create_at(&key_file)
        .with_context(|| format!("loading the identity {}", key_file.display()))?;
    // Asking stores nothing: a store of its own, in a temporary directory, so a node running
    // on this data directory is not disturbed.
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let store = Arc::new(ChunkStore::open(scratch.path(), 1 << 20).context("a scratch store")?);
    let config = NetworkConfig {
        listen: Vec::new(),
        bootstrap: vec![addr.clone()],
        ..NetworkConfig::default()
    };
    let (client, _events, task) = network::start(keys.clone(), store, config)
        .await
        .context("starting the swarm")?;
    let deadline = tokio::time::Instant::now() + REACH;
    let report = loop {
        match ask(&client, coordinator).await {
            Ok(report) => break report,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("asking {addr} for this node's credit")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let _ = client.shutdown().await;
    task.abort();
    if json {
        println!(
            "{}",
            serde_json::json!({ "peer_id": keys.peer_id().to_string(), "credit": report })
        );
    } else {
        println!("peer id  {}", keys.peer_id());
        println!("credit   {}", words(&report));
        println!(
            "this credit belongs to the key in {}: back it up to keep it",
            key_file.display()
        );
    }
    Ok(())
}
