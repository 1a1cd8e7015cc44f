//! The wire codec: one version byte, then the value in bincode 2 (fixed-width little-endian
//! integers, so that every bit of a frame is a bit of some field and nothing has two encodings).
//!
//! Every decode names a size limit. A frame longer than the limit is refused before decoding,
//! and bincode is told the same limit, so a hostile length prefix inside a frame is refused
//! before anything of that size is allocated. Byte strings (payloads, chunk data, digest lists)
//! are claimed against that limit; other lists are decoded element by element, and serde caps
//! what it reserves for them in advance at 1 MiB. This is the only module that touches bincode.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// The wire version byte in front of every frame.
pub const WIRE_VERSION: u8 = 1;

/// Largest chunk payload a manifest may declare.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest envelope frame: a chunk at the largest chunk size plus room for headers.
pub const MAX_FRAME_LEN: usize = MAX_CHUNK_SIZE as usize + (1 << 20);
/// Largest encoded manifest (65,536 chunks of 32-byte names plus metadata).
pub const MAX_MANIFEST_LEN: usize = 4 << 20;
/// Largest encoded envelope header.
pub const MAX_HEADER_LEN: usize = 1 << 10;
/// Largest whole object decoded in one piece (a reassembled compressed update, for one).
pub const MAX_OBJECT_LEN: usize = 1 << 31;
/// Largest encoded governance record or opt-out entry.
pub const MAX_RECORD_LEN: usize = 64 << 10;

fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<LIMIT>()
}

/// Encodes `value` as a frame: the version byte, then the value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![WIRE_VERSION];
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the frame body of `value` (without the version byte) to `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config::<{ usize::MAX }>())
        .map(|_| ())
        .map_err(CodecError::Encode)
}

/// Decodes a frame made by [`encode`], refusing frames over `LIMIT` bytes, unknown version
/// bytes, malformed bodies and trailing bytes.
pub fn decode<T: DeserializeOwned, const LIMIT: usize>(frame: &[u8]) -> Result<T, CodecError> {
    if frame.len() > LIMIT {
        return Err(CodecError::TooLarge {
            len: frame.len(),
            max: LIMIT,
        });
    }
    let (&version, body) = frame.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion {
            found: version,
            supported: WIRE_VERSION,
        });
    }
    let (value, used) = decode_body::<T>(body, LIMIT)?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            trailing: body.len() - used,
        });
    }
    Ok(value)
}

/// Decodes with bincode's limit set to the smallest step of a ladder (x16 apart) that covers the
/// body, so a length prefix that claims more than the frame holds is refused before bincode
/// allocates for it: at most 16 times the frame's own length (256 bytes for tiny frames).
fn decode_body<T: DeserializeOwned>(body: &[u8], limit: usize) -> Result<(T, usize), CodecError> {
    fn run<T: DeserializeOwned, const STEP: usize>(
        body: &[u8],
        limit: usize,
    ) -> Result<(T, usize), CodecError> {
        bincode::serde::decode_from_slice(body, config::<STEP>()).map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => CodecError::TooLarge {
                len: body.len(),
                max: limit.min(STEP),
            },
            other => CodecError::Decode(other),
        })
    }
    // The caller has already refused bodies over `limit`.
    match body.len() {
        n if n <= 1 << 8 => run::<T, { 1 << 8 }>(body, limit),
        n if n <= 1 << 12 => run::<T, { 1 << 12 }>(body, limit),
        n if n <= 1 << 16 => run::<T, { 1 << 16 }>(body, limit),
        n if n <= 1 << 20 => run::<T, { 1 << 20 }>(body, limit),
        n if n <= 1 << 24 => run::<T, { 1 << 24 }>(body, limit),
        n if n <= 1 << 28 => run::<T, { 1 << 28 }>(body, limit),
        _ => run::<T, MAX_DECODE_STEP>(body, limit),
    }
}

/// The top of the decode ladder: no frame decodes past 2 GiB.
const MAX_DECODE_STEP: usize = 1 << 31;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        round: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        name: String,
    }

    fn sample() -> Sample {
        Sample {
            round: 7,
            data: vec![1, 2, 3],
            name: "canopy".into(),
        }
    }

    /// The frame layout is a decision: this pins it byte for byte.
    #[test]
    fn exact_bytes() {
        let frame = encode(&sample()).unwrap();
        let mut expected = vec![WIRE_VERSION];
        expected.extend(7u64.to_le_bytes());
        expected.extend(3u64.to_le_bytes());
        expected.extend([1, 2, 3]);
        expected.extend(6u64.to_le_bytes());
        expected.extend(b"canopy");
        assert_eq!(frame, expected);
        assert_eq!(decode::<Sample, 1024>(&frame).unwrap(), sample());
    }

    #[test]
    fn refuses_bad_frames() {
        let frame = encode(&sample()).unwrap();
        assert!(matches!(
            decode::<Sample, 8>(&frame),
            Err(CodecError::TooLarge { max: 8, .. })
        ));
        assert!(matches!(
            decode::<Sample, 1024>(&[]),
            Err(CodecError::Empty)
        ));
        let mut wrong_version = frame.clone();
        wrong_version[0] = 9;
        assert!(matches!(
            decode::<Sample, 1024>(&wrong_version),
            Err(CodecError::UnsupportedVersion { found: 9, .. })
        ));
        let mut trailing = frame.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample, 1024>(&trailing),
            Err(CodecError::TrailingBytes { trailing: 1 })
        ));
        for cut in 0..frame.len() {
            assert!(
                decode::<Sample, 1024>(&frame[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn hostile_length_prefix_is_refused() {
        // A byte buffer that claims 2^60 bytes inside a 30-byte frame.
        let mut frame = vec![WIRE_VERSION];
        frame.extend(7u64.to_le_bytes());
        frame.extend((1u64 << 60).to_le_bytes());
        frame.extend([0u8; 13]);
        assert!(matches!(
            decode::<Sample, 1024>(&frame),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
