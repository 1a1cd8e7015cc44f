//! Softmax cross-entropy over rows of logits, forward and backward (`wgsl/cross_entropy.wgsl`).
//!
//! Forward: `lse = log Σ exp(logits)`, `loss = lse − logits[target]`, per row. Backward:
//! `dlogits = scale · (softmax − onehot(target))`, where `scale` is usually `1 / tokens` for a
//! mean loss. A target ≥ vocab (by convention [`IGNORE`]) marks a padding row: zero loss and
//! zero gradient.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::exp;
use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// The target that marks a row to ignore.
pub const IGNORE: u32 = u32::MAX;

/// (rows, vocab), checking every length.
fn check(
    logits: usize,
    targets: usize,
    per_row: &[(&'static str, usize)],
) -> Result<(usize, usize)> {
    let rows = targets;
    if rows == 0 || !logits.is_multiple_of(rows) {
        return Err(ShaderError::Parameter {
            name: "targets",
            value: rows.to_string(),
            reason: "must be nonzero and divide the number of logits",
        });
    }
    for &(what, len) in per_row {
        check_len(what, len, rows)?;
    }
    Ok((rows, logits / rows))
}

/// (loss, lse) of one row.
fn forward_row(logits: &[f32], target: u32) -> (f32, f32) {
    let max = exp::max(logits);
    let sum = exp::sum_exp(logits, max);
    let lse = max + sum.ln();
    let loss = match logits.get(target as usize) {
        Some(&l) => lse - l,
        None => 0.0,
    };
    (loss, lse)
}

/// The reference: rows one after another.
pub fn cross_entropy_reference(
    logits: &[f32],
    targets: &[u32],
    loss: &mut [f32],
    lse: &mut [f32],
) -> Result<()> {
    let (_, vocab) = check(
        logits.len(),
        targets.len(),
        &[
            ("cross_entropy loss", loss.len()),
            ("cross_entropy lse", lse.len()),
        ],
    )?;
    for (((row, &t), l), s) in logits.chunks_exact(vocab).zip(targets).zip(loss).zip(lse) {
        (*l, *s) = forward_row(row, t);
    }
    Ok(())
}

/// The CPU path: the reference's rows in parallel.
pub fn cross_entropy_cpu(
    logits: &[f32],
    targets: &[u32],
    loss: &mut [f32],
    lse: &mut [f32],
) -> Result<()> {
    let (_, vocab) = check(
        logits.len(),
        targets.len(),
        &[
            ("cross_entropy loss", loss.len()),
            ("cross_entropy lse", lse.len()),
        ],
    )?;
    logits
        .par_chunks_exact(vocab)
        .zip(targets.par_iter())
        .zip(loss.par_iter_mut().zip(lse.par_iter_mut()))
        .for_each(|((row, &t), (l, s))| (*l, *s) = forward_row(row, t));
    Ok(())
}

/// The reference (and CPU path, rows in parallel) of the backward pass.
pub fn cross_entropy_backward_reference(
    logits: &[f32],
    targets: &[u32],
    lse: &[f32],
    dlogits: &mut [f32],
    scale: f32,
) -> Result<()> {
    let (_, vocab) = check(
        logits.len(),
        targets.len(),
        &[("cross_entropy lse", lse.len())],
    )?;
    check_len("cross_entropy dlogits", dlogits.len(), logits.len())?;
    dlogits
        .par_chunks_exact_mut(vocab)
        .zip(logits.par_chunks_exact(vocab))
        .zip(targets.par_iter().zip(lse.par_iter()))
        .for_each(|((d, row), (&t, &s))| {
            if t as usize >= vocab {
                d.fill(0.0);
                return;
            }
            for (o, &v) in d.iter_mut().zip(row) {
                *o = scale * exp::exp(v - s);
            }
            d[t as usize] = scale * (exp::exp(row[t as usize] - s) - 1.0);
        });
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    scale: f32,
    _pad: u32,
}

/// The wgpu path of the forward pass.
pub fn cross_entropy_gpu(
    gpu: &Gpu,
    logits: &GpuBuffer<f32>,
    targets: &GpuBuffer<u32>,
    loss: &mut GpuBuffer<f32>,
    lse: &mut GpuBuffer<f32>,
) -> Result<()> {
    let (rows, vocab) = check(
        logits.len(),
        targets.len(),
        &[
            ("cross_entropy loss", loss.len()),
            ("cross_entropy lse", lse.len()),
        ],
    )?;
    index_u32("cross_entropy logits", logits.len())?;
    let params = Params {
        rows: rows as u32,
        vocab: vocab as u32,
        scale: 0.0,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::CROSS_ENTROPY_FORWARD,
        params: bytemuck::bytes_of(&params),
        buffers: &[&logits.buffer, &targets.buffer, &loss.buffer, &lse.buffer],
        groups: gpu.grid(rows as u64, "cross_entropy rows")?,
    }])
}

/// The wgpu path of the backward pass.
pub fn cross_entropy_backward_gpu(
    gpu: &Gpu,
    logits: &GpuBuffer<f32>,
    targets: &GpuBuffer<u32>,
    lse: &GpuBuffer<f32>,
    dlogits: &mut GpuBuffer<f32>,
    scale: f32,
) -> Result<()> {
    let (rows, vocab) = check(
        logits.len(),
        targets.len(),
        &[("cross_entropy lse", lse.len())],
    )?;
    check_len("cross_entropy dlogits", dlogits.len(), logits.len())?;
    let n = index_u32("cross_entropy logits", logits.len())?;
    let params = Params {
        rows: rows as u32,
        vocab: vocab as u32,
        scale,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::CROSS_ENTROPY_BACKWARD,
        params: bytemuck::bytes_of(&params),
        buffers: &[
            &logits.buffer,
            &targets.buffer,
            &lse.buffer,
            &dlogits.buffer,
        ],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "cross_entropy_backward")?,
    }])
}

/// The cross-entropy kernels on every backend: part of [`Backend`](crate::Backend).
pub trait CrossEntropyOps: Buffers {
    /// Per-row softmax cross-entropy of `logits` `[rows, vocab]` against `targets` `[rows]`;
    /// writes `loss` and `lse` (log-sum-exp) per row. A target ≥ vocab is ignored (loss 0).
    fn cross_entropy(
        &self,
        logits: &Self::Buffer<f32>,
        targets: &Self::Buffer<u32>,
        loss: &mut Self::Buffer<f32>,
        lse: &mut Self::Buffer<f32>,
    ) -> Result<()>;

    /// `dlogits = scale · (softmax(logits) − onehot(target))`; ignored rows get zeros.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Buffer<f32>,
        targets: &Self::Buffer<u32>,
        lse: &Self::Buffer<f32>,
        dlogits: &mut Self::Buffer<f32>,
        scale: f32,
    ) -> Result<()>;
}

impl CrossEntropyOps for Cpu {
    fn cross_entropy(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        loss: &mut Vec<f32>,
        lse: &mut Vec<f32>,
    ) -> Result<()> {
        cross_entropy_cpu(logits, targets, loss, lse)
    }

    fn cross_entropy_backward(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        lse: &Vec<f32>,
        dlogits: &mut Vec<f32>,
        scale: f32,
    ) -> Result<()> {
        cross_entropy_backward_reference(logits, targets, lse, dlogits, scale)
    }
}

impl CrossEntropyOps for Gpu {
    fn cross_entropy(
        &self,
        logits: &GpuBuffer<f32>,
        targets: &GpuBuffer<u32>,
        loss: &mut GpuBuffer<f32>,
        lse: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        cross_entropy_gpu(self, logits, targets, loss, lse)
    }

    fn cross_entropy_backward(
        &self,
        logits: &GpuBuffer<f32>,
        targets: &GpuBuffer<u32>,
        lse: &GpuBuffer<f32>,
        dlogits: &mut GpuBuffer<f32>,
        scale: f32,
    ) -> Result<()> {
        cross_entropy_backward_gpu(self, logits, targets, lse, dlogits, scale)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// GPU exp and log are a few ulp off, and sums run in another order (tree vs sequential).
    const TOL: f32 = 1e-4;

    struct Case {
        logits: Vec<f32>,
        targets: Vec<u32>,
        vocab: usize,
    }

    fn case(seed: u64, rows: usize, vocab: usize) -> Case {
        let mut r = rng(seed);
        let logits = uniform(&mut r, rows * vocab, 8.0);
        let mut targets: Vec<u32> = (0..rows).map(|_| r.random_range(0..vocab as u32)).collect();
        targets[rows / 2] = IGNORE;
        Case {
            logits,
            targets,
            vocab,
        }
    }

    const SHAPES: &[(usize, usize)] = &[(2, 1), (9, 259), (40, 1000), (3, 5)];

    fn cross_entropy_matches_reference<B: Backend>(backend: &B) {
        for (seed, &(rows, vocab)) in SHAPES.iter().enumerate() {
            let c = case(seed as u64, rows, vocab);
            let (mut loss, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
            cross_entropy_reference(&c.logits, &c.targets, &mut loss, &mut lse).unwrap();
            let lb = backend.upload(&c.logits, "logits").unwrap();
            let tb = backend.upload(&c.targets, "targets").unwrap();
            let mut lossb = backend.alloc(rows, "loss").unwrap();
            let mut lseb = backend.alloc(rows, "lse").unwrap();
            backend
                .cross_entropy(&lb, &tb, &mut lossb, &mut lseb)
                .unwrap();
            assert_equals_approx(&backend.read(&lossb).unwrap(), &loss, TOL);
            assert_equals_approx(&backend.read(&lseb).unwrap(), &lse, TOL);
            assert_eq!(loss[rows / 2], 0.0);
        }
    }

    fn cross_entropy_backward_matches_reference<B: Backend>(backend: &B) {
        for (seed, &(rows, vocab)) in SHAPES.iter().enumerate() {
            let c = case(10 + seed as u64, rows, vocab);
            let (mut loss, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
            cross_entropy_reference(&c.logits, &c.targets, &mut loss, &mut lse).unwrap();
            let scale = 1.0 / rows as f32;
            let mut expected = vec![0.0; rows * c.vocab];
            cross_entropy_backward_reference(&c.logits, &c.targets, &lse, &mut expected, scale)
                .unwrap();
            let lb = backend.upload(&c.logits, "logits").unwrap();
            let tb = backend.upload(&c.targets, "targets").unwrap();
            let lseb = backend.upload(&lse, "lse").unwrap();
            let mut db = backend
                .upload(&vec![9.0; rows * c.vocab], "dlogits")
                .unwrap();
            backend
                .cross_entropy_backward(&lb, &tb, &lseb, &mut db, scale)
                .unwrap();
            assert_equals_approx(&backend.read(&db).unwrap(), &expected, TOL);
        }
    }

    backend_tests!(
        cross_entropy_matches_reference,
        cross_entropy_backward_matches_reference
    );

    /// Each gradient row sums to zero, and matches central differences of the loss.
    #[test]
    fn backward_matches_finite_differences() {
        let c = case(20, 3, 7);
        let (mut loss, mut lse) = (vec![0.0; 3], vec![0.0; 3]);
        cross_entropy_reference(&c.logits, &c.targets, &mut loss, &mut lse).unwrap();
        let mut grad = vec![0.0; 21];
        cross_entropy_backward_reference(&c.logits, &c.targets, &lse, &mut grad, 1.0).unwrap();
        let total = |logits: &[f32]| -> f64 {
            let (mut l, mut s) = (vec![0.0; 3], vec![0.0; 3]);
            cross_entropy_reference(logits, &c.targets, &mut l, &mut s).unwrap();
            l.iter().map(|&v| f64::from(v)).sum()
        };
        for i in 0..21 {
            let h = 1e-2;
            let mut up = c.logits.clone();
            up[i] += h;
            let mut down = c.logits.clone();
            down[i] -= h;
            let fd = (total(&up) - total(&down)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(grad[i])).abs() < 1e-3,
                "{i}: {} vs {fd}",
                grad[i]
            );
        }
        for row in grad.chunks(7) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
    }

    #[test]
    fn uniform_logits_give_log_vocab() {
        let (mut loss, mut lse) = (vec![0.0; 1], vec![0.0; 1]);
        cross_entropy_reference(&[0.5; 4], &[2], &mut loss, &mut lse).unwrap();
        assert!((loss[0] - 4f32.ln()).abs() < 1e-6);
    }
}
