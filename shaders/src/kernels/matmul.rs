//! Matrix multiply `C (+)= op(A) · op(B)` with the transposed variants a backward pass needs.
//!
//! Forward `Y = X·W` is [`Transpose::None`]; the weight gradient `dW = Xᵀ·dY` is
//! [`Transpose::A`]; the input gradient `dX = dY·Wᵀ` is [`Transpose::B`]. The WGSL kernel
//! (`wgsl/matmul.wgsl`) tiles C in 64×64 blocks through workgroup memory; the CPU path splits
//! rows across rayon threads and runs `matrixmultiply`'s sgemm on each band; the reference is a
//! naive triple loop accumulating in f64.

use bytemuck::{Pod, Zeroable};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::Result;
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, check_len, index_u32};

/// Which operand is stored transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transpose {
    /// `A·B`: A is `[m, k]`, B is `[k, n]`.
    #[default]
    None,
    /// `Aᵀ·B`: A is stored `[k, m]`, B is `[k, n]`.
    A,
    /// `A·Bᵀ`: A is `[m, k]`, B is stored `[n, k]`.
    B,
}

/// The shape of a product: `C [m, n] (+)= op(A) [m, k] · op(B) [k, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatmulShape {
    /// Rows of C.
    pub m: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// Which operand is stored transposed.
    pub transpose: Transpose,
    /// Add to C instead of overwriting it (for gradient accumulation).
    pub accumulate: bool,
}

impl MatmulShape {
    fn check(&self, a: usize, b: usize, c: usize) -> Result<()> {
        check_len("matmul A", a, self.m * self.k)?;
        check_len("matmul B", b, self.k * self.n)?;
        check_len("matmul C", c, self.m * self.n)
    }

    /// (row stride, column stride) of op(A) and op(B) in their buffers.
    fn strides(&self) -> ((usize, usize), (usize, usize)) {
        let a = match self.transpose {
            Transpose::A => (1, self.m),
            _ => (self.k, 1),
        };
        let b = match self.transpose {
            Transpose::B => (1, self.k),
            _ => (self.n, 1),
        };
        (a, b)
    }
}

/// The reference: a naive triple loop, accumulating in f64.
pub fn matmul_reference(a: &[f32], b: &[f32], c: &mut [f32], shape: MatmulShape) -> Result<()> {
    shape.check(a.len(), b.len(), c.len())?;
    let ((ars, acs), (brs, bcs)) = shape.strides();
    for i in 0..shape.m {
        for j in 0..shape.n {
            let mut s = 0.0f64;
            for kk in 0..shape.k {
                s += f64::from(a[i * ars + kk * acs]) * f64::from(b[kk * brs + j * bcs]);
            }
            let out = &mut c[i * shape.n + j];
            *out = if shape.accumulate {
                (f64::from(*out) + s) as f32
            } else {
                s as f32
            };
        }
    }
    Ok(())
}

/// The CPU path: one `matrixmultiply::sgemm` call, which spreads its own work over the cores
/// (an outer split across rayon on top of it oversubscribed the cores: measured 0.69x of a
/// direct call at 1024³ on two cores).
pub fn matmul_cpu(a: &[f32], b: &[f32], c: &mut [f32], shape: MatmulShape) -> Result<()> {
    shape.check(a.len(), b.len(), c.len())?;
    let MatmulShape { m, k, n, .. } = shape;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !shape.accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    let ((ars, acs), (brs, bcs)) = shape.strides();
    let beta = if shape.accumulate { 1.0 } else { 0.0 };
    sgemm_band(m, k, n, a, (ars, acs), b, (brs, bcs), beta, c);
    Ok(())
}

/// `c_band [rows, n] = a_band · b + beta · c_band`, with the given (row, column) strides.
#[allow(clippy::too_many_arguments)] // mirrors sgemm's own signature
fn sgemm_band(
    rows: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (ars, acs): (usize, usize),
    b: &[f32],
    (brs, bcs): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    // The bounds sgemm relies on: the last element of each operand is in its slice.
    let last_a = (rows - 1) * ars + (k - 1) * acs;
    let last_b = (k - 1) * brs + (n - 1) * bcs;
    assert!(last_a < a.len() && last_b < b.len() && rows * n <= c.len());
    // SAFETY: the assertion above keeps every access sgemm makes (row i < rows, column j < n,
    // index kk < k at the given strides) inside the three slices; `c` is borrowed mutably and
    // does not overlap `a` or `b`, which are shared borrows.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            n,
            1.0,
            a.as_ptr(),
            ars as isize,
            acs as isize,
            b.as_ptr(),
            brs as isize,
            bcs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// The wgpu path.
pub fn matmul_gpu(
    gpu: &Gpu,
    a: &GpuBuffer<f32>,
    b: &GpuBuffer<f32>,
    c: &mut GpuBuffer<f32>,
    shape: MatmulShape,
) -> Result<()> {
    shape.check(a.len(), b.len(), c.len())?;
    index_u32("matmul A", shape.m * shape.k)?;
    index_u32("matmul B", shape.k * shape.n)?;
    index_u32("matmul C", shape.m * shape.n)?;
    let params = Params {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        trans_a: u32::from(shape.transpose == Transpose::A),
        trans_b: u32::from(shape.transpose == Transpose::B),
        accumulate: u32::from(shape.accumulate),
        _pad: [0; 2],
    };
    let groups = [shape.n.div_ceil(64) as u32, shape.m.div_ceil(64) as u32, 1];
    if groups[0] == 0 || groups[1] == 0 {
        return Ok(());
    }
    gpu.run(&[Dispatch {
        kernel: &registry::MATMUL,
        params: bytemuck::bytes_of(&params),
        buffers: &[&a.buffer, &b.buffer, &c.buffer],
        groups,
    }])
}

/// The matrix product kernels on every backend: part of [`Backend`](crate::Backend).
pub trait MatmulOps: Buffers {
    /// `c (+)= op(a) · op(b)`, see [`MatmulShape`].
    fn matmul(
        &self,
        a: &Self::Buffer<f32>,
        b: &Self::Buffer<f32>,
        c: &mut Self::Buffer<f32>,
        shape: MatmulShape,
    ) -> Result<()>;
}

impl MatmulOps for Cpu {
    fn matmul(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
        shape: MatmulShape,
    ) -> Result<()> {
        matmul_cpu(a, b, c, shape)
    }
}

impl MatmulOps for Gpu {
    fn matmul(
        &self,
        a: &GpuBuffer<f32>,
        b: &GpuBuffer<f32>,
        c: &mut GpuBuffer<f32>,
        shape: MatmulShape,
    ) -> Result<()> {
        matmul_gpu(self, a, b, c, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// Relative tolerance for f32 products of length ≤ 200 against an f64 reference.
    const TOL: f32 = 1e-4;

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (7, 13, 5),
        (64, 64, 64),
        (65, 33, 130),
        (100, 200, 3),
        (3, 150, 77),
    ];

    fn check_shape<B: Backend>(backend: &B, shape: MatmulShape, seed: u64) {
        let mut r = rng(seed);
        let a = uniform(&mut r, shape.m * shape.k, 1.0);
        let b = uniform(&mut r, shape.k * shape.n, 1.0);
        let c0 = uniform(&mut r, shape.m * shape.n, 1.0);
        let mut expected = c0.clone();
        matmul_reference(&a, &b, &mut expected, shape).unwrap();
        let ab = backend.upload(&a, "a").unwrap();
        let bb = backend.upload(&b, "b").unwrap();
        let mut cb = backend.upload(&c0, "c").unwrap();
        backend.matmul(&ab, &bb, &mut cb, shape).unwrap();
        let got = backend.read(&cb).unwrap();
        assert_equals_approx(&got, &expected, TOL);
    }

    fn matmul_all_variants_match_reference<B: Backend>(backend: &B) {
        let mut seed = 0;
        for &(m, k, n) in SHAPES {
            for transpose in [Transpose::None, Transpose::A, Transpose::B] {
                for accumulate in [false, true] {
                    seed += 1;
                    let shape = MatmulShape {
                        m,
                        k,
                        n,
                        transpose,
                        accumulate,
                    };
                    check_shape(backend, shape, seed);
                }
            }
        }
    }

    fn matmul_reuses_buffers_across_calls<B: Backend>(backend: &B) {
        let shape = MatmulShape {
            m: 33,
            k: 17,
            n: 9,
            ..MatmulShape::default()
        };
        let mut r = rng(99);
        let mut a = backend.alloc(shape.m * shape.k, "a").unwrap();
        let mut b = backend.alloc(shape.k * shape.n, "b").unwrap();
        let mut c = backend.alloc(shape.m * shape.n, "c").unwrap();
        for _ in 0..3 {
            let av = uniform(&mut r, shape.m * shape.k, 2.0);
            let bv = uniform(&mut r, shape.k * shape.n, 2.0);
            backend.write(&mut a, &av).unwrap();
            backend.write(&mut b, &bv).unwrap();
            backend.matmul(&a, &b, &mut c, shape).unwrap();
            let mut expected = vec![0.0; shape.m * shape.n];
            matmul_reference(&av, &bv, &mut expected, shape).unwrap();
            assert_equals_approx(&backend.read(&c).unwrap(), &expected, TOL);
        }
    }

    fn matmul_rejects_wrong_lengths<B: Backend>(backend: &B) {
        let a = backend.alloc::<f32>(6, "a").unwrap();
        let b = backend.alloc::<f32>(9, "b").unwrap();
        let mut c = backend.alloc::<f32>(4, "c").unwrap();
        let shape = MatmulShape {
            m: 2,
            k: 3,
            n: 3,
            ..MatmulShape::default()
        };
        let err = backend.matmul(&a, &b, &mut c, shape).unwrap_err();
        assert!(err.to_string().contains("matmul C"), "{err}");
    }

    backend_tests!(
        matmul_all_variants_match_reference,
        matmul_reuses_buffers_across_calls,
        matmul_rejects_wrong_lengths,
    );

    /// The CPU path's sgemm bands against the triple loop on shapes that split into several
    /// bands, with every transpose.
    #[test]
    fn cpu_path_matches_naive_loop_on_large_shapes() {
        let mut seed = 1000;
        for (m, k, n) in [(300, 64, 70), (257, 31, 129)] {
            for transpose in [Transpose::None, Transpose::A, Transpose::B] {
                seed += 1;
                let shape = MatmulShape {
                    m,
                    k,
                    n,
                    transpose,
                    accumulate: seed % 2 == 0,
                };
                let mut r = rng(seed);
                let a = uniform(&mut r, m * k, 1.0);
                let b = uniform(&mut r, k * n, 1.0);
                let c0 = uniform(&mut r, m * n, 1.0);
                let mut expected = c0.clone();
                matmul_reference(&a, &b, &mut expected, shape).unwrap();
                let mut got = c0;
                matmul_cpu(&a, &b, &mut got, shape).unwrap();
                assert_equals_approx(&got, &expected, TOL);
            }
        }
    }

    #[test]
    fn reference_is_a_matrix_product() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0; 4];
        let shape = MatmulShape {
            m: 2,
            k: 2,
            n: 2,
            ..MatmulShape::default()
        };
        matmul_reference(&a, &b, &mut c, shape).unwrap();
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // Aᵀ·B with A stored transposed: Aᵀ = [[1, 3], [2, 4]].
        matmul_reference(
            &a,
            &b,
            &mut c,
            MatmulShape {
                transpose: Transpose::A,
                ..shape
            },
        )
        .unwrap();
        assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
        // A·Bᵀ: Bᵀ = [[5, 7], [6, 8]].
        matmul_reference(
            &a,
            &b,
            &mut c,
            MatmulShape {
                transpose: Transpose::B,
                ..shape
            },
        )
        .unwrap();
        assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);
    }
}
