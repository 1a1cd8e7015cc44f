//! canopy-protocol: the wire rules of the Canopy network.
//!
//! Pure types and rules, no sockets, files or async runtime: every other crate builds on these.
//!
//! - [`keys`]: the ed25519 identity that is also a node's libp2p identity.
//! - [`envelope`]: signed envelopes around every message.
//! - [`chunk`]: content-addressed chunks, signed manifests, and reassembly.
//! - [`codec`]: the bincode frame format with a size limit on every decode.
//! - [`messages`]: what peers say to each other, task specs included.
//! - [`corpus`]: corpus chunks and per-chunk results (quality signals, MinHash), the text
//!   normalisation behind exact dedup and opt-outs.
//! - [`compress`]: pseudo-gradient codecs (f32, f16, blockwise int8, top-k with error feedback).
//! - [`governance`]: data source records and opt-out requests.
//! - [`invite`] and [`join_work`]: invitation tokens and proof of work on join.
//! - [`fuzz`]: the entry points of the fuzz targets.
//!
//! Every byte from the network is untrusted until its signature and hash check out; every
//! decode is bounded; bad input yields a typed error, never a panic.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod chunk;
pub mod codec;
pub mod compress;
pub mod corpus;
pub mod envelope;
pub mod error;
pub mod fuzz;
pub mod governance;
pub mod id;
pub mod invite;
pub mod join_work;
pub mod keys;
pub mod messages;

pub use chunk::{Manifest, ObjectKind, Reassembler, SignedManifest};
pub use compress::{CodecSpec, CompressedUpdate, Compressor};
pub use envelope::{Envelope, Header};
pub use id::Digest;
pub use invite::{Invite, InviteError, InviteTerms};
pub use keys::{Keypair, PeerId, PublicKey, Signature};
pub use messages::{Message, MessageKind};

/// The protocol version carried in every envelope header. A change to the encoding of any
/// message bumps it. Version 2: training specs say how their shards' bytes are token ids
/// (`TrainSpec::tokens`, 16-bit BPE ids beside bytes). Version 3: `Capabilities` no longer
/// carries a host memory figure (no node filled it in, and no coordinator read it).
pub const PROTOCOL_VERSION: u16 = 3;
