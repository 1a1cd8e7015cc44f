//! LayerNorm over rows, forward and backward (`wgsl/layernorm.wgsl`,
//! `wgsl/layernorm_backward.wgsl`).
//!
//! `y = (x − mean) · rstd · gamma + beta` with `rstd = 1/√(var + eps)` and the biased
//! variance, as BLOOM (and PyTorch) compute it. The forward pass saves `mean` and `rstd`
//! per row; the backward pass gives `dx` per row and `dgamma`, `dbeta` summed over rows in
//! order (reproducible: no atomics).

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// Rows of `x` given `cols`, checking that `cols` divides its length.
fn rows_of(len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(ShaderError::Parameter {
            name: "cols",
            value: cols.to_string(),
            reason: "must be nonzero and divide the length of x",
        });
    }
    Ok(len / cols)
}

/// Normalises one row; returns (mean, rstd).
fn forward_row(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = (v - mean) * rstd * g + b;
    }
    (mean, rstd)
}

#[allow(clippy::too_many_arguments)] // the tensors of one operation
fn check_forward(
    x: usize,
    gamma: usize,
    beta: usize,
    y: usize,
    mean: usize,
    rstd: usize,
    cols: usize,
) -> Result<usize> {
    let rows = rows_of(x, cols)?;
    check_len("layernorm gamma", gamma, cols)?;
    check_len("layernorm beta", beta, cols)?;
    check_len("layernorm y", y, x)?;
    check_len("layernorm mean", mean, rows)?;
    check_len("layernorm rstd", rstd, rows)?;
    Ok(rows)
}

/// The reference: rows one after another.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn layernorm_reference(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
) -> Result<()> {
    layernorm_host(x, gamma, beta, y, mean, rstd, cols, eps, false)
}

/// The CPU path: the reference's rows in parallel (same results, bit for bit).
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn layernorm_cpu(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
) -> Result<()> {
    layernorm_host(x, gamma, beta, y, mean, rstd, cols, eps, true)
}

/// LayerNorm forward on the host, row by row, in order or across rayon.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
fn layernorm_host(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
    parallel: bool,
) -> Result<()> {
    check_forward(
        x.len(),
        gamma.len(),
        beta.len(),
        y.len(),
        mean.len(),
        rstd.len(),
        cols,
    )?;
    /// One row: its input and output, and where its mean and 1/σ go.
    type Row<'a> = ((&'a [f32], &'a mut [f32]), (&'a mut f32, &'a mut f32));
    let row = |((x, y), (m, r)): Row<'_>| {
        (*m, *r) = forward_row(x, gamma, beta, y, eps);
    };
    if parallel {
        x.par_chunks_exact(cols)
            .zip(y.par_chunks_exact_mut(cols))
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .for_each(row);
    } else {
        x.chunks_exact(cols)
            .zip(y.chunks_exact_mut(cols))
            .zip(mean.iter_mut().zip(rstd.iter_mut()))
            .for_each(row);
    }
    Ok(())
}

/// The reference (and CPU path) of the backward pass.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn layernorm_backward_reference(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let cols = gamma.len();
    let rows = check_backward(
        x.len(),
        cols,
        mean.len(),
        rstd.len(),
        dy.len(),
        dx.len(),
        dgamma.len(),
        dbeta.len(),
    )?;
    if rows == 0 || cols == 0 {
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        return Ok(());
    }
    let n = cols as f32;
    x.par_chunks_exact(cols)
        .zip(dy.par_chunks_exact(cols))
        .zip(dx.par_chunks_exact_mut(cols))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|(((x, dy), dx), (&m, &r))| {
            let mut s1 = 0.0;
            let mut s2 = 0.0;
            for ((&v, &d), &g) in x.iter().zip(dy).zip(gamma) {
                let xhat = (v - m) * r;
                s1 += d * g;
                s2 += d * g * xhat;
            }
            let (mean_g, mean_gx) = (s1 / n, s2 / n);
            for (((o, &v), &d), &g) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                let xhat = (v - m) * r;
                *o = r * (d * g - mean_g - xhat * mean_gx);
            }
        });
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    for ((x, dy), (&m, &r)) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(mean.iter().zip(rstd))
    {
        for (((dg, db), &v), &d) in dgamma.iter_mut().zip(dbeta.iter_mut()).zip(x).zip(dy) {
            *dg += d * ((v - m) * r);
            *db += d;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the tensors of one operation
fn check_backward(
    x: usize,
    cols: usize,
    mean: usize,
    rstd: usize,
    dy: usize,
    dx: usize,
    dgamma: usize,
    dbeta: usize,
) -> Result<usize> {
    let rows = mean;
    check_len("layernorm_backward x", x, rows * cols)?;
    check_len("layernorm_backward rstd", rstd, rows)?;
    check_len("layernorm_backward dy", dy, x)?;
    check_len("layernorm_backward dx", dx, x)?;
    check_len("layernorm_backward dgamma", dgamma, cols)?;
    check_len("layernorm_backward dbeta", dbeta, cols)?;
    Ok(rows)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

/// The wgpu path of the forward pass.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn layernorm_gpu(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    beta: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
    mean: &mut GpuBuffer<f32>,
    rstd: &mut GpuBuffer<f32>,
    cols: usize,
    eps: f32,
) -> Result<()> {
    let rows = check_forward(
        x.len(),
        gamma.len(),
        beta.len(),
        y.len(),
        mean.len(),
        rstd.len(),
        cols,
    )?;
    index_u32("layernorm x", x.len())?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::LAYERNORM_FORWARD,
        params: bytemuck::bytes_of(&params),
        buffers: &[
            &x.buffer,
            &gamma.buffer,
            &beta.buffer,
            &y.buffer,
            &mean.buffer,
            &rstd.buffer,
        ],
        groups: gpu.grid(rows as u64, "layernorm rows")?,
    }])
}

/// The wgpu path of the backward pass: `dx` per row, then the parameter gradients.
#[allow(clippy::too_many_arguments)] // the tensors of one operation
pub fn layernorm_backward_gpu(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    gamma: &GpuBuffer<f32>,
    mean: &GpuBuffer<f32>,
    rstd: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
    dgamma: &mut GpuBuffer<f32>,
    dbeta: &mut GpuBuffer<f32>,
) -> Result<()> {
    let cols = gamma.len();
    let rows = check_backward(
        x.len(),
        cols,
        mean.len(),
        rstd.len(),
        dy.len(),
        dx.len(),
        dgamma.len(),
        dbeta.len(),
    )?;
    index_u32("layernorm_backward x", x.len())?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        _pad: 0,
    };
    let params = bytemuck::bytes_of(&params);
    gpu.run(&[
        Dispatch {
            kernel: &registry::LAYERNORM_BACKWARD_INPUT,
            params,
            buffers: &[
                &x.buffer,
                &gamma.buffer,
                &mean.buffer,
                &rstd.buffer,
                &dy.buffer,
                &dx.buffer,
            ],
            groups: gpu.grid(rows as u64, "layernorm_backward rows")?,
        },
        Dispatch {
            kernel: &registry::LAYERNORM_BACKWARD_PARAMS,
            params,
            buffers: &[
                &x.buffer,
                &mean.buffer,
                &rstd.buffer,
                &dy.buffer,
                &dgamma.buffer,
                &dbeta.buffer,
            ],
            groups: gpu.grid_threads(cols as u64, WORKGROUP, "layernorm_backward cols")?,
        },
    ])
}

/// The LayerNorm kernels on every backend: part of [`Backend`](crate::Backend).
pub trait LayerNormOps: Buffers {
    /// LayerNorm of each row of `x` `[rows, cols]`; saves `mean` and `rstd` (`[rows]`).
    #[allow(clippy::too_many_arguments)] // the tensors of one operation
    fn layernorm(
        &self,
        x: &Self::Buffer<f32>,
        gamma: &Self::Buffer<f32>,
        beta: &Self::Buffer<f32>,
        y: &mut Self::Buffer<f32>,
        mean: &mut Self::Buffer<f32>,
        rstd: &mut Self::Buffer<f32>,
        cols: usize,
        eps: f32,
    ) -> Result<()>;

    /// LayerNorm backward: `dx`, and `dgamma`, `dbeta` summed over rows.
    #[allow(clippy::too_many_arguments)] // the tensors of one operation
    fn layernorm_backward(
        &self,
        x: &Self::Buffer<f32>,
        gamma: &Self::Buffer<f32>,
        mean: &Self::Buffer<f32>,
        rstd: &Self::Buffer<f32>,
        dy: &Self::Buffer<f32>,
        dx: &mut Self::Buffer<f32>,
        dgamma: &mut Self::Buffer<f32>,
        dbeta: &mut Self::Buffer<f32>,
    ) -> Result<()>;
}

impl LayerNormOps for Cpu {
    fn layernorm(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        layernorm_cpu(x, gamma, beta, y, mean, rstd, cols, eps)
    }

    fn layernorm_backward(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Result<()> {
        layernorm_backward_reference(x, gamma, mean, rstd, dy, dx, dgamma, dbeta)
    }
}

impl LayerNormOps for Gpu {
    fn layernorm(
        &self,
        x: &GpuBuffer<f32>,
        gamma: &GpuBuffer<f32>,
        beta: &GpuBuffer<f32>,
        y: &mut GpuBuffer<f32>,
        mean: &mut GpuBuffer<f32>,
        rstd: &mut GpuBuffer<f32>,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        layernorm_gpu(self, x, gamma, beta, y, mean, rstd, cols, eps)
    }

    fn layernorm_backward(
        &self,
        x: &GpuBuffer<f32>,
        gamma: &GpuBuffer<f32>,
        mean: &GpuBuffer<f32>,
        rstd: &GpuBuffer<f32>,
        dy: &GpuBuffer<f32>,
        dx: &mut GpuBuffer<f32>,
        dgamma: &mut GpuBuffer<f32>,
        dbeta: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        layernorm_backward_gpu(self, x, gamma, mean, rstd, dy, dx, dgamma, dbeta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// Row sums of ≤ 300 values in a different order on the GPU (tree) than on the CPU.
    const TOL: f32 = 1e-4;
    const EPS: f32 = 1e-5;
    const SHAPES: &[(usize, usize)] = &[(1, 1), (5, 3), (17, 300), (64, 64), (3, 700)];

    struct Case {
        x: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        dy: Vec<f32>,
    }

    fn case(seed: u64, rows: usize, cols: usize) -> Case {
        let mut r = rng(seed);
        let mut x = uniform(&mut r, rows * cols, 3.0);
        // An offset per row, so the mean matters.
        for (i, v) in x.iter_mut().enumerate() {
            *v += (i / cols) as f32 * 0.5;
        }
        Case {
            x,
            gamma: uniform(&mut r, cols, 2.0),
            beta: uniform(&mut r, cols, 1.0),
            dy: uniform(&mut r, rows * cols, 1.0),
        }
    }

    fn layernorm_forward_matches_reference<B: Backend>(backend: &B) {
        for (seed, &(rows, cols)) in SHAPES.iter().enumerate() {
            let c = case(seed as u64, rows, cols);
            let (mut y, mut mean, mut rstd) =
                (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
            layernorm_reference(
                &c.x, &c.gamma, &c.beta, &mut y, &mut mean, &mut rstd, cols, EPS,
            )
            .unwrap();
            let xb = backend.upload(&c.x, "x").unwrap();
            let gb = backend.upload(&c.gamma, "gamma").unwrap();
            let bb = backend.upload(&c.beta, "beta").unwrap();
            let mut yb = backend.alloc(rows * cols, "y").unwrap();
            let mut mb = backend.alloc(rows, "mean").unwrap();
            let mut rb = backend.alloc(rows, "rstd").unwrap();
            backend
                .layernorm(&xb, &gb, &bb, &mut yb, &mut mb, &mut rb, cols, EPS)
                .unwrap();
            assert_equals_approx(&backend.read(&yb).unwrap(), &y, TOL);
            assert_equals_approx(&backend.read(&mb).unwrap(), &mean, TOL);
            assert_equals_approx(&backend.read(&rb).unwrap(), &rstd, TOL);
        }
    }

    fn layernorm_backward_matches_reference<B: Backend>(backend: &B) {
        for (seed, &(rows, cols)) in SHAPES.iter().enumerate() {
            let c = case(50 + seed as u64, rows, cols);
            let (mut y, mut mean, mut rstd) =
                (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
            layernorm_reference(
                &c.x, &c.gamma, &c.beta, &mut y, &mut mean, &mut rstd, cols, EPS,
            )
            .unwrap();
            let (mut dx, mut dg, mut db) =
                (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
            layernorm_backward_reference(
                &c.x, &c.gamma, &mean, &rstd, &c.dy, &mut dx, &mut dg, &mut db,
            )
            .unwrap();
            let xb = backend.upload(&c.x, "x").unwrap();
            let gb = backend.upload(&c.gamma, "gamma").unwrap();
            let mb = backend.upload(&mean, "mean").unwrap();
            let rb = backend.upload(&rstd, "rstd").unwrap();
            let dyb = backend.upload(&c.dy, "dy").unwrap();
            let mut dxb = backend.alloc(rows * cols, "dx").unwrap();
            let mut dgb = backend.alloc(cols, "dgamma").unwrap();
            let mut dbb = backend.alloc(cols, "dbeta").unwrap();
            backend
                .layernorm_backward(&xb, &gb, &mb, &rb, &dyb, &mut dxb, &mut dgb, &mut dbb)
                .unwrap();
            assert_equals_approx(&backend.read(&dxb).unwrap(), &dx, TOL);
            assert_equals_approx(&backend.read(&dgb).unwrap(), &dg, TOL);
            assert_equals_approx(&backend.read(&dbb).unwrap(), &db, TOL);
        }
    }

    backend_tests!(
        layernorm_forward_matches_reference,
        layernorm_backward_matches_reference
    );

    /// The reference backward against central differences of the reference forward, for the
    /// loss `L = Σ y · w` with random weights `w` (so dy = w).
    #[test]
    fn backward_matches_finite_differences() {
        let (rows, cols) = (3, 8);
        let c = case(7, rows, cols);
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            let (mut y, mut m, mut r) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
            layernorm_reference(x, gamma, beta, &mut y, &mut m, &mut r, cols, EPS).unwrap();
            y.iter()
                .zip(&c.dy)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let (mut y, mut mean, mut rstd) =
            (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        layernorm_reference(
            &c.x, &c.gamma, &c.beta, &mut y, &mut mean, &mut rstd, cols, EPS,
        )
        .unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
        layernorm_backward_reference(
            &c.x, &c.gamma, &mean, &rstd, &c.dy, &mut dx, &mut dg, &mut db,
        )
        .unwrap();
        let h = 1e-2f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * f64::from(h));
        for i in 0..rows * cols {
            let g = fd(&|d| {
                let mut x = c.x.clone();
                x[i] += d;
                loss(&x, &c.gamma, &c.beta)
            });
            assert!(
                (g - f64::from(dx[i])).abs() < 2e-2 * g.abs().max(1.0),
                "dx[{i}]: {} vs {g}",
                dx[i]
            );
        }
        for j in 0..cols {
            let g = fd(&|d| {
                let mut gamma = c.gamma.clone();
                gamma[j] += d;
                loss(&c.x, &gamma, &c.beta)
            });
            assert!(
                (g - f64::from(dg[j])).abs() < 2e-2 * g.abs().max(1.0),
                "dgamma[{j}]"
            );
            let g = fd(&|d| {
                let mut beta = c.beta.clone();
                beta[j] += d;
                loss(&c.x, &c.gamma, &beta)
            });
            assert!(
                (g - f64::from(db[j])).abs() < 2e-2 * g.abs().max(1.0),
                "dbeta[{j}]"
            );
        }
    }

    #[test]
    fn normalised_rows_have_zero_mean_and_unit_variance() {
        let c = case(8, 4, 50);
        let ones = vec![1.0; 50];
        let zeros = vec![0.0; 50];
        let (mut y, mut m, mut r) = (vec![0.0; 200], vec![0.0; 4], vec![0.0; 4]);
        layernorm_cpu(&c.x, &ones, &zeros, &mut y, &mut m, &mut r, 50, 0.0).unwrap();
        for row in y.chunks(50) {
            let mean: f32 = row.iter().sum::<f32>() / 50.0;
            let var: f32 = row.iter().map(|v| v * v).sum::<f32>() / 50.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
        assert!(layernorm_cpu(&c.x, &ones, &zeros, &mut y, &mut m, &mut r, 7, 0.0).is_err());
    }
}
