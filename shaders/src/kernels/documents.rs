//! Batches of documents for the corpus kernels ([`super::quality`] and [`super::minhash`]), and
//! the integer definitions both kernels share.
//!
//! # Layout
//!
//! A batch is the UTF-8 bytes of its documents concatenated into one byte string, packed four
//! bytes to a `u32` (little-endian: byte `i` is bits `8 · (i % 4)` of word `i / 4`; WGSL has no
//! byte type), and `offsets`, `docs + 1` byte positions: document `d` is bytes
//! `offsets[d] .. offsets[d + 1]`. Offsets must not decrease and the last must lie within the
//! packed bytes; bytes outside every document are ignored. [`pack_documents`] builds a batch,
//! [`check_offsets`] validates one (both backends call it before running anything, so a bad
//! batch gets [`ShaderError`] rather than a panic or garbage).
//!
//! # Words
//!
//! Whitespace is the ASCII bytes `0x09..=0x0D` (tab, line feed, vertical tab, form feed,
//! carriage return) and `0x20` (space). A word is a maximal run of bytes that are not
//! whitespace; bytes `>= 0x80` (any non-ASCII UTF-8 sequence) are word bytes, so no decoding
//! is needed and invalid UTF-8 is handled like any other bytes. A word's hash is 32-bit FNV-1a
//! of its bytes ([`fnv1a`]).
//!
//! Everything here is 32-bit integer arithmetic with wrapping multiplication, which the WGSL
//! kernels repeat operation for operation.

use crate::error::{Result, ShaderError};
use crate::runtime::check_len;

/// FNV-1a's 32-bit offset basis.
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
/// FNV-1a's 32-bit prime.
pub const FNV_PRIME: u32 = 0x0100_0193;

/// Whether `b` is whitespace: `0x09..=0x0D` or `0x20`.
pub fn is_space(b: u8) -> bool {
    b == 0x20 || (0x09..=0x0d).contains(&b)
}

/// 32-bit FNV-1a of `bytes`: `h = 0x811c9dc5`, then for each byte `h = (h ^ byte) · 0x01000193`
/// (wrapping).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 32-bit finaliser: a bijection on `u32` with full avalanche.
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The words of `doc`, as byte slices, in order.
pub fn words(doc: &[u8]) -> impl Iterator<Item = &[u8]> {
    doc.split(|&b| is_space(b)).filter(|w| !w.is_empty())
}

/// The FNV-1a hashes of the words of `doc`, in order.
pub fn word_hashes(doc: &[u8]) -> Vec<u32> {
    words(doc).map(fnv1a).collect()
}

/// Packs `docs` into a batch: the bytes four to a word, and the `docs.len() + 1` offsets.
/// Fails when the batch holds `u32::MAX` bytes or more (offsets are 32-bit).
pub fn pack_documents<D: AsRef<[u8]>>(docs: &[D]) -> Result<(Vec<u32>, Vec<u32>)> {
    let total: usize = docs.iter().map(|d| d.as_ref().len()).sum();
    if u32::try_from(total).is_err() {
        return Err(ShaderError::TooLarge {
            what: "corpus batch",
            needed: total as u64,
            max: u64::from(u32::MAX) - 1,
            unit: "bytes",
            limit: "32-bit byte offsets",
            reduce: "the number of documents per batch",
        });
    }
    let mut bytes = Vec::with_capacity(total.next_multiple_of(4));
    let mut offsets = Vec::with_capacity(docs.len() + 1);
    offsets.push(0);
    for d in docs {
        bytes.extend_from_slice(d.as_ref());
        offsets.push(bytes.len() as u32);
    }
    bytes.resize(total.next_multiple_of(4), 0);
    let text = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((text, offsets))
}

/// The bytes of packed `text` (`4 · text.len()` of them).
pub fn unpack_bytes(text: &[u32]) -> Vec<u8> {
    text.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Checks a batch's offsets against its packed text of `text_words` words and returns the
/// number of documents.
pub fn check_offsets(offsets: &[u32], text_words: usize) -> Result<usize> {
    let Some((&last, _)) = offsets.split_last() else {
        return Err(ShaderError::Shape {
            what: "document offsets",
            len: 0,
            expected: 1,
        });
    };
    if let Some(d) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(ShaderError::Parameter {
            name: "document offsets",
            value: format!(
                "offsets[{}] = {} > offsets[{}] = {}",
                d,
                offsets[d],
                d + 1,
                offsets[d + 1]
            ),
            reason: "offsets must not decrease",
        });
    }
    if u64::from(last) > text_words as u64 * 4 {
        return Err(ShaderError::Parameter {
            name: "document offsets",
            value: format!(
                "last offset {last}, text of {} bytes",
                text_words as u64 * 4
            ),
            reason: "documents must lie within the packed text",
        });
    }
    Ok(offsets.len() - 1)
}

/// Checks the output buffer of a per-document kernel: `per_doc` values per document.
pub(crate) fn check_output(
    what: &'static str,
    len: usize,
    docs: usize,
    per_doc: usize,
) -> Result<()> {
    let expected = docs.checked_mul(per_doc).ok_or(ShaderError::TooLarge {
        what,
        needed: u64::MAX,
        max: usize::MAX as u64,
        unit: "elements",
        limit: "address space",
        reduce: "the number of documents per batch",
    })?;
    check_len(what, len, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_and_fmix32_match_published_values() {
        // FNV-1a test vectors (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        assert_eq!(fmix32(0), 0);
        assert_ne!(fmix32(1), 1);
    }

    #[test]
    fn words_split_on_ascii_whitespace_only() {
        let doc = "  über\tdie\u{a0}Brücke\r\n\x0bok\x0c!  ".as_bytes();
        let w: Vec<&[u8]> = words(doc).collect();
        assert_eq!(
            w,
            vec![
                "über".as_bytes(),
                "die\u{a0}Brücke".as_bytes(),
                b"ok".as_slice(),
                b"!".as_slice()
            ]
        );
        assert_eq!(words(b"").count(), 0);
        assert_eq!(words(b" \n\t").count(), 0);
    }

    #[test]
    fn packing_round_trips_and_bad_offsets_are_refused() {
        let docs = ["hello", "", "wörld!"];
        let (text, offsets) = pack_documents(&docs).unwrap();
        assert_eq!(offsets, vec![0, 5, 5, 12]);
        assert_eq!(text.len(), 3);
        let bytes = unpack_bytes(&text);
        assert_eq!(&bytes[5..12], "wörld!".as_bytes());
        assert_eq!(check_offsets(&offsets, text.len()).unwrap(), 3);
        assert_eq!(check_offsets(&[0], 0).unwrap(), 0);
        assert!(matches!(
            check_offsets(&[], 3),
            Err(ShaderError::Shape { .. })
        ));
        assert!(matches!(
            check_offsets(&[0, 6, 5], 3),
            Err(ShaderError::Parameter { .. })
        ));
        assert!(matches!(
            check_offsets(&[0, 13], 3),
            Err(ShaderError::Parameter { .. })
        ));
        assert!(check_output("out", 24, 3, 8).is_ok());
        assert!(check_output("out", 23, 3, 8).is_err());
    }
}
