//! The protocol walkthrough: one coordinator identity and N volunteer identities exercise the
//! wire rules of `canopy-protocol` in one process. The coordinator publishes a model as signed
//! chunks; each volunteer checks the announcement, rebuilds the model from chunks arriving out
//! of order (refusing a corrupted one), and returns a signed, compressed update; the coordinator
//! verifies the results in a batch, refuses a replay and a forgery, and averages the updates.
//!
//! Nothing here touches the network: the swarm (libp2p) and the training kernels arrive with
//! later parts, and the demo then runs them instead. The model weights and updates here are
//! synthetic, seeded vectors.

use std::collections::BTreeMap;

use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::envelope::verify_batch;
use canopy_protocol::error::{ChunkError, CompressError, EnvelopeError};
use canopy_protocol::messages::{
    LeaseId, ModelAnnouncement, TaskId, TaskOutput, TaskResult, TrainOutput,
};
use canopy_protocol::{
    CodecSpec, CompressedUpdate, Compressor, Envelope, Keypair, Manifest, Message, MessageKind,
    ObjectKind, Reassembler,
};
use serde::Serialize;

/// What went wrong in the walkthrough (none of these is expected: each is a protocol bug).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkthroughError {
    /// An envelope operation failed.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A chunk or manifest operation failed.
    #[error("chunks: {0}")]
    Chunk(#[from] ChunkError),
    /// An object did not encode or decode.
    #[error("codec: {0}")]
    Codec(#[from] canopy_protocol::error::CodecError),
    /// Compression failed.
    #[error("compression: {0}")]
    Compress(#[from] CompressError),
    /// A key could not be generated.
    #[error("keys: {0}")]
    Key(#[from] canopy_protocol::error::KeyError),
    /// A check that must hold did not.
    #[error("{0}")]
    Broken(String),
}

/// Settings of a walkthrough.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Volunteer identities.
    pub volunteers: usize,
    /// Parameters of the synthetic model.
    pub params: usize,
    /// Seed for the synthetic weights and updates.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            volunteers: 4,
            params: 2_000_000,
            seed: 42,
        }
    }
}

/// One step of the walkthrough, as it is printed.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Who acted.
    pub actor: String,
    /// What happened.
    pub event: String,
    /// Figures for scripts.
    pub detail: BTreeMap<String, serde_json::Value>,
}

/// How one codec did on the volunteers' updates.
#[derive(Debug, Clone, Serialize)]
pub struct CodecFigures {
    /// The codec.
    pub codec: String,
    /// Bytes of one encoded update.
    pub bytes: usize,
    /// Size relative to raw f32.
    pub ratio_to_f32: f64,
    /// Largest absolute error of the decoded mean update against the exact mean.
    pub mean_max_abs_error: f32,
}

/// The walkthrough's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Model parameters.
    pub params: usize,
    /// Chunks the model travelled in.
    pub model_chunks: usize,
    /// Volunteers whose updates were accepted.
    pub accepted: usize,
    /// Envelopes refused, with the reason each was refused.
    pub rejected: Vec<String>,
    /// Per-codec sizes and errors.
    pub codecs: Vec<CodecFigures>,
}

/// Runs the walkthrough, handing each step to `on_step` as it happens.
pub fn run(
    settings: Settings,
    mut on_step: impl FnMut(&Step),
) -> Result<Summary, WalkthroughError> {
    let mut emit = |actor: &str, event: String, detail: Vec<(&str, serde_json::Value)>| {
        on_step(&Step {
            actor: actor.to_string(),
            event,
            detail: detail
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
    };
    let coordinator = Keypair::from_secret_bytes(&seeded_secret(settings.seed, u64::MAX));
    let volunteers: Vec<Keypair> = (0..settings.volunteers as u64)
        .map(|i| Keypair::from_secret_bytes(&seeded_secret(settings.seed, i)))
        .collect();
    emit(
        "coordinator",
        format!("identity {}", coordinator.peer_id()),
        vec![("peer_id", coordinator.peer_id().to_string().into())],
    );

    // Round 1: publish the model as signed chunks and announce it.
    let round = 1;
    let weights = synthetic(settings.params, settings.seed);
    let weight_bytes = Compressor::new(CodecSpec::F32, weights.len())?
        .compress(&weights)?
        .body;
    let manifest = Manifest::build(
        ObjectKind::ModelWeights,
        &weight_bytes,
        DEFAULT_CHUNK_SIZE,
        BTreeMap::from([("params".into(), settings.params.to_string())]),
    )?
    .sign(&coordinator)?;
    let announcement = Envelope::seal(
        &coordinator,
        round,
        0,
        &Message::ModelAnnouncement(Box::new(ModelAnnouncement {
            round,
            manifest: manifest.clone(),
        })),
    )?
    .to_frame()?;
    let model_chunks = manifest.manifest().chunks.len();
    emit(
        "coordinator",
        format!(
            "published model v{round}: {} parameters in {model_chunks} chunks, root {}",
            settings.params,
            manifest.manifest().root.fmt_short()
        ),
        vec![
            ("chunks", model_chunks.into()),
            ("bytes", weight_bytes.len().into()),
        ],
    );

    let mut results = Vec::new();
    let mut exact_updates = Vec::new();
    for (i, keys) in volunteers.iter().enumerate() {
        let name = format!("volunteer-{i}");
        // Check the announcement: signed by the pinned coordinator key, for this round.
        let envelope = Envelope::from_frame(&announcement)?;
        let verified = envelope.verify_for(MessageKind::ModelAnnouncement, round)?;
        if verified.sender() != &coordinator.public() {
            return Err(WalkthroughError::Broken(
                "announcement not from the coordinator".into(),
            ));
        }
        let Message::ModelAnnouncement(ann) = verified.message()? else {
            return Err(WalkthroughError::Broken(
                "announcement of another kind".into(),
            ));
        };
        let model = ann.manifest.verify()?.clone();
        // Chunks arrive in a shuffled order; one arrives corrupted first and is refused.
        let mut reassembler = Reassembler::new(model.clone(), 1 << 32)?;
        let mut order: Vec<usize> = (0..model.chunks.len()).collect();
        shuffle(&mut order, settings.seed ^ i as u64);
        let mut refused = 0;
        for (n, &index) in order.iter().enumerate() {
            let start = index * model.chunk_size as usize;
            let chunk = &weight_bytes[start..start + model.chunk_len(index)?];
            if n == 0 {
                let mut bad = chunk.to_vec();
                bad[0] ^= 0xff;
                if reassembler.insert(&model.chunks[index], &bad).is_err() {
                    refused += 1;
                }
            }
            reassembler.insert(&model.chunks[index], chunk)?;
        }
        let rebuilt = reassembler.finish()?;
        if rebuilt != weight_bytes {
            return Err(WalkthroughError::Broken("rebuilt model differs".into()));
        }
        emit(
            &name,
            format!(
                "{} rebuilt the model from {} chunks out of order, refused {refused} corrupted chunk",
                keys.peer_id(),
                model.chunks.len()
            ),
            vec![
                ("peer_id", keys.peer_id().to_string().into()),
                ("refused_chunks", refused.into()),
            ],
        );

        // A synthetic pseudo-gradient, compressed blockwise int8, signed, returned.
        let update = synthetic(settings.params, settings.seed + 1 + i as u64)
            .into_iter()
            .map(|v| v * 1e-2)
            .collect::<Vec<f32>>();
        let compressed = Compressor::new(CodecSpec::default(), update.len())?.compress(&update)?;
        let object = compressed.to_frame()?;
        let update_manifest = Manifest::build(
            ObjectKind::Update,
            &object,
            DEFAULT_CHUNK_SIZE,
            BTreeMap::new(),
        )?
        .sign(keys)?;
        let result = Envelope::seal(
            keys,
            round,
            1,
            &Message::TaskResult(TaskResult {
                lease: LeaseId(i as u64),
                task: TaskId(i as u64),
                output: TaskOutput::Train(Box::new(TrainOutput {
                    update: update_manifest,
                    train_loss: 0.0,
                    tokens: 0,
                })),
                compute_ms: 0,
            }),
        )?;
        emit(
            &name,
            format!(
                "sent a signed int8 update: {} bytes for {} parameters ({:.2}x smaller than f32)",
                object.len(),
                update.len(),
                (update.len() * 4) as f64 / object.len() as f64
            ),
            vec![("update_bytes", object.len().into())],
        );
        results.push((result, object));
        exact_updates.push(update);
    }

    // The coordinator: a replay from an earlier round and a forgery arrive with the results.
    let mut rejected = Vec::new();
    if let Some((first, _)) = results.first() {
        let replay = first.clone();
        if let Err(e) = replay.verify_for(MessageKind::TaskResult, round + 1) {
            rejected.push(format!("replay into round {}: {e}", round + 1));
        }
        let mut forged_frame = first.to_frame()?;
        let last = forged_frame.len() - 1;
        forged_frame[last] ^= 1;
        if let Err(e) = Envelope::from_frame(&forged_frame).and_then(|e| e.verify().map(|_| ())) {
            rejected.push(format!("tampered result: {e}"));
        }
    }
    let envelopes: Vec<Envelope> = results.iter().map(|(e, _)| e.clone()).collect();
    let verdicts = verify_batch(&envelopes);
    let accepted = verdicts.iter().filter(|v| v.is_ok()).count();
    emit(
        "coordinator",
        format!(
            "batch-verified {accepted}/{} results; refused {} forged or replayed",
            envelopes.len(),
            rejected.len()
        ),
        vec![
            ("accepted", accepted.into()),
            ("rejected", rejected.clone().into()),
        ],
    );

    // Decode every accepted update and average; compare codecs on the same updates.
    let exact_mean = mean(&exact_updates);
    let mut codecs = Vec::new();
    let f32_bytes = settings.params * 4;
    for (label, spec) in [
        ("f32", CodecSpec::F32),
        ("f16", CodecSpec::F16),
        ("int8/128", CodecSpec::default()),
        (
            "top-k 1%",
            CodecSpec::TopK {
                density_ppm: 10_000,
            },
        ),
    ] {
        let mut decoded = Vec::new();
        let mut bytes = 0;
        for (n, update) in exact_updates.iter().enumerate() {
            let object = if spec == CodecSpec::default() {
                results[n].1.clone()
            } else {
                Compressor::new(spec, update.len())?
                    .compress(update)?
                    .to_frame()?
            };
            bytes = object.len();
            let update = CompressedUpdate::from_frame(&object)?;
            decoded.push(update.decompress(settings.params)?);
        }
        let approx = mean(&decoded);
        let err = approx
            .iter()
            .zip(&exact_mean)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        codecs.push(CodecFigures {
            codec: label.into(),
            bytes,
            ratio_to_f32: bytes as f64 / f32_bytes as f64,
            mean_max_abs_error: err,
        });
    }
    Ok(Summary {
        params: settings.params,
        model_chunks,
        accepted,
        rejected,
        codecs,
    })
}

fn seeded_secret(seed: u64, index: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"canopy walkthrough key");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// A seeded vector in [-1, 1) from a splitmix64 stream.
fn synthetic(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = vectors.first() else {
        return Vec::new();
    };
    let mut out = vec![0f32; first.len()];
    for v in vectors {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x;
        }
    }
    let n = vectors.len() as f32;
    out.iter_mut().for_each(|o| *o /= n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walkthrough_accepts_honest_results_and_refuses_the_rest() {
        let mut steps = 0;
        let summary = run(
            Settings {
                volunteers: 3,
                params: 300_000,
                seed: 7,
            },
            |_| steps += 1,
        )
        .unwrap();
        assert_eq!(summary.accepted, 3);
        assert_eq!(summary.rejected.len(), 2);
        assert!(summary.rejected[0].contains("expected round 2"));
        assert_eq!(summary.model_chunks, 2);
        let int8 = &summary.codecs[2];
        assert!(int8.ratio_to_f32 < 0.27, "{int8:?}");
        // Updates are in [-0.01, 0.01): int8 error is at most 0.01/254 per element.
        assert!(int8.mean_max_abs_error <= 0.01 / 254.0 * 1.01, "{int8:?}");
        assert_eq!(summary.codecs[0].mean_max_abs_error, 0.0);
        assert_eq!(steps, 1 + 1 + 2 * 3 + 1);
    }
}
