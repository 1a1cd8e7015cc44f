// Blockwise int8 quantisation, bit-identical to canopy-protocol's `CodecSpec::Int8` codec.
//
// For each block of `block` values: absmax = max |x| (on the raw bits), scale = absmax / 127,
// inv = 127 / absmax (both 0 when absmax = 0), q = clamp(roundEven(x · inv), −127, 127), or
// q = clamp(roundEven(x / scale)) when inv overflows (a block of tiny values). Dequantised
// values are q · scale.
//
// WGSL only promises correctly rounded + − × (and not even that for subnormals, which a GPU may
// flush to zero), and allows 2.5 ulp for division. So every division, and every product that
// can involve a subnormal, is done here on the bits with integer arithmetic and rounded to
// nearest-even by `pack_rn`; the one hardware product left, x · inv, has normal operands and a
// result that is normal whenever it is ≥ 0.5 (smaller results round to 0 either way).
// Values travel as u32 bit patterns so that no load or store can flush a subnormal.
//
// `scales`:     one 256-thread workgroup per block → scales[b], invs[b] (bits).
// `quantize`:   one thread per 4 values → quants[w] (4 signed bytes, little-endian).
// `dequantize`: one thread per value → out[i] (bits).

struct Params {
    n: u32,
    block: u32,
    blocks: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales_out: array<u32>;
@group(0) @binding(3) var<storage, read_write> invs_out: array<u32>;
@group(0) @binding(4) var<storage, read> scales_in: array<u32>;
@group(0) @binding(5) var<storage, read> invs_in: array<u32>;
@group(0) @binding(6) var<storage, read_write> quants_out: array<u32>;
@group(0) @binding(7) var<storage, read> quants_in: array<u32>;
@group(0) @binding(8) var<storage, read_write> values_out: array<u32>;

const INF_BITS: u32 = 0x7f800000u;
// 127.0 as bits.
const F127_BITS: u32 = 0x42fe0000u;

var<workgroup> red: array<u32, 256>;

// Rounds (m + δ) · 2^e to the nearest f32, ties to even, and returns its bits, where m > 0,
// m < 2^31 and 0 ≤ δ < 1 is nonzero exactly when `sticky` (only meaningful when m has at
// least 25 bits, so that δ lies below the rounding position).
fn pack_rn(m: u32, sticky: bool, e: i32) -> u32 {
    let nbits = 32 - i32(countLeadingZeros(m));
    let biased = e + nbits - 1 + 127;
    if (biased >= 255) {
        return INF_BITS;
    }
    var shift = nbits - 24;
    if (biased < 1) {
        shift += 1 - biased;
    }
    var kept: u32;
    if (shift <= 0) {
        kept = m << u32(-shift);
    } else if (shift >= 32) {
        kept = 0u;
    } else {
        kept = m >> u32(shift);
        let rem = m & ((1u << u32(shift)) - 1u);
        let half = 1u << u32(shift - 1);
        if (rem > half || (rem == half && (sticky || (kept & 1u) == 1u))) {
            kept += 1u;
        }
    }
    if (biased < 1) {
        // Subnormal; a carry into 2^23 is the smallest normal, which these bits already encode.
        return kept;
    }
    let bits = (u32(biased - 1) << 23u) + kept;
    return min(bits, INF_BITS);
}

// Mantissa with the implicit bit and exponent of a finite nonzero |f| given as bits, so that
// |f| = mant · 2^exp with mant in [2^23, 2^24).
fn unpack(bits: u32) -> vec2<i32> {
    let ex = i32((bits >> 23u) & 0xffu);
    let frac = bits & 0x7fffffu;
    if (ex == 0) {
        let s = countLeadingZeros(frac) - 8u;
        return vec2<i32>(i32(frac << s), 1 - i32(s) - 150);
    }
    return vec2<i32>(i32(frac | 0x800000u), ex - 150);
}

// Correctly rounded a / b for finite a ≥ 0 and finite b > 0, given and returned as bits.
fn div_rn(a: u32, b: u32) -> u32 {
    if (a == 0u) {
        return 0u;
    }
    let ua = unpack(a);
    let ub = unpack(b);
    let ma = u32(ua.x);
    let mb = u32(ub.x);
    // Long division: q = floor(ma / mb · 2^25), in [2^24, 2^26) since ma / mb ∈ (1/2, 2).
    var r = ma;
    var q = 0u;
    for (var i = 0u; i < 26u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r = r << 1u;
    }
    return pack_rn(q, r != 0u, ua.y - ub.y - 25);
}

@compute @workgroup_size(256, 1, 1)
fn scales(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let blk = wg.y * nwg.x + wg.x;
    if (blk >= p.blocks) {
        return;
    }
    let start = blk * p.block;
    let end = min(start + p.block, p.n);
    var m = 0u;
    for (var i = start + li; i < end; i += 256u) {
        m = max(m, x[i] & 0x7fffffffu);
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let absmax = red[0];
        if (absmax >= INF_BITS) {
            // Non-finite input: the host refuses the block when it sees this scale.
            scales_out[blk] = absmax;
            invs_out[blk] = 0u;
        } else if (absmax == 0u) {
            scales_out[blk] = 0u;
            invs_out[blk] = 0u;
        } else {
            scales_out[blk] = div_rn(absmax, F127_BITS);
            invs_out[blk] = div_rn(F127_BITS, absmax);
        }
    }
}

// roundEven(v · inv) for finite v and a finite normal (or zero) inv, exactly as the CPU does it.
fn scaled(v: u32, inv: f32) -> f32 {
    if ((v & INF_BITS) != 0u) {
        return bitcast<f32>(v) * inv;
    }
    // Zero or subnormal v: scale it up by 2^24 (exactly, from its bits), multiply, scale back.
    // Both steps are exact or round the same way as the direct product whenever that product
    // is normal; when it is not, it is below 2^-126 and rounds to 0 like the direct one.
    let frac = v & 0x7fffffu;
    var up = f32(frac) * bitcast<f32>(0x01000000u);
    if ((v & 0x80000000u) != 0u) {
        up = -up;
    }
    return (up * inv) * bitcast<f32>(0x33800000u);
}

fn quantize_one(v: u32, scale: u32, inv: u32) -> i32 {
    var r: f32;
    if ((inv & INF_BITS) != INF_BITS) {
        r = round(scaled(v, bitcast<f32>(inv)));
    } else {
        let mag = bitcast<f32>(div_rn(v & 0x7fffffffu, scale));
        r = round(mag);
        if ((v & 0x80000000u) != 0u) {
            r = -r;
        }
    }
    return i32(clamp(r, -127.0, 127.0));
}

@compute @workgroup_size(256, 1, 1)
fn quantize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let w = (wg.y * nwg.x + wg.x) * 256u + li;
    if (w * 4u >= p.n) {
        return;
    }
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let i = w * 4u + j;
        if (i < p.n) {
            let blk = i / p.block;
            let q = quantize_one(x[i], scales_in[blk], invs_in[blk]);
            word |= (u32(q) & 0xffu) << (8u * j);
        }
    }
    quants_out[w] = word;
}

@compute @workgroup_size(256, 1, 1)
fn dequantize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let byte = (quants_in[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    let q = bitcast<i32>(byte << 24u) >> 24u;
    let scale = scales_in[i / p.block];
    var sign = 0u;
    if (q < 0) {
        sign = 0x80000000u;
    }
    let mag = u32(abs(q));
    if (mag == 0u || scale == 0u) {
        values_out[i] = sign;
        return;
    }
    let us = unpack(scale);
    values_out[i] = sign | pack_rn(mag * u32(us.x), false, us.y);
}
