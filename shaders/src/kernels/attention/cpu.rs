//! The CPU path of attention: one sequence per rayon task. Each head's query, key, value
//! (and, backward, output-gradient) rows are gathered into contiguous blocks, dot products
//! run in eight fixed lanes the compiler keeps in vector registers, and the backward pass
//! computes each (query, key) probability once and reuses it for dq, dk and dv (the
//! reference, which mirrors the WGSL's one thread per output row, computes it twice).
//!
//! Every sum runs in a fixed order, so results are reproducible run to run and across
//! machines; they differ from the reference's by rounding only.

use rayon::prelude::*;

use super::super::exp::{LANES, exp, max};
use super::{AttentionShape, check_backward};
use crate::error::Result;

/// `a · b` in [`LANES`] partial sums, then the remainder, in a fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a8, a_rest) = a.as_chunks::<LANES>();
    let (b8, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a8.iter().zip(b8) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + rest
}

/// `y += a · x`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// One sequence's view of the fused `[seq, heads, 3, head_dim]` projections.
struct Sequence<'a> {
    qkv: &'a [f32],
    shape: &'a AttentionShape,
}

impl Sequence<'_> {
    /// Copies part `w` (0 query, 1 key, 2 value) of head `h` into `block`, `[seq, head_dim]`.
    fn gather(&self, h: usize, w: usize, block: &mut [f32]) {
        let (d, heads) = (self.shape.head_dim, self.shape.heads);
        for (t, row) in block.chunks_exact_mut(d).enumerate() {
            let at = ((t * heads + h) * 3 + w) * d;
            row.copy_from_slice(&self.qkv[at..at + d]);
        }
    }
}

/// The forward pass: `out` and `lse` from `qkv`.
pub fn attention_cpu(
    qkv: &[f32],
    slopes: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
    shape: AttentionShape,
) -> Result<()> {
    shape.check(qkv.len(), slopes.len(), out.len(), lse.len())?;
    let (s, d, heads) = (shape.seq, shape.head_dim, shape.heads);
    if out.is_empty() {
        return Ok(());
    }
    let scale = shape.scale();
    out.par_chunks_mut(s * heads * d)
        .zip(lse.par_chunks_mut(heads * s))
        .zip(qkv.par_chunks(s * heads * 3 * d))
        .for_each(|((out, lse), qkv)| {
            let sequence = Sequence { qkv, shape: &shape };
            let (mut q, mut k, mut v) = (vec![0.0; s * d], vec![0.0; s * d], vec![0.0; s * d]);
            let mut scores = vec![0.0f32; s];
            for h in 0..heads {
                sequence.gather(h, 0, &mut q);
                sequence.gather(h, 1, &mut k);
                sequence.gather(h, 2, &mut v);
                for i in 0..s {
                    let q_i = &q[i * d..][..d];
                    for (j, score) in scores[..=i].iter_mut().enumerate() {
                        *score =
                            scale * dot(q_i, &k[j * d..][..d]) + slopes[h] * (j as f32 - i as f32);
                    }
                    let m = max(&scores[..=i]);
                    let o = &mut out[(i * heads + h) * d..][..d];
                    o.fill(0.0);
                    let mut l = 0.0;
                    for (j, &score) in scores[..=i].iter().enumerate() {
                        let p = exp(score - m);
                        l += p;
                        axpy(o, p, &v[j * d..][..d]);
                    }
                    for x in o.iter_mut() {
                        *x /= l;
                    }
                    lse[h * s + i] = m + l.ln();
                }
            }
        });
    Ok(())
}

/// The backward pass: `dqkv` from the forward pass's inputs and outputs and `dout`.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn attention_backward_cpu(
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
    let (s, d, heads) = (shape.seq, shape.head_dim, shape.heads);
    if dqkv.is_empty() {
        return Ok(());
    }
    let scale = shape.scale();
    let rows = s * heads * d;
    dqkv.par_chunks_mut(s * heads * 3 * d)
        .enumerate()
        .for_each(|(b, dqkv)| {
            let sequence = Sequence {
                qkv: &qkv[b * s * heads * 3 * d..][..s * heads * 3 * d],
                shape: &shape,
            };
            let (out, dout) = (&out[b * rows..][..rows], &dout[b * rows..][..rows]);
            let lse = &lse[b * heads * s..][..heads * s];
            let block = || vec![0.0f32; s * d];
            let (mut q, mut k, mut v, mut go) = (block(), block(), block(), block());
            let (mut dq, mut dk, mut dv) = (block(), block(), block());
            let mut delta = vec![0.0f32; s];
            for h in 0..heads {
                sequence.gather(h, 0, &mut q);
                sequence.gather(h, 1, &mut k);
                sequence.gather(h, 2, &mut v);
                for (t, (row, delta)) in go.chunks_exact_mut(d).zip(&mut delta).enumerate() {
                    let at = (t * heads + h) * d;
                    row.copy_from_slice(&dout[at..at + d]);
                    *delta = dot(row, &out[at..at + d]);
                }
                dq.fill(0.0);
                dk.fill(0.0);
                dv.fill(0.0);
                // Each (query, key) pair's probability and score gradient, computed once and
                // taken into dq_i, dk_j and dv_j at once.
                for i in 0..s {
                    let (q_i, go_i) = (&q[i * d..][..d], &go[i * d..][..d]);
                    let lse_i = lse[h * s + i];
                    for j in 0..=i {
                        let (k_j, v_j) = (&k[j * d..][..d], &v[j * d..][..d]);
                        let score = scale * dot(q_i, k_j) + slopes[h] * (j as f32 - i as f32);
                        let p = exp(score - lse_i);
                        let ds = p * (dot(go_i, v_j) - delta[i]);
                        axpy(&mut dq[i * d..][..d], ds, k_j);
                        axpy(&mut dk[j * d..][..d], ds, q_i);
                        axpy(&mut dv[j * d..][..d], p, go_i);
                    }
                }
                for t in 0..s {
                    let at = (t * heads + h) * 3 * d;
                    let row = &mut dqkv[at..at + 3 * d];
                    for (g, &x) in row[..d].iter_mut().zip(&dq[t * d..][..d]) {
                        *g = scale * x;
                    }
                    for (g, &x) in row[d..2 * d].iter_mut().zip(&dk[t * d..][..d]) {
                        *g = scale * x;
                    }
                    row[2 * d..].copy_from_slice(&dv[t * d..][..d]);
                }
            }
        });
    Ok(())
}
