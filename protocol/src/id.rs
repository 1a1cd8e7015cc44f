//! Content identifiers: the blake3 [`Digest`] that names chunks, objects and payloads, and the
//! fixed-size byte helpers every 32- or 64-byte value on the wire shares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ParseError;

/// A blake3 digest: the name of a chunk, of a whole object, or of an envelope's payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw digest bytes (for values read from a trusted local store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first five bytes in hex, for logs and progress lines.
    pub fn fmt_short(&self) -> String {
        to_hex(&self.0[..5])
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.fmt_short())
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex::<32>(s).map(Self)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fixed_bytes::deserialize(deserializer).map(Self)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Parses exactly `N` bytes of hex (either case).
pub fn from_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseError> {
    if s.len() != 2 * N {
        return Err(ParseError::HexLength {
            len: s.len(),
            expected: 2 * N,
        });
    }
    let mut out = [0u8; N];
    for (i, byte) in hex_bytes(s).enumerate() {
        out[i] = byte?;
    }
    Ok(out)
}

/// Parses hex of any even length (either case); the caller bounds the length.
pub fn from_hex_vec(s: &str) -> Result<Vec<u8>, ParseError> {
    if !s.len().is_multiple_of(2) {
        return Err(ParseError::HexLength {
            len: s.len(),
            expected: s.len() + 1,
        });
    }
    hex_bytes(s).collect()
}

fn hex_bytes(s: &str) -> impl Iterator<Item = Result<u8, ParseError>> + '_ {
    let nibble = |c: u8| -> Result<u8, ParseError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseError::HexDigit { found: c as char }),
        }
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(move |pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
}

/// Serde for fixed-size byte arrays: a fixed-length tuple on the wire (no length prefix, so
/// every bit of the encoding is a bit of the value), hex in human-readable formats such as JSON.
pub(crate) mod fixed_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return serializer.serialize_str(&super::to_hex(bytes));
        }
        let mut tuple = serializer.serialize_tuple(N)?;
        for b in bytes {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        struct ArrayVisitor<const N: usize>;

        impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
            type Value = [u8; N];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                super::from_hex::<N>(v).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = [0u8; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(ArrayVisitor::<N>)
        } else {
            deserializer.deserialize_tuple(N, ArrayVisitor::<N>)
        }
    }
}

/// Serde for lists of digests: one length-prefixed byte string on the wire, so the codec's
/// size limit covers the whole list before anything is allocated for it; a list of hex
/// strings in human-readable formats.
pub(crate) mod digest_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Digest;

    pub(crate) fn serialize<S: Serializer>(
        list: &[Digest],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return list.serialize(serializer);
        }
        let bytes: Vec<u8> = list.iter().flat_map(|d| d.0).collect();
        serializer.serialize_bytes(&bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Digest>, D::Error> {
        if deserializer.is_human_readable() {
            return Vec::<Digest>::deserialize(deserializer);
        }
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        if bytes.len() % 32 != 0 {
            return Err(serde::de::Error::invalid_length(
                bytes.len(),
                &"a multiple of 32 bytes",
            ));
        }
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                Digest(d)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Digest::of(b"canopy");
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
        assert_eq!(d.to_string(), blake3::hash(b"canopy").to_hex().as_str());
        assert!(matches!(
            "abc".parse::<Digest>(),
            Err(ParseError::HexLength { len: 3, .. })
        ));
        let bad = "zz".repeat(32);
        assert!(matches!(
            bad.parse::<Digest>(),
            Err(ParseError::HexDigit { found: 'z' })
        ));
    }
}
