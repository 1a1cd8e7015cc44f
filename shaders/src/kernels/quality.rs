//! Per-document quality signals over a batch of documents (`wgsl/quality.wgsl`): the counts
//! from which the coordinator's corpus filter computes its ratios (ROOTS-style filtering).
//!
//! Integer kernel: the WGSL output is bit-identical to [`quality_reference`]. The batch layout,
//! whitespace, words and the word hash are defined in [`super::documents`]. For a document of
//! bytes `b[0..n]`, the signals, all `u32`, in this order ([`QUALITY_SIGNALS`] per document):
//!
//! | index | signal | definition |
//! | --- | --- | --- |
//! | 0 | `bytes` | `n` |
//! | 1 | `words` | the number of words |
//! | 2 | `char_repetition` | `#{ i in 1..n : b[i] == b[i − 1] }` (bytes that repeat the byte before) |
//! | 3 | `word_repetition` | `words − #distinct(FNV-1a word hashes)`: the words whose hash equals an earlier word's hash |
//! | 4 | `special` | ASCII punctuation and symbols (`0x21..=0x2F`, `0x3A..=0x40`, `0x5B..=0x60`, `0x7B..=0x7E`) plus control bytes that are not whitespace (`0x00..=0x08`, `0x0E..=0x1F`, `0x7F`) |
//! | 5 | `digits` | bytes `0x30..=0x39` |
//! | 6 | `uppercase` | bytes `0x41..=0x5A` |
//! | 7 | `lines` | `#{ i : b[i] == 0x0A }`, plus one when `n > 0` and the last byte is not `0x0A` (an empty document has 0 lines) |
//!
//! The device runs one thread per document, in rounds of 8 KiB of each document (so that no
//! invocation runs long: software Vulkan cuts an invocation off after 65535 loop iterations,
//! and real GPUs have watchdogs), carrying the scan state between rounds. The word-repetition
//! count uses an open-addressing hash table in a scratch buffer, `n + 1` slots for a document
//! of `n` bytes (at most `⌈n / 2⌉` words, so the table is at most half full).

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::documents::{check_offsets, check_output, fnv1a, is_space, unpack_bytes, words};
use crate::Cpu;
use crate::backend::Buffers;
use crate::error::Result;
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, index_u32};

/// Signals per document in the output buffer.
pub const QUALITY_SIGNALS: usize = 8;

/// One document's quality signals (see the module documentation for the definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QualitySignals {
    /// Length in bytes.
    pub bytes: u32,
    /// Number of words.
    pub words: u32,
    /// Bytes equal to the byte before them.
    pub char_repetition: u32,
    /// Words whose hash equals an earlier word's hash.
    pub word_repetition: u32,
    /// ASCII punctuation, symbols and non-whitespace control bytes.
    pub special: u32,
    /// ASCII digits.
    pub digits: u32,
    /// ASCII uppercase letters.
    pub uppercase: u32,
    /// Lines.
    pub lines: u32,
}

impl QualitySignals {
    /// The signals in output order.
    pub fn to_array(self) -> [u32; QUALITY_SIGNALS] {
        [
            self.bytes,
            self.words,
            self.char_repetition,
            self.word_repetition,
            self.special,
            self.digits,
            self.uppercase,
            self.lines,
        ]
    }

    /// The signals from one document's slice of the output buffer.
    pub fn from_array(a: [u32; QUALITY_SIGNALS]) -> Self {
        let [
            bytes,
            words,
            char_repetition,
            word_repetition,
            special,
            digits,
            uppercase,
            lines,
        ] = a;
        Self {
            bytes,
            words,
            char_repetition,
            word_repetition,
            special,
            digits,
            uppercase,
            lines,
        }
    }

    /// Every document's signals from a whole output buffer (a trailing partial row is ignored).
    pub fn from_output(out: &[u32]) -> Vec<Self> {
        out.chunks_exact(QUALITY_SIGNALS)
            .map(|c| {
                let mut a = [0; QUALITY_SIGNALS];
                a.copy_from_slice(c);
                Self::from_array(a)
            })
            .collect()
    }
}

/// Whether `b` counts as a special character.
pub fn is_special(b: u8) -> bool {
    b.is_ascii_punctuation() || (b.is_ascii_control() && !is_space(b))
}

/// The reference: one document's signals, straight from the definitions. Documents are at
/// most `u32::MAX` bytes (a batch's offsets are 32-bit), so no count overflows.
pub fn quality_reference(doc: &[u8]) -> QualitySignals {
    let count = |f: fn(u8) -> bool| doc.iter().filter(|&&b| f(b)).count() as u32;
    let hashes: Vec<u32> = words(doc).map(fnv1a).collect();
    let distinct = hashes
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len() as u32;
    let newlines = count(|b| b == b'\n');
    QualitySignals {
        bytes: doc.len() as u32,
        words: hashes.len() as u32,
        char_repetition: doc.windows(2).filter(|w| w[0] == w[1]).count() as u32,
        word_repetition: hashes.len() as u32 - distinct,
        special: count(is_special),
        digits: count(|b| b.is_ascii_digit()),
        uppercase: count(|b| b.is_ascii_uppercase()),
        lines: newlines + u32::from(doc.last().is_some_and(|&b| b != b'\n')),
    }
}

/// The CPU path: the reference on every document, in parallel. `text` and `offsets` are a
/// batch as [`super::documents`] describes; `out` holds [`QUALITY_SIGNALS`] per document.
pub fn quality_cpu(text: &[u32], offsets: &[u32], out: &mut [u32]) -> Result<()> {
    let docs = check_offsets(offsets, text.len())?;
    check_output("quality signals", out.len(), docs, QUALITY_SIGNALS)?;
    let bytes = unpack_bytes(text);
    out.par_chunks_mut(QUALITY_SIGNALS)
        .enumerate()
        .for_each(|(d, row)| {
            let doc = &bytes[offsets[d] as usize..offsets[d + 1] as usize];
            row.copy_from_slice(&quality_reference(doc).to_array());
        });
    Ok(())
}

/// Bytes of each document one round of the WGSL scans (keep in step with `CHUNK` there).
const CHUNK: usize = 8192;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    docs: u32,
    round: u32,
    table_len: u32,
    _pad: u32,
}

/// The wgpu path: one thread per document, in rounds of 8 KiB of each document, all in one
/// submission. The offsets are read back and checked first, so a bad batch is an error, not
/// garbage.
pub fn quality_gpu(
    gpu: &Gpu,
    text: &GpuBuffer<u32>,
    offsets: &GpuBuffer<u32>,
    out: &mut GpuBuffer<u32>,
) -> Result<()> {
    index_u32(
        "corpus batch bytes",
        text.len().saturating_mul(4).saturating_add(CHUNK),
    )?;
    let host_offsets = gpu.read(offsets)?;
    let docs = check_offsets(&host_offsets, text.len())?;
    check_output("quality signals", out.len(), docs, QUALITY_SIGNALS)?;
    index_u32("quality signals", out.len())?;
    if docs == 0 {
        return Ok(());
    }
    let longest = host_offsets
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let rounds = longest.div_ceil(CHUNK).max(1);
    // One slot per byte plus one per document.
    let table_len = index_u32("quality hash tables", host_offsets[docs] as usize + docs)?;
    let table = gpu.scratch("quality hash tables", u64::from(table_len) * 4)?;
    let state = gpu.scratch("quality scan state", docs as u64 * 5 * 4)?;
    let docs_u32 = index_u32("corpus batch documents", docs)?;
    let params: Vec<Params> = (0..=rounds)
        .map(|r| Params {
            docs: docs_u32,
            round: r.saturating_sub(1) as u32,
            table_len,
            _pad: 0,
        })
        .collect();
    let doc_groups = gpu.grid_threads(docs as u64, WORKGROUP, "quality documents")?;
    let clear_buffers = [&table];
    let mut dispatches = Vec::with_capacity(rounds + 1);
    dispatches.push(Dispatch {
        kernel: &registry::QUALITY_CLEAR,
        params: bytemuck::bytes_of(&params[0]),
        buffers: &clear_buffers,
        groups: gpu.grid_threads(u64::from(table_len), WORKGROUP, "quality hash tables")?,
    });
    let buffers = [&text.buffer, &offsets.buffer, &table, &out.buffer, &state];
    for p in &params[1..] {
        dispatches.push(Dispatch {
            kernel: &registry::QUALITY_SIGNALS,
            params: bytemuck::bytes_of(p),
            buffers: &buffers,
            groups: doc_groups,
        });
    }
    gpu.run(&dispatches)
}

/// The quality-signal kernels on every backend: part of [`Backend`](crate::Backend).
pub trait QualityOps: Buffers {
    /// Per-document quality signals of a batch of documents (`text`: bytes packed four to a
    /// `u32`, `offsets`: `docs + 1` byte positions; see [`crate::kernels::documents`]). `out` holds
    /// [`QUALITY_SIGNALS`] `u32` per document; bit-identical on both paths.
    /// Offsets that decrease or pass the end of `text` are an error (checked before anything
    /// runs), as is a batch too large for the device.
    fn quality_signals(
        &self,
        text: &Self::Buffer<u32>,
        offsets: &Self::Buffer<u32>,
        out: &mut Self::Buffer<u32>,
    ) -> Result<()>;
}

impl QualityOps for Cpu {
    fn quality_signals(
        &self,
        text: &Vec<u32>,
        offsets: &Vec<u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        quality_cpu(text, offsets, out)
    }
}

impl QualityOps for Gpu {
    fn quality_signals(
        &self,
        text: &GpuBuffer<u32>,
        offsets: &GpuBuffer<u32>,
        out: &mut GpuBuffer<u32>,
    ) -> Result<()> {
        quality_gpu(self, text, offsets, out)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::error::ShaderError;
    use crate::kernels::documents::pack_documents;
    use crate::prelude::*;
    use crate::testing::{random_document, rng};

    /// Seeded documents of every kind the kernels must handle: empty, whitespace only, ASCII,
    /// multilingual UTF-8, arbitrary bytes, single words, long documents.
    fn corpus(seed: u64) -> Vec<Vec<u8>> {
        let mut r = rng(seed);
        let mut docs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b" \n\t ".to_vec(),
            b"word".to_vec(),
            b"\n".to_vec(),
            b"AA  bb\n\nCC".to_vec(),
            "ü".as_bytes().to_vec(),
            Vec::new(),
        ];
        for i in 0..150 {
            let len = match i % 5 {
                0 => r.random_range(0..8),
                1 => r.random_range(8..64),
                _ => r.random_range(64..2000),
            };
            docs.push(random_document(&mut r, len, i % 3));
        }
        docs.push(random_document(&mut r, 200_000, 0));
        docs.push(random_document(&mut r, 50_000, 1));
        // One word longer than a round of the device pass, a run of one byte, and documents
        // at round edges.
        docs.push((0..70_000).map(|i| b'A' + (i % 26) as u8).collect());
        docs.push(vec![b'x'; 20_000]);
        docs.push(random_document(&mut r, 8192, 0)[..8192].to_vec());
        docs.push(random_document(&mut r, 16_385, 2)[..16_385].to_vec());
        docs.push(Vec::new());
        docs
    }

    fn quality_matches_reference_bit_for_bit<B: Backend>(backend: &B) {
        let docs = corpus(11);
        let (text, offsets) = pack_documents(&docs).unwrap();
        let tb = backend.upload(&text, "text").unwrap();
        let ob = backend.upload(&offsets, "offsets").unwrap();
        let mut out = backend
            .alloc(docs.len() * QUALITY_SIGNALS, "signals")
            .unwrap();
        backend.quality_signals(&tb, &ob, &mut out).unwrap();
        let got = QualitySignals::from_output(&backend.read(&out).unwrap());
        let expected: Vec<QualitySignals> = docs.iter().map(|d| quality_reference(d)).collect();
        let bad: Vec<usize> = (0..docs.len()).filter(|&d| got[d] != expected[d]).collect();
        eprintln!(
            "BAD {bad:?} lens {:?}",
            bad.iter().map(|&d| docs[d].len()).collect::<Vec<_>>()
        );
        for (d, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "document {d} ({} bytes)", docs[d].len());
        }
        assert_eq!(got.len(), docs.len());
        // Running again over reused scratch gives the same bits.
        backend.quality_signals(&tb, &ob, &mut out).unwrap();
        assert_eq!(
            QualitySignals::from_output(&backend.read(&out).unwrap()),
            got
        );
    }

    fn quality_of_documents_inside_a_larger_text<B: Backend>(backend: &B) {
        // Offsets need not start at 0 nor cover the text; gaps are ignored.
        let text_bytes = b"xxHello  World hello World\nzz 123 !!yy";
        let mut padded = text_bytes.to_vec();
        padded.resize(text_bytes.len().next_multiple_of(4), 0);
        let text: Vec<u32> = padded
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let offsets = [2u32, 27, 27, 36];
        let tb = backend.upload(&text, "text").unwrap();
        let ob = backend.upload(&offsets, "offsets").unwrap();
        let mut out = backend.alloc(3 * QUALITY_SIGNALS, "signals").unwrap();
        backend.quality_signals(&tb, &ob, &mut out).unwrap();
        let got = QualitySignals::from_output(&backend.read(&out).unwrap());
        let first = QualitySignals {
            bytes: 25,
            words: 4,
            char_repetition: 3, // "ll", "  ", "ll"
            word_repetition: 1, // the second "World"
            special: 0,
            digits: 0,
            uppercase: 3,
            lines: 1,
        };
        let third = QualitySignals {
            bytes: 9,
            words: 3,
            char_repetition: 2, // "zz", "!!"
            word_repetition: 0,
            special: 2,
            digits: 3,
            uppercase: 0,
            lines: 1,
        };
        assert_eq!(got, vec![first, QualitySignals::default(), third]);
    }

    fn quality_refuses_bad_batches<B: Backend>(backend: &B) {
        let (text, _) = pack_documents(&["some text here"]).unwrap();
        let tb = backend.upload(&text, "text").unwrap();
        for (offsets, docs) in [
            (vec![0u32, 9, 4], 2),
            (vec![0, 17], 1),
            (vec![0, u32::MAX], 1),
        ] {
            let ob = backend.upload(&offsets, "offsets").unwrap();
            let mut out = backend.alloc(docs * QUALITY_SIGNALS, "signals").unwrap();
            let err = backend.quality_signals(&tb, &ob, &mut out).unwrap_err();
            assert!(
                matches!(err, ShaderError::Parameter { .. }),
                "{offsets:?}: {err}"
            );
        }
        let ob = backend.upload(&[0u32, 4], "offsets").unwrap();
        let mut out = backend.alloc(3, "signals").unwrap();
        let err = backend.quality_signals(&tb, &ob, &mut out).unwrap_err();
        assert!(matches!(err, ShaderError::Shape { .. }), "{err}");
        let empty = backend.alloc::<u32>(0, "offsets").unwrap();
        let err = backend.quality_signals(&tb, &empty, &mut out).unwrap_err();
        assert!(matches!(err, ShaderError::Shape { .. }), "{err}");
    }

    crate::testing::backend_tests!(
        quality_matches_reference_bit_for_bit,
        quality_of_documents_inside_a_larger_text,
        quality_refuses_bad_batches,
    );
}
