//! What a model predicts: its logits on a text, and greedy generation, what a trained model
//! writes after a prompt for a person to read (the coordinator's samples at the end of a run,
//! the demo's output).

use crate::backend::Backend;
use crate::error::{Result, ShaderError};
use crate::model::{Model, Params};

/// The logits `[ids.len(), vocab]` of `params` on `ids` (row `i` predicts the token after
/// `ids[i]`), flattened: what an independent implementation is compared against.
pub fn logits<B: Backend>(backend: &B, params: &Params, ids: &[u32]) -> Result<Vec<f32>> {
    let model = Model::new(backend, params)?;
    let mut ws = model.workspace(backend, 1, ids.len())?;
    model.forward(backend, &mut ws, ids, &vec![u32::MAX; ids.len()])?;
    ws.logits(backend)
}

/// How [`greedy`] picks each token among the most likely ones: transformers'
/// `repetition_penalty` and `no_repeat_ngram_size`, which keep a small model's greedy text
/// from falling into repeating one word.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoding {
    /// Every token already in the text is made less likely by this factor (1: not at all).
    pub repetition_penalty: f32,
    /// No run of this many tokens appears twice in the text, the prompt included (0: any may).
    pub no_repeat_ngram: usize,
}

impl Decoding {
    /// Plain greedy decoding: the most likely token every time.
    pub const PLAIN: Decoding = Decoding {
        repetition_penalty: 1.0,
        no_repeat_ngram: 0,
    };
}

/// The `new_tokens` ids `params` predicts after `prompt`, each the most likely next token
/// given the text so far (the last `seq_len` tokens of it) as `decoding` weighs it, stopping
/// early at `stop` (or when `decoding` rules out every token).
pub fn greedy<B: Backend>(
    backend: &B,
    params: &Params,
    prompt: &[u32],
    new_tokens: usize,
    stop: Option<u32>,
    decoding: Decoding,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ShaderError::Parameter {
            name: "prompt",
            value: "0 tokens".into(),
            reason: "must hold at least one token",
        });
    }
    let penalty = decoding.repetition_penalty;
    if !(penalty.is_finite() && penalty >= 1.0) {
        return Err(ShaderError::Parameter {
            name: "repetition_penalty",
            value: penalty.to_string(),
            reason: "must be a finite number of at least 1",
        });
    }
    let model = Model::new(backend, params)?;
    let (context, vocab) = (params.config().seq_len, params.config().vocab);
    let mut ids = prompt.to_vec();
    let mut out = Vec::with_capacity(new_tokens);
    for _ in 0..new_tokens {
        let window = &ids[ids.len().saturating_sub(context)..];
        let mut ws = model.workspace(backend, 1, window.len())?;
        model.forward(backend, &mut ws, window, &vec![u32::MAX; window.len()])?;
        let mut logits = ws.logits(backend)?;
        let last = &mut logits[(window.len() - 1) * vocab..][..vocab];
        penalise_repeats(last, &ids, penalty);
        for banned in repeated_ngram_ends(&ids, decoding.no_repeat_ngram) {
            if let Some(l) = last.get_mut(banned as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let (next, best) =
            last.iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 { (i, l) } else { best }
                });
        let next = next as u32;
        if best == f32::NEG_INFINITY || Some(next) == stop {
            break;
        }
        out.push(next);
        ids.push(next);
    }
    Ok(out)
}

/// The tokens that would repeat a run of `n` tokens already in `ids` if they came next: each
/// token that followed an earlier occurrence of the last `n - 1` tokens (none when `n` is 0).
fn repeated_ngram_ends(ids: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || ids.len() < n {
        return Vec::new();
    }
    let tail = &ids[ids.len() + 1 - n..];
    ids.windows(n)
        .filter(|w| w[..n - 1] == *tail)
        .map(|w| w[n - 1])
        .collect()
}

/// Makes each token of `seen` less likely, once however often it was seen: a positive logit
/// is divided by `penalty`, a negative one multiplied (transformers'
/// `RepetitionPenaltyLogitsProcessor`). Ids beyond the vocabulary are ignored.
fn penalise_repeats(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if let (Some(l), Some(d)) = (logits.get_mut(i), done.get_mut(i))
            && !*d
        {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            *d = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::model::ModelConfig;
    use crate::train_loop::{TrainSettings, train_local};

    #[test]
    fn a_model_trained_on_one_phrase_writes_it_back() {
        let config = ModelConfig {
            vocab: 260,
            hidden: 64,
            layers: 2,
            heads: 2,
            seq_len: 32,
        };
        let text: Vec<u8> = "the cat sat on the mat. ".repeat(200).into_bytes();
        let settings = TrainSettings {
            steps: 300,
            batch: 8,
            seq: 24,
            ..TrainSettings::default()
        };
        let report = train_local(&Cpu::new(), &config, &text, &settings, |_| {}).unwrap();
        let prompt: Vec<u32> = b"the cat ".iter().map(|&b| u32::from(b)).collect();
        let out = greedy(
            &Cpu::new(),
            &report.params,
            &prompt,
            16,
            None,
            Decoding::PLAIN,
        )
        .unwrap();
        let written: Vec<u8> = out.iter().map(|&t| t as u8).collect();
        assert_eq!(String::from_utf8_lossy(&written), "sat on the mat. ");
        assert!(greedy(&Cpu::new(), &report.params, &[], 4, None, Decoding::PLAIN).is_err());
        for bad in [0.5, f32::NAN, f32::INFINITY] {
            let decoding = Decoding {
                repetition_penalty: bad,
                ..Decoding::PLAIN
            };
            assert!(greedy(&Cpu::new(), &report.params, &prompt, 4, None, decoding).is_err());
        }
        // The phrase repeats every 8 tokens: once no 4 tokens may repeat, the model may not
        // write it back, and it writes something else.
        let no_repeats = Decoding {
            no_repeat_ngram: 4,
            ..Decoding::PLAIN
        };
        let prompt_again: Vec<u32> = b"the cat sat on the mat. the cat "
            .iter()
            .map(|&b| u32::from(b))
            .collect();
        let out = greedy(
            &Cpu::new(),
            &report.params,
            &prompt_again,
            8,
            None,
            no_repeats,
        )
        .unwrap();
        assert!(!out.is_empty());
        assert_ne!(out, b"sat on t".map(u32::from).to_vec());
        let mut text = prompt_again.clone();
        text.extend(&out);
        for end in prompt_again.len()..text.len() {
            let gram = &text[end - 3..=end];
            let earlier = text[..end].windows(4).any(|w| w == gram);
            assert!(!earlier, "a 4-gram repeats: {gram:?}");
        }
        // Stopping at a token ends the text before it.
        let stopped = greedy(
            &Cpu::new(),
            &report.params,
            &prompt,
            16,
            Some(u32::from(b'.')),
            Decoding::PLAIN,
        );
        assert_eq!(stopped.unwrap().len(), "sat on the mat".len());
    }

    /// The penalty follows transformers: positive logits divided, negative ones multiplied,
    /// each seen token once, unseen ones and ids past the vocabulary untouched.
    #[test]
    fn repeated_tokens_are_made_less_likely_once_each() {
        let mut logits = vec![2.0, -2.0, 3.0, 1.0];
        penalise_repeats(&mut logits, &[0, 1, 0, 0, 9], 2.0);
        assert_eq!(logits, vec![1.0, -4.0, 3.0, 1.0]);
        // The token just written loses its lead to one not yet written.
        let mut close = vec![2.0, 1.5, -1.0];
        penalise_repeats(&mut close, &[0], 1.5);
        let best = close
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(best, Some(1));
        let mut same = vec![2.0, -2.0];
        penalise_repeats(&mut same, &[0, 1], 1.0);
        assert_eq!(same, vec![2.0, -2.0]);
    }

    /// The tokens banned by `no_repeat_ngram`: those that followed the last `n - 1` tokens
    /// before; nothing for `n = 0` or a text shorter than `n`.
    #[test]
    fn a_repeated_ngram_is_banned_at_its_last_token() {
        let ids = [1, 2, 3, 1, 2, 4, 1, 2];
        let mut banned = repeated_ngram_ends(&ids, 3);
        banned.sort_unstable();
        assert_eq!(banned, vec![3, 4]);
        assert_eq!(repeated_ngram_ends(&ids, 1), ids.to_vec());
        assert!(repeated_ngram_ends(&ids, 0).is_empty());
        assert!(repeated_ngram_ends(&[1, 2], 3).is_empty());
        assert!(repeated_ngram_ends(&ids, 4).is_empty());
    }
}
