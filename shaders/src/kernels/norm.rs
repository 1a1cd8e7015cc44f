//! The global L2 norm of a set of tensors, `√(Σ x²)` (`wgsl/norm.wgsl`), for gradient clipping
//! and for the coordinator's norm check of an update.
//!
//! The GPU reduces in a fixed shape (4096 values per workgroup, then one workgroup over the
//! partial sums), so the same input gives the same bits on the same device every time; the
//! CPU path accumulates in f64.

use bytemuck::{Pod, Zeroable};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::Result;
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, index_u32};

/// Values per workgroup in the first stage (keep in step with `CHUNK` in the WGSL).
const CHUNK: usize = 4096;

/// The reference (and CPU path): f64 accumulation.
pub fn global_norm_reference(tensors: &[&[f32]]) -> f32 {
    let sum: f64 = tensors
        .iter()
        .flat_map(|t| t.iter())
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    sum.sqrt() as f32
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    _pad: [u32; 2],
}

/// The wgpu path: one partial-sum dispatch per tensor, then one final sum, in one submission.
pub fn global_norm_gpu(gpu: &Gpu, tensors: &[&GpuBuffer<f32>]) -> Result<f32> {
    let mut params = Vec::with_capacity(tensors.len() + 1);
    let mut offset = 0usize;
    for t in tensors {
        let n = index_u32("global_norm tensor", t.len())?;
        params.push(Params {
            n,
            offset: index_u32("global_norm partials", offset)?,
            _pad: [0; 2],
        });
        offset += t.len().div_ceil(CHUNK);
    }
    let count = index_u32("global_norm partials", offset)?;
    params.push(Params {
        n: count,
        offset: 0,
        _pad: [0; 2],
    });
    let partials = gpu.scratch("global_norm partials", (offset.max(1) * 4) as u64)?;
    let out = GpuBuffer::<f32>::wrap(gpu.scratch("global_norm result", 4)?, 1);
    let mut dispatches = Vec::with_capacity(tensors.len() + 1);
    let buffers: Vec<[&wgpu::Buffer; 2]> = tensors.iter().map(|t| [&t.buffer, &partials]).collect();
    for ((t, p), b) in tensors.iter().zip(&params).zip(&buffers) {
        if t.is_empty() {
            continue;
        }
        dispatches.push(Dispatch {
            kernel: &registry::NORM_PARTIAL,
            params: bytemuck::bytes_of(p),
            buffers: b,
            groups: gpu.grid(t.len().div_ceil(CHUNK) as u64, "global_norm")?,
        });
    }
    if count == 0 {
        return Ok(0.0);
    }
    let finish = [&partials, &out.buffer];
    dispatches.push(Dispatch {
        kernel: &registry::NORM_FINISH,
        params: bytemuck::bytes_of(&params[tensors.len()]),
        buffers: &finish,
        groups: [1, 1, 1],
    });
    let sum = gpu.run_then_read(&dispatches, &out)?;
    Ok(sum.first().copied().unwrap_or(0.0).sqrt())
}

/// The global norm kernels on every backend: part of [`Backend`](crate::Backend).
pub trait NormOps: Buffers {
    /// `√(Σ x²)` over all the tensors together.
    fn global_norm(&self, tensors: &[&Self::Buffer<f32>]) -> Result<f32>;
}

impl NormOps for Cpu {
    fn global_norm(&self, tensors: &[&Vec<f32>]) -> Result<f32> {
        let slices: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
        Ok(global_norm_reference(&slices))
    }
}

impl NormOps for Gpu {
    fn global_norm(&self, tensors: &[&GpuBuffer<f32>]) -> Result<f32> {
        global_norm_gpu(self, tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// A tree of f32 partial sums against an f64 sum over ≤ 20,000 values.
    const TOL: f32 = 1e-5;

    fn global_norm_matches_reference<B: Backend>(backend: &B) {
        let mut r = rng(1);
        let sizes = [1, 4095, 4096, 4097, 10_000, 3];
        let host: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 2.0)).collect();
        let slices: Vec<&[f32]> = host.iter().map(|v| v.as_slice()).collect();
        let expected = global_norm_reference(&slices);
        let bufs: Vec<_> = host
            .iter()
            .map(|v| backend.upload(v, "t").unwrap())
            .collect();
        let refs: Vec<_> = bufs.iter().collect();
        let got = backend.global_norm(&refs).unwrap();
        assert_equals_approx(&[got], &[expected], TOL);
        // Twice the same input: the same bits.
        assert_eq!(backend.global_norm(&refs).unwrap().to_bits(), got.to_bits());
        // One tensor, and none.
        let one = backend.global_norm(&refs[1..2]).unwrap();
        assert_equals_approx(&[one], &[global_norm_reference(&slices[1..2])], TOL);
        assert_eq!(backend.global_norm(&[]).unwrap(), 0.0);
    }

    backend_tests!(global_norm_matches_reference);

    #[test]
    fn reference_values() {
        assert_eq!(global_norm_reference(&[&[3.0], &[4.0]]), 5.0);
        assert_eq!(global_norm_reference(&[]), 0.0);
    }
}
