//! The sparse codecs: top-k selection with error feedback, its exact layout
//! ([`CodecSpec::TopK`](super::CodecSpec::TopK)) and its low-bit layout
//! ([`CodecSpec::TopKQuant`](super::CodecSpec::TopKQuant)).

use super::bits::{BitReader, BitWriter};
use crate::error::CompressError;

/// Kept values per scale block of the low-bit layout.
pub const QUANT_BLOCK: usize = 256;

/// Adds `values` into `residual` and returns the `k` indices of the largest magnitudes of the
/// sum, increasing; ties at the threshold are taken in index order.
pub(super) fn select(values: &[f32], residual: &mut [f32], k: usize) -> Vec<u32> {
    for (r, v) in residual.iter_mut().zip(values) {
        *r += v;
    }
    if k == 0 {
        return Vec::new();
    }
    // The k-th largest magnitude is the threshold.
    let mut magnitudes: Vec<f32> = residual.iter().map(|v| v.abs()).collect();
    let (_, threshold, _) = magnitudes.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *threshold;
    drop(magnitudes);
    let above = residual.iter().filter(|v| v.abs() > threshold).count();
    let mut ties_left = k - above;
    let mut indices = Vec::with_capacity(k);
    for (i, v) in residual.iter().enumerate() {
        let m = v.abs();
        if m > threshold || (m == threshold && ties_left > 0) {
            if m == threshold {
                ties_left -= 1;
            }
            indices.push(i as u32);
        }
    }
    indices
}

/// Exact layout: `k` as little-endian u64, then `k` strictly increasing little-endian u32
/// indices, then their `k` f32 values. The sent values leave the residual.
pub(super) fn encode_exact(indices: &[u32], residual: &mut [f32], body: &mut Vec<u8>) {
    body.reserve(8 + indices.len() * 8);
    body.extend((indices.len() as u64).to_le_bytes());
    for i in indices {
        body.extend(i.to_le_bytes());
    }
    for &i in indices {
        let slot = &mut residual[i as usize];
        body.extend(slot.to_le_bytes());
        *slot = 0.0;
    }
}

/// Decodes the exact layout; the body's length was checked against its `k`.
pub(super) fn decode_exact(body: &[u8], out: &mut [f32]) -> Result<(), CompressError> {
    let k = (body.len() - 8) / 8;
    let (indices, values) = body[8..].split_at(k * 4);
    out.fill(0.0);
    let mut next_allowed = 0u64;
    for (position, (ib, vb)) in indices
        .chunks_exact(4)
        .zip(values.chunks_exact(4))
        .enumerate()
    {
        let index = u32::from_le_bytes([ib[0], ib[1], ib[2], ib[3]]);
        if u64::from(index) < next_allowed || index as usize >= out.len() {
            return Err(CompressError::SparseIndex { position, index });
        }
        next_allowed = u64::from(index) + 1;
        let v = f32::from_le_bytes([vb[0], vb[1], vb[2], vb[3]]);
        if !v.is_finite() {
            return Err(CompressError::NonFiniteBody { position });
        }
        out[index as usize] = v;
    }
    Ok(())
}

/// The value of magnitude level `j` of a block whose kept magnitudes span `[lo, hi]`, with
/// `levels` levels: encoder and decoder both call this, so they agree to the bit.
#[inline]
fn level(lo: f32, hi: f32, levels: u32, j: u32) -> f32 {
    let step = (hi - lo) / (levels - 1) as f32;
    (lo + j as f32 * step).min(hi)
}

/// Low-bit layout, for `bits` in 2..=8:
/// - `k` as little-endian u64;
/// - the indices as LEB128 varints of their gaps (the first index, then each index minus the
///   previous one minus 1);
/// - per block of [`QUANT_BLOCK`] kept values, the smallest and largest kept magnitude as two
///   little-endian f32;
/// - one `bits`-bit code per kept value, packed from the low bit: the top bit is the sign,
///   the others one of `2^(bits-1)` magnitude levels spaced evenly over the block's span.
///
/// What the codes do not carry (each kept value's rounding to its level) stays in the
/// residual with the values not sent.
pub(super) fn encode_quant(indices: &[u32], residual: &mut [f32], bits: u8, body: &mut Vec<u8>) {
    let k = indices.len();
    let bits = u32::from(bits);
    let levels = 1u32 << (bits - 1);
    body.extend((k as u64).to_le_bytes());
    let mut previous: Option<u32> = None;
    for &i in indices {
        let gap = match previous {
            None => i,
            Some(p) => i - p - 1,
        };
        previous = Some(i);
        put_varint(body, gap);
    }
    let spans: Vec<(f32, f32)> = indices
        .chunks(QUANT_BLOCK)
        .map(|block| {
            block.iter().fold((f32::MAX, 0f32), |(lo, hi), &i| {
                let m = residual[i as usize].abs();
                (lo.min(m), hi.max(m))
            })
        })
        .collect();
    for (lo, hi) in &spans {
        body.extend(lo.to_le_bytes());
        body.extend(hi.to_le_bytes());
    }
    let mut writer = BitWriter::new(body, k * bits as usize);
    for (block, &(lo, hi)) in indices.chunks(QUANT_BLOCK).zip(&spans) {
        let step = (hi - lo) / (levels - 1) as f32;
        for &i in block {
            let slot = &mut residual[i as usize];
            let m = slot.abs();
            let j = if step > 0.0 {
                (((m - lo) / step).round() as u32).min(levels - 1)
            } else {
                0
            };
            let sign = u32::from(slot.is_sign_negative() && *slot != 0.0);
            writer.put(j | (sign << (bits - 1)), bits);
            let sent = level(lo, hi, levels, j);
            *slot -= if sign == 1 { -sent } else { sent };
        }
    }
}

/// Decodes the low-bit layout, refusing a body whose parts do not add up to its length, an
/// index out of range, and a span that is not finite or not ordered, before writing `out`.
pub(super) fn decode_quant(body: &[u8], bits: u8, out: &mut [f32]) -> Result<(), CompressError> {
    let len = out.len();
    let bad_length = |expected| CompressError::BodyLength {
        len: body.len(),
        expected,
    };
    let k = body
        .first_chunk::<8>()
        .map(|b| u64::from_le_bytes(*b))
        .ok_or(bad_length(8))?;
    // Every kept value costs at least one gap byte, so `k` is bounded by the body's size.
    if k > len as u64 || k > body.len() as u64 {
        return Err(bad_length(8 + len));
    }
    let k = k as usize;
    let bits = u32::from(bits);
    let levels = 1u32 << (bits - 1);
    let mut at = 8;
    let mut indices = Vec::with_capacity(k);
    let mut next_allowed = 0u64;
    for position in 0..k {
        let gap = take_varint(body, &mut at).ok_or(bad_length(at + 1))?;
        let index = next_allowed + u64::from(gap);
        if index >= len as u64 {
            return Err(CompressError::SparseIndex {
                position,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
        }
        indices.push(index as u32);
        next_allowed = index + 1;
    }
    let blocks = k.div_ceil(QUANT_BLOCK);
    let expected = at + blocks * 8 + (k * bits as usize).div_ceil(8);
    if body.len() != expected {
        return Err(bad_length(expected));
    }
    let (spans, codes) = body[at..].split_at(blocks * 8);
    let spans: Vec<(f32, f32)> = spans
        .chunks_exact(8)
        .enumerate()
        .map(|(position, s)| {
            let lo = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let hi = f32::from_le_bytes([s[4], s[5], s[6], s[7]]);
            if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi {
                Ok((lo, hi))
            } else {
                Err(CompressError::NonFiniteBody { position })
            }
        })
        .collect::<Result<_, _>>()?;
    out.fill(0.0);
    let mut reader = BitReader::new(codes);
    for (block, &(lo, hi)) in indices.chunks(QUANT_BLOCK).zip(&spans) {
        for &i in block {
            let code = reader.take(bits);
            let magnitude = level(lo, hi, levels, code & (levels - 1));
            out[i as usize] = if code >> (bits - 1) == 1 {
                -magnitude
            } else {
                magnitude
            };
        }
    }
    Ok(())
}

fn put_varint(body: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        body.push((v as u8) | 0x80);
        v >>= 7;
    }
    body.push(v as u8);
}

/// A LEB128 u32 at `*at`, advancing it; `None` when the body ends first or the value has more
/// than 32 bits.
fn take_varint(body: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u64;
    for shift in (0..35).step_by(7) {
        let b = *body.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(v).ok();
        }
    }
    None
}
