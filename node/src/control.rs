//! How `canopy-node status`, `pause` and `resume` talk to a node running on the same data
//! directory: the running node rewrites `status.json` there every second and watches for a
//! `paused` file. Files work the same on every platform and need no open port.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::network::{PathCounters, Reachability};

/// The status file's name in the data directory.
pub const STATUS_FILE: &str = "status.json";
/// The pause flag's name in the data directory.
pub const PAUSE_FILE: &str = "paused";
/// A status file older than this belongs to a node that is no longer running.
pub const STALE_MS: u64 = 5_000;

/// What a running node writes about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its process id.
    pub pid: u32,
    /// Its peer id.
    pub peer: String,
    /// When this was written (ms since the epoch).
    pub updated_ms: u64,
    /// Seconds since it joined.
    pub uptime_s: u64,
    /// Connected peers.
    pub peers: usize,
    /// Chunk bytes served to others.
    pub bytes_served: u64,
    /// Chunk bytes fetched from others.
    pub bytes_fetched: u64,
    /// The compute each worker runs on.
    pub adapters: Vec<String>,
    /// Whether the volunteer paused it.
    pub paused: bool,
    /// The workers' shared state (task, progress, results).
    pub worker: serde_json::Value,
    /// Bytes in the chunk store.
    #[serde(default)]
    pub store_bytes: u64,
    /// Objects the chunk store holds.
    #[serde(default)]
    pub store_objects: usize,
    /// Objects this node announces as their provider.
    #[serde(default)]
    pub provider_records: usize,
    /// Other peers' provider records this node keeps for the DHT.
    #[serde(default)]
    pub remote_provider_records: usize,
    /// Whether and how other peers reach this node.
    #[serde(default)]
    pub reachability: Option<Reachability>,
    /// Relays holding a slot for this node.
    #[serde(default)]
    pub relays: Vec<String>,
    /// Bytes and hole punches by kind of path.
    #[serde(default)]
    pub paths: PathCounters,
    /// The total upload and download limits, bytes a second (0: none).
    #[serde(default)]
    pub upload_limit: u64,
    /// See `upload_limit`.
    #[serde(default)]
    pub download_limit: u64,
    /// This identity's credit as the coordinator last reported it.
    #[serde(default)]
    pub credit: Option<canopy_protocol::messages::CreditReport>,
    /// Why the node is not working, when a rule (not the volunteer) paused it.
    #[serde(default)]
    pub paused_by: Option<String>,
    /// Its rules for when it works, in words.
    #[serde(default)]
    pub rules: String,
}

fn io(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The pause flag's path.
pub fn pause_path(dir: &Path) -> PathBuf {
    dir.join(PAUSE_FILE)
}

/// Sets or clears the pause flag.
pub fn set_paused(dir: &Path, paused: bool) -> Result<(), NodeError> {
    let path = pause_path(dir);
    if paused {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        std::fs::write(&path, b"paused by the volunteer\n").map_err(|e| io(&path, e))
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }
}

/// Whether the pause flag is set.
pub fn is_paused(dir: &Path) -> bool {
    pause_path(dir).exists()
}

/// Writes the status file (atomically: readers never see half of it).
pub fn write_status(dir: &Path, status: &NodeStatus) -> Result<(), NodeError> {
    let path = dir.join(STATUS_FILE);
    let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(status)
        .map_err(|e| NodeError::BadObject(format!("status: {e}")))?;
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
}

/// Reads the status file; `None` when there is none.
pub fn read_status(dir: &Path) -> Result<Option<NodeStatus>, NodeError> {
    let path = dir.join(STATUS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NodeError::BadObject(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Registers for Ctrl-C and SIGTERM now; the future resolves when either arrives. Nodes and
/// the coordinator use it so that leaving is always clean.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| NodeError::Network(format!("listening for SIGTERM: {e}")))?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_pause_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_status(dir.path()).unwrap().is_none());
        let status = NodeStatus {
            pid: 7,
            peer: "p".into(),
            updated_ms: 1,
            uptime_s: 2,
            peers: 3,
            bytes_served: 4,
            bytes_fetched: 5,
            adapters: vec!["cpu".into()],
            paused: false,
            worker: serde_json::json!({"state": "idle"}),
            store_bytes: 6,
            store_objects: 7,
            reachability: Some(Reachability::Relayed),
            relays: vec!["r".into()],
            paths: PathCounters {
                hole_punches: 1,
                ..PathCounters::default()
            },
            upload_limit: 8,
            download_limit: 9,
            provider_records: 8,
            remote_provider_records: 9,
            paused_by: Some("on battery".into()),
            rules: "works whenever allowed; pauses on battery".into(),
            credit: Some(canopy_protocol::messages::CreditReport {
                known: true,
                tokens: 10,
                ..Default::default()
            }),
        };
        write_status(dir.path(), &status).unwrap();
        assert_eq!(read_status(dir.path()).unwrap(), Some(status));
        assert!(!is_paused(dir.path()));
        set_paused(dir.path(), true).unwrap();
        assert!(is_paused(dir.path()));
        set_paused(dir.path(), false).unwrap();
        set_paused(dir.path(), false).unwrap();
        assert!(!is_paused(dir.path()));
        std::fs::write(dir.path().join(STATUS_FILE), b"{not json").unwrap();
        assert!(read_status(dir.path()).is_err());
    }
}
