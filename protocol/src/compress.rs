//! Compression of pseudo-gradients for the trip from a volunteer to the coordinator.
//!
//! | codec | bytes/value | error bound per element |
//! | --- | --- | --- |
//! | [`CodecSpec::F32`] | 4 | exact |
//! | [`CodecSpec::F16`] | 2 | `max(|x|·2⁻¹¹, 2⁻²⁵)` (round to nearest); inputs beyond ±65504 are refused |
//! | [`CodecSpec::Int8`] | 1 + 4/block | `absmax(block)/254`, absmax taken over the value's block |
//! | [`CodecSpec::TopK`] | 8·k/n | sent values exact; every value not sent is at most the smallest sent magnitude, and is carried to the next round by error feedback |
//! | [`CodecSpec::Quant`] | bits/8 + 4/block | `absmax(block)/(2·(2^(bits-1) - 1))` (ternary at 2 bits: `absmax/2`); the rounding is carried to the next round by error feedback |
//! | [`CodecSpec::TopKQuant`] | about (1 + bits/8)·k/n | as top-k, but each sent magnitude is rounded to one of `2^(bits-1)` levels spread over its block's span `[lo, hi]`: error at most `(hi - lo) / (2·(2^(bits-1) - 1))`, also carried by error feedback |
//!
//! Non-finite inputs are refused by every codec: a NaN must never leave a node. Decompression
//! checks the body against the codec and the length the receiver expects before allocating.

use serde::{Deserialize, Serialize};

mod bits;
mod lowbit;
mod sparse;

pub use sparse::QUANT_BLOCK;

use crate::codec::{self, MAX_OBJECT_LEN};
use crate::error::{CodecError, CompressError};

/// Default block size for [`CodecSpec::Int8`].
pub const DEFAULT_INT8_BLOCK: u32 = 128;
/// Largest int8 block.
pub const MAX_INT8_BLOCK: u32 = 1 << 16;
/// Largest magnitude [`CodecSpec::F16`] represents.
pub const F16_MAX: f32 = 65504.0;

/// Which codec compresses an update, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecSpec {
    /// Raw little-endian f32.
    F32,
    /// IEEE half precision.
    F16,
    /// Blockwise int8: each block of `block` values shares one f32 scale, `absmax / 127`.
    Int8 {
        /// Values per block (1..=65536).
        block: u32,
    },
    /// The `k` largest magnitudes with their indices, `k = ceil(n · density_ppm / 10⁶)`;
    /// what is not sent is kept by the sender's [`Compressor`] and added to the next update.
    TopK {
        /// Fraction of values sent, in parts per million (1..=1,000,000).
        density_ppm: u32,
    },
    /// Top-k as [`CodecSpec::TopK`], with the indices as varint gaps and each kept value in
    /// `bits` bits (a sign and a magnitude level within its block's span); the rounding is
    /// kept by the sender's [`Compressor`] with the values not sent.
    TopKQuant {
        /// Fraction of values sent, in parts per million (1..=1,000,000).
        density_ppm: u32,
        /// Bits per kept value (2..=8).
        bits: u8,
    },
    /// Every value in `bits` bits: each block of `block` values shares its largest magnitude
    /// `m` as scale, and each value is rounded to the nearest of `(j − h)·m/h`, `h =
    /// 2^(bits-1) − 1`; the rounding is kept by the sender's [`Compressor`] and added to the
    /// next update.
    Quant {
        /// Values per block (1..=65536).
        block: u32,
        /// Bits per value (2..=8).
        bits: u8,
    },
}

impl Default for CodecSpec {
    fn default() -> Self {
        CodecSpec::Int8 {
            block: DEFAULT_INT8_BLOCK,
        }
    }
}

impl CodecSpec {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), CompressError> {
        match *self {
            CodecSpec::Int8 { block } | CodecSpec::Quant { block, .. }
                if block == 0 || block > MAX_INT8_BLOCK =>
            {
                Err(CompressError::Parameter {
                    name: "block",
                    value: u64::from(block),
                    reason: "must be between 1 and 65536",
                })
            }
            CodecSpec::TopK { density_ppm } | CodecSpec::TopKQuant { density_ppm, .. }
                if density_ppm == 0 || density_ppm > 1_000_000 =>
            {
                Err(CompressError::Parameter {
                    name: "density_ppm",
                    value: u64::from(density_ppm),
                    reason: "must be between 1 and 1000000",
                })
            }
            CodecSpec::TopKQuant { bits, .. } | CodecSpec::Quant { bits, .. }
                if !(2..=8).contains(&bits) =>
            {
                Err(CompressError::Parameter {
                    name: "bits",
                    value: u64::from(bits),
                    reason: "must be between 2 and 8",
                })
            }
            _ => Ok(()),
        }
    }

    /// How many values top-k sends out of `len`.
    fn top_k(density_ppm: u32, len: usize) -> usize {
        let k = (len as u128 * u128::from(density_ppm)).div_ceil(1_000_000) as usize;
        k.clamp(usize::from(len > 0), len)
    }

    /// The body size in bytes for `len` values (for top-k, the largest it can be).
    pub fn body_len(&self, len: usize) -> usize {
        match *self {
            CodecSpec::F32 => len * 4,
            CodecSpec::F16 => len * 2,
            CodecSpec::Int8 { block } => len.div_ceil(block.max(1) as usize) * 4 + len,
            CodecSpec::Quant { block, bits } => {
                len.div_ceil(block.max(1) as usize) * 4 + (len * usize::from(bits)).div_ceil(8)
            }
            CodecSpec::TopK { density_ppm } => 8 + Self::top_k(density_ppm, len) * 8,
            CodecSpec::TopKQuant { density_ppm, bits } => {
                let k = Self::top_k(density_ppm, len);
                8 + k * 5 + k.div_ceil(QUANT_BLOCK) * 8 + (k * usize::from(bits)).div_ceil(8)
            }
        }
    }
}

/// A compressed update as it travels: the codec, the number of values, and the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressedUpdate {
    /// The codec that made the body.
    pub codec: CodecSpec,
    /// Number of f32 values encoded.
    pub len: u64,
    /// The codec's bytes (layouts in each codec's function).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Compresses updates, keeping the error-feedback residual that top-k needs between rounds.
#[derive(Debug, Clone)]
pub struct Compressor {
    spec: CodecSpec,
    residual: Vec<f32>,
}

impl Compressor {
    /// A compressor for updates of `len` values.
    pub fn new(spec: CodecSpec, len: usize) -> Result<Self, CompressError> {
        spec.validate()?;
        let residual = match spec {
            CodecSpec::TopK { .. } | CodecSpec::TopKQuant { .. } | CodecSpec::Quant { .. } => {
                vec![0.0; len]
            }
            _ => Vec::new(),
        };
        Ok(Self { spec, residual })
    }

    /// A compressor for updates of `len` values that goes on from an earlier one's
    /// [`residual`](Self::residual) (a checkpoint): ignored by codecs without error feedback,
    /// zeros when empty, refused when of another length or not finite.
    pub fn with_residual(
        spec: CodecSpec,
        len: usize,
        residual: Vec<f32>,
    ) -> Result<Self, CompressError> {
        let mut compressor = Self::new(spec, len)?;
        if compressor.residual.is_empty() || residual.is_empty() {
            return Ok(compressor);
        }
        compressor.check_residual(residual.len())?;
        if let Some(index) = residual.iter().position(|v| !v.is_finite()) {
            return Err(CompressError::NonFinite { index });
        }
        compressor.residual = residual;
        Ok(compressor)
    }

    /// What the codec has held back, taken out of the compressor (for a checkpoint).
    pub fn into_residual(self) -> Vec<f32> {
        self.residual
    }

    /// The codec in use.
    pub fn spec(&self) -> CodecSpec {
        self.spec
    }

    /// What the codec has held back so far: error feedback of top-k and the low-bit codecs
    /// (empty for the others).
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// Compresses `values`. On error nothing changes, the residual included.
    pub fn compress(&mut self, values: &[f32]) -> Result<CompressedUpdate, CompressError> {
        let mut out = CompressedUpdate {
            codec: self.spec,
            len: 0,
            body: Vec::new(),
        };
        self.compress_into(values, &mut out)?;
        Ok(out)
    }

    /// Compresses `values` into `out`, reusing its buffer (no allocation once it is large
    /// enough). On error `out` is left empty and the residual unchanged.
    pub fn compress_into(
        &mut self,
        values: &[f32],
        out: &mut CompressedUpdate,
    ) -> Result<(), CompressError> {
        out.codec = self.spec;
        out.len = 0;
        out.body.clear();
        check_finite(values)?;
        let body = &mut out.body;
        match self.spec {
            CodecSpec::F32 => encode_f32(values, body),
            CodecSpec::F16 => encode_f16(values, body)?,
            CodecSpec::Int8 { block } => encode_int8(values, block as usize, body),
            CodecSpec::Quant { block, bits } => {
                self.check_residual(values.len())?;
                lowbit::encode(values, &mut self.residual, block as usize, bits, body)
            }
            CodecSpec::TopK { density_ppm } | CodecSpec::TopKQuant { density_ppm, .. } => {
                self.check_residual(values.len())?;
                if u32::try_from(values.len()).is_err() {
                    return Err(CompressError::TooLarge {
                        len: values.len() as u64,
                        max: u64::from(u32::MAX),
                    });
                }
                let k = CodecSpec::top_k(density_ppm, values.len());
                let indices = sparse::select(values, &mut self.residual, k);
                match self.spec {
                    CodecSpec::TopKQuant { bits, .. } => {
                        sparse::encode_quant(&indices, &mut self.residual, bits, body)
                    }
                    _ => sparse::encode_exact(&indices, &mut self.residual, body),
                }
            }
        }
        out.len = values.len() as u64;
        Ok(())
    }
}

impl Compressor {
    /// Refuses values of another length than the error-feedback residual.
    fn check_residual(&self, len: usize) -> Result<(), CompressError> {
        if self.residual.len() != len {
            return Err(CompressError::LengthMismatch {
                len,
                expected: self.residual.len(),
            });
        }
        Ok(())
    }
}

impl CompressedUpdate {
    /// Encodes the update as one object (it then travels as chunks under a signed manifest).
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes an object made by [`CompressedUpdate::to_frame`]; call
    /// [`CompressedUpdate::decompress`] next, which checks the body.
    pub fn from_frame(frame: &[u8]) -> Result<Self, CodecError> {
        codec::decode::<Self, MAX_OBJECT_LEN>(frame)
    }

    /// Decompresses into a new vector, refusing updates whose length is not `expected_len`
    /// (the receiver knows the model's size) before allocating.
    pub fn decompress(&self, expected_len: usize) -> Result<Vec<f32>, CompressError> {
        if self.len != expected_len as u64 {
            return Err(CompressError::LengthMismatch {
                len: expected_len,
                expected: usize::try_from(self.len).unwrap_or(usize::MAX),
            });
        }
        self.check_body()?;
        let mut out = vec![0.0; expected_len];
        self.decode_into(&mut out)?;
        Ok(out)
    }

    /// Decompresses into `out`, which must have exactly `len` elements.
    pub fn decompress_into(&self, out: &mut [f32]) -> Result<(), CompressError> {
        if self.len != out.len() as u64 {
            return Err(CompressError::LengthMismatch {
                len: out.len(),
                expected: usize::try_from(self.len).unwrap_or(usize::MAX),
            });
        }
        self.check_body()?;
        self.decode_into(out)
    }

    fn check_body(&self) -> Result<(), CompressError> {
        self.codec.validate()?;
        let len = self.len as usize;
        let expected = match self.codec {
            CodecSpec::TopK { .. } => {
                let k = read_u64(&self.body, 0).ok_or(CompressError::BodyLength {
                    len: self.body.len(),
                    expected: 8,
                })?;
                if k > self.len {
                    return Err(CompressError::BodyLength {
                        len: self.body.len(),
                        expected: 8 + len * 8,
                    });
                }
                8 + k as usize * 8
            }
            // Varint gaps have no fixed size: the decoder checks the parts add up.
            CodecSpec::TopKQuant { .. } => return Ok(()),
            other => other.body_len(len),
        };
        if self.body.len() != expected {
            return Err(CompressError::BodyLength {
                len: self.body.len(),
                expected,
            });
        }
        Ok(())
    }

    fn decode_into(&self, out: &mut [f32]) -> Result<(), CompressError> {
        match self.codec {
            CodecSpec::F32 => decode_f32(&self.body, out),
            CodecSpec::F16 => decode_f16(&self.body, out),
            CodecSpec::Int8 { block } => decode_int8(&self.body, block as usize, out),
            CodecSpec::Quant { block, bits } => {
                lowbit::decode(&self.body, block as usize, bits, out)
            }
            CodecSpec::TopK { .. } => sparse::decode_exact(&self.body, out),
            CodecSpec::TopKQuant { bits, .. } => sparse::decode_quant(&self.body, bits, out),
        }
    }
}

/// The first non-finite value's index, found with an integer scan that vectorises.
fn check_finite(values: &[f32]) -> Result<(), CompressError> {
    if abs_max_bits(values) >= 0x7f80_0000 {
        let index = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(CompressError::NonFinite { index });
    }
    Ok(())
}

/// The largest `|x|` as raw bits: for non-negative floats, bit order is value order, and any
/// NaN or infinity is at least `0x7f80_0000`.
fn abs_max_bits(values: &[f32]) -> u32 {
    values
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .fold(0, u32::max)
}

fn read_u64(body: &[u8], at: usize) -> Option<u64> {
    let bytes = body.get(at..at + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Layout: `len` little-endian f32.
fn encode_f32(values: &[f32], body: &mut Vec<u8>) {
    body.resize(values.len() * 4, 0);
    for (out, v) in body.chunks_exact_mut(4).zip(values) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

fn decode_f32(body: &[u8], out: &mut [f32]) -> Result<(), CompressError> {
    for (position, (o, b)) in out.iter_mut().zip(body.chunks_exact(4)).enumerate() {
        let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !v.is_finite() {
            return Err(CompressError::NonFiniteBody { position });
        }
        *o = v;
    }
    Ok(())
}

/// Layout: `len` little-endian IEEE half-precision values.
fn encode_f16(values: &[f32], body: &mut Vec<u8>) -> Result<(), CompressError> {
    if f32::from_bits(abs_max_bits(values)) > F16_MAX {
        let index = values.iter().position(|v| v.abs() > F16_MAX).unwrap_or(0);
        return Err(CompressError::OutOfRange {
            index,
            value: values[index],
            max: F16_MAX,
        });
    }
    body.resize(values.len() * 2, 0);
    let mut halves = vec![half::f16::ZERO; values.len().min(4096)];
    for (vals, out) in values.chunks(4096).zip(body.chunks_mut(8192)) {
        let halves = &mut halves[..vals.len()];
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(halves, vals);
        for (o, h) in out.chunks_exact_mut(2).zip(halves.iter()) {
            o.copy_from_slice(&h.to_le_bytes());
        }
    }
    Ok(())
}

fn decode_f16(body: &[u8], out: &mut [f32]) -> Result<(), CompressError> {
    let mut halves = vec![half::f16::ZERO; out.len().min(4096)];
    for (block, (outs, bytes)) in out.chunks_mut(4096).zip(body.chunks(8192)).enumerate() {
        let halves = &mut halves[..outs.len()];
        for (h, b) in halves.iter_mut().zip(bytes.chunks_exact(2)) {
            *h = half::f16::from_le_bytes([b[0], b[1]]);
        }
        if let Some(i) = halves.iter().position(|h| !h.is_finite()) {
            return Err(CompressError::NonFiniteBody {
                position: block * 4096 + i,
            });
        }
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&*halves, outs);
    }
    Ok(())
}

/// Round to nearest (ties to even) for |v| < 2²², without a libm call, so the loop vectorises.
#[inline(always)]
fn round_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + MAGIC) - MAGIC
}

/// Layout: one little-endian f32 scale per block (`absmax / 127`), then `len` signed bytes.
fn encode_int8(values: &[f32], block: usize, body: &mut Vec<u8>) {
    let blocks = values.len().div_ceil(block);
    body.resize(blocks * 4 + values.len(), 0);
    let (scales, quants) = body.split_at_mut(blocks * 4);
    for ((vals, scale_out), q_out) in values
        .chunks(block)
        .zip(scales.chunks_exact_mut(4))
        .zip(quants.chunks_mut(block))
    {
        let absmax = f32::from_bits(abs_max_bits(vals));
        let (scale, inv) = if absmax > 0.0 {
            (absmax / 127.0, 127.0 / absmax)
        } else {
            (0.0, 0.0)
        };
        scale_out.copy_from_slice(&scale.to_le_bytes());
        if inv.is_finite() {
            for (q, v) in q_out.iter_mut().zip(vals) {
                // |v·inv| ≤ 127 (up to rounding), so the clamp only guards that last ulp.
                *q = round_small(v * inv).clamp(-127.0, 127.0) as i8 as u8;
            }
        } else {
            // A block of subnormals: 127/absmax overflows, so divide instead.
            for (q, v) in q_out.iter_mut().zip(vals) {
                *q = round_small(v / scale).clamp(-127.0, 127.0) as i8 as u8;
            }
        }
    }
}

fn decode_int8(body: &[u8], block: usize, out: &mut [f32]) -> Result<(), CompressError> {
    let blocks = out.len().div_ceil(block);
    let (scales, quants) = body.split_at(blocks * 4);
    for (position, ((outs, s), qs)) in out
        .chunks_mut(block)
        .zip(scales.chunks_exact(4))
        .zip(quants.chunks(block))
        .enumerate()
    {
        let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        if !scale.is_finite() || scale < 0.0 {
            return Err(CompressError::NonFiniteBody { position });
        }
        for (o, q) in outs.iter_mut().zip(qs) {
            *o = f32::from(*q as i8) * scale;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Values spread over many magnitudes, as pseudo-gradients are.
    fn update(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len)
            .map(|_| {
                let mag = 10f32.powf(rng.random_range(-6.0..1.0));
                if rng.random_bool(0.5) { mag } else { -mag }
            })
            .collect()
    }

    fn round_trip(spec: CodecSpec, values: &[f32]) -> Vec<f32> {
        let mut c = Compressor::new(spec, values.len()).unwrap();
        c.compress(values)
            .unwrap()
            .decompress(values.len())
            .unwrap()
    }

    #[test]
    fn f32_is_exact() {
        let v = update(1000, 1);
        assert_eq!(round_trip(CodecSpec::F32, &v), v);
    }

    #[test]
    fn f16_within_bound_and_refuses_out_of_range() {
        let v = update(10_000, 2);
        for (x, y) in v.iter().zip(round_trip(CodecSpec::F16, &v)) {
            let bound = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            assert!((x - y).abs() <= bound, "{x} -> {y}, bound {bound}");
        }
        let mut big = v.clone();
        big[17] = 70_000.0;
        let mut c = Compressor::new(CodecSpec::F16, big.len()).unwrap();
        assert!(matches!(
            c.compress(&big),
            Err(CompressError::OutOfRange { index: 17, .. })
        ));
    }

    #[test]
    fn int8_within_bound() {
        for block in [1usize, 7, 64, 128, 4096] {
            let v = update(10_001, block as u64);
            let y = round_trip(
                CodecSpec::Int8 {
                    block: block as u32,
                },
                &v,
            );
            for (b, (xs, ys)) in v.chunks(block).zip(y.chunks(block)).enumerate() {
                let absmax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
                let bound = absmax / 254.0 * (1.0 + 1e-5);
                for (x, y) in xs.iter().zip(ys) {
                    assert!(
                        (x - y).abs() <= bound,
                        "block {b}: {x} -> {y}, bound {bound}"
                    );
                }
            }
        }
        assert_eq!(
            round_trip(CodecSpec::Int8 { block: 4 }, &[0.0; 9]),
            vec![0.0; 9]
        );
        // A block of subnormals still meets the bound.
        let tiny = [1e-40f32, -5e-41, 2e-41, 0.0];
        let y = round_trip(CodecSpec::Int8 { block: 4 }, &tiny);
        for (x, y) in tiny.iter().zip(&y) {
            assert!(
                (x - y).abs() <= 1e-40 / 254.0 * 1.01 + f32::from_bits(1),
                "{x} -> {y}"
            );
        }
    }

    #[test]
    fn int8_body_size() {
        let v = update(1000, 3);
        let c = Compressor::new(CodecSpec::default(), 1000)
            .unwrap()
            .compress(&v)
            .unwrap();
        assert_eq!(c.body.len(), 1000 + 8 * 4);
    }

    #[test]
    fn top_k_sends_largest_and_feeds_back_the_rest() {
        let v = update(10_000, 4);
        let spec = CodecSpec::TopK {
            density_ppm: 10_000,
        };
        let mut c = Compressor::new(spec, v.len()).unwrap();
        let sent = c.compress(&v).unwrap();
        let y = sent.decompress(v.len()).unwrap();
        let nonzero: Vec<f32> = y.iter().copied().filter(|x| *x != 0.0).collect();
        assert_eq!(nonzero.len(), 100);
        let smallest_sent = nonzero.iter().fold(f32::MAX, |m, x| m.min(x.abs()));
        for (i, (x, y)) in v.iter().zip(&y).enumerate() {
            if *y != 0.0 {
                assert_eq!(x, y, "sent values are exact");
                assert_eq!(c.residual()[i], 0.0);
            } else {
                assert!(x.abs() <= smallest_sent);
                assert_eq!(c.residual()[i], *x, "unsent values are kept");
            }
        }
        // Over many rounds, what was sent plus what is held back is exactly what came in.
        let mut total_in = v.clone();
        let mut total_sent = y;
        for round in 0..5 {
            let next = update(10_000, 100 + round);
            for (t, n) in total_in.iter_mut().zip(&next) {
                *t += n;
            }
            let y = c.compress(&next).unwrap().decompress(next.len()).unwrap();
            for (t, s) in total_sent.iter_mut().zip(&y) {
                *t += s;
            }
        }
        for i in 0..v.len() {
            let err = (total_in[i] - total_sent[i] - c.residual()[i]).abs();
            assert!(err <= 1e-5 * total_in[i].abs().max(1.0), "index {i}: {err}");
        }
    }

    /// Over five more rounds of updates (seeded from `seed`), what `c` sent plus what it holds
    /// back is what came in, starting from `first` of which `first_sent` was sent.
    fn feedback_adds_up(c: &mut Compressor, first: &[f32], first_sent: Vec<f32>, seed: u64) {
        let len = first.len();
        let mut total_in = first.to_vec();
        let mut total_sent = first_sent;
        for round in 0..5 {
            let next = update(len, seed + round);
            let y = c.compress(&next).unwrap().decompress(len).unwrap();
            for i in 0..len {
                total_in[i] += next[i];
                total_sent[i] += y[i];
            }
        }
        for i in 0..len {
            let err = (total_in[i] - total_sent[i] - c.residual()[i]).abs();
            assert!(err <= 1e-5 * total_in[i].abs().max(1.0), "index {i}: {err}");
        }
    }

    /// Per block of kept values (in index order), the span of their magnitudes.
    fn kept_spans(v: &[f32], kept: &[usize]) -> Vec<(f32, f32)> {
        kept.chunks(QUANT_BLOCK)
            .map(|b| {
                b.iter().fold((f32::MAX, 0f32), |(lo, hi), &i| {
                    (lo.min(v[i].abs()), hi.max(v[i].abs()))
                })
            })
            .collect()
    }

    #[test]
    fn top_k_quant_within_bound_and_feeds_back_the_rounding() {
        let len = 100_000;
        for bits in [2u8, 3, 4, 8] {
            let v = update(len, 40 + u64::from(bits));
            let spec = CodecSpec::TopKQuant {
                density_ppm: 10_000,
                bits,
            };
            let mut c = Compressor::new(spec, len).unwrap();
            let sent = c.compress(&v).unwrap();
            assert!(sent.body.len() <= spec.body_len(len));
            let y = sent.decompress(len).unwrap();
            let kept: Vec<usize> = (0..len).filter(|&i| y[i] != 0.0).collect();
            assert_eq!(kept.len(), 1000, "{bits} bits");
            let levels = (1u32 << (bits - 1)) as f32;
            let smallest_kept = kept.iter().fold(f32::MAX, |m, &i| m.min(v[i].abs()));
            for (block, (lo, hi)) in kept.chunks(QUANT_BLOCK).zip(kept_spans(&v, &kept)) {
                let bound = (hi - lo) / (2.0 * (levels - 1.0)) * (1.0 + 1e-5) + hi * 1e-6;
                for &i in block {
                    assert_eq!(v[i].signum(), y[i].signum(), "index {i}: the sign is kept");
                    assert!(
                        (v[i] - y[i]).abs() <= bound,
                        "{bits} bits: {} -> {}",
                        v[i],
                        y[i]
                    );
                    assert_eq!(c.residual()[i], v[i] - y[i], "the rounding is kept");
                }
            }
            for i in (0..len).filter(|&i| y[i] == 0.0) {
                assert!(v[i].abs() <= smallest_kept);
                assert_eq!(c.residual()[i], v[i], "unsent values are kept");
            }
            feedback_adds_up(&mut c, &v, y, 200);
        }
    }

    #[test]
    fn top_k_quant_is_several_times_smaller_than_exact_top_k() {
        let v = update(1_000_000, 9);
        let size = |spec| {
            Compressor::new(spec, v.len())
                .unwrap()
                .compress(&v)
                .unwrap()
                .to_frame()
                .unwrap()
                .len()
        };
        let exact = size(CodecSpec::TopK {
            density_ppm: 10_000,
        });
        let four = size(CodecSpec::TopKQuant {
            density_ppm: 10_000,
            bits: 4,
        });
        let two = size(CodecSpec::TopKQuant {
            density_ppm: 10_000,
            bits: 2,
        });
        // 8 bytes a kept value against about 1.1 (a gap byte or two) plus the code.
        assert!(four * 4 < exact, "{four} vs {exact}");
        assert!(two < four, "{two} vs {four}");
        assert!(four < 10_000 * 2, "{four} bytes for 10,000 kept values");
    }

    #[test]
    fn quant_within_bound_and_feeds_back_the_rounding() {
        let len = 10_001;
        for (bits, block) in [(2u8, 128usize), (3, 64), (4, 128), (8, 128), (4, 1)] {
            let v = update(len, 60 + u64::from(bits) + block as u64);
            let spec = CodecSpec::Quant {
                block: block as u32,
                bits,
            };
            let mut c = Compressor::new(spec, len).unwrap();
            let sent = c.compress(&v).unwrap();
            assert_eq!(sent.body.len(), spec.body_len(len));
            let y = sent.decompress(len).unwrap();
            let h = ((1u32 << (bits - 1)) - 1) as f32;
            for (xs, (ys, rs)) in v
                .chunks(block)
                .zip(y.chunks(block).zip(c.residual().chunks(block)))
            {
                let absmax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
                let bound = absmax / (2.0 * h) * (1.0 + 1e-5);
                for ((x, y), r) in xs.iter().zip(ys).zip(rs) {
                    assert!(
                        (x - y).abs() <= bound,
                        "{bits} bits: {x} -> {y}, bound {bound}"
                    );
                    assert_eq!(*r, x - y, "the rounding is kept");
                }
            }
            feedback_adds_up(&mut c, &v, y, 300);
        }
        // A block of zeros stays zero; the ternary grid holds 0 and ±absmax exactly.
        let y = round_trip(
            CodecSpec::Quant { block: 4, bits: 2 },
            &[0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.1],
        );
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0]);
        // 2 bits a value and a scale per block: 16x smaller than f32 at large blocks.
        assert_eq!(
            CodecSpec::Quant {
                block: 128,
                bits: 2
            }
            .body_len(1 << 20),
            (1 << 20) / 4 + (1 << 13) * 4
        );
    }

    #[test]
    fn hostile_quant_bodies_are_refused() {
        let v = update(1000, 11);
        let spec = CodecSpec::Quant {
            block: 100,
            bits: 2,
        };
        let good = Compressor::new(spec, 1000).unwrap().compress(&v).unwrap();
        assert!(good.decompress(1000).is_ok());
        let mut unused_code = good.clone();
        // The first value of the first block holds code 3, which 2 bits never write.
        unused_code.body[40] |= 0b11;
        assert!(matches!(
            unused_code.decompress(1000),
            Err(CompressError::BadCode {
                position: 0,
                code: 3
            })
        ));
        for scale in [f32::NAN, f32::NEG_INFINITY, -1.0] {
            let mut bad = good.clone();
            bad.body[4..8].copy_from_slice(&scale.to_le_bytes());
            assert!(matches!(
                bad.decompress(1000),
                Err(CompressError::NonFiniteBody { position: 100 })
            ));
        }
        let mut short = good.clone();
        short.body.pop();
        assert!(matches!(
            short.decompress(1000),
            Err(CompressError::BodyLength { .. })
        ));
        assert!(Compressor::new(CodecSpec::Quant { block: 0, bits: 4 }, 1).is_err());
        assert!(Compressor::new(CodecSpec::Quant { block: 8, bits: 1 }, 1).is_err());
    }

    #[test]
    fn hostile_low_bit_bodies_are_refused() {
        let v = update(4096, 10);
        let spec = CodecSpec::TopKQuant {
            density_ppm: 100_000,
            bits: 4,
        };
        let good = Compressor::new(spec, 4096).unwrap().compress(&v).unwrap();
        assert!(good.decompress(4096).is_ok());
        let mut k_lie = good.clone();
        k_lie.body[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            k_lie.decompress(4096),
            Err(CompressError::BodyLength { .. })
        ));
        let mut far = good.clone();
        // A first gap of 2^28 points past the end.
        far.body.splice(8..9, [0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(far.decompress(4096).is_err());
        let mut overlong = good.clone();
        overlong.body.splice(8..9, [0xff; 6]);
        assert!(overlong.decompress(4096).is_err());
        for span in [f32::NAN, f32::INFINITY, -1.0] {
            let mut bad = good.clone();
            let k = 410;
            let mut at = 8;
            for _ in 0..k {
                while bad.body[at] & 0x80 != 0 {
                    at += 1;
                }
                at += 1;
            }
            bad.body[at..at + 4].copy_from_slice(&span.to_le_bytes());
            assert!(
                matches!(
                    bad.decompress(4096),
                    Err(CompressError::NonFiniteBody { position: 0 })
                ),
                "span {span}"
            );
        }
        let mut short = good.clone();
        short.body.pop();
        assert!(matches!(
            short.decompress(4096),
            Err(CompressError::BodyLength { .. })
        ));
        let mut long = good.clone();
        long.body.push(0);
        assert!(matches!(
            long.decompress(4096),
            Err(CompressError::BodyLength { .. })
        ));
        assert!(
            Compressor::new(
                CodecSpec::TopKQuant {
                    density_ppm: 1,
                    bits: 1
                },
                1
            )
            .is_err()
        );
        assert!(
            Compressor::new(
                CodecSpec::TopKQuant {
                    density_ppm: 1,
                    bits: 9
                },
                1
            )
            .is_err()
        );
    }

    #[test]
    fn refuses_non_finite_and_bad_parameters() {
        for spec in [
            CodecSpec::F32,
            CodecSpec::F16,
            CodecSpec::default(),
            CodecSpec::TopK { density_ppm: 5000 },
        ] {
            let mut v = update(300, 5);
            v[42] = f32::NAN;
            let mut c = Compressor::new(spec, v.len()).unwrap();
            assert_eq!(c.compress(&v), Err(CompressError::NonFinite { index: 42 }));
            v[42] = f32::NEG_INFINITY;
            assert_eq!(c.compress(&v), Err(CompressError::NonFinite { index: 42 }));
            if let CodecSpec::TopK { .. } = spec {
                assert!(
                    c.residual().iter().all(|r| *r == 0.0),
                    "state unchanged on error"
                );
            }
        }
        assert!(Compressor::new(CodecSpec::Int8 { block: 0 }, 1).is_err());
        assert!(Compressor::new(CodecSpec::TopK { density_ppm: 0 }, 1).is_err());
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let v = update(256, 6);
        let good = Compressor::new(
            CodecSpec::TopK {
                density_ppm: 100_000,
            },
            256,
        )
        .unwrap()
        .compress(&v)
        .unwrap();
        let mut claims_huge = good.clone();
        claims_huge.len = u64::MAX;
        assert!(claims_huge.decompress(256).is_err());
        let mut unsorted = good.clone();
        unsorted.body[8..12].copy_from_slice(&300u32.to_le_bytes());
        assert!(matches!(
            unsorted.decompress(256),
            Err(CompressError::SparseIndex {
                position: 0,
                index: 300
            })
        ));
        let mut k_lie = good.clone();
        k_lie.body[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(k_lie.decompress(256).is_err());
        let mut nan_scale = Compressor::new(CodecSpec::default(), 256)
            .unwrap()
            .compress(&v)
            .unwrap();
        nan_scale.body[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            nan_scale.decompress(256),
            Err(CompressError::NonFiniteBody { position: 0 })
        ));
        let mut short = good;
        short.body.pop();
        assert!(matches!(
            short.decompress(256),
            Err(CompressError::BodyLength { .. })
        ));
    }

    #[test]
    fn compress_into_reuses_and_clears_on_error() {
        let v = update(1000, 8);
        let mut c = Compressor::new(CodecSpec::default(), v.len()).unwrap();
        let mut out = c.compress(&v).unwrap();
        let capacity = out.body.capacity();
        c.compress_into(&v, &mut out).unwrap();
        assert_eq!(out.body.capacity(), capacity);
        assert_eq!(out, c.compress(&v).unwrap());
        let mut bad = v.clone();
        bad[3] = f32::INFINITY;
        assert!(c.compress_into(&bad, &mut out).is_err());
        assert_eq!((out.len, out.body.len()), (0, 0));
        assert!(out.decompress(0).unwrap().is_empty());
    }

    fn arb_spec() -> impl Strategy<Value = CodecSpec> {
        prop_oneof![
            Just(CodecSpec::F32),
            Just(CodecSpec::F16),
            (1u32..300).prop_map(|block| CodecSpec::Int8 { block }),
            (1u32..=1_000_000).prop_map(|density_ppm| CodecSpec::TopK { density_ppm }),
            (1u32..300, 2u8..=8).prop_map(|(block, bits)| CodecSpec::Quant { block, bits }),
            (1u32..=1_000_000, 2u8..=8)
                .prop_map(|(density_ppm, bits)| CodecSpec::TopKQuant { density_ppm, bits }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_body_decodes_or_errs(spec in arb_spec(), len in 0u64..2000, body in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let update = CompressedUpdate { codec: spec, len, body };
            let _ = update.decompress(len as usize);
        }

        #[test]
        fn round_trip_len_preserved(spec in arb_spec(), len in 0usize..3000, seed: u64) {
            let v = update(len, seed);
            let y = round_trip(spec, &v);
            prop_assert_eq!(y.len(), len);
        }
    }
}
