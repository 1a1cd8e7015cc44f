//! The backend trait: one interface to the kernels, implemented by the wgpu path ([`Gpu`])
//! and the plain-Rust CPU path ([`Cpu`]).
//!
//! Buffers live on the backend (device memory for [`Gpu`], vectors for [`Cpu`]); kernels read
//! their inputs and write into output buffers the caller allocated once, so a loop that repeats
//! a kernel allocates nothing per call. Every shape is checked against the buffer lengths
//! before anything runs. Code written against [`Backend`] runs on either path, and the tests
//! are written that way too: once, then instantiated for both.

use std::fmt;

use canopy_protocol::messages::MinHashParams;

use crate::error::Result;
use crate::kernels::adamw::AdamW;
use crate::kernels::attention::AttentionShape;
use crate::kernels::matmul::MatmulShape;
use crate::runtime::{AdapterReport, Gpu, GpuBuffer};
use crate::{Cpu, kernels};

/// Element types a buffer can hold.
pub trait Element: bytemuck::Pod + Send + Sync + fmt::Debug + 'static {}

impl Element for f32 {}
impl Element for u32 {}

/// The kernels, on one backend.
///
/// Matrices are row-major. Gradient kernels overwrite their outputs unless the method says it
/// accumulates.
pub trait Backend {
    /// A buffer of `T` on this backend.
    type Buffer<T: Element>;

    /// What this backend runs on.
    fn report(&self) -> AdapterReport;
    /// A zeroed buffer of `len` elements; `what` names it in errors.
    fn alloc<T: Element>(&self, len: usize, what: &'static str) -> Result<Self::Buffer<T>>;
    /// A buffer holding `data`.
    fn upload<T: Element>(&self, data: &[T], what: &'static str) -> Result<Self::Buffer<T>>;
    /// Overwrites `buf` with `data`, which must have its length.
    fn write<T: Element>(&self, buf: &mut Self::Buffer<T>, data: &[T]) -> Result<()>;
    /// Copies `buf` to the host.
    fn read<T: Element>(&self, buf: &Self::Buffer<T>) -> Result<Vec<T>>;
    /// The number of elements in `buf`.
    fn len<T: Element>(&self, buf: &Self::Buffer<T>) -> usize;

    /// `c (+)= op(a) · op(b)`, see [`MatmulShape`].
    fn matmul(
        &self,
        a: &Self::Buffer<f32>,
        b: &Self::Buffer<f32>,
        c: &mut Self::Buffer<f32>,
        shape: MatmulShape,
    ) -> Result<()>;

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

    /// `y = gelu(x)` (tanh approximation), elementwise.
    fn gelu(&self, x: &Self::Buffer<f32>, y: &mut Self::Buffer<f32>) -> Result<()>;

    /// `dx = dy · gelu'(x)`.
    fn gelu_backward(
        &self,
        x: &Self::Buffer<f32>,
        dy: &Self::Buffer<f32>,
        dx: &mut Self::Buffer<f32>,
    ) -> Result<()>;

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

    /// Per-row softmax cross-entropy of `logits` `[rows, vocab]` against `targets` `[rows]`;
    /// writes `loss` and `lse` (log-sum-exp) per row. A target ≥ vocab is ignored (loss 0).
    fn cross_entropy(
        &self,
        logits: &Self::Buffer<f32>,
        targets: &Self::Buffer<u32>,
        loss: &mut Self::Buffer<f32>,
        lse: &mut Self::Buffer<f32>,
    ) -> Result<()>;

    /// `dlogits = scale · (softmax(logits) − onehot(target))`; ignored rows get zeros.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Buffer<f32>,
        targets: &Self::Buffer<u32>,
        lse: &Self::Buffer<f32>,
        dlogits: &mut Self::Buffer<f32>,
        scale: f32,
    ) -> Result<()>;

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

    /// `√(Σ x²)` over all the tensors together.
    fn global_norm(&self, tensors: &[&Self::Buffer<f32>]) -> Result<f32>;

    /// Blockwise int8 quantisation of `x`, bit-identical to the protocol's
    /// `CodecSpec::Int8 { block }`: one scale per block, four signed bytes per `u32` of
    /// `quants` (little-endian, `ceil(len / 4)` words). See [`kernels::int8`].
    fn int8_quantize(
        &self,
        x: &Self::Buffer<f32>,
        scales: &mut Self::Buffer<f32>,
        quants: &mut Self::Buffer<u32>,
        block: usize,
    ) -> Result<()>;

    /// The inverse: `out[i] = q[i] · scale[block of i]`.
    fn int8_dequantize(
        &self,
        scales: &Self::Buffer<f32>,
        quants: &Self::Buffer<u32>,
        out: &mut Self::Buffer<f32>,
        block: usize,
    ) -> Result<()>;

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

    /// Per-document quality signals of a batch of documents (`text`: bytes packed four to a
    /// `u32`, `offsets`: `docs + 1` byte positions; see [`kernels::documents`]). `out` holds
    /// [`kernels::quality::QUALITY_SIGNALS`] `u32` per document; bit-identical on both paths.
    /// Offsets that decrease or pass the end of `text` are an error (checked before anything
    /// runs), as is a batch too large for the device.
    fn quality_signals(
        &self,
        text: &Self::Buffer<u32>,
        offsets: &Self::Buffer<u32>,
        out: &mut Self::Buffer<u32>,
    ) -> Result<()>;

    /// MinHash signatures of a batch of documents (layout as for
    /// [`Backend::quality_signals`]): `params.num_perm` values per document in `signatures`;
    /// bit-identical on both paths. See [`kernels::minhash`]. Bad offsets, `num_perm` outside
    /// `1..=1024` or `shingle_words` outside `1..=32` are errors.
    fn minhash(
        &self,
        text: &Self::Buffer<u32>,
        offsets: &Self::Buffer<u32>,
        signatures: &mut Self::Buffer<u32>,
        params: &MinHashParams,
    ) -> Result<()>;
}

impl Backend for Cpu {
    type Buffer<T: Element> = Vec<T>;

    fn report(&self) -> AdapterReport {
        Cpu::report(self)
    }

    fn alloc<T: Element>(&self, len: usize, _what: &'static str) -> Result<Vec<T>> {
        Ok(vec![T::zeroed(); len])
    }

    fn upload<T: Element>(&self, data: &[T], _what: &'static str) -> Result<Vec<T>> {
        Ok(data.to_vec())
    }

    fn write<T: Element>(&self, buf: &mut Vec<T>, data: &[T]) -> Result<()> {
        crate::runtime::check_len("data", data.len(), buf.len())?;
        buf.copy_from_slice(data);
        Ok(())
    }

    fn read<T: Element>(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }

    fn len<T: Element>(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn matmul(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
        shape: MatmulShape,
    ) -> Result<()> {
        kernels::matmul::matmul_cpu(a, b, c, shape)
    }

    fn bias_add(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        kernels::bias::bias_add_reference(x, bias, rows, cols)
    }

    fn bias_grad(
        &self,
        dy: &Vec<f32>,
        dbias: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::bias::bias_grad_reference(dy, dbias, rows, cols)
    }

    fn gelu(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        kernels::gelu::gelu_reference(x, y)
    }

    fn gelu_backward(&self, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        kernels::gelu::gelu_backward_reference(x, dy, dx)
    }

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
        kernels::layernorm::layernorm_cpu(x, gamma, beta, y, mean, rstd, cols, eps)
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
        kernels::layernorm::layernorm_backward_reference(
            x, gamma, mean, rstd, dy, dx, dgamma, dbeta,
        )
    }

    fn embedding(
        &self,
        ids: &Vec<u32>,
        table: &Vec<f32>,
        out: &mut Vec<f32>,
        dim: usize,
    ) -> Result<()> {
        kernels::embedding::embedding_reference(ids, table, out, dim)
    }

    fn embedding_backward(
        &self,
        ids: &Vec<u32>,
        dy: &Vec<f32>,
        dtable: &mut Vec<f32>,
        dim: usize,
    ) -> Result<()> {
        kernels::embedding::embedding_backward_reference(ids, dy, dtable, dim)
    }

    fn cross_entropy(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        loss: &mut Vec<f32>,
        lse: &mut Vec<f32>,
    ) -> Result<()> {
        kernels::cross_entropy::cross_entropy_cpu(logits, targets, loss, lse)
    }

    fn cross_entropy_backward(
        &self,
        logits: &Vec<f32>,
        targets: &Vec<u32>,
        lse: &Vec<f32>,
        dlogits: &mut Vec<f32>,
        scale: f32,
    ) -> Result<()> {
        kernels::cross_entropy::cross_entropy_backward_reference(
            logits, targets, lse, dlogits, scale,
        )
    }

    fn adamw(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        hp: &AdamW,
        t: u32,
    ) -> Result<()> {
        kernels::adamw::adamw_reference(params, grads, m, v, hp, t)
    }

    fn global_norm(&self, tensors: &[&Vec<f32>]) -> Result<f32> {
        let slices: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
        Ok(kernels::norm::global_norm_reference(&slices))
    }

    fn int8_quantize(
        &self,
        x: &Vec<f32>,
        scales: &mut Vec<f32>,
        quants: &mut Vec<u32>,
        block: usize,
    ) -> Result<()> {
        kernels::int8::quantize_cpu(x, scales, quants, block)
    }

    fn int8_dequantize(
        &self,
        scales: &Vec<f32>,
        quants: &Vec<u32>,
        out: &mut Vec<f32>,
        block: usize,
    ) -> Result<()> {
        kernels::int8::dequantize_cpu(scales, quants, out, block)
    }

    fn attention(
        &self,
        qkv: &Vec<f32>,
        slopes: &Vec<f32>,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        kernels::attention::attention_cpu(qkv, slopes, out, lse, shape)
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
        kernels::attention::attention_backward_cpu(qkv, slopes, out, lse, dout, dqkv, shape)
    }

    fn quality_signals(
        &self,
        text: &Vec<u32>,
        offsets: &Vec<u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        kernels::quality::quality_cpu(text, offsets, out)
    }

    fn minhash(
        &self,
        text: &Vec<u32>,
        offsets: &Vec<u32>,
        signatures: &mut Vec<u32>,
        params: &MinHashParams,
    ) -> Result<()> {
        kernels::minhash::minhash_cpu(text, offsets, signatures, params)
    }
}

impl Backend for Gpu {
    type Buffer<T: Element> = GpuBuffer<T>;

    fn report(&self) -> AdapterReport {
        Gpu::report(self)
    }

    fn alloc<T: Element>(&self, len: usize, what: &'static str) -> Result<GpuBuffer<T>> {
        Gpu::alloc(self, len, what)
    }

    fn upload<T: Element>(&self, data: &[T], what: &'static str) -> Result<GpuBuffer<T>> {
        let buf = Gpu::alloc(self, data.len(), what)?;
        Gpu::write(self, &buf, data)?;
        Ok(buf)
    }

    fn write<T: Element>(&self, buf: &mut GpuBuffer<T>, data: &[T]) -> Result<()> {
        Gpu::write(self, buf, data)
    }

    fn read<T: Element>(&self, buf: &GpuBuffer<T>) -> Result<Vec<T>> {
        Gpu::read(self, buf)
    }

    fn len<T: Element>(&self, buf: &GpuBuffer<T>) -> usize {
        buf.len()
    }

    fn matmul(
        &self,
        a: &GpuBuffer<f32>,
        b: &GpuBuffer<f32>,
        c: &mut GpuBuffer<f32>,
        shape: MatmulShape,
    ) -> Result<()> {
        kernels::matmul::matmul_gpu(self, a, b, c, shape)
    }

    fn bias_add(
        &self,
        x: &mut GpuBuffer<f32>,
        bias: &GpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::bias::bias_add_gpu(self, x, bias, rows, cols)
    }

    fn bias_grad(
        &self,
        dy: &GpuBuffer<f32>,
        dbias: &mut GpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::bias::bias_grad_gpu(self, dy, dbias, rows, cols)
    }

    fn gelu(&self, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
        kernels::gelu::gelu_gpu(self, x, y)
    }

    fn gelu_backward(
        &self,
        x: &GpuBuffer<f32>,
        dy: &GpuBuffer<f32>,
        dx: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        kernels::gelu::gelu_backward_gpu(self, x, dy, dx)
    }

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
        kernels::layernorm::layernorm_gpu(self, x, gamma, beta, y, mean, rstd, cols, eps)
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
        kernels::layernorm::layernorm_backward_gpu(
            self, x, gamma, mean, rstd, dy, dx, dgamma, dbeta,
        )
    }

    fn embedding(
        &self,
        ids: &GpuBuffer<u32>,
        table: &GpuBuffer<f32>,
        out: &mut GpuBuffer<f32>,
        dim: usize,
    ) -> Result<()> {
        kernels::embedding::embedding_gpu(self, ids, table, out, dim)
    }

    fn embedding_backward(
        &self,
        ids: &GpuBuffer<u32>,
        dy: &GpuBuffer<f32>,
        dtable: &mut GpuBuffer<f32>,
        dim: usize,
    ) -> Result<()> {
        kernels::embedding::embedding_backward_gpu(self, ids, dy, dtable, dim)
    }

    fn cross_entropy(
        &self,
        logits: &GpuBuffer<f32>,
        targets: &GpuBuffer<u32>,
        loss: &mut GpuBuffer<f32>,
        lse: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        kernels::cross_entropy::cross_entropy_gpu(self, logits, targets, loss, lse)
    }

    fn cross_entropy_backward(
        &self,
        logits: &GpuBuffer<f32>,
        targets: &GpuBuffer<u32>,
        lse: &GpuBuffer<f32>,
        dlogits: &mut GpuBuffer<f32>,
        scale: f32,
    ) -> Result<()> {
        kernels::cross_entropy::cross_entropy_backward_gpu(
            self, logits, targets, lse, dlogits, scale,
        )
    }

    fn adamw(
        &self,
        params: &mut GpuBuffer<f32>,
        grads: &GpuBuffer<f32>,
        m: &mut GpuBuffer<f32>,
        v: &mut GpuBuffer<f32>,
        hp: &AdamW,
        t: u32,
    ) -> Result<()> {
        kernels::adamw::adamw_gpu(self, params, grads, m, v, hp, t)
    }

    fn global_norm(&self, tensors: &[&GpuBuffer<f32>]) -> Result<f32> {
        kernels::norm::global_norm_gpu(self, tensors)
    }

    fn int8_quantize(
        &self,
        x: &GpuBuffer<f32>,
        scales: &mut GpuBuffer<f32>,
        quants: &mut GpuBuffer<u32>,
        block: usize,
    ) -> Result<()> {
        kernels::int8::quantize_gpu(self, x, scales, quants, block)
    }

    fn int8_dequantize(
        &self,
        scales: &GpuBuffer<f32>,
        quants: &GpuBuffer<u32>,
        out: &mut GpuBuffer<f32>,
        block: usize,
    ) -> Result<()> {
        kernels::int8::dequantize_gpu(self, scales, quants, out, block)
    }

    fn attention(
        &self,
        qkv: &GpuBuffer<f32>,
        slopes: &GpuBuffer<f32>,
        out: &mut GpuBuffer<f32>,
        lse: &mut GpuBuffer<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        kernels::attention::attention_gpu(self, qkv, slopes, out, lse, shape)
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
        kernels::attention::attention_backward_gpu(self, qkv, slopes, out, lse, dout, dqkv, shape)
    }

    fn quality_signals(
        &self,
        text: &GpuBuffer<u32>,
        offsets: &GpuBuffer<u32>,
        out: &mut GpuBuffer<u32>,
    ) -> Result<()> {
        kernels::quality::quality_gpu(self, text, offsets, out)
    }

    fn minhash(
        &self,
        text: &GpuBuffer<u32>,
        offsets: &GpuBuffer<u32>,
        signatures: &mut GpuBuffer<u32>,
        params: &MinHashParams,
    ) -> Result<()> {
        kernels::minhash::minhash_gpu(self, text, offsets, signatures, params)
    }
}
