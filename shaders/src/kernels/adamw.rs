//! One AdamW step with decoupled weight decay (`wgsl/adamw.wgsl`), the inner optimizer of a
//! DiLoCo round.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay (multiplied by `lr`).
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// BLOOM's settings: lr 6e-5, β = (0.9, 0.95), ε = 1e-8, weight decay 0.1.
    fn default() -> Self {
        Self {
            lr: 6e-5,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl AdamW {
    /// The bias corrections `(1 − β₁ᵗ, 1 − β₂ᵗ)` for step `t` ≥ 1, computed once on the host
    /// so both paths use the same constants.
    pub fn bias_corrections(&self, t: u32) -> Result<(f32, f32)> {
        if t == 0 {
            return Err(ShaderError::Parameter {
                name: "t",
                value: "0".into(),
                reason: "AdamW steps count from 1",
            });
        }
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        Ok((
            (1.0 - f64::from(self.beta1).powi(t)) as f32,
            (1.0 - f64::from(self.beta2).powi(t)) as f32,
        ))
    }
}

fn check(params: usize, grads: usize, m: usize, v: usize) -> Result<()> {
    check_len("adamw grads", grads, params)?;
    check_len("adamw m", m, params)?;
    check_len("adamw v", v, params)
}

/// The reference (and CPU path, in parallel chunks).
pub fn adamw_reference(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: &AdamW,
    t: u32,
) -> Result<()> {
    check(params.len(), grads.len(), m.len(), v.len())?;
    let (bc1, bc2) = hp.bias_corrections(t)?;
    params
        .par_chunks_mut(4096)
        .zip(grads.par_chunks(4096))
        .zip(m.par_chunks_mut(4096).zip(v.par_chunks_mut(4096)))
        .for_each(|((p, g), (m, v))| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                let theta = *p - hp.lr * hp.weight_decay * *p;
                *m = hp.beta1 * *m + (1.0 - hp.beta1) * g;
                *v = hp.beta2 * *v + (1.0 - hp.beta2) * g * g;
                *p = theta - hp.lr * (*m / bc1) / ((*v / bc2).sqrt() + hp.eps);
            }
        });
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
}

/// The wgpu path.
pub fn adamw_gpu(
    gpu: &Gpu,
    params: &mut GpuBuffer<f32>,
    grads: &GpuBuffer<f32>,
    m: &mut GpuBuffer<f32>,
    v: &mut GpuBuffer<f32>,
    hp: &AdamW,
    t: u32,
) -> Result<()> {
    check(params.len(), grads.len(), m.len(), v.len())?;
    let (bc1, bc2) = hp.bias_corrections(t)?;
    let n = index_u32("adamw params", params.len())?;
    let p = Params {
        n,
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weight_decay: hp.weight_decay,
        bc1,
        bc2,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::ADAMW_STEP,
        params: bytemuck::bytes_of(&p),
        buffers: &[&params.buffer, &grads.buffer, &m.buffer, &v.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "adamw")?,
    }])
}

/// The AdamW kernels on every backend: part of [`Backend`](crate::Backend).
pub trait AdamWOps: Buffers {
    /// One AdamW step (step count `t` ≥ 1), in place on `params`, `m` and `v`.
    fn adamw(
        &self,
        params: &mut Self::Buffer<f32>,
        grads: &Self::Buffer<f32>,
        m: &mut Self::Buffer<f32>,
        v: &mut Self::Buffer<f32>,
        hp: &AdamW,
        t: u32,
    ) -> Result<()>;
}

impl AdamWOps for Cpu {
    fn adamw(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        hp: &AdamW,
        t: u32,
    ) -> Result<()> {
        adamw_reference(params, grads, m, v, hp, t)
    }
}

impl AdamWOps for Gpu {
    fn adamw(
        &self,
        params: &mut GpuBuffer<f32>,
        grads: &GpuBuffer<f32>,
        m: &mut GpuBuffer<f32>,
        v: &mut GpuBuffer<f32>,
        hp: &AdamW,
        t: u32,
    ) -> Result<()> {
        adamw_gpu(self, params, grads, m, v, hp, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// GPU division and square root are a couple of ulp off the CPU's.
    const TOL: f32 = 1e-4;

    fn adamw_matches_reference_over_steps<B: Backend>(backend: &B) {
        let n = 5000;
        let hp = AdamW {
            lr: 1e-2,
            weight_decay: 0.1,
            ..AdamW::default()
        };
        let mut r = rng(1);
        let mut p = uniform(&mut r, n, 1.0);
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let mut pb = backend.upload(&p, "params").unwrap();
        let mut gb = backend.alloc(n, "grads").unwrap();
        let mut mb = backend.alloc(n, "m").unwrap();
        let mut vb = backend.alloc(n, "v").unwrap();
        for t in 1..=3 {
            let g = uniform(&mut r, n, 0.5);
            adamw_reference(&mut p, &g, &mut m, &mut v, &hp, t).unwrap();
            backend.write(&mut gb, &g).unwrap();
            backend
                .adamw(&mut pb, &gb, &mut mb, &mut vb, &hp, t)
                .unwrap();
            assert_equals_approx(&backend.read(&pb).unwrap(), &p, TOL);
            assert_equals_approx(&backend.read(&mb).unwrap(), &m, TOL);
            assert_equals_approx(&backend.read(&vb).unwrap(), &v, TOL);
        }
    }

    backend_tests!(adamw_matches_reference_over_steps);

    #[test]
    fn first_step_moves_by_lr_and_decays() {
        // At t = 1, m̂ = g and v̂ = g², so the update is lr · sign(g) (up to ε), plus the decay.
        let hp = AdamW {
            lr: 0.1,
            weight_decay: 0.5,
            eps: 0.0,
            ..AdamW::default()
        };
        let mut p = vec![1.0, 1.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        adamw_reference(&mut p, &[3.0, -0.001], &mut m, &mut v, &hp, 1).unwrap();
        assert!((p[0] - (0.95 - 0.1)).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - (0.95 + 0.1)).abs() < 1e-6, "{}", p[1]);
        assert!(adamw_reference(&mut p, &[0.0, 0.0], &mut m, &mut v, &hp, 0).is_err());
    }
}
