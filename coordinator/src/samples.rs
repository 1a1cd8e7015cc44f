//! What the trained model writes: greedy continuations (kept from repeating themselves) of fixed
//! prompts in several languages, made when a run finishes and shown on the dashboard and by
//! the demo; and the held-out loss in bits per byte, which compares runs whatever their
//! tokenizer.

use canopy_shaders::{Cpu, Decoding, Params};
use canopy_text::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::project::ProjectError;

type Result<T> = std::result::Result<T, ProjectError>;

/// The prompts, by language: openings the Universal Declaration of Human Rights uses in
/// each. None ends in a space: a byte-level BPE joins a space to the word after it, so a
/// prompt that ends in one leaves the model after a token it has almost never seen, and it
/// writes noise.
pub const PROMPTS: [(&str, &str); 7] = [
    ("en", "Everyone has the right to"),
    ("fr", "Toute personne a droit"),
    ("es", "Toda persona tiene derecho"),
    ("de", "Jeder hat das Recht"),
    ("sw", "Kila mtu ana haki"),
    ("ru", "Каждый человек имеет право"),
    ("zh", "人人有权"),
];

/// Tokens written after each prompt (fewer when the model ends the document).
pub const SAMPLE_TOKENS: usize = 60;

/// How the samples pick their tokens: greedy, with transformers' `repetition_penalty = 1.3`
/// and `no_repeat_ngram_size = 2`. Plain greedy text from a small model repeats one word ('to
/// to to', 'la la la').
pub const DECODING: Decoding = Decoding {
    repetition_penalty: 1.3,
    no_repeat_ngram: 2,
};

/// The state database's key for the samples of the finished run.
pub const SAMPLES_META: &str = "samples";

/// The state database's key for the held-out bytes per token.
pub const BYTES_PER_TOKEN_META: &str = "heldout_bytes_per_token";

/// One prompt and what the model wrote after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// BCP 47 tag of the prompt's language.
    pub language: String,
    /// The prompt.
    pub prompt: String,
    /// The greedy continuation.
    pub continuation: String,
}

/// Greedy continuations of [`PROMPTS`] by `params`, decoded as [`DECODING`] says.
pub fn generate(tokenizer: &Tokenizer, params: &Params) -> Result<Vec<Sample>> {
    let cpu = Cpu::new();
    let eos = canopy_shaders::tokens::EOS_ID;
    PROMPTS
        .iter()
        .map(|(language, prompt)| {
            let ids = tokenizer
                .encode(prompt)
                .map_err(|e| ProjectError::Invalid(e.to_string()))?;
            let out =
                canopy_shaders::greedy(&cpu, params, &ids, SAMPLE_TOKENS, Some(eos), DECODING)?;
            Ok(Sample {
                language: (*language).to_owned(),
                prompt: (*prompt).to_owned(),
                continuation: tokenizer.decode(&out),
            })
        })
        .collect()
}

/// A held-out loss in nats per token as bits per byte of text.
pub fn bits_per_byte(loss_nats: f64, bytes_per_token: f64) -> f64 {
    loss_nats / bytes_per_token.max(f64::MIN_POSITIVE) / std::f64::consts::LN_2
}

/// Bits per byte of `heldout` under a unigram byte model of `train` (add-one smoothing): the
/// baseline a model must beat to have learned more than which bytes are common.
pub fn unigram_bits_per_byte(train: &[u8], heldout: &[u8]) -> f64 {
    let mut counts = [1u64; 256];
    for &b in train {
        counts[b as usize] += 1;
    }
    let total: u64 = counts.iter().sum();
    let bits: f64 = heldout
        .iter()
        .map(|&b| -(counts[b as usize] as f64 / total as f64).log2())
        .sum();
    bits / heldout.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_byte_converts_nats_per_token() {
        // ln 256 nats per byte is 8 bits per byte.
        assert!((bits_per_byte(256f64.ln(), 1.0) - 8.0).abs() < 1e-12);
        // A token of 4 bytes at 4 ln 2 nats is 1 bit per byte.
        assert!((bits_per_byte(4.0 * std::f64::consts::LN_2, 4.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_unigram_baseline_is_the_byte_entropy() {
        let uniform: Vec<u8> = (0..=255).collect();
        let bits = unigram_bits_per_byte(&uniform.repeat(100), &uniform);
        assert!((bits - 8.0).abs() < 1e-9, "{bits}");
        let skewed = unigram_bits_per_byte(&b"aaaaaaab".repeat(1000), b"aaaaaaab");
        assert!(skewed < 1.0, "{skewed}");
    }

    #[test]
    fn every_prompt_is_in_the_built_in_text() {
        let text = String::from_utf8(canopy_text::udhr::training_text()).unwrap();
        for (_, prompt) in PROMPTS {
            assert!(text.contains(prompt), "{prompt}");
        }
    }
}
