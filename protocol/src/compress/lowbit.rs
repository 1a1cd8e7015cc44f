//! The dense low-bit codec ([`CodecSpec::Quant`](super::CodecSpec::Quant)): every value in
//! `bits` bits, on a grid of `2^bits − 1` levels symmetric around zero per block.

use super::bits::{BitReader, BitWriter};
use crate::error::CompressError;

/// Levels on each side of zero for `bits` bits: `2^(bits-1) − 1` (1 for 2 bits, the ternary
/// grid; 127 for 8 bits, the int8 grid). The code `2^bits − 1` is never written.
fn half_levels(bits: u8) -> u32 {
    (1u32 << (bits - 1)) - 1
}

/// The value of code `j` in a block of largest magnitude `absmax`: `(j − h) · absmax / h`.
/// Encoder and decoder both call this, so they agree to the bit.
#[inline]
fn level(absmax: f32, h: u32, j: u32) -> f32 {
    (j as f32 - h as f32) * (absmax / h as f32)
}

/// Layout: one little-endian f32 per block of `block` values (its largest magnitude), then
/// one `bits`-bit code per value, packed from the low bit. `residual` (as long as `values`)
/// is added in before rounding, and afterwards holds what the codes did not carry.
pub(super) fn encode(
    values: &[f32],
    residual: &mut [f32],
    block: usize,
    bits: u8,
    body: &mut Vec<u8>,
) {
    let h = half_levels(bits);
    for (r, v) in residual.iter_mut().zip(values) {
        *r += v;
    }
    for chunk in residual.chunks(block) {
        let absmax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        body.extend(absmax.to_le_bytes());
    }
    let mut writer = BitWriter::new(body, residual.len() * usize::from(bits));
    let bits = u32::from(bits);
    for chunk in residual.chunks_mut(block) {
        let absmax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        for r in chunk {
            let j = if absmax > 0.0 {
                ((*r / absmax * h as f32).round() + h as f32).clamp(0.0, (2 * h) as f32) as u32
            } else {
                h
            };
            writer.put(j, bits);
            *r -= level(absmax, h, j);
        }
    }
}

/// Decodes the layout; the body's length was checked. Refuses a scale that is not finite or
/// is negative, and the unused code.
pub(super) fn decode(
    body: &[u8],
    block: usize,
    bits: u8,
    out: &mut [f32],
) -> Result<(), CompressError> {
    let h = half_levels(bits);
    let blocks = out.len().div_ceil(block);
    let (scales, codes) = body.split_at(blocks * 4);
    let mut reader = BitReader::new(codes);
    let mut position = 0;
    for (outs, s) in out.chunks_mut(block).zip(scales.chunks_exact(4)) {
        let absmax = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        if !absmax.is_finite() || absmax < 0.0 {
            return Err(CompressError::NonFiniteBody { position });
        }
        for o in outs {
            let j = reader.take(u32::from(bits));
            if j > 2 * h {
                return Err(CompressError::BadCode { position, code: j });
            }
            *o = level(absmax, h, j);
            position += 1;
        }
    }
    Ok(())
}
