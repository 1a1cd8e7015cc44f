//! The wgpu path behind [`Backend`]: each kernel's WGSL pipeline, on device buffers.

use canopy_protocol::messages::MinHashParams;

use super::{Backend, Element};
use crate::error::Result;
use crate::kernels;
use crate::kernels::adamw::AdamW;
use crate::kernels::attention::AttentionShape;
use crate::kernels::matmul::MatmulShape;
use crate::runtime::{AdapterReport, Gpu, GpuBuffer};

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
