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

/// The `new_tokens` ids `params` predicts after `prompt`, each the most likely next token
/// given the text so far (the last `seq_len` tokens of it), stopping early at `stop`. A
/// `repetition_penalty` above 1 makes every token already in the text less likely, as
/// transformers' `repetition_penalty` does (1: plain greedy): a small model's greedy text
/// otherwise falls into repeating one word.
pub fn greedy<B: Backend>(
    backend: &B,
    params: &Params,
    prompt: &[u32],
    new_tokens: usize,
    stop: Option<u32>,
    repetition_penalty: f32,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ShaderError::Parameter {
            name: "prompt",
            value: "0 tokens".into(),
            reason: "must hold at least one token",
        });
    }
    if !(repetition_penalty.is_finite() && repetition_penalty >= 1.0) {
        return Err(ShaderError::Parameter {
            name: "repetition_penalty",
            value: repetition_penalty.to_string(),
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
        penalise_repeats(last, &ids, repetition_penalty);
        let next = last
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 { (i, l) } else { best }
            })
            .0 as u32;
        if Some(next) == stop {
            break;
        }
        out.push(next);
        ids.push(next);
    }
    Ok(out)
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
        let out = greedy(&Cpu::new(), &report.params, &prompt, 16, None, 1.0).unwrap();
        let written: Vec<u8> = out.iter().map(|&t| t as u8).collect();
        assert_eq!(String::from_utf8_lossy(&written), "sat on the mat. ");
        assert!(greedy(&Cpu::new(), &report.params, &[], 4, None, 1.0).is_err());
        for bad in [0.5, f32::NAN, f32::INFINITY] {
            assert!(greedy(&Cpu::new(), &report.params, &prompt, 4, None, bad).is_err());
        }
        // Stopping at a token ends the text before it.
        let stopped = greedy(
            &Cpu::new(),
            &report.params,
            &prompt,
            16,
            Some(u32::from(b'.')),
            1.0,
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
}
