//! The typed errors of every protocol rule. Each names what was wrong and, where it helps, the
//! numbers involved, so a node can log it, penalise the sender and carry on.

use crate::messages::MessageKind;

/// A textual value (hex, peer id) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The hex string has the wrong length.
    #[error("hex string has {len} characters, expected {expected}")]
    HexLength {
        /// Characters found.
        len: usize,
        /// Characters expected.
        expected: usize,
    },
    /// A character that is not a hex digit.
    #[error("{found:?} is not a hex digit")]
    HexDigit {
        /// The offending character.
        found: char,
    },
}

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The 32 bytes are not a point on the curve.
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// A small-order key, which would let anyone forge signatures that verify under it.
    #[error("weak (small-order) ed25519 public key refused")]
    WeakPublicKey,
    /// The libp2p peer id does not embed an ed25519 public key.
    #[error("peer id does not carry an ed25519 public key")]
    NotEd25519PeerId,
    /// The operating system gave no randomness for a new key.
    #[error("no randomness from the operating system: {0}")]
    Entropy(String),
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// An empty frame.
    #[error("empty frame")]
    Empty,
    /// The frame's version byte is one this build does not speak.
    #[error("wire version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The frame, or a length inside it, is larger than the limit for this kind of value.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length found or claimed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes left over after the value.
    #[error("{trailing} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        trailing: usize,
    },
    /// The bytes are not a valid encoding.
    #[error("malformed frame")]
    Decode(#[source] bincode::error::DecodeError),
    /// The value cannot be encoded.
    #[error("value cannot be encoded")]
    Encode(#[source] bincode::error::EncodeError),
}

/// Why an envelope fails verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The header's protocol version is not this build's.
    #[error("protocol version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The payload's length differs from the one the header declares.
    #[error("payload is {actual} bytes but the header declares {declared}")]
    LengthMismatch {
        /// Length in the header.
        declared: u64,
        /// Length received.
        actual: u64,
    },
    /// The payload's blake3 differs from the one the header declares.
    #[error("payload hash does not match the header")]
    PayloadHash,
    /// The signature does not verify under the sender's key.
    #[error("signature does not verify")]
    BadSignature,
    /// A valid envelope of another kind than the one expected here.
    #[error("expected a {expected:?} message, got {found:?}")]
    WrongKind {
        /// The kind expected.
        expected: MessageKind,
        /// The kind in the header.
        found: MessageKind,
    },
    /// A valid envelope for another round than the one expected here (a replay, or stale).
    #[error("expected round {expected}, got round {found}")]
    WrongRound {
        /// The round expected.
        expected: u64,
        /// The round in the header.
        found: u64,
    },
    /// The payload decodes to a message of another kind than the signed header says.
    #[error("payload is a {payload:?} message but the header says {header:?}")]
    KindMismatch {
        /// The kind in the header.
        header: MessageKind,
        /// The kind of the decoded payload.
        payload: MessageKind,
    },
    /// The payload decodes but breaks the protocol's limits.
    #[error("invalid message")]
    Invalid(#[from] MessageError),
    /// The envelope or its payload is not a valid frame.
    #[error("malformed envelope")]
    Codec(#[from] CodecError),
}

/// A manifest, chunk or reassembly that breaks the chunking rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Chunk size outside the allowed range.
    #[error("chunk size {size} is outside {min}..={max}")]
    ChunkSize {
        /// The size given.
        size: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The manifest lists a number of chunks that does not fit its length and chunk size.
    #[error("manifest lists {listed} chunks, its length and chunk size need {expected}")]
    ChunkCount {
        /// Chunks listed.
        listed: usize,
        /// Chunks the length needs.
        expected: u64,
    },
    /// The object is larger than this receiver accepts.
    #[error("object of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Object length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Metadata over the limits.
    #[error("manifest metadata exceeds limits: {0}")]
    Metadata(&'static str),
    /// A chunk index past the end of the manifest.
    #[error("chunk index {index} is past the manifest's {count} chunks")]
    IndexOutOfRange {
        /// Index given.
        index: usize,
        /// Chunks in the manifest.
        count: usize,
    },
    /// A chunk whose length differs from the one its position needs.
    #[error("chunk {index} is {len} bytes, expected {expected}")]
    WrongLength {
        /// Chunk index.
        index: usize,
        /// Length received.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// A chunk whose blake3 differs from the one listed.
    #[error("chunk {index} does not match the manifest")]
    HashMismatch {
        /// Chunk index.
        index: usize,
    },
    /// A chunk whose hash is in no position of the manifest.
    #[error("chunk is not part of this object")]
    UnknownChunk,
    /// Reassembly finished with chunks still missing.
    #[error("{missing} chunks are still missing")]
    Incomplete {
        /// Chunks missing.
        missing: usize,
    },
    /// The reassembled object's blake3 differs from the manifest's root.
    #[error("reassembled object does not match the manifest root")]
    RootMismatch,
    /// The manifest's signature does not verify under its signer's key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest cannot be encoded for signing.
    #[error("manifest cannot be encoded")]
    Codec(#[from] CodecError),
}

/// An update that cannot be compressed or decompressed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// A NaN or infinity in the input.
    #[error("value at index {index} is not finite")]
    NonFinite {
        /// Index of the first such value.
        index: usize,
    },
    /// A value outside what the codec can represent.
    #[error("value {value} at index {index} is outside the codec's range of ±{max}")]
    OutOfRange {
        /// Index of the first such value.
        index: usize,
        /// The value.
        value: f32,
        /// The largest magnitude the codec represents.
        max: f32,
    },
    /// A codec parameter outside its allowed range.
    #[error("invalid codec parameter {name} = {value}: {reason}")]
    Parameter {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: u64,
        /// What is allowed.
        reason: &'static str,
    },
    /// A compressed body whose size does not fit its codec and length.
    #[error("compressed body is {len} bytes, expected {expected}")]
    BodyLength {
        /// Body length.
        len: usize,
        /// Length the codec and element count need.
        expected: usize,
    },
    /// The declared element count is larger than this receiver accepts.
    #[error("update of {len} elements exceeds the limit of {max}")]
    TooLarge {
        /// Elements declared.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A sparse update whose indices are out of range or not strictly increasing.
    #[error("sparse index {index} at position {position} is out of order or out of range")]
    SparseIndex {
        /// Position in the index list.
        position: usize,
        /// The index found.
        index: u32,
    },
    /// A decoded scale or value that is not finite.
    #[error("compressed body holds a non-finite value at position {position}")]
    NonFiniteBody {
        /// Position in the body.
        position: usize,
    },
    /// A low-bit code the codec never writes.
    #[error(
        "compressed body holds code {code} at position {position}, which the codec never writes"
    )]
    BadCode {
        /// Position of the value.
        position: usize,
        /// The code found.
        code: u32,
    },
    /// The output buffer or error-feedback state has another length than the update.
    #[error("buffer of {len} elements given for an update of {expected}")]
    LengthMismatch {
        /// Buffer length.
        len: usize,
        /// Update length.
        expected: usize,
    },
}

/// A governance record that is incomplete or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// A required field is empty.
    #[error("data source is missing its {field}")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field has a value that is not allowed.
    #[error("data source field {field} is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// A decoded message whose fields break the protocol's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A text field longer than allowed.
    #[error("{field} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list with more entries than allowed.
    #[error("{field} has {len} entries, at most {max} allowed")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Entries found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field whose value is not allowed.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}
