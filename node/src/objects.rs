//! How training objects are laid out as bytes: model weights (a model version or checkpoint)
//! and compressed pseudo-gradients. The coordinator writes them and nodes read them (and the
//! other way round for updates), so both go through these functions.
//!
//! - Weights: the flat parameter vector as little-endian f32, in the order of
//!   [`canopy_shaders::model::tensor_index`]; the manifest's metadata names the model size
//!   (`vocab`, `hidden`, `layers`, `heads`, `seq_len`) and the `round`. The initial model's
//!   also names the seed it was drawn from (`init_seed`): a node draws it itself and checks it
//!   against the root rather than downloading it ([`seeded_weights`]).
//! - Updates: a [`CompressedUpdate`] frame; the metadata names the `task` and `round`.
//! - Model deltas: a [`CompressedUpdate`] frame of the step from version `round - 1` to
//!   `round`. The coordinator makes the new version exactly `old + decompress(step)`
//!   ([`quantized_step`]), so a node holding the old version rebuilds the new one bit for bit
//!   ([`apply_delta`]) and checks it against the version's root.

use std::collections::BTreeMap;

use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::messages::TaskId;
use canopy_protocol::{
    CodecSpec, CompressedUpdate, Compressor, Digest, Keypair, Manifest, ObjectKind, SignedManifest,
};
use canopy_shaders::{ModelConfig, Params};

use crate::error::NodeError;

/// The weights manifest's metadata key naming the seed an initial model was drawn from: a
/// node that finds it builds the weights itself ([`seeded_weights`]) instead of fetching them.
pub const INIT_SEED: &str = "init_seed";

/// Builds the (unsigned) manifest and bytes of model weights for `round`. A node rebuilding
/// a model version from a delta compares this manifest's root with the version's.
pub fn weights_manifest(
    kind: ObjectKind,
    params: &Params,
    round: u64,
) -> Result<(Manifest, Vec<u8>), NodeError> {
    let bytes = weights_bytes(params);
    let c = params.config();
    let metadata: BTreeMap<String, String> = [
        ("vocab", c.vocab),
        ("hidden", c.hidden),
        ("layers", c.layers),
        ("heads", c.heads),
        ("seq_len", c.seq_len),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("round".to_string(), round.to_string())])
    .collect();
    let manifest = Manifest::build(kind, &bytes, DEFAULT_CHUNK_SIZE, metadata)?;
    Ok((manifest, bytes))
}

/// Builds the signed manifest and bytes of model weights for `round`.
pub fn weights_object(
    keys: &Keypair,
    kind: ObjectKind,
    params: &Params,
    round: u64,
) -> Result<(SignedManifest, Vec<u8>), NodeError> {
    let (manifest, bytes) = weights_manifest(kind, params, round)?;
    Ok((manifest.sign(keys)?, bytes))
}

/// Builds the signed manifest and bytes of the initial model, drawn from `seed` (round 0),
/// with the seed in its metadata so that nodes can draw it themselves.
pub fn initial_weights_object(
    keys: &Keypair,
    config: &ModelConfig,
    seed: u64,
) -> Result<(SignedManifest, Vec<u8>, Params), NodeError> {
    let params = Params::init(config, seed).map_err(|e| NodeError::BadObject(e.to_string()))?;
    let (mut manifest, bytes) = weights_manifest(ObjectKind::ModelWeights, &params, 0)?;
    manifest.metadata.insert(INIT_SEED.into(), seed.to_string());
    manifest.validate_structure()?;
    Ok((manifest.sign(keys)?, bytes, params))
}

/// The initial model a weights manifest names by its seed, drawn here and checked against the
/// manifest's root, which spares the node downloading it. `Ok(None)`: the manifest names no
/// seed; an error: the seed or the model size is invalid, or the weights drawn here differ
/// from the published ones (the caller then fetches them).
pub fn seeded_weights(manifest: &Manifest) -> Result<Option<Params>, NodeError> {
    let Some(seed) = manifest.metadata.get(INIT_SEED) else {
        return Ok(None);
    };
    let seed: u64 = seed.parse().map_err(|_| {
        NodeError::BadObject(format!(
            "the weights manifest's `{INIT_SEED}` {seed:?} is not a seed"
        ))
    })?;
    let config = weights_config(manifest)?;
    let params = Params::init(&config, seed).map_err(|e| NodeError::BadObject(e.to_string()))?;
    let root = Digest::of(&weights_bytes(&params));
    if root != manifest.root {
        return Err(NodeError::BadObject(format!(
            "the weights drawn from seed {seed} are {root}, not the published {}",
            manifest.root
        )));
    }
    Ok(Some(params))
}

/// Model weights as bytes: every value as little-endian f32, in the parameters' order.
fn weights_bytes(params: &Params) -> Vec<u8> {
    params
        .values()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Builds the signed manifest and bytes of a model delta: the compressed step from the
/// version `round - 1` to `round`.
pub fn delta_object(
    keys: &Keypair,
    step: &CompressedUpdate,
    round: u64,
) -> Result<(SignedManifest, Vec<u8>), NodeError> {
    let bytes = step
        .to_frame()
        .map_err(|e| NodeError::BadObject(format!("encoding the model delta: {e}")))?;
    let metadata = BTreeMap::from([("round".to_string(), round.to_string())]);
    let manifest = Manifest::build(ObjectKind::ModelDelta, &bytes, DEFAULT_CHUNK_SIZE, metadata)?;
    Ok((manifest.sign(keys)?, bytes))
}

/// The compressed step from `old` to `new`, and the parameters it actually leads to:
/// `old + decompress(step)`, which the coordinator publishes as the new version so that
/// [`apply_delta`] rebuilds it exactly.
pub fn quantized_step(
    old: &Params,
    new: &Params,
    codec: CodecSpec,
) -> Result<(CompressedUpdate, Params), NodeError> {
    let mut compressor = Compressor::new(codec, old.values().len())
        .map_err(|e| NodeError::BadObject(format!("compressing the model delta: {e}")))?;
    quantized_step_with(old, new, &mut compressor)
}

/// [`quantized_step`] with a `compressor` that carries what its codec did not send of earlier
/// steps (error feedback) into this one, and keeps what it does not send of this one.
pub fn quantized_step_with(
    old: &Params,
    new: &Params,
    compressor: &mut Compressor,
) -> Result<(CompressedUpdate, Params), NodeError> {
    let compressed = difference_with(new, old, compressor, "the model delta")?;
    let bytes = compressed
        .to_frame()
        .map_err(|e| NodeError::BadObject(format!("encoding the model delta: {e}")))?;
    let rebuilt = apply_delta(old, &bytes)?;
    Ok((compressed, rebuilt))
}

/// Applies a model delta's bytes to `base`: the next version's parameters, or an error when
/// the delta does not fit the model.
pub fn apply_delta(base: &Params, bytes: &[u8]) -> Result<Params, NodeError> {
    let step = update_values(bytes, base.values().len())?;
    let values = base
        .values()
        .iter()
        .zip(&step)
        .map(|(p, s)| p + s)
        .collect();
    Params::from_values(base.config(), values).map_err(|e| NodeError::BadObject(e.to_string()))
}

/// The model size a weights manifest names.
pub fn weights_config(manifest: &Manifest) -> Result<ModelConfig, NodeError> {
    let field = |name: &'static str| -> Result<usize, NodeError> {
        manifest
            .metadata
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or(NodeError::BadObject(format!(
                "the weights manifest has no valid `{name}`"
            )))
    };
    let config = ModelConfig {
        vocab: field("vocab")?,
        hidden: field("hidden")?,
        layers: field("layers")?,
        heads: field("heads")?,
        seq_len: field("seq_len")?,
    };
    config
        .validate()
        .map_err(|e| NodeError::BadObject(format!("the weights manifest's model size: {e}")))?;
    Ok(config)
}

/// Reads model weights back from their manifest and bytes (checked against the manifest).
pub fn params_from_object(manifest: &Manifest, bytes: &[u8]) -> Result<Params, NodeError> {
    let config = weights_config(manifest)?;
    let expected = config.num_params() * 4;
    if bytes.len() != expected || manifest.total_len != expected as u64 {
        return Err(NodeError::BadObject(format!(
            "weights of {} bytes for a model of {} parameters",
            bytes.len(),
            config.num_params()
        )));
    }
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Params::from_values(&config, values).map_err(|e| NodeError::BadObject(e.to_string()))
}

/// Builds the signed manifest and bytes of a compressed update for `task` in `round`.
pub fn update_object(
    keys: &Keypair,
    update: &CompressedUpdate,
    task: TaskId,
    round: u64,
) -> Result<(SignedManifest, Vec<u8>), NodeError> {
    let bytes = update
        .to_frame()
        .map_err(|e| NodeError::BadObject(format!("encoding the update: {e}")))?;
    let metadata = BTreeMap::from([
        ("task".to_string(), task.0.to_string()),
        ("round".to_string(), round.to_string()),
    ]);
    let manifest = Manifest::build(ObjectKind::Update, &bytes, DEFAULT_CHUNK_SIZE, metadata)?;
    Ok((manifest.sign(keys)?, bytes))
}

/// A training task's pseudo-gradient `before − after` (the model it started from minus the
/// model its inner steps reached), compressed with `codec`.
pub fn pseudo_gradient(
    before: &Params,
    after: &Params,
    codec: CodecSpec,
) -> Result<CompressedUpdate, NodeError> {
    compressed_difference(before, after, codec, "the update")
}

/// `a − b`, value by value, compressed with `codec`; `what` names it in the error.
fn compressed_difference(
    a: &Params,
    b: &Params,
    codec: CodecSpec,
    what: &str,
) -> Result<CompressedUpdate, NodeError> {
    let mut compressor = Compressor::new(codec, a.values().len())
        .map_err(|e| NodeError::BadObject(format!("compressing {what}: {e}")))?;
    difference_with(a, b, &mut compressor, what)
}

/// A pseudo-gradient `before − after` compressed by `compressor`, which keeps what a sparse
/// codec did not send (error feedback) for the next call.
pub fn pseudo_gradient_with(
    before: &Params,
    after: &Params,
    compressor: &mut Compressor,
) -> Result<CompressedUpdate, NodeError> {
    difference_with(before, after, compressor, "the update")
}

fn difference_with(
    a: &Params,
    b: &Params,
    compressor: &mut Compressor,
    what: &str,
) -> Result<CompressedUpdate, NodeError> {
    let difference: Vec<f32> = a
        .values()
        .iter()
        .zip(b.values())
        .map(|(x, y)| x - y)
        .collect();
    compressor
        .compress(&difference)
        .map_err(|e| NodeError::BadObject(format!("compressing {what}: {e}")))
}

/// The largest encoded update of a model with `len` parameters, in bytes (every codec stays
/// below it: f32 takes 4 bytes a value, sparse codecs at most 8 with their indices): the
/// coordinator refuses a bigger manifest before fetching or allocating anything for it.
pub fn max_update_len(len: usize) -> u64 {
    8 * len as u64 + (64 << 10)
}

/// Decodes an update's bytes into `len` values; the codec's own checks apply (length,
/// finiteness of the scales).
pub fn update_values(bytes: &[u8], len: usize) -> Result<Vec<f32>, NodeError> {
    let update = CompressedUpdate::from_frame(bytes)
        .map_err(|e| NodeError::BadObject(format!("update frame: {e}")))?;
    update
        .decompress(len)
        .map_err(|e| NodeError::BadObject(format!("update: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_shaders::testing::small_config;

    /// The initial model's manifest names its seed, and a node draws the same weights from
    /// it; a manifest without a seed asks for a download, and a seed that does not give the
    /// published weights (or is not a number) is refused rather than trusted.
    #[test]
    fn the_initial_model_is_drawn_from_its_seed_and_checked_against_its_root() {
        let keys = Keypair::generate().unwrap();
        let (signed, bytes, params) = initial_weights_object(&keys, &small_config(), 7).unwrap();
        let manifest = signed.verify().unwrap();
        assert_eq!(manifest.metadata[INIT_SEED], "7");
        let drawn = seeded_weights(manifest)
            .unwrap()
            .expect("a seeded manifest");
        assert_eq!(drawn.values(), params.values());
        assert_eq!(
            params_from_object(manifest, &bytes).unwrap().values(),
            params.values()
        );

        let (later, _) = weights_manifest(ObjectKind::ModelWeights, &params, 1).unwrap();
        assert!(seeded_weights(&later).unwrap().is_none());

        let mut wrong = manifest.clone();
        wrong.metadata.insert(INIT_SEED.into(), "8".into());
        let err = seeded_weights(&wrong).unwrap_err().to_string();
        assert!(err.contains("seed 8"), "{err}");
        wrong.metadata.insert(INIT_SEED.into(), "seven".into());
        let err = seeded_weights(&wrong).unwrap_err().to_string();
        assert!(err.contains("not a seed"), "{err}");
    }

    /// A node holding version r rebuilds version r + 1 from the int8 delta bit for bit: the
    /// rebuilt weights have the root of the published version.
    #[test]
    fn a_model_delta_rebuilds_the_next_version_exactly() {
        let keys = Keypair::generate().unwrap();
        let old = Params::init(&small_config(), 1).unwrap();
        let target = Params::init(&small_config(), 2).unwrap();
        let codec = CodecSpec::Int8 { block: 64 };
        let (step, published) = quantized_step(&old, &target, codec).unwrap();
        let (signed, bytes) = delta_object(&keys, &step, 4).unwrap();
        assert_eq!(signed.verify().unwrap().kind, ObjectKind::ModelDelta);
        assert!(
            bytes.len() < old.values().len() * 2,
            "int8: about a byte a value"
        );
        let rebuilt = apply_delta(&old, &bytes).unwrap();
        assert_eq!(rebuilt, published);
        let (a, _) = weights_manifest(ObjectKind::ModelWeights, &rebuilt, 4).unwrap();
        let (b, _) = weights_manifest(ObjectKind::ModelWeights, &published, 4).unwrap();
        assert_eq!(a.root, b.root);
        // Close to the intended step, though not equal to it.
        let err = published
            .values()
            .iter()
            .zip(target.values())
            .map(|(p, t)| (p - t).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.05, "largest error {err}");
        // A delta for another model size is refused.
        let other = Params::init(
            &ModelConfig {
                hidden: 32,
                ..small_config()
            },
            1,
        )
        .unwrap();
        assert!(apply_delta(&other, &bytes).is_err());
    }

    #[test]
    fn weights_round_trip_and_bad_ones_are_refused() {
        let keys = Keypair::generate().unwrap();
        let params = Params::init(&small_config(), 1).unwrap();
        let (signed, bytes) = weights_object(&keys, ObjectKind::ModelWeights, &params, 3).unwrap();
        let manifest = signed.verify().unwrap();
        assert_eq!(manifest.metadata["round"], "3");
        assert_eq!(params_from_object(manifest, &bytes).unwrap(), params);
        assert!(params_from_object(manifest, &bytes[4..]).is_err());
        let mut odd = manifest.clone();
        odd.metadata.insert("heads".into(), "3".into());
        assert!(params_from_object(&odd, &bytes).is_err());
        odd.metadata.remove("heads");
        assert!(weights_config(&odd).is_err());
    }

    #[test]
    fn updates_round_trip() {
        let keys = Keypair::generate().unwrap();
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
        let update = Compressor::new(CodecSpec::F32, values.len())
            .unwrap()
            .compress(&values)
            .unwrap();
        let (signed, bytes) = update_object(&keys, &update, TaskId(9), 2).unwrap();
        assert_eq!(signed.verify().unwrap().metadata["task"], "9");
        assert_eq!(update_values(&bytes, 1000).unwrap(), values);
        assert!(update_values(&bytes, 999).is_err());
        assert!(update_values(&bytes[1..], 1000).is_err());
    }
}
