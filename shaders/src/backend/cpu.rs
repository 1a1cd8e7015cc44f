//! The CPU path behind [`Backend`]: each kernel's plain-Rust reference, on vectors.

use canopy_protocol::messages::MinHashParams;

use super::{Backend, Element};
use crate::error::Result;
use crate::kernels::adamw::AdamW;
use crate::kernels::attention::AttentionShape;
use crate::kernels::matmul::MatmulShape;
use crate::runtime::AdapterReport;
use crate::{Cpu, kernels};

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
