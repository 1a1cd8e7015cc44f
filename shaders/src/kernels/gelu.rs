//! tanh-GELU, BLOOM's MLP activation, and its derivative (`wgsl/gelu.wgsl`):
//! `gelu(x) = 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`.
//!
//! Both paths compute it as `x · σ(2u)` (the same function: `0.5 · (1 + tanh u) = σ(2u)`),
//! which keeps its relative accuracy in the negative tail, where `1 + tanh u` cancels.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::Result;
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044_715;

/// `σ(2u) = 0.5 · (1 + tanh u)`, with `2u` clamped to ±80 as in the kernel (σ is 0 or 1 to
/// f32 precision there).
fn sigma(v: f32) -> f32 {
    let two_u = 2.0 * SQRT_2_OVER_PI * (v + COEF * v * v * v);
    1.0 / (1.0 + super::exp::exp(-two_u.clamp(-80.0, 80.0)))
}

/// GELU of one value.
pub fn gelu_scalar(v: f32) -> f32 {
    v * sigma(v)
}

/// The derivative of GELU at one value.
pub fn gelu_grad_scalar(v: f32) -> f32 {
    let s = sigma(v);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * v * v);
    s + v * 2.0 * s * (1.0 - s) * du
}

/// The reference (and CPU path, in parallel chunks): `y = gelu(x)`.
pub fn gelu_reference(x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("gelu y", y.len(), x.len())?;
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(y, x)| {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = gelu_scalar(v);
            }
        });
    Ok(())
}

/// The reference (and CPU path): `dx = dy · gelu'(x)`.
pub fn gelu_backward_reference(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("gelu_backward dy", dy.len(), x.len())?;
    check_len("gelu_backward dx", dx.len(), x.len())?;
    dx.par_chunks_mut(4096)
        .zip(x.par_chunks(4096).zip(dy.par_chunks(4096)))
        .for_each(|(dx, (x, dy))| {
            for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                *o = g * gelu_grad_scalar(v);
            }
        });
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// The wgpu path of the forward pass.
pub fn gelu_gpu(gpu: &Gpu, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
    check_len("gelu y", y.len(), x.len())?;
    let n = index_u32("gelu x", x.len())?;
    let params = Params { n, _pad: [0; 3] };
    gpu.run(&[Dispatch {
        kernel: &registry::GELU_FORWARD,
        params: bytemuck::bytes_of(&params),
        buffers: &[&x.buffer, &y.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "gelu")?,
    }])
}

/// The wgpu path of the backward pass.
pub fn gelu_backward_gpu(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    check_len("gelu_backward dy", dy.len(), x.len())?;
    check_len("gelu_backward dx", dx.len(), x.len())?;
    let n = index_u32("gelu x", x.len())?;
    let params = Params { n, _pad: [0; 3] };
    gpu.run(&[Dispatch {
        kernel: &registry::GELU_BACKWARD,
        params: bytemuck::bytes_of(&params),
        buffers: &[&x.buffer, &dy.buffer, &dx.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "gelu_backward")?,
    }])
}

/// The GELU kernels on every backend: part of [`Backend`](crate::Backend).
pub trait GeluOps: Buffers {
    /// `y = gelu(x)` (tanh approximation), elementwise.
    fn gelu(&self, x: &Self::Buffer<f32>, y: &mut Self::Buffer<f32>) -> Result<()>;

    /// `dx = dy · gelu'(x)`.
    fn gelu_backward(
        &self,
        x: &Self::Buffer<f32>,
        dy: &Self::Buffer<f32>,
        dx: &mut Self::Buffer<f32>,
    ) -> Result<()>;
}

impl GeluOps for Cpu {
    fn gelu(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        gelu_reference(x, y)
    }

    fn gelu_backward(&self, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        gelu_backward_reference(x, dy, dx)
    }
}

impl GeluOps for Gpu {
    fn gelu(&self, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
        gelu_gpu(self, x, y)
    }

    fn gelu_backward(
        &self,
        x: &GpuBuffer<f32>,
        dy: &GpuBuffer<f32>,
        dx: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        gelu_backward_gpu(self, x, dy, dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// GPU exp is a few ulp off the CPU's (3 + 2|x| ulp in WGSL); values near 0 are judged
    /// against the data's scale (see `assert_equals_approx`).
    const TOL: f32 = 1e-4;

    fn inputs(seed: u64) -> Vec<f32> {
        let mut r = rng(seed);
        let mut x = uniform(&mut r, 5000, 6.0);
        // Large arguments, where an unclamped exp would overflow.
        x.extend([-100.0, -20.0, -9.0, 0.0, 9.0, 20.0, 100.0, 1e4, -1e4]);
        x
    }

    fn gelu_matches_reference<B: Backend>(backend: &B) {
        let x = inputs(1);
        let mut expected = vec![0.0; x.len()];
        gelu_reference(&x, &mut expected).unwrap();
        let xb = backend.upload(&x, "x").unwrap();
        let mut yb = backend.alloc(x.len(), "y").unwrap();
        backend.gelu(&xb, &mut yb).unwrap();
        assert_equals_approx(&backend.read(&yb).unwrap(), &expected, TOL);
    }

    fn gelu_backward_matches_reference<B: Backend>(backend: &B) {
        let x = inputs(2);
        let dy = uniform(&mut rng(3), x.len(), 1.0);
        let mut expected = vec![0.0; x.len()];
        gelu_backward_reference(&x, &dy, &mut expected).unwrap();
        let xb = backend.upload(&x, "x").unwrap();
        let dyb = backend.upload(&dy, "dy").unwrap();
        let mut dxb = backend.alloc(x.len(), "dx").unwrap();
        backend.gelu_backward(&xb, &dyb, &mut dxb).unwrap();
        assert_equals_approx(&backend.read(&dxb).unwrap(), &expected, TOL);
    }

    backend_tests!(gelu_matches_reference, gelu_backward_matches_reference);

    #[test]
    fn known_values() {
        assert_eq!(gelu_scalar(0.0), 0.0);
        assert!((gelu_scalar(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_scalar(-1.0) + 0.158_808).abs() < 1e-5);
        assert_eq!(gelu_scalar(100.0), 100.0);
        assert!(gelu_scalar(-100.0).abs() < 1e-30);
        // The tail keeps relative accuracy: gelu(−5) = −5 · σ(−2u(−5)).
        let u = (2.0 / std::f64::consts::PI).sqrt() * (-5.0 - 0.044715 * 125.0);
        let exact = -5.0 * 0.5 * (1.0 + u.tanh());
        assert!(((f64::from(gelu_scalar(-5.0)) - exact) / exact).abs() < 1e-5);
    }

    /// The derivative against central differences in f64 of the same formula.
    #[test]
    fn derivative_matches_finite_differences() {
        let f = |v: f64| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            0.5 * v * (1.0 + u.tanh())
        };
        for i in -60..=60 {
            let v = f64::from(i) * 0.1;
            let h = 1e-5;
            let fd = (f(v + h) - f(v - h)) / (2.0 * h);
            let g = f64::from(gelu_grad_scalar(v as f32));
            assert!((fd - g).abs() < 1e-5, "x = {v}: {g} vs {fd}");
        }
    }
}
