//! The size of a BLOOM-architecture model: [`ModelConfig`], its presets, its parameter count
//! and the checks a configuration must pass before anything is allocated.

use crate::error::{Result, ShaderError};
use crate::kernels::attention::MAX_HEAD_DIM;

/// Token ids of raw bytes: `0..256`.
pub const BYTE_VOCAB: usize = 256;

/// Special tokens after the bytes in the presets' vocabulary (`256..260`).
pub const SPECIAL_TOKENS: usize = 4;

/// The LayerNorm epsilon of every LayerNorm in the model (BLOOM's `layer_norm_epsilon`).
pub const LAYERNORM_EPS: f32 = 1e-5;

/// The standard deviation of the normal init of weight matrices and embeddings (BLOOM's
/// `initializer_range`).
pub const INIT_STD: f32 = 0.02;

/// Largest value any single dimension may take; keeps every size computation far from
/// overflow.
const MAX_DIM: usize = 1 << 20;

/// The model sizes Canopy trains, by name: what `canopy.toml`'s `[model] preset`, the
/// coordinator's `demo --preset` and `canopy-node train --preset` take.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// About 0.8M parameters ([`ModelConfig::tiny`]): trains on a CPU in minutes.
    #[default]
    Tiny,
    /// About 25M parameters ([`ModelConfig::small`]).
    Small,
    /// About 300M parameters ([`ModelConfig::base`]).
    Base,
}

impl Preset {
    /// Every preset, smallest first.
    pub const ALL: [Preset; 3] = [Preset::Tiny, Preset::Small, Preset::Base];
    /// Their names, in the same order (for command lines' lists of values).
    pub const NAMES: [&'static str; 3] = ["tiny", "small", "base"];

    /// The preset's name.
    pub const fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The model of this size over the byte vocabulary (a BPE project sets its own vocab).
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::Tiny => ModelConfig::tiny(),
            Preset::Small => ModelConfig::small(),
            Preset::Base => ModelConfig::base(),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preset name that is none of [`Preset::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a model preset (tiny, small or base)")]
pub struct UnknownPreset(pub String);

impl std::str::FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(s: &str) -> std::result::Result<Self, UnknownPreset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPreset(s.to_owned()))
    }
}

/// The size of a BLOOM-architecture decoder over bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// Vocabulary size: 256 byte ids plus special tokens.
    pub vocab: usize,
    /// Width of the residual stream (`hidden_size`).
    pub hidden: usize,
    /// Transformer blocks (`n_layer`).
    pub layers: usize,
    /// Attention heads per block (`n_head`).
    pub heads: usize,
    /// The longest sequence the model is trained on.
    pub seq_len: usize,
}

impl ModelConfig {
    /// About 0.8M parameters: 260 ids, hidden 128, 4 layers, 4 heads, sequences of 128.
    pub fn tiny() -> Self {
        Self {
            vocab: BYTE_VOCAB + SPECIAL_TOKENS,
            hidden: 128,
            layers: 4,
            heads: 4,
            seq_len: 128,
        }
    }

    /// About 25M parameters: hidden 512, 8 layers, 8 heads, sequences of 512.
    pub fn small() -> Self {
        Self {
            vocab: BYTE_VOCAB + SPECIAL_TOKENS,
            hidden: 512,
            layers: 8,
            heads: 8,
            seq_len: 512,
        }
    }

    /// About 300M parameters (the shape of BLOOM-560m without its large vocabulary): hidden
    /// 1024, 24 layers, 16 heads, sequences of 1024.
    pub fn base() -> Self {
        Self {
            vocab: BYTE_VOCAB + SPECIAL_TOKENS,
            hidden: 1024,
            layers: 24,
            heads: 16,
            seq_len: 1024,
        }
    }

    /// Dimension per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Width of the MLP (`4 · hidden`).
    pub fn ffn(&self) -> usize {
        4 * self.hidden
    }

    /// Checks the configuration: every size nonzero and at most 2²⁰, `hidden` divisible by
    /// `heads`, the head dimension within the attention kernel's cap, a vocabulary that holds
    /// every byte.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab", self.vocab),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("seq_len", self.seq_len),
        ] {
            if value == 0 || value > MAX_DIM {
                return Err(param(name, value, "must be between 1 and 2^20"));
            }
        }
        if self.vocab < BYTE_VOCAB {
            return Err(param(
                "vocab",
                self.vocab,
                "must be at least 256 (one id per byte)",
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(param("hidden", self.hidden, "must be divisible by heads"));
        }
        if self.head_dim() > MAX_HEAD_DIM {
            return Err(param(
                "hidden / heads",
                self.head_dim(),
                "head dimension must be at most 128 (the attention kernel's cap)",
            ));
        }
        Ok(())
    }

    /// Parameters per transformer block: two LayerNorms, the fused QKV and dense projections
    /// and the MLP, with biases (`12·h² + 13·h`).
    pub fn params_per_layer(&self) -> usize {
        let h = self.hidden;
        12 * h * h + 13 * h
    }

    /// Total parameters (the LM head is tied to the word embeddings, so it adds none).
    pub fn num_params(&self) -> usize {
        let h = self.hidden;
        self.vocab * h + 2 * h + self.layers * self.params_per_layer() + 2 * h
    }
}

fn param(name: &'static str, value: usize, reason: &'static str) -> ShaderError {
    ShaderError::Parameter {
        name,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A preset reads back from its name in text and in JSON (as `canopy.toml` stores it),
    /// gives its model, and any other name is refused.
    #[test]
    fn presets_round_trip_by_name() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
            let json = serde_json::to_string(&preset).unwrap();
            assert_eq!(json, format!("\"{preset}\""));
            assert_eq!(serde_json::from_str::<Preset>(&json).unwrap(), preset);
            preset.config().validate().unwrap();
        }
        assert_eq!(Preset::Small.config(), ModelConfig::small());
        assert_eq!(
            "huge".parse::<Preset>(),
            Err(UnknownPreset("huge".to_owned()))
        );
    }

    #[test]
    fn presets_are_valid_and_sized_as_documented() {
        for (config, low, high) in [
            (ModelConfig::tiny(), 700_000, 1_100_000),
            (ModelConfig::small(), 20_000_000, 30_000_000),
            (ModelConfig::base(), 250_000_000, 350_000_000),
        ] {
            config.validate().unwrap();
            let n = config.num_params();
            assert!((low..high).contains(&n), "{config:?}: {n} parameters");
        }
        // 260·128 + 2·128 + 4·(12·128² + 13·128) + 2·128.
        assert_eq!(ModelConfig::tiny().num_params(), 826_880);
        assert_eq!(ModelConfig::tiny().head_dim(), 32);
    }

    #[test]
    fn bad_configs_are_refused_with_the_setting_named() {
        let ok = ModelConfig::tiny();
        let cases = [
            (ModelConfig { hidden: 130, ..ok }, "hidden"),
            (ModelConfig { heads: 0, ..ok }, "heads"),
            (ModelConfig { layers: 0, ..ok }, "layers"),
            (ModelConfig { vocab: 100, ..ok }, "vocab"),
            (ModelConfig { seq_len: 0, ..ok }, "seq_len"),
            (
                ModelConfig {
                    hidden: 512,
                    heads: 2,
                    ..ok
                },
                "hidden / heads",
            ),
        ];
        for (config, name) in cases {
            match config.validate() {
                Err(ShaderError::Parameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{config:?}: {other:?}"),
            }
        }
    }
}
