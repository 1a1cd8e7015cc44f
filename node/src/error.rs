//! The node library's errors.

use std::path::PathBuf;

use canopy_protocol::Digest;

/// What can go wrong in a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The identity file exists but is not a 32-byte key.
    #[error(
        "identity file {path} holds {len} bytes, not a 32-byte key; move it away to start a new identity"
    )]
    CorruptIdentity {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Another process holds the lock on a data directory or identity file.
    #[error(
        "another canopy-node{} is using {path}; give each node its own --data-dir and --identity",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The locked file.
        path: PathBuf,
        /// The process holding it, where known.
        pid: Option<u32>,
    },
    /// A key could not be generated.
    #[error(transparent)]
    Key(#[from] canopy_protocol::error::KeyError),
    /// The chunk store cannot make room under its size cap.
    #[error("chunk store full: {needed} bytes needed, {pinned} of the {cap}-byte cap are pinned")]
    StoreFull {
        /// Bytes the new chunk needs.
        needed: u64,
        /// Bytes held by pinned chunks.
        pinned: u64,
        /// The cap.
        cap: u64,
    },
    /// Data handed to the store does not match the name it was given.
    #[error("chunk does not match its name {0}")]
    ChunkMismatch(Digest),
    /// A chunk, manifest or object is not what its manifest says.
    #[error(transparent)]
    Chunk(#[from] canopy_protocol::error::ChunkError),
    /// The swarm could not be built or started.
    #[error("network: {0}")]
    Network(String),
    /// The network task has stopped.
    #[error("the node's network task has stopped")]
    NetworkStopped,
    /// Fetching an object failed.
    #[error("fetching object {root}: {reason}")]
    Fetch {
        /// The object.
        root: Digest,
        /// Why.
        reason: String,
    },
    /// An object's bytes or metadata are not what its kind requires.
    #[error("bad object: {0}")]
    BadObject(String),
    /// A kernel or the model failed.
    #[error(transparent)]
    Compute(#[from] canopy_shaders::ShaderError),
    /// The coordinator refused or answered out of protocol.
    #[error("coordinator: {0}")]
    Coordinator(String),
}
