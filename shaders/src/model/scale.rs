//! `y (+)= α·x` for whole buffers, built from the matrix multiply because the [`Backend`]
//! trait has no elementwise kernel: `x` is viewed as `[len / c, c]` and multiplied by the
//! `c × c` matrix `α·I`, with `c` the largest power of two up to 64 that divides `len`. Every
//! output element is one product `x·α` (plus the old value when accumulating), so the result
//! is exact for `α = 1` on both paths. The residual connections and gradient clipping use it.
//!
//! Cost: `c` multiply-adds per element, small next to the model's matrix products. A
//! dedicated axpy kernel in the backend would replace this.

use crate::backend::Backend;
use crate::error::Result;
use crate::kernels::matmul::{MatmulShape, Transpose};
use crate::runtime::check_len;

/// Widths `c = 2^i`, `i = 0..=MAX_LOG_WIDTH`.
const MAX_LOG_WIDTH: u32 = 6;

/// The matrices `α·I` for each width, on the backend.
pub(crate) struct Scale<B: Backend> {
    diagonals: Vec<B::Buffer<f32>>,
    staging: Vec<f32>,
    alpha: f32,
}

impl<B: Backend> Scale<B> {
    /// The matrices for `alpha`.
    pub(crate) fn new(backend: &B, alpha: f32) -> Result<Self> {
        let mut diagonals = Vec::with_capacity(MAX_LOG_WIDTH as usize + 1);
        let mut staging = Vec::with_capacity(1 << (2 * MAX_LOG_WIDTH));
        for i in 0..=MAX_LOG_WIDTH {
            fill_diagonal(&mut staging, 1 << i, alpha);
            diagonals.push(backend.upload(&staging, "scale diagonal")?);
        }
        Ok(Self {
            diagonals,
            staging,
            alpha,
        })
    }

    /// Changes the factor (writes the small matrices again; allocates nothing).
    pub(crate) fn set(&mut self, backend: &B, alpha: f32) -> Result<()> {
        if alpha == self.alpha {
            return Ok(());
        }
        for (i, buf) in self.diagonals.iter_mut().enumerate() {
            fill_diagonal(&mut self.staging, 1 << i, alpha);
            backend.write(buf, &self.staging)?;
        }
        self.alpha = alpha;
        Ok(())
    }

    /// `y = α·x`, or `y += α·x` when `accumulate`.
    pub(crate) fn apply(
        &self,
        backend: &B,
        x: &B::Buffer<f32>,
        y: &mut B::Buffer<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let len = backend.len(x);
        check_len("scale y", backend.len(y), len)?;
        if len == 0 {
            return Ok(());
        }
        let log = len.trailing_zeros().min(MAX_LOG_WIDTH);
        let c = 1usize << log;
        backend.matmul(
            x,
            &self.diagonals[log as usize],
            y,
            MatmulShape {
                m: len / c,
                k: c,
                n: c,
                transpose: Transpose::None,
                accumulate,
            },
        )
    }
}

fn fill_diagonal(staging: &mut Vec<f32>, c: usize, alpha: f32) {
    staging.clear();
    staging.resize(c * c, 0.0);
    for i in 0..c {
        staging[i * c + i] = alpha;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    fn scale_and_accumulate<B: Backend>(backend: &B) {
        let mut r = rng(41);
        let mut scale = Scale::new(backend, 1.0).unwrap();
        for len in [1, 3, 6, 64, 100, 4160, 6000] {
            let x = uniform(&mut r, len, 2.0);
            let y0 = uniform(&mut r, len, 2.0);
            let xb = backend.upload(&x, "x").unwrap();
            let mut yb = backend.upload(&y0, "y").unwrap();
            scale.set(backend, 1.0).unwrap();
            scale.apply(backend, &xb, &mut yb, true).unwrap();
            let sum: Vec<f32> = x.iter().zip(&y0).map(|(a, b)| a + b).collect();
            assert_equals_approx(&backend.read(&yb).unwrap(), &sum, 1e-6);
            scale.set(backend, -0.25).unwrap();
            scale.apply(backend, &xb, &mut yb, false).unwrap();
            let scaled: Vec<f32> = x.iter().map(|a| -0.25 * a).collect();
            assert_equals_approx(&backend.read(&yb).unwrap(), &scaled, 1e-6);
        }
        let xb = backend.upload(&[1.0f32; 4], "x").unwrap();
        let mut yb = backend.alloc::<f32>(5, "y").unwrap();
        assert!(scale.apply(backend, &xb, &mut yb, false).is_err());
    }

    backend_tests!(scale_and_accumulate);
}
