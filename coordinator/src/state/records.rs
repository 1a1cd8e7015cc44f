//! The rows of the state database as the coordinator reads them: peers, rounds, tasks,
//! leases, results and corpus runs and builds, and the kinds and statuses they carry.

use canopy_protocol::Digest;
use canopy_protocol::messages::Tier;
use serde::Serialize;

use super::status::{CorpusRunStatus, LeaseStatus, ResultStatus, TaskKind, TaskStatus};

/// A node the coordinator knows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRecord {
    /// Its peer id.
    pub peer: String,
    /// `volunteer` or `datacenter`.
    pub tier: Tier,
    /// Display name.
    pub name: Option<String>,
    /// Organisation.
    pub org: Option<String>,
    /// Country code.
    pub country: Option<String>,
    /// Reputation points.
    pub reputation: i64,
    /// Whether it is banned.
    pub banned: bool,
    /// Measured training throughput.
    pub tokens_per_sec: Option<f64>,
    /// Tasks it may hold at once.
    pub slots: u32,
    /// When it first joined (ms since the epoch).
    pub joined_ms: u64,
    /// When it was last heard from.
    pub last_seen_ms: u64,
}

/// One round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    /// The round number (= model version).
    pub round: u64,
    /// Root of the model version it trains from.
    pub model_root: Digest,
    /// Root of the outer optimizer's momentum after the previous round, if any.
    pub momentum_root: Option<Digest>,
    /// When it opened.
    pub opened_ms: u64,
    /// When it closed.
    pub closed_ms: Option<u64>,
    /// Mean inner training loss of the accepted updates.
    pub train_loss: Option<f64>,
    /// Held-out loss of the model this round produced.
    pub eval_loss: Option<f64>,
    /// Updates accepted.
    pub accepted: u64,
    /// Updates rejected.
    pub rejected: u64,
    /// Bytes received (updates).
    pub bytes_in: u64,
    /// Bytes served (model and data chunks).
    pub bytes_out: u64,
}

/// The `round` of corpus tasks: they precede training and belong to no training round.
pub const CORPUS_ROUND: u64 = u32::MAX as u64;

/// One corpus result received on the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorpusRun {
    /// The lease it ran under.
    pub lease: u64,
    /// The task.
    pub task: u64,
    /// The build.
    pub build: u64,
    /// The chunk's root.
    pub chunk: Digest,
    /// The sender.
    pub peer: String,
    /// The root of the result object it named (the blake3 of the encoding).
    pub result: Digest,
    /// Where it stands.
    pub status: CorpusRunStatus,
    /// Received at.
    pub received_ms: u64,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Its id.
    pub id: u64,
    /// Its round.
    pub round: u64,
    /// What it asks.
    pub kind: TaskKind,
    /// The encoded `TaskSpec`.
    pub spec: Vec<u8>,
    /// Where it stands.
    pub status: TaskStatus,
    /// For a verification task, the task it re-runs.
    pub verifies: Option<u64>,
    /// Whether a lease on it expired or was handed back (datacenter nodes take these first).
    pub reopened: bool,
    /// Training tokens it processes.
    pub tokens: u64,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseRecord {
    /// Its id.
    pub id: u64,
    /// The task.
    pub task: u64,
    /// The holder.
    pub peer: String,
    /// Granted at.
    pub granted_ms: u64,
    /// Expires at.
    pub expires_ms: u64,
    /// What became of it.
    pub status: LeaseStatus,
}

/// One received result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRecord {
    /// The lease it ran under.
    pub lease: u64,
    /// The task.
    pub task: u64,
    /// The sender.
    pub peer: String,
    /// The round it was computed for.
    pub round: u64,
    /// The update object's root.
    pub update_root: Option<Digest>,
    /// Norm of the decoded update.
    pub norm: Option<f64>,
    /// Mean inner loss reported.
    pub train_loss: Option<f64>,
    /// Tokens processed.
    pub tokens: u64,
    /// What became of it.
    pub status: ResultStatus,
    /// Why rejected.
    pub reason: Option<String>,
    /// Received at.
    pub received_ms: u64,
    /// Staleness weight in aggregation.
    pub weight: f64,
    /// The round whose aggregation used it.
    pub aggregated_in: Option<u64>,
    /// The change of held-out loss the update alone causes, as the coordinator measured it
    /// (nats; `None` where not measured).
    pub loss_change: Option<f64>,
}

/// One corpus build: how far it got and, once finished, its data card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusBuildRecord {
    /// Build number.
    pub id: u64,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it finished, if it has.
    pub finished_ms: Option<u64>,
    /// Chunks to process.
    pub chunks_total: u64,
    /// Chunks processed so far.
    pub chunks_done: u64,
    /// Documents ingested.
    pub documents_in: u64,
    /// Documents kept after filtering, deduplication and opt-outs.
    pub documents_kept: u64,
    /// The data card (JSON), once written.
    pub datacard: Option<serde_json::Value>,
}
