//! Bias add `x[r, c] += bias[c]` and its gradient `dbias[c] = Σ_r dy[r, c]`
//! (`wgsl/bias.wgsl`). The gradient sums rows in order on both paths, so it is reproducible.

use bytemuck::{Pod, Zeroable};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::Result;
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// The reference (and CPU path) of bias add.
pub fn bias_add_reference(x: &mut [f32], bias: &[f32], rows: usize, cols: usize) -> Result<()> {
    check_len("bias_add x", x.len(), rows * cols)?;
    check_len("bias_add bias", bias.len(), cols)?;
    for row in x.chunks_exact_mut(cols.max(1)) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    Ok(())
}

/// The reference (and CPU path) of the bias gradient.
pub fn bias_grad_reference(dy: &[f32], dbias: &mut [f32], rows: usize, cols: usize) -> Result<()> {
    check_len("bias_grad dy", dy.len(), rows * cols)?;
    check_len("bias_grad dbias", dbias.len(), cols)?;
    dbias.fill(0.0);
    for row in dy.chunks_exact(cols.max(1)) {
        for (g, d) in dbias.iter_mut().zip(row) {
            *g += d;
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// The wgpu path of bias add.
pub fn bias_add_gpu(
    gpu: &Gpu,
    x: &mut GpuBuffer<f32>,
    bias: &GpuBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check_len("bias_add x", x.len(), rows * cols)?;
    check_len("bias_add bias", bias.len(), cols)?;
    let n = index_u32("bias_add x", rows * cols)?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        _pad: [0; 2],
    };
    gpu.run(&[Dispatch {
        kernel: &registry::BIAS_ADD,
        params: bytemuck::bytes_of(&params),
        buffers: &[&x.buffer, &bias.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "bias_add")?,
    }])
}

/// The wgpu path of the bias gradient.
pub fn bias_grad_gpu(
    gpu: &Gpu,
    dy: &GpuBuffer<f32>,
    dbias: &mut GpuBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check_len("bias_grad dy", dy.len(), rows * cols)?;
    check_len("bias_grad dbias", dbias.len(), cols)?;
    index_u32("bias_grad dy", rows * cols)?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        _pad: [0; 2],
    };
    gpu.run(&[Dispatch {
        kernel: &registry::BIAS_GRAD,
        params: bytemuck::bytes_of(&params),
        buffers: &[&dbias.buffer, &dy.buffer],
        groups: gpu.grid_threads(cols as u64, WORKGROUP, "bias_grad")?,
    }])
}

/// The bias kernels on every backend: part of [`Backend`](crate::Backend).
pub trait BiasOps: Buffers {
    /// `x[r, c] += bias[c]` for a `[rows, cols]` matrix.
    fn bias_add(
        &self,
        x: &mut Self::Buffer<f32>,
        bias: &Self::Buffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// `dbias[c] = Σ_r dy[r, c]`.
    fn bias_grad(
        &self,
        dy: &Self::Buffer<f32>,
        dbias: &mut Self::Buffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
}

impl BiasOps for Cpu {
    fn bias_add(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        bias_add_reference(x, bias, rows, cols)
    }

    fn bias_grad(
        &self,
        dy: &Vec<f32>,
        dbias: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_grad_reference(dy, dbias, rows, cols)
    }
}

impl BiasOps for Gpu {
    fn bias_add(
        &self,
        x: &mut GpuBuffer<f32>,
        bias: &GpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_add_gpu(self, x, bias, rows, cols)
    }

    fn bias_grad(
        &self,
        dy: &GpuBuffer<f32>,
        dbias: &mut GpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_grad_gpu(self, dy, dbias, rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// Sums of ≤ 300 terms in the same order on both paths: a tight tolerance.
    const TOL: f32 = 1e-5;

    fn bias_add_matches_reference<B: Backend>(backend: &B) {
        for (seed, (rows, cols)) in [(1, 1), (3, 7), (37, 300), (300, 5)]
            .into_iter()
            .enumerate()
        {
            let mut r = rng(seed as u64);
            let x = uniform(&mut r, rows * cols, 2.0);
            let bias = uniform(&mut r, cols, 2.0);
            let mut expected = x.clone();
            bias_add_reference(&mut expected, &bias, rows, cols).unwrap();
            let mut xb = backend.upload(&x, "x").unwrap();
            let bb = backend.upload(&bias, "bias").unwrap();
            backend.bias_add(&mut xb, &bb, rows, cols).unwrap();
            assert_equals_approx(&backend.read(&xb).unwrap(), &expected, TOL);
        }
    }

    fn bias_grad_matches_reference<B: Backend>(backend: &B) {
        for (seed, (rows, cols)) in [(1, 1), (3, 7), (37, 300), (300, 5)]
            .into_iter()
            .enumerate()
        {
            let mut r = rng(100 + seed as u64);
            let dy = uniform(&mut r, rows * cols, 2.0);
            let mut expected = vec![0.0; cols];
            bias_grad_reference(&dy, &mut expected, rows, cols).unwrap();
            let dyb = backend.upload(&dy, "dy").unwrap();
            let mut db = backend.upload(&vec![7.0; cols], "dbias").unwrap();
            backend.bias_grad(&dyb, &mut db, rows, cols).unwrap();
            assert_equals_approx(&backend.read(&db).unwrap(), &expected, TOL);
        }
    }

    backend_tests!(bias_add_matches_reference, bias_grad_matches_reference);

    #[test]
    fn reference_values() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        bias_add_reference(&mut x, &[10.0, 20.0], 2, 2).unwrap();
        assert_eq!(x, [11.0, 22.0, 13.0, 24.0]);
        let mut db = vec![0.0; 2];
        bias_grad_reference(&x, &mut db, 2, 2).unwrap();
        assert_eq!(db, [24.0, 46.0]);
        assert!(bias_add_reference(&mut x, &[1.0], 2, 2).is_err());
    }
}
