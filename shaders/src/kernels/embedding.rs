//! Embedding lookup and its scatter-add backward (`wgsl/embedding.wgsl`).
//!
//! The backward pass adds `dy[t]` into `dtable[ids[t]]` for tokens in order, on both paths: the
//! GPU gives each (row, column) of the table to one thread, which walks the tokens, so there are
//! no float atomics and the sums are reproducible. An id ≥ vocab reads as a zero row and
//! contributes no gradient.

use bytemuck::{Pod, Zeroable};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// (vocab) from the table length, checking `dim` and `out`.
fn check(table: usize, tokens: usize, out: usize, dim: usize, what: &'static str) -> Result<usize> {
    if dim == 0 || !table.is_multiple_of(dim) {
        return Err(ShaderError::Parameter {
            name: "dim",
            value: dim.to_string(),
            reason: "must be nonzero and divide the table length",
        });
    }
    check_len(what, out, tokens * dim)?;
    Ok(table / dim)
}

/// The reference (and CPU path) of the lookup: `out[t] = table[ids[t]]`.
pub fn embedding_reference(ids: &[u32], table: &[f32], out: &mut [f32], dim: usize) -> Result<()> {
    let vocab = check(table.len(), ids.len(), out.len(), dim, "embedding out")?;
    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
        let id = id as usize;
        if id < vocab {
            row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
        } else {
            row.fill(0.0);
        }
    }
    Ok(())
}

/// The reference (and CPU path) of the backward pass: `dtable[ids[t]] += dy[t]`, in order.
pub fn embedding_backward_reference(
    ids: &[u32],
    dy: &[f32],
    dtable: &mut [f32],
    dim: usize,
) -> Result<()> {
    let vocab = check(
        dtable.len(),
        ids.len(),
        dy.len(),
        dim,
        "embedding_backward dy",
    )?;
    for (row, &id) in dy.chunks_exact(dim).zip(ids) {
        let id = id as usize;
        if id < vocab {
            for (g, d) in dtable[id * dim..(id + 1) * dim].iter_mut().zip(row) {
                *g += d;
            }
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    _pad: u32,
}

/// The wgpu path of the lookup.
pub fn embedding_gpu(
    gpu: &Gpu,
    ids: &GpuBuffer<u32>,
    table: &GpuBuffer<f32>,
    out: &mut GpuBuffer<f32>,
    dim: usize,
) -> Result<()> {
    let vocab = check(table.len(), ids.len(), out.len(), dim, "embedding out")?;
    let n = index_u32("embedding out", out.len())?;
    index_u32("embedding table", table.len())?;
    let params = Params {
        tokens: ids.len() as u32,
        dim: dim as u32,
        vocab: vocab as u32,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::EMBEDDING_GATHER,
        params: bytemuck::bytes_of(&params),
        buffers: &[&ids.buffer, &table.buffer, &out.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "embedding")?,
    }])
}

/// The wgpu path of the backward pass.
pub fn embedding_backward_gpu(
    gpu: &Gpu,
    ids: &GpuBuffer<u32>,
    dy: &GpuBuffer<f32>,
    dtable: &mut GpuBuffer<f32>,
    dim: usize,
) -> Result<()> {
    let vocab = check(
        dtable.len(),
        ids.len(),
        dy.len(),
        dim,
        "embedding_backward dy",
    )?;
    index_u32("embedding_backward dy", dy.len())?;
    let n = index_u32("embedding_backward dtable", dtable.len())?;
    let params = Params {
        tokens: ids.len() as u32,
        dim: dim as u32,
        vocab: vocab as u32,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::EMBEDDING_SCATTER,
        params: bytemuck::bytes_of(&params),
        buffers: &[&ids.buffer, &dy.buffer, &dtable.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "embedding_backward")?,
    }])
}

/// The embedding kernels on every backend: part of [`Backend`](crate::Backend).
pub trait EmbeddingOps: Buffers {
    /// `out[t] = table[ids[t]]` for a `[vocab, dim]` table; an id ≥ vocab gives zeros.
    fn embedding(
        &self,
        ids: &Self::Buffer<u32>,
        table: &Self::Buffer<f32>,
        out: &mut Self::Buffer<f32>,
        dim: usize,
    ) -> Result<()>;

    /// Accumulates `dtable[ids[t]] += dy[t]`, tokens in order (deterministic).
    fn embedding_backward(
        &self,
        ids: &Self::Buffer<u32>,
        dy: &Self::Buffer<f32>,
        dtable: &mut Self::Buffer<f32>,
        dim: usize,
    ) -> Result<()>;
}

impl EmbeddingOps for Cpu {
    fn embedding(
        &self,
        ids: &Vec<u32>,
        table: &Vec<f32>,
        out: &mut Vec<f32>,
        dim: usize,
    ) -> Result<()> {
        embedding_reference(ids, table, out, dim)
    }

    fn embedding_backward(
        &self,
        ids: &Vec<u32>,
        dy: &Vec<f32>,
        dtable: &mut Vec<f32>,
        dim: usize,
    ) -> Result<()> {
        embedding_backward_reference(ids, dy, dtable, dim)
    }
}

impl EmbeddingOps for Gpu {
    fn embedding(
        &self,
        ids: &GpuBuffer<u32>,
        table: &GpuBuffer<f32>,
        out: &mut GpuBuffer<f32>,
        dim: usize,
    ) -> Result<()> {
        embedding_gpu(self, ids, table, out, dim)
    }

    fn embedding_backward(
        &self,
        ids: &GpuBuffer<u32>,
        dy: &GpuBuffer<f32>,
        dtable: &mut GpuBuffer<f32>,
        dim: usize,
    ) -> Result<()> {
        embedding_backward_gpu(self, ids, dy, dtable, dim)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::prelude::*;
    use crate::testing::{assert_equals_approx, backend_tests, rng, uniform};

    /// The lookup copies, and the scatter adds in the same order on both paths: exact.
    const TOL: f32 = 0.0;

    fn ids(seed: u64, tokens: usize, vocab: u32) -> Vec<u32> {
        let mut r = rng(seed);
        let mut ids: Vec<u32> = (0..tokens).map(|_| r.random_range(0..vocab)).collect();
        // Repeats (the backward pass must add them) and an out-of-range id.
        ids[0] = 3;
        ids[1] = 3;
        ids[tokens - 1] = vocab + 5;
        ids
    }

    fn embedding_matches_reference<B: Backend>(backend: &B) {
        let (vocab, dim, tokens) = (259, 24, 300);
        let table = uniform(&mut rng(1), vocab * dim, 1.0);
        let ids = ids(2, tokens, vocab as u32);
        let mut expected = vec![0.0; tokens * dim];
        embedding_reference(&ids, &table, &mut expected, dim).unwrap();
        let ib = backend.upload(&ids, "ids").unwrap();
        let tb = backend.upload(&table, "table").unwrap();
        let mut ob = backend.alloc(tokens * dim, "out").unwrap();
        backend.embedding(&ib, &tb, &mut ob, dim).unwrap();
        assert_equals_approx(&backend.read(&ob).unwrap(), &expected, TOL);
    }

    fn embedding_backward_matches_reference<B: Backend>(backend: &B) {
        let (vocab, dim, tokens) = (259, 24, 300);
        let dy = uniform(&mut rng(3), tokens * dim, 1.0);
        let start = uniform(&mut rng(4), vocab * dim, 1.0);
        let ids = ids(5, tokens, vocab as u32);
        let mut expected = start.clone();
        embedding_backward_reference(&ids, &dy, &mut expected, dim).unwrap();
        let ib = backend.upload(&ids, "ids").unwrap();
        let dyb = backend.upload(&dy, "dy").unwrap();
        let mut tb = backend.upload(&start, "dtable").unwrap();
        backend.embedding_backward(&ib, &dyb, &mut tb, dim).unwrap();
        assert_equals_approx(&backend.read(&tb).unwrap(), &expected, TOL);
    }

    backend_tests!(
        embedding_matches_reference,
        embedding_backward_matches_reference
    );

    #[test]
    fn reference_values() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0; 6];
        embedding_reference(&[2, 0, 9], &table, &mut out, 2).unwrap();
        assert_eq!(out, [5.0, 6.0, 1.0, 2.0, 0.0, 0.0]);
        let mut dtable = [0.0; 6];
        embedding_backward_reference(&[1, 1, 9], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut dtable, 2)
            .unwrap();
        assert_eq!(dtable, [0.0, 0.0, 4.0, 6.0, 0.0, 0.0]);
        assert!(embedding_reference(&[0], &table, &mut out, 4).is_err());
    }
}
