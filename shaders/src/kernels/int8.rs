//! Blockwise int8 quantisation, bit-identical to canopy-protocol's `CodecSpec::Int8` codec
//! (`wgsl/int8.wgsl`).
//!
//! A node quantises its pseudo-gradient on the device and ships the protocol's body; the
//! coordinator (or a test) decodes it with `canopy_protocol`, and gets exactly the values the
//! device would dequantise. The CPU path *is* the protocol's codec; the WGSL reproduces it
//! bit for bit, with integer arithmetic where WGSL's float rules are looser than Rust's (see
//! the comment at the top of the WGSL file).
//!
//! Layout on the device: `scales` holds one f32 per block, `quants` four signed bytes per u32
//! (little-endian, value `i` in byte `i % 4` of word `i / 4`). [`int8_body`] turns them into
//! the protocol's body; [`int8_parts`] does the reverse.

use bytemuck::{Pod, Zeroable};
use canopy_protocol::compress::MAX_INT8_BLOCK;
use canopy_protocol::{CodecSpec, CompressedUpdate, Compressor};

use crate::Cpu;
use crate::backend::Buffers;
use crate::error::{Result, ShaderError};
use crate::registry;
use crate::runtime::{Dispatch, Gpu, GpuBuffer, WORKGROUP, check_len, index_u32};

/// Checks `block` and the lengths; returns the number of blocks.
fn check(len: usize, scales: usize, quants: usize, block: usize) -> Result<usize> {
    if block == 0 || block > MAX_INT8_BLOCK as usize {
        return Err(ShaderError::Parameter {
            name: "block",
            value: block.to_string(),
            reason: "must be between 1 and 65536",
        });
    }
    let blocks = len.div_ceil(block);
    check_len("int8 scales", scales, blocks)?;
    check_len("int8 quants", quants, len.div_ceil(4))?;
    Ok(blocks)
}

/// The protocol body (`scales` as little-endian f32, then `len` signed bytes) from the device
/// layout. Refuses a block whose scale is not finite: its input held a NaN or an infinity,
/// which must never leave a node.
pub fn int8_body(scales: &[f32], quants: &[u32], len: usize, block: usize) -> Result<Vec<u8>> {
    let blocks = check(len, scales.len(), quants.len(), block)?;
    let mut body = Vec::with_capacity(blocks * 4 + len);
    for (b, s) in scales.iter().enumerate() {
        if !s.is_finite() {
            return Err(ShaderError::NonFinite { index: b * block });
        }
        body.extend_from_slice(&s.to_le_bytes());
    }
    body.extend(quants.iter().flat_map(|w| w.to_le_bytes()).take(len));
    Ok(body)
}

/// The device layout from a protocol body of `len` values.
pub fn int8_parts(body: &[u8], len: usize, block: usize) -> Result<(Vec<f32>, Vec<u32>)> {
    let blocks = check(len, len.div_ceil(block.max(1)), len.div_ceil(4), block)?;
    check_len("int8 body", body.len(), blocks * 4 + len)?;
    let (s, q) = body.split_at(blocks * 4);
    let scales = s
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let quants = q
        .chunks(4)
        .map(|b| {
            let mut w = [0u8; 4];
            w[..b.len()].copy_from_slice(b);
            u32::from_le_bytes(w)
        })
        .collect();
    Ok((scales, quants))
}

fn spec(block: usize) -> CodecSpec {
    CodecSpec::Int8 {
        block: block as u32,
    }
}

/// The CPU path: canopy-protocol's codec itself.
pub fn quantize_cpu(x: &[f32], scales: &mut [f32], quants: &mut [u32], block: usize) -> Result<()> {
    check(x.len(), scales.len(), quants.len(), block)?;
    let update = Compressor::new(spec(block), x.len())?.compress(x)?;
    let (s, q) = int8_parts(&update.body, x.len(), block)?;
    scales.copy_from_slice(&s);
    quants.copy_from_slice(&q);
    Ok(())
}

/// The CPU path of dequantisation: canopy-protocol's decoder.
pub fn dequantize_cpu(scales: &[f32], quants: &[u32], out: &mut [f32], block: usize) -> Result<()> {
    let body = int8_body(scales, quants, out.len(), block)?;
    let update = CompressedUpdate {
        codec: spec(block),
        len: out.len() as u64,
        body,
    };
    update.decompress_into(out)?;
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    block: u32,
    blocks: u32,
    _pad: u32,
}

/// The wgpu path: block scales, then the bytes, in one submission. A non-finite input shows
/// up as a non-finite scale, which [`int8_body`] refuses.
pub fn quantize_gpu(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    scales: &mut GpuBuffer<f32>,
    quants: &mut GpuBuffer<u32>,
    block: usize,
) -> Result<()> {
    let blocks = check(x.len(), scales.len(), quants.len(), block)?;
    let n = index_u32("int8 input", x.len())?;
    if n == 0 {
        return Ok(());
    }
    let params = Params {
        n,
        block: block as u32,
        blocks: blocks as u32,
        _pad: 0,
    };
    let invs = gpu.scratch("int8 inverse scales", blocks as u64 * 4)?;
    let params = bytemuck::bytes_of(&params);
    gpu.run(&[
        Dispatch {
            kernel: &registry::INT8_SCALES,
            params,
            buffers: &[&x.buffer, &scales.buffer, &invs],
            groups: gpu.grid(blocks as u64, "int8 blocks")?,
        },
        Dispatch {
            kernel: &registry::INT8_QUANTIZE,
            params,
            buffers: &[&x.buffer, &scales.buffer, &invs, &quants.buffer],
            groups: gpu.grid_threads(quants.len() as u64, WORKGROUP, "int8 quantize")?,
        },
    ])
}

/// The wgpu path of dequantisation. Scales must be finite and non-negative, as the protocol's
/// decoder checks (an update from the network goes through that decoder first).
pub fn dequantize_gpu(
    gpu: &Gpu,
    scales: &GpuBuffer<f32>,
    quants: &GpuBuffer<u32>,
    out: &mut GpuBuffer<f32>,
    block: usize,
) -> Result<()> {
    let blocks = check(out.len(), scales.len(), quants.len(), block)?;
    let n = index_u32("int8 output", out.len())?;
    let params = Params {
        n,
        block: block as u32,
        blocks: blocks as u32,
        _pad: 0,
    };
    gpu.run(&[Dispatch {
        kernel: &registry::INT8_DEQUANTIZE,
        params: bytemuck::bytes_of(&params),
        buffers: &[&scales.buffer, &quants.buffer, &out.buffer],
        groups: gpu.grid_threads(u64::from(n), WORKGROUP, "int8 dequantize")?,
    }])
}

/// The int8 codec kernels on every backend: part of [`Backend`](crate::Backend).
pub trait Int8Ops: Buffers {
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
}

impl Int8Ops for Cpu {
    fn int8_quantize(
        &self,
        x: &Vec<f32>,
        scales: &mut Vec<f32>,
        quants: &mut Vec<u32>,
        block: usize,
    ) -> Result<()> {
        quantize_cpu(x, scales, quants, block)
    }

    fn int8_dequantize(
        &self,
        scales: &Vec<f32>,
        quants: &Vec<u32>,
        out: &mut Vec<f32>,
        block: usize,
    ) -> Result<()> {
        dequantize_cpu(scales, quants, out, block)
    }
}

impl Int8Ops for Gpu {
    fn int8_quantize(
        &self,
        x: &GpuBuffer<f32>,
        scales: &mut GpuBuffer<f32>,
        quants: &mut GpuBuffer<u32>,
        block: usize,
    ) -> Result<()> {
        quantize_gpu(self, x, scales, quants, block)
    }

    fn int8_dequantize(
        &self,
        scales: &GpuBuffer<f32>,
        quants: &GpuBuffer<u32>,
        out: &mut GpuBuffer<f32>,
        block: usize,
    ) -> Result<()> {
        dequantize_gpu(self, scales, quants, out, block)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::prelude::*;
    use crate::testing::{rng, uniform};

    /// Finite values with the given exponent field range, random sign and mantissa.
    fn from_bits(r: &mut impl Rng, n: usize, exp_lo: u32, exp_hi: u32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let e = r.random_range(exp_lo..=exp_hi.min(254));
                let bits =
                    (r.random::<u32>() & 0x8000_0000) | (e << 23) | (r.random::<u32>() & 0x7f_ffff);
                f32::from_bits(bits)
            })
            .collect()
    }

    /// Inputs that reach every branch of the codec: ordinary values, ties, zeros, signed
    /// zeros, subnormals, blocks whose 127/absmax overflows, and values near f32::MAX.
    fn cases() -> Vec<(&'static str, Vec<f32>, usize)> {
        let mut r = rng(1);
        let mut cases = vec![
            ("uniform, block 128", uniform(&mut r, 1000, 1.0), 128),
            (
                "uniform, odd length and block",
                uniform(&mut r, 1001, 3e-3),
                7,
            ),
            ("block 1", uniform(&mut r, 33, 5.0), 1),
            ("one large block", uniform(&mut r, 70_000, 1.0), 65_536),
        ];
        // Ties: with absmax 127, inv = 1 and x · inv = x exactly, so k + 0.5 rounds to even.
        let mut ties: Vec<f32> = (-127..127).map(|k| k as f32 + 0.5).collect();
        ties.push(127.0);
        cases.push(("ties", ties, 256));
        cases.push(("zeros and signed zeros", vec![0.0, -0.0, 0.0, -0.0, 0.0], 2));
        // Subnormals only, then tiny normals mixed with subnormals (127/absmax overflows).
        cases.push(("subnormals", from_bits(&mut r, 500, 0, 0), 16));
        cases.push(("tiny normals", from_bits(&mut r, 500, 0, 6), 16));
        cases.push(("huge", from_bits(&mut r, 500, 240, 254), 16));
        // Every exponent, with blocks spanning a few binades each.
        let mut mixed = Vec::new();
        for _ in 0..300 {
            let lo = r.random_range(0..250);
            mixed.extend(from_bits(&mut r, 13, lo, lo + 8));
        }
        cases.push(("mixed binades", mixed, 13));
        cases.push(("random finite bits", from_bits(&mut r, 5000, 0, 254), 32));
        cases
    }

    fn int8_matches_protocol_codec_bit_for_bit<B: Backend>(backend: &B) {
        for (name, x, block) in cases() {
            let expected = Compressor::new(spec(block), x.len())
                .unwrap()
                .compress(&x)
                .unwrap();
            let xb = backend.upload(&x, "x").unwrap();
            let mut sb = backend.alloc(x.len().div_ceil(block), "scales").unwrap();
            let mut qb = backend.alloc(x.len().div_ceil(4), "quants").unwrap();
            backend.int8_quantize(&xb, &mut sb, &mut qb, block).unwrap();
            let scales = backend.read(&sb).unwrap();
            let quants = backend.read(&qb).unwrap();
            let body = int8_body(&scales, &quants, x.len(), block).unwrap();
            if let Some(i) = body.iter().zip(&expected.body).position(|(a, b)| a != b) {
                let blocks = x.len().div_ceil(block);
                let at = if i < blocks * 4 {
                    format!("scale of block {}", i / 4)
                } else {
                    let v = i - blocks * 4;
                    format!("value {v} ({:e}, bits {:#010x})", x[v], x[v].to_bits())
                };
                panic!(
                    "{name}: body differs at byte {i}, {at}: got {:#04x}, expected {:#04x}",
                    body[i], expected.body[i]
                );
            }
            assert_eq!(body.len(), expected.body.len(), "{name}");

            let decoded = expected.decompress(x.len()).unwrap();
            let mut ob = backend.alloc(x.len(), "out").unwrap();
            backend.int8_dequantize(&sb, &qb, &mut ob, block).unwrap();
            let out = backend.read(&ob).unwrap();
            for (i, (a, b)) in out.iter().zip(&decoded).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{name}: dequantised value {i} differs: {a:e} vs {b:e}"
                );
            }
        }
    }

    fn int8_refuses_non_finite_input<B: Backend>(backend: &B) {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = uniform(&mut rng(2), 300, 1.0);
            x[200] = bad;
            let xb = backend.upload(&x, "x").unwrap();
            let mut sb = backend.alloc(3, "scales").unwrap();
            let mut qb = backend.alloc(75, "quants").unwrap();
            let result = backend
                .int8_quantize(&xb, &mut sb, &mut qb, 128)
                .and_then(|()| int8_body(&backend.read(&sb)?, &backend.read(&qb)?, x.len(), 128));
            assert!(result.is_err(), "{bad} was accepted");
        }
    }

    crate::testing::backend_tests!(
        int8_matches_protocol_codec_bit_for_bit,
        int8_refuses_non_finite_input
    );

    #[test]
    fn body_and_parts_round_trip() {
        let x = uniform(&mut rng(3), 301, 1.0);
        let body = Compressor::new(spec(10), 301)
            .unwrap()
            .compress(&x)
            .unwrap()
            .body;
        let (s, q) = int8_parts(&body, 301, 10).unwrap();
        assert_eq!(int8_body(&s, &q, 301, 10).unwrap(), body);
        assert!(int8_parts(&body[1..], 301, 10).is_err());
        assert!(int8_body(&s, &q, 301, 0).is_err());
    }
}
