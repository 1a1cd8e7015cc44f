//! The per-chunk formats of the corpus build, shared by the volunteers that compute over corpus
//! chunks and the coordinator that plans them and decides from the results.
//!
//! - [`CorpusChunk`]: the documents of one chunk (id and UTF-8 text), the object a
//!   [`crate::ObjectKind::CorpusChunk`] manifest names.
//! - [`CorpusResult`]: per document, the eight quality signals and the MinHash signature, the
//!   object a [`crate::ObjectKind::CorpusResult`] manifest names. Corpus tasks are
//!   deterministic: two honest peers produce byte-identical encodings, so comparing the blake3
//!   of two encodings ([`CorpusResult::digest`], [`results_agree`]) is how the coordinator
//!   checks them.
//!
//! Both encode as codec frames (a version byte, then bincode with fixed-width little-endian
//! integers): one value has exactly one encoding. Decoding is bounded ([`MAX_CHUNK_LEN`],
//! [`MAX_RESULT_LEN`]) and validated (counts, lengths, ids), so a hostile chunk or result is a
//! [`CorpusError`], never a panic.
//!
//! [`normalize`] and [`text_hash`] define the normalised text whose blake3 names a document for
//! exact deduplication and for opt-out requests ([`crate::governance::OptOutTarget`]).

use std::collections::HashSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::CodecError;
use crate::id::Digest;
use crate::messages::{MAX_NUM_PERM, MinHashParams};

/// Most documents in one chunk.
pub const MAX_CHUNK_DOCUMENTS: usize = 100_000;
/// Largest document text, in bytes (longer documents are dropped at planning time).
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Largest encoded chunk.
pub const MAX_CHUNK_LEN: usize = 64 << 20;
/// Largest encoded result (the chunk limit's documents with the largest signatures fit).
pub const MAX_RESULT_LEN: usize = 512 << 20;
/// Quality signals per document (as `canopy_shaders::kernels::quality::QUALITY_SIGNALS`).
pub const SIGNALS: usize = 8;

/// A corpus chunk or result that breaks the rules above.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// Not a valid frame.
    #[error("corpus object does not decode")]
    Codec(#[from] CodecError),
    /// More documents than a chunk may hold.
    #[error("{len} documents, at most {max} per chunk")]
    TooManyDocuments {
        /// Documents found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A document longer than allowed.
    #[error("document {index} is {len} bytes, at most {max} allowed")]
    DocumentTooLarge {
        /// Position in the chunk.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An id that is empty, too long or holds control characters.
    #[error("document {index} has an invalid id: {reason}")]
    BadId {
        /// Position in the chunk.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// Two documents of one chunk share an id.
    #[error("document id {id:?} appears twice in the chunk")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A result whose shape does not fit its parameters or its chunk.
    #[error("corpus result does not fit: {reason}")]
    Shape {
        /// What does not fit.
        reason: String,
    },
}

/// One document of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusDocument {
    /// Its id, unique within the chunk (the coordinator's builds make it unique per source).
    pub id: String,
    /// Its text.
    pub text: String,
}

/// The documents of one corpus chunk, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CorpusChunk {
    /// The documents.
    pub documents: Vec<CorpusDocument>,
}

impl CorpusChunk {
    /// Checks the limits: document count, text lengths, ids well formed and distinct.
    pub fn validate(&self) -> Result<(), CorpusError> {
        if self.documents.len() > MAX_CHUNK_DOCUMENTS {
            return Err(CorpusError::TooManyDocuments {
                len: self.documents.len(),
                max: MAX_CHUNK_DOCUMENTS,
            });
        }
        let mut seen = HashSet::with_capacity(self.documents.len());
        for (index, d) in self.documents.iter().enumerate() {
            if d.text.len() > MAX_DOCUMENT_BYTES {
                return Err(CorpusError::DocumentTooLarge {
                    index,
                    len: d.text.len(),
                    max: MAX_DOCUMENT_BYTES,
                });
            }
            check_id(index, &d.id)?;
            if !seen.insert(d.id.as_str()) {
                return Err(CorpusError::DuplicateId { id: d.id.clone() });
            }
        }
        Ok(())
    }

    /// Validates and encodes the chunk as a frame.
    pub fn encode(&self) -> Result<Vec<u8>, CorpusError> {
        self.validate()?;
        let frame = codec::encode(self)?;
        if frame.len() > MAX_CHUNK_LEN {
            return Err(CodecError::TooLarge {
                len: frame.len(),
                max: MAX_CHUNK_LEN,
            }
            .into());
        }
        Ok(frame)
    }

    /// Decodes a frame of at most [`MAX_CHUNK_LEN`] bytes and validates it.
    pub fn decode(frame: &[u8]) -> Result<Self, CorpusError> {
        let chunk: Self = codec::decode::<Self, MAX_CHUNK_LEN>(frame)?;
        chunk.validate()?;
        Ok(chunk)
    }

    /// Encodes the chunk as [`Self::encode`] does, and says where each document's text lies
    /// in the frame, so that whoever keeps the frame can read the texts without holding a
    /// decoded copy as well. Each range is checked against the text it locates.
    pub fn encode_locating_texts(&self) -> Result<(Vec<u8>, Vec<Range<usize>>), CorpusError> {
        let mut frame = self.encode()?;
        // A frame is kept for the whole build: no spare capacity from its growth.
        frame.shrink_to_fit();
        // The version byte and the document count, then per document its id and its text,
        // each a u64 length and the bytes.
        let mut at = 1 + 8;
        let mut ranges = Vec::with_capacity(self.documents.len());
        for d in &self.documents {
            at += 8 + d.id.len() + 8;
            let range = at..at + d.text.len();
            if frame.get(range.clone()) != Some(d.text.as_bytes()) {
                return Err(CorpusError::Shape {
                    reason: "a text is not where the chunk layout puts it".into(),
                });
            }
            at = range.end;
            ranges.push(range);
        }
        Ok((frame, ranges))
    }
}

fn check_id(index: usize, id: &str) -> Result<(), CorpusError> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_ID_BYTES {
        "longer than 256 bytes"
    } else if id.chars().any(char::is_control) {
        "holds control characters"
    } else {
        return Ok(());
    };
    Err(CorpusError::BadId { index, reason })
}

/// One document's result: its quality signals and its MinHash signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentResult {
    /// The quality signals, in the kernel's order (bytes, words, char repetition, word
    /// repetition, special, digits, uppercase, lines).
    pub signals: [u32; SIGNALS],
    /// The MinHash signature, `num_perm` values.
    pub signature: Vec<u32>,
}

/// What a corpus task computes over one chunk: one [`DocumentResult`] per document, in the
/// chunk's order, under the parameters it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusResult {
    /// The MinHash parameters the signatures were computed with.
    pub params: MinHashParams,
    /// Per document, in the chunk's order.
    pub documents: Vec<DocumentResult>,
}

impl CorpusResult {
    /// Checks the shape: at most [`MAX_CHUNK_DOCUMENTS`] documents, `num_perm` within
    /// `1..=1024`, and every signature `num_perm` long.
    pub fn validate(&self) -> Result<(), CorpusError> {
        let n = self.params.num_perm;
        if n == 0 || n > MAX_NUM_PERM {
            return Err(CorpusError::Shape {
                reason: format!("num_perm {n} is outside 1..=1024"),
            });
        }
        if self.documents.len() > MAX_CHUNK_DOCUMENTS {
            return Err(CorpusError::TooManyDocuments {
                len: self.documents.len(),
                max: MAX_CHUNK_DOCUMENTS,
            });
        }
        if let Some(d) = self
            .documents
            .iter()
            .position(|d| d.signature.len() != n as usize)
        {
            return Err(CorpusError::Shape {
                reason: format!(
                    "document {d} has a signature of {} values, num_perm is {n}",
                    self.documents[d].signature.len()
                ),
            });
        }
        Ok(())
    }

    /// Checks that this result answers a chunk whose documents' texts have `text_lengths`
    /// bytes, under `params`: same parameters, one entry per document, and each document's
    /// byte count signal equal to its text length.
    pub fn check_against(
        &self,
        text_lengths: &[usize],
        params: &MinHashParams,
    ) -> Result<(), CorpusError> {
        self.validate()?;
        if self.params != *params {
            return Err(CorpusError::Shape {
                reason: format!(
                    "computed with {:?}, the task asked for {params:?}",
                    self.params
                ),
            });
        }
        if self.documents.len() != text_lengths.len() {
            return Err(CorpusError::Shape {
                reason: format!(
                    "{} results for a chunk of {} documents",
                    self.documents.len(),
                    text_lengths.len()
                ),
            });
        }
        for (i, (r, &len)) in self.documents.iter().zip(text_lengths).enumerate() {
            if r.signals[0] as usize != len {
                return Err(CorpusError::Shape {
                    reason: format!(
                        "document {i}: {} bytes reported, the text has {len}",
                        r.signals[0],
                    ),
                });
            }
        }
        Ok(())
    }

    /// Validates and encodes the result as a frame: the bytes two peers must agree on.
    pub fn encode(&self) -> Result<Vec<u8>, CorpusError> {
        self.validate()?;
        Ok(codec::encode(self)?)
    }

    /// Decodes a frame of at most [`MAX_RESULT_LEN`] bytes and validates its shape.
    pub fn decode(frame: &[u8]) -> Result<Self, CorpusError> {
        let result: Self = codec::decode::<Self, MAX_RESULT_LEN>(frame)?;
        result.validate()?;
        Ok(result)
    }

    /// The blake3 of the encoding: the result's name, which two honest peers agree on.
    pub fn digest(&self) -> Result<Digest, CorpusError> {
        Ok(Digest::of(&self.encode()?))
    }
}

/// Whether two peers' encoded results for the same task agree: equal blake3 digests (so the
/// coordinator compares 32 bytes, whichever way the results travelled).
pub fn results_agree(a: &Digest, b: &Digest) -> bool {
    a == b
}

/// The normalised form of a document's text: Unicode NFKC (so composed and decomposed
/// accents, ligatures and full-width forms are one text), lowercase (Unicode), every run of
/// whitespace (Unicode `White_Space`) replaced by one space, leading and trailing whitespace
/// removed. Two texts that differ only in Unicode form, case and spacing normalise to the same
/// string.
pub fn normalize(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let composed: String = text.nfkc().collect();
    let mut out = String::with_capacity(composed.len());
    for word in composed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The blake3 of [`normalize`]`(text)`: a document's name for exact deduplication and opt-out.
pub fn text_hash(text: &str) -> Digest {
    Digest::of(normalize(text).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_texts_are_the_documents_texts_in_the_frame() {
        let chunk = CorpusChunk {
            documents: vec![
                CorpusDocument {
                    id: "a".into(),
                    text: "première".into(),
                },
                CorpusDocument {
                    id: "b-longer-id".into(),
                    text: String::new(),
                },
                CorpusDocument {
                    id: "c".into(),
                    text: "第三".into(),
                },
            ],
        };
        let (frame, ranges) = chunk.encode_locating_texts().unwrap();
        assert_eq!(frame, chunk.encode().unwrap());
        let texts: Vec<&[u8]> = ranges.iter().map(|r| &frame[r.clone()]).collect();
        let want: Vec<&[u8]> = chunk.documents.iter().map(|d| d.text.as_bytes()).collect();
        assert_eq!(texts, want);
    }

    fn chunk() -> CorpusChunk {
        CorpusChunk {
            documents: vec![
                CorpusDocument {
                    id: "a".into(),
                    text: "Hello".into(),
                },
                CorpusDocument {
                    id: "b".into(),
                    text: "wörld".into(),
                },
            ],
        }
    }

    #[test]
    fn chunk_encoding_is_exact_and_round_trips() {
        let c = chunk();
        let frame = c.encode().unwrap();
        // version, doc count (u64), then per document: id length (u64), id, text length, text.
        let mut expected = vec![1u8, 2, 0, 0, 0, 0, 0, 0, 0];
        for (id, text) in [("a", "Hello"), ("b", "wörld")] {
            expected.extend((id.len() as u64).to_le_bytes());
            expected.extend(id.as_bytes());
            expected.extend((text.len() as u64).to_le_bytes());
            expected.extend(text.as_bytes());
        }
        assert_eq!(frame, expected);
        assert_eq!(CorpusChunk::decode(&frame).unwrap(), c);
    }

    #[test]
    fn bad_chunks_are_refused() {
        let mut c = chunk();
        c.documents[1].id = "a".into();
        assert!(matches!(c.encode(), Err(CorpusError::DuplicateId { .. })));
        // A frame that bypassed `encode` is refused on decode too.
        let frame = codec::encode(&c).unwrap();
        assert!(matches!(
            CorpusChunk::decode(&frame),
            Err(CorpusError::DuplicateId { .. })
        ));
        c.documents[1].id = String::new();
        let frame = codec::encode(&c).unwrap();
        assert!(matches!(
            CorpusChunk::decode(&frame),
            Err(CorpusError::BadId { index: 1, .. })
        ));
        c.documents[1].id = "x\ny".into();
        assert!(c.encode().is_err());
        // Truncated and invalid UTF-8 frames are errors, not panics.
        let good = chunk().encode().unwrap();
        for cut in 0..good.len() {
            assert!(CorpusChunk::decode(&good[..cut]).is_err());
        }
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert!(CorpusChunk::decode(&bad).is_err());
        // A length prefix claiming more than the frame holds.
        let mut huge = vec![1u8];
        huge.extend(u64::MAX.to_le_bytes());
        assert!(CorpusChunk::decode(&huge).is_err());
    }

    fn result() -> CorpusResult {
        let params = MinHashParams {
            num_perm: 2,
            ..MinHashParams::default()
        };
        CorpusResult {
            params,
            documents: vec![
                DocumentResult {
                    signals: [5, 1, 1, 0, 0, 0, 1, 1],
                    signature: vec![7, 9],
                },
                DocumentResult {
                    signals: [6, 1, 0, 0, 0, 0, 0, 1],
                    signature: vec![3, 4],
                },
            ],
        }
    }

    #[test]
    fn results_check_against_their_chunk_and_a_tampered_one_changes_the_digest() {
        let r = result();
        let chunk = chunk();
        let c: Vec<usize> = chunk.documents.iter().map(|d| d.text.len()).collect();
        r.check_against(&c, &r.params).unwrap();
        let frame = r.encode().unwrap();
        assert_eq!(CorpusResult::decode(&frame).unwrap(), r);
        assert!(
            r.check_against(&c, &MinHashParams::default()).is_err(),
            "other parameters"
        );
        let mut short = r.clone();
        short.documents.pop();
        assert!(short.check_against(&c, &r.params).is_err());
        let mut wrong_len = r.clone();
        wrong_len.documents[0].signals[0] = 4;
        assert!(wrong_len.check_against(&c, &r.params).is_err());
        let mut ragged = r.clone();
        ragged.documents[1].signature.push(1);
        assert!(ragged.encode().is_err());
        assert!(CorpusResult::decode(&codec::encode(&ragged).unwrap()).is_err());

        let mut tampered = r.clone();
        tampered.documents[1].signature[0] ^= 1;
        let (a, b) = (r.digest().unwrap(), tampered.digest().unwrap());
        assert!(!results_agree(&a, &b));
        assert!(results_agree(&a, &result().digest().unwrap()));
    }

    #[test]
    fn normalisation_folds_case_and_spacing_only() {
        assert_eq!(
            normalize("  Hello\t\nWORLD  Ünïcode "),
            "hello world ünïcode"
        );
        assert_eq!(text_hash("A  b"), text_hash("a b"));
        assert_ne!(text_hash("a b"), text_hash("a-b"));
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn normalisation_makes_one_text_of_every_unicode_form() {
        // "café" composed (U+00E9) and decomposed (e + U+0301), "ﬁne" with the fi ligature,
        // full-width letters and a no-break space.
        let composed = "Caf\u{e9} fine ABC";
        let decomposed = "Cafe\u{301} \u{fb01}ne \u{ff21}\u{ff22}\u{ff23}";
        assert_ne!(composed, decomposed);
        assert_eq!(normalize(composed), "café fine abc");
        assert_eq!(text_hash(composed), text_hash(decomposed));
        assert_eq!(text_hash("a\u{a0}b"), text_hash("a b"));
        // Letters that only look alike stay apart.
        assert_ne!(text_hash("caf\u{e9}"), text_hash("cafe"));
    }
}
