//! Stage 2, **compute**: per chunk, quality signals and MinHash signatures.
//!
//! The computation itself is [`canopy_shaders::corpus::compute_chunk`], the same function a
//! volunteer's worker runs. This module runs it over a whole plan on a local backend
//! ([`compute_local`]), compares two peers' results ([`compare_results`]), and accepts a
//! result for a chunk ([`accept_result`]: decode, check against the chunk).

use canopy_protocol::Digest;
use canopy_protocol::corpus::{CorpusChunk, CorpusResult};
use canopy_shaders::Backend;

use super::plan::Plan;
use super::{CorpusBuildError, Result};

/// Whether two peers' results for one corpus task agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Same encoding: both name this digest.
    Agree(Digest),
    /// Different encodings: at least one peer is wrong; a third run (datacenter tier or
    /// local) decides which.
    Disagree {
        /// blake3 of the first result.
        a: Digest,
        /// blake3 of the second result.
        b: Digest,
    },
}

/// Compares two encoded results of the same corpus task by the blake3 of their encodings.
pub fn compare_results(a: &[u8], b: &[u8]) -> Agreement {
    let (a, b) = (Digest::of(a), Digest::of(b));
    if canopy_protocol::corpus::results_agree(&a, &b) {
        Agreement::Agree(a)
    } else {
        Agreement::Disagree { a, b }
    }
}

/// Decodes an encoded result for chunk `index` of `plan` and checks that it answers it (the
/// plan's parameters, one entry per document, byte counts equal to the texts').
pub fn accept_result(plan: &Plan, index: usize, encoded: &[u8]) -> Result<CorpusResult> {
    let chunk = plan
        .chunks
        .get(index)
        .ok_or(CorpusBuildError::ResultCount {
            results: index + 1,
            chunks: plan.chunks.len(),
        })?;
    let result = CorpusResult::decode(encoded)
        .and_then(|r| {
            r.check_against(&chunk.text_lengths(), &plan.params())
                .map(|()| r)
        })
        .map_err(|source| CorpusBuildError::Chunk { index, source })?;
    Ok(result)
}

/// Runs every chunk of `plan` on `backend`, in order; `progress(done, total)` after each.
pub fn compute_local<B: Backend>(
    backend: &B,
    plan: &Plan,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<CorpusResult>> {
    let params = plan.params();
    let mut results = Vec::with_capacity(plan.chunks.len());
    for (index, chunk) in plan.chunks.iter().enumerate() {
        // Decoded one chunk at a time (the plan keeps only frames); the result's encoding
        // is not needed here, so this is not `compute_chunk`.
        let decoded = CorpusChunk::decode(&chunk.frame)
            .map_err(|source| CorpusBuildError::Chunk { index, source })?;
        let result = canopy_shaders::corpus::compute_documents(backend, &decoded, &params)
            .map_err(|source| CorpusBuildError::Compute { index, source })?;
        tracing::debug!(
            "chunk {index} ({}): {} documents",
            chunk.digest.fmt_short(),
            result.documents.len()
        );
        results.push(result);
        progress(index + 1, plan.chunks.len());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use canopy_shaders::Cpu;

    use super::*;
    use crate::corpus::{CorpusConfig, plan, sample};

    /// A volunteer that tampers with one signature value is caught: its result's hash differs
    /// from an honest peer's, and a third (local) run sides with the honest one.
    #[test]
    fn a_tampered_result_is_detected_by_its_hash() {
        let tmp = tempfile::tempdir().unwrap();
        sample::write_sample(tmp.path(), &sample::SampleOptions::small(3)).unwrap();
        let plan = plan::plan(tmp.path(), None, &CorpusConfig::default()).unwrap();
        let chunk = &plan.chunks[0];
        let params = plan.params();
        let (honest, honest_bytes) =
            canopy_shaders::corpus::compute_chunk(&Cpu::new(), &chunk.frame, &params).unwrap();
        let (_, again) =
            canopy_shaders::corpus::compute_chunk(&Cpu::new(), &chunk.frame, &params).unwrap();
        assert_eq!(
            compare_results(&honest_bytes, &again),
            Agreement::Agree(Digest::of(&again))
        );

        let mut tampered = honest.clone();
        tampered.documents[1].signature[17] ^= 0x100;
        let tampered_bytes = tampered.encode().unwrap();
        let Agreement::Disagree { a, b } = compare_results(&honest_bytes, &tampered_bytes) else {
            panic!("a tampered signature must not agree");
        };
        assert_ne!(a, b);
        // The tie-break: a third run agrees with the honest peer only.
        let (_, third) =
            canopy_shaders::corpus::compute_chunk(&Cpu::new(), &chunk.frame, &params).unwrap();
        assert_eq!(Digest::of(&third), a);
        // A tampered result still decodes and fits its chunk: only the hash comparison
        // catches it. A result for another chunk does not fit.
        accept_result(&plan, 0, &tampered_bytes).unwrap();
        let other = &plan.chunks[1];
        let (_, other_bytes) =
            canopy_shaders::corpus::compute_chunk(&Cpu::new(), &other.frame, &params).unwrap();
        assert!(accept_result(&plan, 0, &other_bytes).is_err());
        assert!(accept_result(&plan, 0, &honest_bytes[..10]).is_err());
    }
}
