//! Causal self-attention with ALiBi position biases (BLOOM), forward and backward
//! (`wgsl/attention.wgsl`).
//!
//! `qkv` is BLOOM's fused projection output, `[batch, seq, heads, 3, head_dim]`; `out` and
//! `dout` are `[batch, seq, heads, head_dim]`; `lse` (the log-sum-exp of each softmax row,
//! saved by the forward pass for the backward pass) is `[batch, heads, seq]`. The score of
//! query `i` and key `j ≤ i` in head `h` is `q_i·k_j / √head_dim + slope_h · (j − i)`, with
//! the slopes of [`alibi_slopes`]. The backward pass writes `dqkv` in the fused layout; each
//! output element is owned by one thread, so there are no atomics and results are
//! reproducible.

use bytemuck::{Pod, Zeroable};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, check_len, index_u32};

mod cpu;
pub use cpu::{attention_backward_cpu, attention_cpu};

/// Largest head dimension the kernels take.
pub const MAX_HEAD_DIM: usize = 128;

/// Threads per workgroup of the attention kernels (keep in step with the WGSL).
const ATTENTION_WORKGROUP: u32 = 64;

/// The shape of an attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dimension per head (≤ [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
}

impl AttentionShape {
    /// The score scale, `1 / √head_dim`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Elements of `qkv` (and `dqkv`).
    pub fn qkv_len(&self) -> usize {
        self.batch * self.seq * self.heads * 3 * self.head_dim
    }

    /// Elements of `out` (and `dout`).
    pub fn out_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }

    /// Elements of `lse`.
    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.seq
    }

    fn check(&self, qkv: usize, slopes: usize, out: usize, lse: usize) -> Result<()> {
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(ShaderError::Parameter {
                name: "head_dim",
                value: self.head_dim.to_string(),
                reason: "must be between 1 and 128",
            });
        }
        check_len("attention qkv", qkv, self.qkv_len())?;
        check_len("attention slopes", slopes, self.heads)?;
        check_len("attention out", out, self.out_len())?;
        check_len("attention lse", lse, self.lse_len())
    }

    fn q(&self, b: usize, s: usize, h: usize) -> usize {
        (((b * self.seq + s) * self.heads + h) * 3) * self.head_dim
    }

    fn row(&self, b: usize, s: usize, h: usize) -> usize {
        ((b * self.seq + s) * self.heads + h) * self.head_dim
    }

    fn lse_at(&self, b: usize, h: usize, s: usize) -> usize {
        (b * self.heads + h) * self.seq + s
    }
}

/// BLOOM's ALiBi slopes for `heads` heads: for the largest power of two `p ≤ heads`, the
/// geometric sequence `2^(−8k/p)`, `k = 1..=p`; the remaining heads take the odd terms of the
/// sequence for `2p`.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    if heads == 0 {
        return Vec::new();
    }
    let p = 1usize << heads.ilog2();
    let base = 2f64.powf(-8.0 / p as f64);
    let mut slopes: Vec<f32> = (1..=p).map(|k| base.powi(k as i32) as f32).collect();
    if p < heads {
        let extra = 2f64.powf(-8.0 / (2 * p) as f64);
        let remaining = (heads - p).min(p);
        slopes.extend((0..remaining).map(|k| extra.powi((2 * k + 1) as i32) as f32));
    }
    slopes
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Forward for query `i` of head `h` in sequence `b`: writes the output row, returns lse.
fn forward_query(
    qkv: &[f32],
    slopes: &[f32],
    shape: &AttentionShape,
    (b, i, h): (usize, usize, usize),
    out: &mut [f32],
) -> f32 {
    let d = shape.head_dim;
    let scale = shape.scale();
    let q = &qkv[shape.q(b, i, h)..][..d];
    let scores: Vec<f32> = (0..=i)
        .map(|j| {
            let k = &qkv[shape.q(b, j, h) + d..][..d];
            scale * dot(q, k) + slopes[h] * (j as f32 - i as f32)
        })
        .collect();
    let m = scores.iter().fold(f32::MIN, |a, &s| a.max(s));
    out.fill(0.0);
    let mut l = 0.0;
    for (j, &s) in scores.iter().enumerate() {
        let p = (s - m).exp();
        l += p;
        let v = &qkv[shape.q(b, j, h) + 2 * d..][..d];
        for (o, &vv) in out.iter_mut().zip(v) {
            *o += p * vv;
        }
    }
    for o in out.iter_mut() {
        *o /= l;
    }
    m + l.ln()
}

/// The reference: every (sequence, query, head) in order.
pub fn attention_reference(
    qkv: &[f32],
    slopes: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
    shape: AttentionShape,
) -> Result<()> {
    shape.check(qkv.len(), slopes.len(), out.len(), lse.len())?;
    for b in 0..shape.batch {
        for i in 0..shape.seq {
            for h in 0..shape.heads {
                let at = shape.row(b, i, h);
                lse[shape.lse_at(b, h, i)] = forward_query(
                    qkv,
                    slopes,
                    &shape,
                    (b, i, h),
                    &mut out[at..at + shape.head_dim],
                );
            }
        }
    }
    Ok(())
}

/// `delta[b, h, i] = dout_i · out_i`, which the backward pass needs for every query.
fn deltas(out: &[f32], dout: &[f32], shape: &AttentionShape) -> Vec<f32> {
    let d = shape.head_dim;
    let mut delta = vec![0.0; shape.lse_len()];
    for b in 0..shape.batch {
        for i in 0..shape.seq {
            for h in 0..shape.heads {
                let at = shape.row(b, i, h);
                delta[shape.lse_at(b, h, i)] = dot(&dout[at..at + d], &out[at..at + d]);
            }
        }
    }
    delta
}

struct Saved<'a> {
    qkv: &'a [f32],
    slopes: &'a [f32],
    lse: &'a [f32],
    dout: &'a [f32],
    delta: &'a [f32],
}

/// Backward for token `t` of sequence `b`: its dq, dk and dv in every head, written into
/// `chunk`, the token's `[heads, 3, head_dim]` slice of dqkv.
fn backward_token(
    saved: &Saved<'_>,
    shape: &AttentionShape,
    b: usize,
    t: usize,
    chunk: &mut [f32],
) {
    let d = shape.head_dim;
    let scale = shape.scale();
    let qkv = saved.qkv;
    chunk.fill(0.0);
    for h in 0..shape.heads {
        let slope = saved.slopes[h];
        let prob = |i: usize, j: usize| {
            let q = &qkv[shape.q(b, i, h)..][..d];
            let k = &qkv[shape.q(b, j, h) + d..][..d];
            (scale * dot(q, k) + slope * (j as f32 - i as f32) - saved.lse[shape.lse_at(b, h, i)])
                .exp()
        };
        let (dq, rest) = chunk[h * 3 * d..(h + 1) * 3 * d].split_at_mut(d);
        let (dk, dv) = rest.split_at_mut(d);
        // dq_t: over keys j ≤ t.
        let dout_t = &saved.dout[shape.row(b, t, h)..][..d];
        let delta_t = saved.delta[shape.lse_at(b, h, t)];
        for j in 0..=t {
            let k = &qkv[shape.q(b, j, h) + d..][..d];
            let v = &qkv[shape.q(b, j, h) + 2 * d..][..d];
            let ds = prob(t, j) * (dot(dout_t, v) - delta_t);
            for (g, &kk) in dq.iter_mut().zip(k) {
                *g += ds * kk;
            }
        }
        for g in dq.iter_mut() {
            *g *= scale;
        }
        // dk_t and dv_t: over queries i ≥ t.
        let v_t = &qkv[shape.q(b, t, h) + 2 * d..][..d];
        for i in t..shape.seq {
            let q = &qkv[shape.q(b, i, h)..][..d];
            let dout_i = &saved.dout[shape.row(b, i, h)..][..d];
            let p = prob(i, t);
            let ds = p * (dot(dout_i, v_t) - saved.delta[shape.lse_at(b, h, i)]);
            for ((gk, gv), (&qq, &go)) in dk.iter_mut().zip(dv.iter_mut()).zip(q.iter().zip(dout_i))
            {
                *gk += ds * qq;
                *gv += p * go;
            }
        }
        for g in dk.iter_mut() {
            *g *= scale;
        }
    }
}

fn check_backward(
    shape: &AttentionShape,
    qkv: usize,
    slopes: usize,
    out: usize,
    lse: usize,
    dout: usize,
    dqkv: usize,
) -> Result<()> {
    shape.check(qkv, slopes, out, lse)?;
    check_len("attention dout", dout, shape.out_len())?;
    check_len("attention dqkv", dqkv, shape.qkv_len())
}

/// The reference backward: token by token, in order, each output row computed on its own as
/// one WGSL thread does.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn attention_backward_reference(
    qkv: &[f32],
    slopes: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
    shape: AttentionShape,
) -> Result<()> {
    check_backward(
        &shape,
        qkv.len(),
        slopes.len(),
        out.len(),
        lse.len(),
        dout.len(),
        dqkv.len(),
    )?;
    let delta = deltas(out, dout, &shape);
    let saved = Saved {
        qkv,
        slopes,
        lse,
        dout,
        delta: &delta,
    };
    let per_token = shape.heads * 3 * shape.head_dim;
    if per_token == 0 {
        return Ok(());
    }
    for (token, chunk) in dqkv.chunks_mut(per_token).enumerate() {
        backward_token(&saved, &shape, token / shape.seq, token % shape.seq, chunk);
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    seq: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    _pad: [u32; 3],
}

fn params(shape: &AttentionShape) -> Result<Params> {
    index_u32("attention qkv", shape.qkv_len())?;
    Ok(Params {
        batch: shape.batch as u32,
        seq: shape.seq as u32,
        heads: shape.heads as u32,
        head_dim: shape.head_dim as u32,
        scale: shape.scale(),
        _pad: [0; 3],
    })
}

/// The wgpu path of the forward pass.
pub fn attention_gpu(
    gpu: &Gpu,
    qkv: &GpuBuffer<f32>,
    slopes: &GpuBuffer<f32>,
    out: &mut GpuBuffer<f32>,
    lse: &mut GpuBuffer<f32>,
    shape: AttentionShape,
) -> Result<()> {
    shape.check(qkv.len(), slopes.len(), out.len(), lse.len())?;
    let p = params(&shape)?;
    gpu.run(&[Dispatch {
        kernel: &registry::ATTENTION_FORWARD,
        params: bytemuck::bytes_of(&p),
        buffers: &[&qkv.buffer, &slopes.buffer, &out.buffer, &lse.buffer],
        groups: gpu.grid_threads(shape.lse_len() as u64, ATTENTION_WORKGROUP, "attention")?,
    }])
}

/// The wgpu path of the backward pass: dq (and the deltas), then dk and dv, in one submission.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn attention_backward_gpu(
    gpu: &Gpu,
    qkv: &GpuBuffer<f32>,
    slopes: &GpuBuffer<f32>,
    out: &GpuBuffer<f32>,
    lse: &GpuBuffer<f32>,
    dout: &GpuBuffer<f32>,
    dqkv: &mut GpuBuffer<f32>,
    shape: AttentionShape,
) -> Result<()> {
    check_backward(
        &shape,
        qkv.len(),
        slopes.len(),
        out.len(),
        lse.len(),
        dout.len(),
        dqkv.len(),
    )?;
    let p = params(&shape)?;
    let p = bytemuck::bytes_of(&p);
    let delta = gpu.scratch("attention deltas", (shape.lse_len().max(1) * 4) as u64)?;
    let groups = gpu.grid_threads(
        shape.lse_len() as u64,
        ATTENTION_WORKGROUP,
        "attention_backward",
    )?;
    gpu.run(&[
        Dispatch {
            kernel: &registry::ATTENTION_BACKWARD_DQ,
            params: p,
            buffers: &[
                &qkv.buffer,
                &slopes.buffer,
                &out.buffer,
                &lse.buffer,
                &dout.buffer,
                &dqkv.buffer,
                &delta,
            ],
            groups,
        },
        Dispatch {
            kernel: &registry::ATTENTION_BACKWARD_DKV,
            params: p,
            buffers: &[
                &qkv.buffer,
                &slopes.buffer,
                &lse.buffer,
                &dout.buffer,
                &dqkv.buffer,
                &delta,
            ],
            groups,
        },
    ])
}

/// The attention kernels on every backend: part of [`Backend`](crate::Backend).
pub trait AttentionOps: Buffers {
    /// Causal ALiBi self-attention over BLOOM's fused `qkv`; writes `out` and `lse`.
    fn attention(
        &self,
        qkv: &Self::Buffer<f32>,
        slopes: &Self::Buffer<f32>,
        out: &mut Self::Buffer<f32>,
        lse: &mut Self::Buffer<f32>,
        shape: AttentionShape,
    ) -> Result<()>;

    /// Attention backward: `dqkv` in the fused layout, from `out`, `lse` and `dout`.
    #[allow(clippy::too_many_arguments)] // the tensors of one operation
    fn attention_backward(
        &self,
        qkv: &Self::Buffer<f32>,
        slopes: &Self::Buffer<f32>,
        out: &Self::Buffer<f32>,
        lse: &Self::Buffer<f32>,
        dout: &Self::Buffer<f32>,
        dqkv: &mut Self::Buffer<f32>,
        shape: AttentionShape,
    ) -> Result<()>;
}

impl AttentionOps for Cpu {
    fn attention(
        &self,
        qkv: &Vec<f32>,
        slopes: &Vec<f32>,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        attention_cpu(qkv, slopes, out, lse, shape)
    }

    fn attention_backward(
        &self,
        qkv: &Vec<f32>,
        slopes: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        dout: &Vec<f32>,
        dqkv: &mut Vec<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        attention_backward_cpu(qkv, slopes, out, lse, dout, dqkv, shape)
    }
}

impl AttentionOps for Gpu {
    fn attention(
        &self,
        qkv: &GpuBuffer<f32>,
        slopes: &GpuBuffer<f32>,
        out: &mut GpuBuffer<f32>,
        lse: &mut GpuBuffer<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        attention_gpu(self, qkv, slopes, out, lse, shape)
    }

    fn attention_backward(
        &self,
        qkv: &GpuBuffer<f32>,
        slopes: &GpuBuffer<f32>,
        out: &GpuBuffer<f32>,
        lse: &GpuBuffer<f32>,
        dout: &GpuBuffer<f32>,
        dqkv: &mut GpuBuffer<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        attention_backward_gpu(self, qkv, slopes, out, lse, dout, dqkv, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// exp/log a few ulp off on the GPU, online versus two-pass softmax, dot products of ≤ 64
    /// terms and sums over ≤ 40 keys.
    const TOL: f32 = 2e-4;

    const SHAPES: &[AttentionShape] = &[
        AttentionShape {
            batch: 1,
            seq: 1,
            heads: 1,
            head_dim: 1,
        },
        AttentionShape {
            batch: 2,
            seq: 13,
            heads: 3,
            head_dim: 8,
        },
        AttentionShape {
            batch: 1,
            seq: 40,
            heads: 4,
            head_dim: 64,
        },
        AttentionShape {
            batch: 3,
            seq: 5,
            heads: 2,
            head_dim: 128,
        },
        // Head rows that are not a multiple of the CPU path's eight lanes.
        AttentionShape {
            batch: 2,
            seq: 9,
            heads: 2,
            head_dim: 13,
        },
    ];

    fn attention_forward_matches_reference<B: Backend>(backend: &B) {
        for (seed, &shape) in SHAPES.iter().enumerate() {
            let mut r = rng(seed as u64);
            let qkv = uniform(&mut r, shape.qkv_len(), 1.5);
            let slopes = alibi_slopes(shape.heads);
            let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
            attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
            let qb = backend.upload(&qkv, "qkv").unwrap();
            let sb = backend.upload(&slopes, "slopes").unwrap();
            let mut ob = backend.alloc(shape.out_len(), "out").unwrap();
            let mut lb = backend.alloc(shape.lse_len(), "lse").unwrap();
            backend
                .attention(&qb, &sb, &mut ob, &mut lb, shape)
                .unwrap();
            assert_equals_approx(&backend.read(&ob).unwrap(), &out, TOL);
            assert_equals_approx(&backend.read(&lb).unwrap(), &lse, TOL);
        }
    }

    fn attention_backward_matches_reference<B: Backend>(backend: &B) {
        for (seed, &shape) in SHAPES.iter().enumerate() {
            let mut r = rng(100 + seed as u64);
            let qkv = uniform(&mut r, shape.qkv_len(), 1.5);
            let dout = uniform(&mut r, shape.out_len(), 1.0);
            let slopes = alibi_slopes(shape.heads);
            let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
            attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
            let mut dqkv = vec![0.0; shape.qkv_len()];
            attention_backward_reference(&qkv, &slopes, &out, &lse, &dout, &mut dqkv, shape)
                .unwrap();
            let qb = backend.upload(&qkv, "qkv").unwrap();
            let sb = backend.upload(&slopes, "slopes").unwrap();
            let ob = backend.upload(&out, "out").unwrap();
            let lb = backend.upload(&lse, "lse").unwrap();
            let db = backend.upload(&dout, "dout").unwrap();
            let mut gb = backend.upload(&vec![5.0; shape.qkv_len()], "dqkv").unwrap();
            backend
                .attention_backward(&qb, &sb, &ob, &lb, &db, &mut gb, shape)
                .unwrap();
            assert_equals_approx(&backend.read(&gb).unwrap(), &dqkv, TOL);
        }
    }

    backend_tests!(
        attention_forward_matches_reference,
        attention_backward_matches_reference
    );

    /// The CPU path on the demo's shape: the same bits on every run (a verifier re-running a
    /// task must get the node's result), and within rounding of the reference.
    #[test]
    fn cpu_path_is_reproducible_and_matches_the_reference() {
        let shape = AttentionShape {
            batch: 4,
            seq: 64,
            heads: 4,
            head_dim: 32,
        };
        let mut r = rng(9);
        let qkv = uniform(&mut r, shape.qkv_len(), 1.5);
        let dout = uniform(&mut r, shape.out_len(), 1.0);
        let slopes = alibi_slopes(shape.heads);
        let run = || {
            let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
            attention_cpu(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
            let mut dqkv = vec![0.0; shape.qkv_len()];
            attention_backward_cpu(&qkv, &slopes, &out, &lse, &dout, &mut dqkv, shape).unwrap();
            (out, lse, dqkv)
        };
        let first = run();
        for _ in 0..3 {
            assert!(
                run() == first,
                "the CPU path gave different bits on a second run"
            );
        }
        let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
        attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
        let mut dqkv = vec![0.0; shape.qkv_len()];
        attention_backward_reference(&qkv, &slopes, &out, &lse, &dout, &mut dqkv, shape).unwrap();
        assert_equals_approx(&first.0, &out, TOL);
        assert_equals_approx(&first.1, &lse, TOL);
        assert_equals_approx(&first.2, &dqkv, TOL);
    }

    #[test]
    fn slopes_match_bloom() {
        // From BLOOM's build_alibi_tensor: 8 heads → 2^-1 … 2^-8; 12 heads → the 8 of 8 heads,
        // then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
        let s8 = alibi_slopes(8);
        for (k, s) in s8.iter().enumerate() {
            assert!((s - 2f32.powi(-(k as i32 + 1))).abs() < 1e-7);
        }
        let s12 = alibi_slopes(12);
        assert_eq!(&s12[..8], &s8[..]);
        for (k, s) in s12[8..].iter().enumerate() {
            assert!((s - 2f32.powf(-(k as f32) - 0.5)).abs() < 1e-6, "{k}: {s}");
        }
        assert_eq!(alibi_slopes(1), [2f32.powi(-8)]);
        assert!(alibi_slopes(0).is_empty());
    }

    /// The reference against a naive f64 version that materialises the masked score matrix.
    #[test]
    fn forward_matches_naive_softmax() {
        let shape = AttentionShape {
            batch: 2,
            seq: 7,
            heads: 3,
            head_dim: 5,
        };
        let qkv = uniform(&mut rng(7), shape.qkv_len(), 2.0);
        let slopes = alibi_slopes(3);
        let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
        attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
        let d = shape.head_dim;
        let at = |b: usize, s: usize, h: usize, w: usize, e: usize| {
            f64::from(qkv[(((b * 7 + s) * 3 + h) * 3 + w) * d + e])
        };
        for b in 0..2 {
            for h in 0..3 {
                for i in 0..7 {
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let dotp: f64 =
                                (0..d).map(|e| at(b, i, h, 0, e) * at(b, j, h, 1, e)).sum();
                            dotp / (d as f64).sqrt() + f64::from(slopes[h]) * (j as f64 - i as f64)
                        })
                        .collect();
                    let z: f64 = scores.iter().map(|s| s.exp()).sum();
                    for e in 0..d {
                        let o: f64 = scores
                            .iter()
                            .enumerate()
                            .map(|(j, s)| s.exp() / z * at(b, j, h, 2, e))
                            .sum();
                        let got = f64::from(out[((b * 7 + i) * 3 + h) * d + e]);
                        assert!((o - got).abs() < 1e-5, "b{b} h{h} i{i} e{e}: {got} vs {o}");
                    }
                    let got = f64::from(lse[(b * 3 + h) * 7 + i]);
                    assert!((z.ln() - got).abs() < 1e-5);
                }
            }
        }
    }

    /// The reference backward against central differences of `L = Σ out · dout`.
    #[test]
    fn backward_matches_finite_differences() {
        let shape = AttentionShape {
            batch: 1,
            seq: 4,
            heads: 2,
            head_dim: 3,
        };
        let mut r = rng(8);
        let qkv = uniform(&mut r, shape.qkv_len(), 1.0);
        let dout = uniform(&mut r, shape.out_len(), 1.0);
        let slopes = alibi_slopes(2);
        let loss = |qkv: &[f32]| -> f64 {
            let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
            attention_reference(qkv, &slopes, &mut out, &mut lse, shape).unwrap();
            out.iter()
                .zip(&dout)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let (mut out, mut lse) = (vec![0.0; shape.out_len()], vec![0.0; shape.lse_len()]);
        attention_reference(&qkv, &slopes, &mut out, &mut lse, shape).unwrap();
        let mut grad = vec![0.0; shape.qkv_len()];
        attention_backward_reference(&qkv, &slopes, &out, &lse, &dout, &mut grad, shape).unwrap();
        for i in 0..qkv.len() {
            let h = 1e-2f32;
            let mut up = qkv.clone();
            up[i] += h;
            let mut down = qkv.clone();
            down[i] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(grad[i])).abs() < 1e-3,
                "{i}: {} vs {fd}",
                grad[i]
            );
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let shape = AttentionShape {
            batch: 1,
            seq: 2,
            heads: 1,
            head_dim: 129,
        };
        let err = attention_reference(&[], &[1.0], &mut [], &mut [], shape).unwrap_err();
        assert!(err.to_string().contains("head_dim"), "{err}");
    }
}
