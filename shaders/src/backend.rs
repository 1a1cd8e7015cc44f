//! The backend trait: one interface to the kernels, implemented by the wgpu path
//! ([`Gpu`](crate::runtime::Gpu), in `backend/gpu.rs`) and the plain-Rust CPU path
//! ([`Cpu`](crate::Cpu), in `backend/cpu.rs`).
//!
//! Buffers live on the backend (device memory on the GPU, vectors on the CPU); kernels read
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
use crate::runtime::AdapterReport;

mod cpu;
mod gpu;

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
    /// `quants` (little-endian, `ceil(len / 4)` words). See [`crate::kernels::int8`].
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
    /// `u32`, `offsets`: `docs + 1` byte positions; see [`crate::kernels::documents`]). `out` holds
    /// [`crate::kernels::quality::QUALITY_SIGNALS`] `u32` per document; bit-identical on both paths.
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
    /// bit-identical on both paths. See [`crate::kernels::minhash`]. Bad offsets, `num_perm` outside
    /// `1..=1024` or `shingle_words` outside `1..=32` are errors.
    fn minhash(
        &self,
        text: &Self::Buffer<u32>,
        offsets: &Self::Buffer<u32>,
        signatures: &mut Self::Buffer<u32>,
        params: &MinHashParams,
    ) -> Result<()>;
}
