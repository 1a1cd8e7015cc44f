//! MinHash signatures of a batch of documents over word shingles (`wgsl/minhash.wgsl`), for the
//! coordinator's near-duplicate detection (LSH banding over the signatures).
//!
//! Integer kernel: the WGSL output is bit-identical to [`minhash_reference`], and both use only
//! 32-bit arithmetic (WGSL has no `u64`); multiplication and addition wrap. The batch layout,
//! words and word hashes (FNV-1a) are defined in [`super::documents`]; `fmix32` is
//! MurmurHash3's finaliser ([`fmix32`]). With [`MinHashParams`] `num_perm`, `shingle_words = k`
//! and `seed`, for a document with word hashes `w[0..W]`:
//!
//! - **Shingles**: `W − k + 1` shingles `w[j .. j + k]` when `W ≥ k`; a single shingle of all
//!   `W` words when `0 < W < k`; none when `W = 0`.
//! - **Shingle hash** of words `h[0..m]`: `s = 0x9E3779B9`, then `s = fmix32(s ^ h[t])` for
//!   `t = 0, 1, …, m − 1` ([`shingle_hash`]).
//! - **Permutations** ([`permutations`]): `lo`, `hi` = the low and high 32 bits of `seed`;
//!   `x = lo ^ fmix32(hi)`; `state(n) = x + n · 0x9E3779B9`; `a_i = fmix32(state(2i + 1)) | 1`
//!   (odd) and `b_i = fmix32(state(2i + 2))` for `i in 0..num_perm`.
//! - **Signature**: `sig[i] = min over shingles s of fmix32(a_i · s + b_i)`, and `u32::MAX`
//!   for every `i` when the document has no shingles (no words).
//!
//! The output holds `num_perm` values per document: `sig[d · num_perm + i]`.
//!
//! The device runs three passes in one submission: one thread per document writes its word
//! hashes into a scratch region of as many slots as the document has bytes, then (in place)
//! its shingle hashes; then one thread per (document, permutation) takes the minimum. Each
//! pass runs in rounds over chunks of the documents, carrying state between rounds, so that no
//! invocation runs long (software Vulkan cuts an invocation off after 65535 loop iterations;
//! real GPUs have watchdogs).

use bytemuck::{Pod, Zeroable};
use canopy_protocol::messages::{MAX_NUM_PERM, MinHashParams};
use rayon::prelude::*;

use super::documents::{check_offsets, check_output, fmix32, unpack_bytes, word_hashes};
use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, index_u32};

/// The initial value of a shingle hash, and the step of the permutation generator.
pub const GOLDEN: u32 = 0x9e37_79b9;

/// Largest `shingle_words` the kernels accept (as the protocol's task validation does).
pub const MAX_SHINGLE_WORDS: u32 = 32;

/// Checks `params` and returns `num_perm` as a `usize`.
pub fn check_params(params: &MinHashParams) -> Result<usize> {
    if params.num_perm == 0 || params.num_perm > MAX_NUM_PERM {
        return Err(ShaderError::Parameter {
            name: "minhash.num_perm",
            value: params.num_perm.to_string(),
            reason: "must be between 1 and 1024",
        });
    }
    if params.shingle_words == 0 || params.shingle_words > MAX_SHINGLE_WORDS {
        return Err(ShaderError::Parameter {
            name: "minhash.shingle_words",
            value: params.shingle_words.to_string(),
            reason: "must be between 1 and 32",
        });
    }
    Ok(params.num_perm as usize)
}

/// The hash of one shingle from its word hashes.
pub fn shingle_hash(words: &[u32]) -> u32 {
    words.iter().fold(GOLDEN, |s, &h| fmix32(s ^ h))
}

/// The shingle hashes of a document with word hashes `words`, for shingles of `k ≥ 1` words.
pub fn shingles(words: &[u32], k: usize) -> Vec<u32> {
    if words.is_empty() {
        Vec::new()
    } else if words.len() < k {
        vec![shingle_hash(words)]
    } else {
        words.windows(k).map(shingle_hash).collect()
    }
}

/// The permutation coefficients `(a_i, b_i)` for `i in 0..num_perm`, from `seed`.
pub fn permutations(seed: u64, num_perm: u32) -> Vec<(u32, u32)> {
    let lo = seed as u32;
    let hi = (seed >> 32) as u32;
    let x = lo ^ fmix32(hi);
    let state = |n: u32| x.wrapping_add(n.wrapping_mul(GOLDEN));
    (0..num_perm)
        .map(|i| (fmix32(state(2 * i + 1)) | 1, fmix32(state(2 * i + 2))))
        .collect()
}

/// The reference: the signature of one document, from the definitions.
pub fn minhash_reference(doc: &[u8], params: &MinHashParams) -> Result<Vec<u32>> {
    check_params(params)?;
    let perms = permutations(params.seed, params.num_perm);
    Ok(signature(
        &shingles(&word_hashes(doc), params.shingle_words as usize),
        &perms,
    ))
}

fn signature(shingles: &[u32], perms: &[(u32, u32)]) -> Vec<u32> {
    let mut sig = vec![u32::MAX; perms.len()];
    for &s in shingles {
        for (m, &(a, b)) in sig.iter_mut().zip(perms) {
            *m = (*m).min(fmix32(a.wrapping_mul(s).wrapping_add(b)));
        }
    }
    sig
}

/// The fraction of equal slots of two signatures: MinHash's estimate of the Jaccard
/// similarity of the two documents' shingle sets (0 when the lengths differ or are 0).
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// The CPU path: the reference on every document, in parallel. `sig` holds `num_perm` values
/// per document.
pub fn minhash_cpu(
    text: &[u32],
    offsets: &[u32],
    sig: &mut [u32],
    params: &MinHashParams,
) -> Result<()> {
    let num_perm = check_params(params)?;
    let docs = check_offsets(offsets, text.len())?;
    check_output("minhash signatures", sig.len(), docs, num_perm)?;
    let bytes = unpack_bytes(text);
    let perms = permutations(params.seed, params.num_perm);
    let k = params.shingle_words as usize;
    sig.par_chunks_mut(num_perm)
        .enumerate()
        .for_each(|(d, row)| {
            let doc = &bytes[offsets[d] as usize..offsets[d + 1] as usize];
            row.copy_from_slice(&signature(&shingles(&word_hashes(doc), k), &perms));
        });
    Ok(())
}

/// Bytes of each document one round of the `words` pass scans (as `WORD_CHUNK` in the WGSL).
const WORD_CHUNK: usize = 8192;
/// Shingles of each document one round of the `shingles` pass hashes.
const SHINGLE_CHUNK: usize = 1024;
/// Shingles of each document one round of the `signature` pass takes.
const SIGNATURE_CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    docs: u32,
    num_perm: u32,
    shingle: u32,
    seed_lo: u32,
    seed_hi: u32,
    round: u32,
    _pad: [u32; 2],
}

/// The wgpu path: word hashes, shingles and signatures, each in rounds over the longest
/// document, all in one submission. The offsets are read back and checked first, so a bad
/// batch is an error, not garbage.
pub fn minhash_gpu(
    gpu: &Gpu,
    text: &GpuBuffer<u32>,
    offsets: &GpuBuffer<u32>,
    sig: &mut GpuBuffer<u32>,
    params: &MinHashParams,
) -> Result<()> {
    let num_perm = check_params(params)?;
    index_u32(
        "corpus batch bytes",
        text.len().saturating_mul(4).saturating_add(WORD_CHUNK),
    )?;
    let host_offsets = gpu.read(offsets)?;
    let docs = check_offsets(&host_offsets, text.len())?;
    check_output("minhash signatures", sig.len(), docs, num_perm)?;
    let threads = index_u32("minhash signatures", sig.len())?;
    if docs == 0 {
        return Ok(());
    }
    let longest = host_offsets
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    // A document of n bytes has at most ⌈n / 2⌉ words, so at most that many shingles.
    let most_words = longest.div_ceil(2);
    let rounds = [
        longest.div_ceil(WORD_CHUNK).max(1),
        most_words.div_ceil(SHINGLE_CHUNK).max(1),
        most_words.div_ceil(SIGNATURE_CHUNK).max(1),
    ];
    let last = u64::from(host_offsets[docs]);
    let shingle_buf = gpu.scratch("minhash shingles", last.max(1) * 4)?;
    let state = gpu.scratch("minhash word state", docs as u64 * 3 * 4)?;
    let docs_u32 = index_u32("corpus batch documents", docs)?;
    let param_list: Vec<Vec<Params>> = rounds
        .iter()
        .map(|&n| {
            (0..n)
                .map(|round| Params {
                    docs: docs_u32,
                    num_perm: params.num_perm,
                    shingle: params.shingle_words,
                    seed_lo: params.seed as u32,
                    seed_hi: (params.seed >> 32) as u32,
                    round: round as u32,
                    _pad: [0; 2],
                })
                .collect()
        })
        .collect();
    let doc_groups = gpu.grid_threads(docs as u64, WORKGROUP, "minhash documents")?;
    let sig_groups = gpu.grid_threads(u64::from(threads), WORKGROUP, "minhash signatures")?;
    let word_buffers = [&text.buffer, &offsets.buffer, &shingle_buf, &state];
    let shingle_buffers = [&offsets.buffer, &shingle_buf, &state];
    let sig_buffers = [&offsets.buffer, &shingle_buf, &state, &sig.buffer];
    let passes: [(&'static registry::Kernel, &[&wgpu::Buffer], [u32; 3]); 3] = [
        (&registry::MINHASH_WORDS, &word_buffers, doc_groups),
        (&registry::MINHASH_SHINGLES, &shingle_buffers, doc_groups),
        (&registry::MINHASH_SIGNATURE, &sig_buffers, sig_groups),
    ];
    let mut dispatches = Vec::with_capacity(rounds.iter().sum());
    for ((kernel, buffers, groups), list) in passes.into_iter().zip(&param_list) {
        for p in list {
            dispatches.push(Dispatch {
                kernel,
                params: bytemuck::bytes_of(p),
                buffers,
                groups,
            });
        }
    }
    gpu.run(&dispatches)
}

/// The MinHash kernels on every backend: part of [`Backend`](crate::Backend).
pub trait MinHashOps: Buffers {
    /// MinHash signatures of a batch of documents (layout as for
    /// [`QualityOps::quality_signals`](super::quality::QualityOps::quality_signals)): `params.num_perm` values per document in `signatures`;
    /// bit-identical on both paths. See [`crate::kernels::minhash`]. Bad offsets, `num_perm` outside
    /// `1..=1024` or `shingle_words` outside `1..=32` are errors.
    fn minhash(
        &self,
        text: &Self::Buffer<u32>,
        offsets: &Self::Buffer<u32>,
        signatures: &mut Self::Buffer<u32>,
        params: &MinHashParams,
    ) -> Result<()>;
}

impl MinHashOps for Cpu {
    fn minhash(
        &self,
        text: &Vec<u32>,
        offsets: &Vec<u32>,
        signatures: &mut Vec<u32>,
        params: &MinHashParams,
    ) -> Result<()> {
        minhash_cpu(text, offsets, signatures, params)
    }
}

impl MinHashOps for Gpu {
    fn minhash(
        &self,
        text: &GpuBuffer<u32>,
        offsets: &GpuBuffer<u32>,
        signatures: &mut GpuBuffer<u32>,
        params: &MinHashParams,
    ) -> Result<()> {
        minhash_gpu(self, text, offsets, signatures, params)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::Rng;

    use super::*;
    use crate::kernels::documents::pack_documents;
    use crate::prelude::*;
    use crate::testing::{random_document, rng};

    fn run<B: Backend>(backend: &B, docs: &[Vec<u8>], params: &MinHashParams) -> Vec<Vec<u32>> {
        let (text, offsets) = pack_documents(docs).unwrap();
        let tb = backend.upload(&text, "text").unwrap();
        let ob = backend.upload(&offsets, "offsets").unwrap();
        let n = params.num_perm as usize;
        let mut sb = backend.alloc(docs.len() * n, "signatures").unwrap();
        backend.minhash(&tb, &ob, &mut sb, params).unwrap();
        let sig = backend.read(&sb).unwrap();
        sig.chunks_exact(n).map(<[u32]>::to_vec).collect()
    }

    /// Seeded documents of every kind: empty, whitespace only, shorter than a shingle, ASCII,
    /// multilingual UTF-8, arbitrary bytes, and long documents.
    fn corpus(seed: u64) -> Vec<Vec<u8>> {
        let mut r = rng(seed);
        let mut docs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"  \n ".to_vec(),
            b"one".to_vec(),
            b"two words".to_vec(),
            "four wörds in 東京".as_bytes().to_vec(),
            b"exactly five words here ok".to_vec(),
            b"six words make two shingles here".to_vec(),
        ];
        for i in 0..120 {
            let len = match i % 4 {
                0 => r.random_range(0..24),
                1 => r.random_range(24..200),
                _ => r.random_range(200..3000),
            };
            docs.push(random_document(&mut r, len, i % 3));
        }
        docs.push(random_document(&mut r, 100_000, 0));
        // One word longer than a round of the device passes, and documents at round edges.
        docs.push((0..70_000).map(|i| b'a' + (i % 26) as u8).collect());
        docs.push(random_document(&mut r, 8192, 2)[..8192].to_vec());
        docs.push(random_document(&mut r, 8193, 0)[..8193].to_vec());
        docs.push(Vec::new());
        docs
    }

    fn minhash_matches_reference_bit_for_bit<B: Backend>(backend: &B) {
        let docs = corpus(21);
        for params in [
            MinHashParams::default(),
            MinHashParams {
                num_perm: 7,
                shingle_words: 1,
                seed: u64::MAX,
            },
            MinHashParams {
                num_perm: 300,
                shingle_words: 32,
                seed: 0,
            },
        ] {
            let got = run(backend, &docs, &params);
            assert_eq!(got.len(), docs.len());
            for (d, (g, doc)) in got.iter().zip(&docs).enumerate() {
                let expected = minhash_reference(doc, &params).unwrap();
                assert!(
                    *g == expected,
                    "{params:?}: document {d} ({} bytes) differs",
                    doc.len()
                );
            }
        }
    }

    fn empty_and_short_documents<B: Backend>(backend: &B) {
        let params = MinHashParams::default();
        let docs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b" \t\n".to_vec(),
            b"a b c".to_vec(),
            b"  a  b\nc ".to_vec(),
            b"a b c d".to_vec(),
        ];
        let sig = run(backend, &docs, &params);
        assert!(sig[0].iter().all(|&v| v == u32::MAX));
        assert!(sig[1].iter().all(|&v| v == u32::MAX));
        // Fewer words than a shingle: one shingle of all of them, whitespace aside.
        assert_eq!(sig[2], sig[3]);
        assert_ne!(sig[2], sig[0]);
        assert_ne!(sig[2], sig[4]);
        let perms = permutations(params.seed, params.num_perm);
        let s = shingle_hash(&[
            super::super::documents::fnv1a(b"a"),
            super::super::documents::fnv1a(b"b"),
            super::super::documents::fnv1a(b"c"),
        ]);
        let expected: Vec<u32> = perms
            .iter()
            .map(|&(a, b)| fmix32(a.wrapping_mul(s).wrapping_add(b)))
            .collect();
        assert_eq!(sig[2], expected);
    }

    fn minhash_refuses_bad_input<B: Backend>(backend: &B) {
        let (text, offsets) = pack_documents(&["a b c d e f"]).unwrap();
        let tb = backend.upload(&text, "text").unwrap();
        let ob = backend.upload(&offsets, "offsets").unwrap();
        let mut sb = backend.alloc(128, "signatures").unwrap();
        for bad in [
            MinHashParams {
                num_perm: 0,
                ..MinHashParams::default()
            },
            MinHashParams {
                num_perm: 1025,
                ..MinHashParams::default()
            },
            MinHashParams {
                shingle_words: 0,
                ..MinHashParams::default()
            },
            MinHashParams {
                shingle_words: 33,
                ..MinHashParams::default()
            },
        ] {
            let err = backend.minhash(&tb, &ob, &mut sb, &bad).unwrap_err();
            assert!(matches!(err, ShaderError::Parameter { .. }), "{err}");
        }
        let params = MinHashParams::default();
        let bad_offsets = backend.upload(&[0u32, 13], "offsets").unwrap();
        let err = backend
            .minhash(&tb, &bad_offsets, &mut sb, &params)
            .unwrap_err();
        assert!(matches!(err, ShaderError::Parameter { .. }), "{err}");
        let mut short = backend.alloc(127, "signatures").unwrap();
        let err = backend.minhash(&tb, &ob, &mut short, &params).unwrap_err();
        assert!(matches!(err, ShaderError::Shape { .. }), "{err}");
    }

    fn true_jaccard(a: &[u8], b: &[u8], k: usize) -> f64 {
        let sa: HashSet<u32> = shingles(&word_hashes(a), k).into_iter().collect();
        let sb: HashSet<u32> = shingles(&word_hashes(b), k).into_iter().collect();
        sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64
    }

    fn words_doc(r: &mut impl Rng, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| format!("w{}", r.random_range(0..5000u32)))
            .collect()
    }

    fn near_duplicates_estimate_their_jaccard<B: Backend>(backend: &B) {
        let params = MinHashParams::default();
        let k = params.shingle_words as usize;
        let mut r = rng(31);
        let mut docs = Vec::new();
        let mut pairs = Vec::new();
        for _ in 0..10 {
            let base = words_doc(&mut r, 200);
            let mut edited = base.clone();
            let at = r.random_range(0..200);
            edited[at] = "CHANGED".into();
            let unrelated = words_doc(&mut r, 200);
            let i = docs.len();
            docs.push(base.join(" ").into_bytes());
            docs.push(edited.join(" ").into_bytes());
            docs.push(unrelated.join(" ").into_bytes());
            pairs.push((i, i + 1, true));
            pairs.push((i, i + 2, false));
        }
        let sig = run(backend, &docs, &params);
        for (a, b, near) in pairs {
            let truth = true_jaccard(&docs[a], &docs[b], k);
            let estimate = estimated_jaccard(&sig[a], &sig[b]);
            assert!(
                (estimate - truth).abs() <= 0.1,
                "documents {a} and {b}: estimate {estimate}, true Jaccard {truth}"
            );
            if near {
                assert!(truth > 0.9, "{truth}");
            } else {
                assert!(estimate < 0.05, "unrelated documents {a}, {b}: {estimate}");
            }
        }
    }

    crate::testing::backend_tests!(
        minhash_matches_reference_bit_for_bit,
        empty_and_short_documents,
        minhash_refuses_bad_input,
        near_duplicates_estimate_their_jaccard,
    );

    /// A batch whose scratch buffers would pass the device's storage-binding limit is refused
    /// with a typed error naming what to reduce, before anything runs.
    #[test]
    fn a_batch_too_large_for_the_device_is_a_typed_error() {
        let Some(gpu) = crate::testing::gpu() else {
            return;
        };
        let max = gpu.limits().max_storage_buffer_binding_size;
        if max > 1 << 30 {
            // The test allocates a quarter of the limit; leave large devices alone.
            return;
        }
        // One document of max / 4 + 4 bytes: its word/shingle scratch (4 bytes per byte) and
        // its hash table (4 bytes per byte, plus one slot) need more than the limit.
        let words = (max / 16 + 1) as usize;
        let text = gpu.alloc::<u32>(words, "text").unwrap();
        let offsets = gpu.upload(&[0u32, (words * 4) as u32], "offsets").unwrap();
        let mut sig = gpu.alloc::<u32>(128, "signatures").unwrap();
        let err =
            minhash_gpu(gpu, &text, &offsets, &mut sig, &MinHashParams::default()).unwrap_err();
        assert!(
            matches!(err, ShaderError::TooLarge { .. }) && err.to_string().contains("reduce"),
            "{err}"
        );
        let mut out = gpu
            .alloc::<u32>(crate::kernels::quality::QUALITY_SIGNALS, "signals")
            .unwrap();
        let err = crate::kernels::quality::quality_gpu(gpu, &text, &offsets, &mut out).unwrap_err();
        assert!(matches!(err, ShaderError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn permutations_are_odd_seeded_and_distinct() {
        let p = permutations(0x00ca_0097, 128);
        assert_eq!(p.len(), 128);
        assert!(p.iter().all(|&(a, _)| a & 1 == 1));
        let distinct: HashSet<u32> = p.iter().map(|&(a, _)| a).collect();
        assert_eq!(distinct.len(), 128);
        assert_ne!(permutations(1, 4), permutations(2, 4));
        assert_ne!(permutations(1 << 32, 4), permutations(0, 4));
        // Values pinned (computed independently) so that a change to a definition is a
        // decision, not an accident: signatures from different versions must never be mixed.
        assert_eq!(p[0], (0x0239_9ed1, 0x8ea9_c660));
        assert_eq!(p[1], (0x2449_1eb9, 0xcb9c_9373));
        let words: Vec<u32> = [b"a", b"b", b"c", b"d", b"e"]
            .iter()
            .map(|w| crate::kernels::documents::fnv1a(*w))
            .collect();
        assert_eq!(shingle_hash(&words), 0x35c5_ce14);
        let sig = minhash_reference(b"a b c d e", &MinHashParams::default()).unwrap();
        assert_eq!(sig[0], 0xd897_64be);
        assert_eq!(estimated_jaccard(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
        assert_eq!(estimated_jaccard(&[], &[]), 0.0);
    }
}
