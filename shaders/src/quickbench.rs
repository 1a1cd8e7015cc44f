//! Quick measurements for `canopy-node bench`: matrix-multiply throughput and training
//! tokens per second on a backend. (Criterion benches in `canopy-benches` are the careful
//! ones; these give a volunteer a figure in seconds.)

use std::time::Instant;

use crate::backend::Backend;
use crate::error::Result;
use crate::kernels::matmul::{MatmulShape, Transpose};
use crate::model::{Model, ModelConfig, Params, TrainConfig, Trainer};

/// GFLOP/s of an `n × n × n` f32 matrix multiply on `backend`, best of `reps` runs after one
/// warm-up (each run includes reading the result back, so a GPU's work is really done).
pub fn matmul_gflops<B: Backend>(backend: &B, n: usize, reps: usize) -> Result<f64> {
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let a = backend.upload(&a, "bench A")?;
    let b = backend.upload(&b, "bench B")?;
    let mut c = backend.alloc(n * n, "bench C")?;
    let shape = MatmulShape {
        m: n,
        k: n,
        n,
        transpose: Transpose::None,
        accumulate: false,
    };
    backend.matmul(&a, &b, &mut c, shape)?;
    backend.read(&c)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        backend.matmul(&a, &b, &mut c, shape)?;
        backend.read(&c)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Training tokens per second of `config` on `backend` (batch × seq tokens a step), over
/// `steps` steps after one warm-up step.
pub fn train_tokens_per_sec<B: Backend>(
    backend: &B,
    config: &ModelConfig,
    batch: usize,
    seq: usize,
    steps: usize,
) -> Result<f64> {
    let params = Params::init(config, 1)?;
    let mut model = Model::new(backend, &params)?;
    let mut ws = model.workspace(backend, batch, seq)?;
    let mut trainer = Trainer::new(backend, &model, TrainConfig::default())?;
    let text = b"Canopy trains open language models on volunteered compute. ";
    let tokens: Vec<u32> = text
        .iter()
        .cycle()
        .take(batch * (seq + 1))
        .map(|b| u32::from(*b))
        .collect();
    let mut inputs = Vec::with_capacity(batch * seq);
    let mut targets = Vec::with_capacity(batch * seq);
    for row in tokens.chunks(seq + 1) {
        inputs.extend_from_slice(&row[..seq]);
        targets.extend_from_slice(&row[1..]);
    }
    trainer.step(backend, &mut model, &mut ws, &inputs, &targets)?;
    let start = Instant::now();
    for _ in 0..steps.max(1) {
        trainer.step(backend, &mut model, &mut ws, &inputs, &targets)?;
    }
    Ok((batch * seq * steps.max(1)) as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;

    #[test]
    fn figures_are_positive() {
        assert!(matmul_gflops(&Cpu::new(), 64, 2).unwrap() > 0.0);
        let config = ModelConfig {
            vocab: 260,
            hidden: 16,
            layers: 1,
            heads: 2,
            seq_len: 8,
        };
        assert!(train_tokens_per_sec(&Cpu::new(), &config, 2, 8, 2).unwrap() > 0.0);
    }
}
