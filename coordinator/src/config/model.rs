//! `[model]` and `[data]`: which model is trained, on what text, through which tokenizer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use canopy_shaders::Preset;

/// How text becomes the model's tokens (`[model] tokenizer`, and `demo --tokenizer`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerChoice {
    /// Byte-level: each byte is a token (260 ids with the special tokens).
    #[default]
    Bytes,
    /// Byte-level BPE with `bpe_vocab` tokens, trained by the coordinator on the project's
    /// training text when the project starts.
    Bpe,
}

/// `[model]`: which model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The model size.
    pub preset: Preset,
    /// `bytes` or `bpe`.
    pub tokenizer: TokenizerChoice,
    /// Tokens in the BPE vocabulary (bytes and special tokens included), 260 to 65536.
    pub bpe_vocab: u32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Tiny,
            tokenizer: TokenizerChoice::Bytes,
            bpe_vocab: 4096,
        }
    }
}

/// The built-in training text used when `data.corpus` is unset (`[data] text`, and
/// `demo --text`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinText {
    /// The Universal Declaration of Human Rights in 24 languages (about 430 KB, real text).
    #[default]
    Udhr,
    /// Generated multilingual sentences (`generated_bytes` of them): synthetic, for tests of
    /// the machinery; a model learns no language from it.
    Generated,
}

/// `[data]`: the training corpus and how it is cut up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A directory of `.txt` / `.jsonl` files; `None` uses the built-in `text`.
    pub corpus: Option<PathBuf>,
    /// The built-in text when `corpus` is unset: `udhr` (real text) or `generated`.
    pub text: BuiltinText,
    /// How many bytes of multilingual text to generate when `text = "generated"`.
    pub generated_bytes: u64,
    /// Size of one data shard in bytes.
    pub shard_bytes: u64,
    /// Share of the corpus held out for evaluation, in (0, 0.5).
    pub holdout: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            corpus: None,
            text: BuiltinText::Udhr,
            generated_bytes: 2_000_000,
            shard_bytes: 65_536,
            holdout: 0.05,
        }
    }
}
