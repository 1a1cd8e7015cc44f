//! The model's parameters as one flat `f32` vector with an index of named tensors, in
//! BLOOM's layout and with the names of Hugging Face's `BloomModel` (so export to
//! `BloomForCausalLM` is a renaming with a `transformer.` prefix), and their seeded init.
//!
//! The order of the tensors in the flat vector is the order of [`tensor_index`]: the word
//! embeddings, their LayerNorm, the blocks `h.0 … h.{L-1}` (each in the order of its
//! submodules) and `ln_f`. Linear weights follow `torch.nn.Linear`: `[out, in]`,
//! `y = x·Wᵀ + b`.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::error::{Result, ShaderError};
use crate::model::config::{INIT_STD, ModelConfig};
use crate::runtime::check_len;

/// What a tensor is, which decides its init and whether AdamW decays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A linear weight or the embedding table: normal init (std [`INIT_STD`]), decayed.
    Weight,
    /// A bias (linear or LayerNorm): zeros, not decayed.
    Bias,
    /// A LayerNorm scale: ones, not decayed.
    NormScale,
}

/// One named tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The Hugging Face `BloomModel` name, e.g. `h.0.self_attention.query_key_value.weight`.
    pub name: String,
    /// Index of its first element in the flat vector.
    pub offset: usize,
    /// Its shape, row-major (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Its kind.
    pub kind: TensorKind,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its elements' range in the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Tensors per transformer block, in their order in the flat vector.
pub(crate) const PER_LAYER: usize = 12;

/// Position of each tensor of a block among its block's [`PER_LAYER`] tensors.
pub(crate) mod slot {
    pub(crate) const INPUT_LN_W: usize = 0;
    pub(crate) const INPUT_LN_B: usize = 1;
    pub(crate) const QKV_W: usize = 2;
    pub(crate) const QKV_B: usize = 3;
    pub(crate) const DENSE_W: usize = 4;
    pub(crate) const DENSE_B: usize = 5;
    pub(crate) const POST_LN_W: usize = 6;
    pub(crate) const POST_LN_B: usize = 7;
    pub(crate) const FC1_W: usize = 8;
    pub(crate) const FC1_B: usize = 9;
    pub(crate) const FC2_W: usize = 10;
    pub(crate) const FC2_B: usize = 11;
}

/// Index of the word embeddings in [`tensor_index`].
pub(crate) const WTE: usize = 0;
/// Index of the embedding LayerNorm's scale (its bias follows).
pub(crate) const EMB_LN: usize = 1;

/// Index in [`tensor_index`] of tensor `slot` of block `layer`.
pub(crate) fn layer_tensor(layer: usize, slot: usize) -> usize {
    3 + layer * PER_LAYER + slot
}

/// Index in [`tensor_index`] of `ln_f.weight` (its bias follows).
pub(crate) fn final_ln(config: &ModelConfig) -> usize {
    3 + config.layers * PER_LAYER
}

/// The named tensors of a model of this size, with their offsets in the flat vector. The
/// lengths add up to [`ModelConfig::num_params`].
pub fn tensor_index(config: &ModelConfig) -> Result<Vec<TensorInfo>> {
    config.validate()?;
    let (v, h, f) = (config.vocab, config.hidden, config.ffn());
    let mut index = Vec::with_capacity(5 + config.layers * PER_LAYER);
    let mut offset = 0;
    let mut push = |name: String, shape: Vec<usize>, kind: TensorKind| {
        let info = TensorInfo {
            name,
            offset,
            shape,
            kind,
        };
        offset += info.len();
        index.push(info);
    };
    use TensorKind::{Bias, NormScale, Weight};
    push("word_embeddings.weight".into(), vec![v, h], Weight);
    push(
        "word_embeddings_layernorm.weight".into(),
        vec![h],
        NormScale,
    );
    push("word_embeddings_layernorm.bias".into(), vec![h], Bias);
    for i in 0..config.layers {
        let p = format!("h.{i}.");
        push(format!("{p}input_layernorm.weight"), vec![h], NormScale);
        push(format!("{p}input_layernorm.bias"), vec![h], Bias);
        push(
            format!("{p}self_attention.query_key_value.weight"),
            vec![3 * h, h],
            Weight,
        );
        push(
            format!("{p}self_attention.query_key_value.bias"),
            vec![3 * h],
            Bias,
        );
        push(
            format!("{p}self_attention.dense.weight"),
            vec![h, h],
            Weight,
        );
        push(format!("{p}self_attention.dense.bias"), vec![h], Bias);
        push(
            format!("{p}post_attention_layernorm.weight"),
            vec![h],
            NormScale,
        );
        push(format!("{p}post_attention_layernorm.bias"), vec![h], Bias);
        push(format!("{p}mlp.dense_h_to_4h.weight"), vec![f, h], Weight);
        push(format!("{p}mlp.dense_h_to_4h.bias"), vec![f], Bias);
        push(format!("{p}mlp.dense_4h_to_h.weight"), vec![h, f], Weight);
        push(format!("{p}mlp.dense_4h_to_h.bias"), vec![h], Bias);
    }
    push("ln_f.weight".into(), vec![h], NormScale);
    push("ln_f.bias".into(), vec![h], Bias);
    Ok(index)
}

/// A whole model's parameters (or a gradient, or a pseudo-gradient, which share the layout):
/// one flat vector and its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    config: ModelConfig,
    index: Vec<TensorInfo>,
    values: Vec<f32>,
}

impl Params {
    /// BLOOM's init from `seed`: weights and embeddings normal with std [`INIT_STD`], biases
    /// zero, LayerNorm scales one. The draws come from ChaCha8 seeded with `seed`, in the
    /// order of the flat vector (Box–Muller in f64), so a seed gives the same bits on every
    /// machine.
    pub fn init(config: &ModelConfig, seed: u64) -> Result<Self> {
        let mut params = Self::zeros(config)?;
        let mut normal = Normal::new(seed);
        for info in &params.index {
            let values = &mut params.values[info.range()];
            match info.kind {
                TensorKind::Weight => {
                    for v in values {
                        *v = (normal.sample() * f64::from(INIT_STD)) as f32;
                    }
                }
                TensorKind::Bias => values.fill(0.0),
                TensorKind::NormScale => values.fill(1.0),
            }
        }
        Ok(params)
    }

    /// All zeros (the layout of a gradient).
    pub fn zeros(config: &ModelConfig) -> Result<Self> {
        let index = tensor_index(config)?;
        Ok(Self {
            config: *config,
            values: vec![0.0; config.num_params()],
            index,
        })
    }

    /// Wraps a flat vector, which must have [`ModelConfig::num_params`] elements.
    pub fn from_values(config: &ModelConfig, values: Vec<f32>) -> Result<Self> {
        let index = tensor_index(config)?;
        check_len("parameter vector", values.len(), config.num_params())?;
        Ok(Self {
            config: *config,
            index,
            values,
        })
    }

    /// The model size.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The named tensors, in the order of the flat vector.
    pub fn index(&self) -> &[TensorInfo] {
        &self.index
    }

    /// The flat vector.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The flat vector, mutably.
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    /// Unwraps the flat vector.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.iter().find(|t| t.name == name)
    }

    /// The values of the tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.tensor(name).map(|t| &self.values[t.range()])
    }

    /// The values of the tensor called `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let range = self.tensor(name)?.range();
        Some(&mut self.values[range])
    }

    /// The values of the `i`-th tensor of the index.
    pub(crate) fn slice(&self, i: usize) -> Result<&[f32]> {
        let info = self.index.get(i).ok_or(ShaderError::Parameter {
            name: "tensor",
            value: i.to_string(),
            reason: "no such tensor in the index",
        })?;
        Ok(&self.values[info.range()])
    }
}

/// Standard normal draws from ChaCha8 (Box–Muller, both values of each pair used).
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Uniform in `(0, 1]`, 53 bits.
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn sample(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::small_config;

    #[test]
    fn the_index_is_contiguous_and_uses_blooms_names() {
        let config = small_config();
        let index = tensor_index(&config).unwrap();
        assert_eq!(index.len(), 5 + 2 * PER_LAYER);
        let mut offset = 0;
        for t in &index {
            assert_eq!(t.offset, offset, "{}", t.name);
            offset += t.len();
        }
        assert_eq!(offset, config.num_params());
        let shape = |name: &str| index.iter().find(|t| t.name == name).unwrap().shape.clone();
        assert_eq!(shape("word_embeddings.weight"), [260, 16]);
        assert_eq!(shape("h.1.self_attention.query_key_value.weight"), [48, 16]);
        assert_eq!(shape("h.1.self_attention.query_key_value.bias"), [48]);
        assert_eq!(shape("h.0.self_attention.dense.weight"), [16, 16]);
        assert_eq!(shape("h.0.mlp.dense_h_to_4h.weight"), [64, 16]);
        assert_eq!(shape("h.0.mlp.dense_4h_to_h.weight"), [16, 64]);
        assert_eq!(shape("ln_f.bias"), [16]);
        assert_eq!(
            index[layer_tensor(1, slot::FC2_B)].name,
            "h.1.mlp.dense_4h_to_h.bias"
        );
        assert_eq!(index[final_ln(&config)].name, "ln_f.weight");
        assert_eq!(index[EMB_LN + 1].name, "word_embeddings_layernorm.bias");
    }

    /// The first three values of `Params::init(&small_config(), 7)`.
    const PINNED: [f32; 3] = [0.018_939_646, 0.033_443_25, -0.002_438_708_7];

    #[test]
    fn init_is_deterministic_from_the_seed() {
        let config = small_config();
        let a = Params::init(&config, 7).unwrap();
        let b = Params::init(&config, 7).unwrap();
        let c = Params::init(&config, 8).unwrap();
        assert_eq!(a.values(), b.values());
        assert_ne!(a.values(), c.values());
        // Biases zero, LayerNorm scales one, weights with std close to 0.02.
        assert!(
            a.get("h.0.mlp.dense_h_to_4h.bias")
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(a.get("ln_f.weight").unwrap().iter().all(|&v| v == 1.0));
        let w = a.get("word_embeddings.weight").unwrap();
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / w.len() as f64;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / w.len() as f64;
        assert!(mean.abs() < 2e-3, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "std {}", var.sqrt());
        // The first values are pinned, so a change to the init is a decision.
        assert_eq!(w[..3], PINNED);
    }

    #[test]
    fn from_values_checks_the_length() {
        let config = small_config();
        assert!(Params::from_values(&config, vec![0.0; 3]).is_err());
        let p = Params::from_values(&config, vec![0.5; config.num_params()]).unwrap();
        assert_eq!(p.get("ln_f.bias").unwrap(), &[0.5; 16]);
    }
}
