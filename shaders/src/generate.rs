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
/// given the text so far (the last `seq_len` tokens of it), stopping early at `stop`.
pub fn greedy<B: Backend>(
    backend: &B,
    params: &Params,
    prompt: &[u32],
    new_tokens: usize,
    stop: Option<u32>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ShaderError::Parameter {
            name: "prompt",
            value: "0 tokens".into(),
            reason: "must hold at least one token",
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
        let logits = ws.logits(backend)?;
        let last = &logits[(window.len() - 1) * vocab..][..vocab];
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
        let out = greedy(&Cpu::new(), &report.params, &prompt, 16, None).unwrap();
        let written: Vec<u8> = out.iter().map(|&t| t as u8).collect();
        assert_eq!(String::from_utf8_lossy(&written), "sat on the mat. ");
        assert!(greedy(&Cpu::new(), &report.params, &[], 4, None).is_err());
        // Stopping at a token ends the text before it.
        let stopped = greedy(
            &Cpu::new(),
            &report.params,
            &prompt,
            16,
            Some(u32::from(b'.')),
        );
        assert_eq!(stopped.unwrap().len(), "sat on the mat".len());
    }
}
