//! The messages the network speaks, carried as the payload of a signed
//! [`Envelope`](crate::envelope::Envelope). Each variant of [`Message`] has a [`MessageKind`]
//! that the envelope header names, so a receiver knows what to expect before it decodes.
//!
//! Versioning: the envelope header carries [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION); a
//! change to any type here that changes its encoding bumps it. Kinds are never renumbered; new
//! ones are appended.

mod node;
mod task;

pub use node::{
    AdapterInfo, AdapterKind, Capabilities, CreditQuery, CreditReport, Heartbeat, Join, JoinAck,
    MAX_ADAPTERS, Tier, UnknownTier,
};
pub use task::{
    AdamWParams, CorpusOutput, CorpusSpec, LeaseGrant, LeaseId, LeaseRelease, LeaseRenew,
    LeaseRenewed, MAX_NUM_PERM, MAX_SHARDS_PER_TASK, MinHashParams, ModelDelta, ReleaseReason,
    ResultAck, ShardTokens, TaskId, TaskOutput, TaskResult, TaskSpec, TrainOutput, TrainSpec,
};

use serde::{Deserialize, Serialize};

use crate::chunk::SignedManifest;
use crate::error::MessageError;
use crate::id::Digest;

/// Which message an envelope carries. The discriminants are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageKind {
    /// [`Join`]: a node introduces itself.
    Join,
    /// [`JoinAck`]: the coordinator's answer to a join.
    JoinAck,
    /// [`Heartbeat`]: a node is alive and says what it is doing.
    Heartbeat,
    /// [`LeaseGrant`]: the coordinator leases a task to a node.
    LeaseGrant,
    /// [`LeaseRenew`]: a node asks to keep its lease.
    LeaseRenew,
    /// [`LeaseRenewed`]: the coordinator extends a lease.
    LeaseRenewed,
    /// [`LeaseRelease`]: a node hands a lease back.
    LeaseRelease,
    /// [`TaskResult`]: a node returns a finished task.
    TaskResult,
    /// [`ResultAck`]: the coordinator has durably recorded (or refused) a result.
    ResultAck,
    /// [`ModelAnnouncement`]: a new model version is published.
    ModelAnnouncement,
    /// [`ChunkRequest`]: ask a peer for a chunk.
    ChunkRequest,
    /// [`ChunkResponse`]: a chunk, or word that the peer does not have it.
    ChunkResponse,
    /// [`LeaseRequest`]: a node asks for work.
    LeaseRequest,
    /// [`ManifestRequest`]: ask for the signed manifest of an object by its root.
    ManifestRequest,
    /// [`ManifestResponse`]: a signed manifest, or word that the peer has none.
    ManifestResponse,
    /// [`NoWork`]: the coordinator has no task for the node now.
    NoWork,
    /// [`CreditQuery`]: a node asks for its own credit.
    CreditQuery,
    /// [`CreditReport`]: the coordinator's answer: the asking identity's ledger totals.
    CreditReport,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// See [`Join`].
    Join(Join),
    /// See [`JoinAck`].
    JoinAck(JoinAck),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`LeaseGrant`].
    LeaseGrant(LeaseGrant),
    /// See [`LeaseRenew`].
    LeaseRenew(LeaseRenew),
    /// See [`LeaseRenewed`].
    LeaseRenewed(LeaseRenewed),
    /// See [`LeaseRelease`].
    LeaseRelease(LeaseRelease),
    /// See [`TaskResult`].
    TaskResult(TaskResult),
    /// See [`ResultAck`].
    ResultAck(ResultAck),
    /// See [`ModelAnnouncement`].
    ModelAnnouncement(Box<ModelAnnouncement>),
    /// See [`ChunkRequest`].
    ChunkRequest(ChunkRequest),
    /// See [`ChunkResponse`].
    ChunkResponse(ChunkResponse),
    /// See [`LeaseRequest`].
    LeaseRequest(LeaseRequest),
    /// See [`ManifestRequest`].
    ManifestRequest(ManifestRequest),
    /// See [`ManifestResponse`].
    ManifestResponse(Box<ManifestResponse>),
    /// See [`NoWork`].
    NoWork(NoWork),
    /// See [`CreditQuery`].
    CreditQuery(CreditQuery),
    /// See [`CreditReport`].
    CreditReport(CreditReport),
}

impl Message {
    /// The kind an envelope header names for this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Join(_) => MessageKind::Join,
            Message::JoinAck(_) => MessageKind::JoinAck,
            Message::Heartbeat(_) => MessageKind::Heartbeat,
            Message::LeaseGrant(_) => MessageKind::LeaseGrant,
            Message::LeaseRenew(_) => MessageKind::LeaseRenew,
            Message::LeaseRenewed(_) => MessageKind::LeaseRenewed,
            Message::LeaseRelease(_) => MessageKind::LeaseRelease,
            Message::TaskResult(_) => MessageKind::TaskResult,
            Message::ResultAck(_) => MessageKind::ResultAck,
            Message::ModelAnnouncement(_) => MessageKind::ModelAnnouncement,
            Message::ChunkRequest(_) => MessageKind::ChunkRequest,
            Message::ChunkResponse(_) => MessageKind::ChunkResponse,
            Message::LeaseRequest(_) => MessageKind::LeaseRequest,
            Message::ManifestRequest(_) => MessageKind::ManifestRequest,
            Message::ManifestResponse(_) => MessageKind::ManifestResponse,
            Message::NoWork(_) => MessageKind::NoWork,
            Message::CreditQuery(_) => MessageKind::CreditQuery,
            Message::CreditReport(_) => MessageKind::CreditReport,
        }
    }

    /// Checks the limits that the types alone do not express (text lengths, list sizes,
    /// parameter ranges). Receivers call it after decoding.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Message::Join(join) => join.validate(),
            Message::JoinAck(ack) => ack.validate(),
            Message::Heartbeat(hb) => hb.validate(),
            Message::LeaseGrant(grant) => grant.spec.validate(),
            Message::LeaseRelease(release) => release.validate(),
            Message::TaskResult(result) => result.validate(),
            Message::ResultAck(ack) => ack.validate(),
            Message::ModelAnnouncement(ann) => ann
                .manifest
                .manifest()
                .validate_structure()
                .map_err(|_| MessageError::Invalid {
                    field: "model_announcement.manifest",
                    reason: "manifest breaks the chunking rules",
                }),
            Message::ChunkResponse(resp) => match &resp.data {
                Some(data) if data.len() > crate::codec::MAX_CHUNK_SIZE as usize => {
                    Err(MessageError::TooLong {
                        field: "chunk_response.data",
                        len: data.len(),
                        max: crate::codec::MAX_CHUNK_SIZE as usize,
                    })
                }
                _ => Ok(()),
            },
            Message::ManifestResponse(resp) => match &resp.manifest {
                Some(signed) if signed.manifest().root != resp.root => Err(MessageError::Invalid {
                    field: "manifest_response.manifest",
                    reason: "names another object than the one asked for",
                }),
                Some(signed) => {
                    signed
                        .manifest()
                        .validate_structure()
                        .map_err(|_| MessageError::Invalid {
                            field: "manifest_response.manifest",
                            reason: "manifest breaks the chunking rules",
                        })
                }
                None => Ok(()),
            },
            Message::NoWork(none) => check_text("no_work.reason", &none.reason, MAX_TEXT),
            Message::LeaseRenew(_)
            | Message::LeaseRenewed(_)
            | Message::ChunkRequest(_)
            | Message::LeaseRequest(_)
            | Message::ManifestRequest(_)
            | Message::CreditQuery(_)
            | Message::CreditReport(_) => Ok(()),
        }
    }
}

/// Longest free-text field (names, reasons), in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest short label (display name, organisation), in bytes.
pub const MAX_LABEL: usize = 64;

pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), MessageError> {
    if text.len() > max {
        return Err(MessageError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(MessageError::Invalid {
            field,
            reason: "contains control characters",
        });
    }
    Ok(())
}

pub(crate) fn check_list<T>(
    field: &'static str,
    list: &[T],
    max: usize,
) -> Result<(), MessageError> {
    if list.len() > max {
        return Err(MessageError::TooMany {
            field,
            len: list.len(),
            max,
        });
    }
    Ok(())
}

/// A new model version: the coordinator's signed manifest of its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    /// The training round this version starts.
    pub round: u64,
    /// The manifest of the weights, signed by the coordinator.
    pub manifest: SignedManifest,
}

/// A node asks the coordinator for a task lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// How many tasks the node can run at once (one per adapter on a multi-GPU node).
    pub slots: u32,
}

/// Ask a peer for one chunk by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The chunk's blake3.
    pub id: Digest,
}

/// A chunk, or `None` when the peer does not hold it. The receiver checks the bytes against
/// the name it asked for before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResponse {
    /// The chunk asked for.
    pub id: Digest,
    /// Its bytes.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// Ask a peer (usually the coordinator) for the signed manifest of the object whose root is
/// `root`: task specs name objects by root, and a node needs the manifest to fetch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRequest {
    /// The object's blake3 root.
    pub root: Digest,
}

/// The answer to a [`ManifestRequest`]. The receiver checks the signature and that the signer
/// is who it expects (the coordinator, for model versions and data shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestResponse {
    /// The root asked for.
    pub root: Digest,
    /// Its signed manifest, when the peer knows it.
    pub manifest: Option<SignedManifest>,
}

/// The coordinator's answer to a [`LeaseRequest`] when it has nothing for the node now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoWork {
    /// When to ask again, in milliseconds.
    pub retry_after_ms: u32,
    /// Why (between rounds, node not admitted, banned, …), for the volunteer.
    pub reason: String,
    /// Whether the node must send a [`Join`] first (the coordinator does not know it).
    pub join_first: bool,
}
