//! One corpus chunk through the corpus kernels: the function volunteers and the coordinator's
//! local build both call, so that they compute the same thing.
//!
//! [`compute_chunk`] decodes and validates a chunk frame ([`CorpusChunk::decode`]), packs its
//! documents in batches ([`pack_documents`]) of at most [`BATCH_BYTES`] bytes and
//! [`BATCH_DOCUMENTS`] documents, runs [`QualityOps::quality_signals`](crate::kernels::quality::QualityOps::quality_signals) and [`MinHashOps::minhash`](crate::kernels::minhash::MinHashOps::minhash) on
//! each, and returns the [`CorpusResult`] with its encoding. Both kernels are integer kernels,
//! bit-identical on the CPU and WGSL paths, and the batching does not change any document's
//! result, so the encoding is a pure function of (chunk bytes, [`MinHashParams`]): two honest
//! peers produce the same bytes and the same blake3.

use canopy_protocol::corpus::{CorpusChunk, CorpusResult, DocumentResult, SIGNALS};
use canopy_protocol::messages::MinHashParams;

use crate::backend::Backend;
use crate::error::{Result, ShaderError};
use crate::kernels::documents::pack_documents;
use crate::kernels::minhash::check_params;
use crate::kernels::quality::QUALITY_SIGNALS;

/// Most text bytes in one kernel batch (bounds device buffers: MinHash needs 4 bytes of
/// scratch per text byte).
pub const BATCH_BYTES: usize = 8 << 20;
/// Most documents in one kernel batch.
pub const BATCH_DOCUMENTS: usize = 16_384;

/// Runs the chunk encoded in `chunk_frame` through `backend`: quality signals and MinHash
/// signatures of every document. Returns the result and its encoding (whose blake3 is what
/// two peers must agree on). A frame that does not decode or validate is
/// [`ShaderError::Corpus`].
pub fn compute_chunk<B: Backend>(
    backend: &B,
    chunk_frame: &[u8],
    params: &MinHashParams,
) -> Result<(CorpusResult, Vec<u8>)> {
    let chunk = CorpusChunk::decode(chunk_frame)?;
    let result = compute_documents(backend, &chunk, params)?;
    let encoded = result.encode()?;
    Ok((result, encoded))
}

/// [`compute_chunk`] on an already decoded chunk.
pub fn compute_documents<B: Backend>(
    backend: &B,
    chunk: &CorpusChunk,
    params: &MinHashParams,
) -> Result<CorpusResult> {
    let num_perm = check_params(params)?;
    let mut documents = Vec::with_capacity(chunk.documents.len());
    let mut start = 0;
    while start < chunk.documents.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < chunk.documents.len()
            && end - start < BATCH_DOCUMENTS
            && (end == start || bytes + chunk.documents[end].text.len() <= BATCH_BYTES)
        {
            bytes += chunk.documents[end].text.len();
            end += 1;
        }
        let texts: Vec<&[u8]> = chunk.documents[start..end]
            .iter()
            .map(|d| d.text.as_bytes())
            .collect();
        let (text, offsets) = pack_documents(&texts)?;
        let tb = backend.upload(&text, "corpus text")?;
        let ob = backend.upload(&offsets, "corpus offsets")?;
        let mut qb = backend.alloc(texts.len() * QUALITY_SIGNALS, "quality signals")?;
        let mut sb = backend.alloc(texts.len() * num_perm, "minhash signatures")?;
        backend.quality_signals(&tb, &ob, &mut qb)?;
        backend.minhash(&tb, &ob, &mut sb, params)?;
        let signals = backend.read(&qb)?;
        let sigs = backend.read(&sb)?;
        for (q, s) in signals
            .chunks_exact(QUALITY_SIGNALS)
            .zip(sigs.chunks_exact(num_perm))
        {
            let mut a = [0u32; SIGNALS];
            a.copy_from_slice(q);
            documents.push(DocumentResult {
                signals: a,
                signature: s.to_vec(),
            });
        }
        start = end;
    }
    if documents.len() != chunk.documents.len() {
        return Err(ShaderError::Corpus(
            canopy_protocol::corpus::CorpusError::Shape {
                reason: format!(
                    "{} results for {} documents",
                    documents.len(),
                    chunk.documents.len()
                ),
            },
        ));
    }
    Ok(CorpusResult {
        params: *params,
        documents,
    })
}

#[cfg(test)]
mod tests {
    use canopy_protocol::corpus::CorpusDocument;

    use super::*;
    use crate::kernels::minhash::minhash_reference;
    use crate::kernels::quality::quality_reference;
    use crate::testing::{random_document, rng};

    fn chunk(seed: u64, n: usize) -> CorpusChunk {
        let mut r = rng(seed);
        CorpusChunk {
            documents: (0..n)
                .map(|i| CorpusDocument {
                    id: format!("doc-{i}"),
                    text: String::from_utf8_lossy(&random_document(&mut r, (i * 37) % 900, 0))
                        .into_owned(),
                })
                .collect(),
        }
    }

    fn chunk_matches_the_references<B: Backend>(backend: &B) {
        let c = chunk(5, 60);
        let params = MinHashParams::default();
        let frame = c.encode().unwrap();
        let (result, encoded) = compute_chunk(backend, &frame, &params).unwrap();
        let lengths: Vec<usize> = c.documents.iter().map(|d| d.text.len()).collect();
        result.check_against(&lengths, &params).unwrap();
        for (d, r) in c.documents.iter().zip(&result.documents) {
            assert_eq!(
                r.signals,
                quality_reference(d.text.as_bytes()).to_array(),
                "{}",
                d.id
            );
            assert_eq!(
                r.signature,
                minhash_reference(d.text.as_bytes(), &params).unwrap()
            );
        }
        // The encoding is the CPU path's, byte for byte, whatever backend ran.
        let (_, cpu) = compute_chunk(&crate::Cpu::new(), &frame, &params).unwrap();
        assert_eq!(encoded, cpu);
        assert_eq!(CorpusResult::decode(&encoded).unwrap(), result);
    }

    fn bad_frames_are_errors<B: Backend>(backend: &B) {
        let params = MinHashParams::default();
        let frame = chunk(6, 3).encode().unwrap();
        let err = compute_chunk(backend, &frame[..frame.len() - 1], &params).unwrap_err();
        assert!(matches!(err, ShaderError::Corpus(_)), "{err}");
        let bad = MinHashParams {
            num_perm: 0,
            ..params
        };
        assert!(compute_chunk(backend, &frame, &bad).is_err());
        let (empty, _) =
            compute_chunk(backend, &CorpusChunk::default().encode().unwrap(), &params).unwrap();
        assert!(empty.documents.is_empty());
    }

    crate::testing::backend_tests!(chunk_matches_the_references, bad_frames_are_errors);

    #[test]
    fn batching_does_not_change_the_result() {
        // Documents straddling the batch limits: many small ones (more than one batch of
        // documents) give the same per-document results as one at a time.
        let mut c = chunk(7, BATCH_DOCUMENTS + 5);
        c.documents.truncate(BATCH_DOCUMENTS + 5);
        let params = MinHashParams {
            num_perm: 4,
            ..MinHashParams::default()
        };
        let result = compute_documents(&crate::Cpu::new(), &c, &params).unwrap();
        assert_eq!(result.documents.len(), c.documents.len());
        let last = c.documents.last().unwrap();
        assert_eq!(
            result.documents.last().unwrap().signature,
            minhash_reference(last.text.as_bytes(), &params).unwrap()
        );
    }
}
