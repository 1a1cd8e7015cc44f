// Causal self-attention with ALiBi (BLOOM), forward and backward.
//
// qkv is BLOOM's fused layout [batch, seq, heads, 3, head_dim] (q, k, v per head); out and dout
// are [batch, seq, heads, head_dim]; lse and delta are [batch, heads, seq].
// Scores: s_ij = scale · q_i · k_j + slope_h · (j − i) for j ≤ i. (BLOOM adds slope_h · j; the
// two differ by a constant per row, which softmax ignores.)
//
// `forward`:      one thread per (b, h, i); online softmax over j ≤ i; saves lse_i.
// `backward_dq`:  one thread per (b, h, i): delta_i = dout_i · out_i and dq_i; writes the q slot.
// `backward_dkv`: one thread per (b, h, j): dk_j and dv_j over i ≥ j; writes the k and v slots.
// Run backward_dq before backward_dkv (it needs delta). Each thread owns its outputs, so the
// results do not depend on scheduling. head_dim ≤ 128. 64-thread workgroups on a (x, y) grid.

struct Params {
    batch: u32,
    seq: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const MAX_D: u32 = 128u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> slopes: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_out: array<f32>;
@group(0) @binding(5) var<storage, read> out_in: array<f32>;
@group(0) @binding(6) var<storage, read> lse_in: array<f32>;
@group(0) @binding(7) var<storage, read> dout: array<f32>;
@group(0) @binding(8) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(9) var<storage, read_write> delta_out: array<f32>;
@group(0) @binding(10) var<storage, read> delta_in: array<f32>;

// Offset of q (which = 0), k (1) or v (2) of token s, head h.
fn qkv_at(b: u32, s: u32, h: u32, which: u32) -> u32 {
    return (((b * p.seq + s) * p.heads + h) * 3u + which) * p.head_dim;
}

fn row_at(b: u32, s: u32, h: u32) -> u32 {
    return ((b * p.seq + s) * p.heads + h) * p.head_dim;
}

fn alibi(h: u32, i: u32, j: u32) -> f32 {
    return slopes[h] * f32(i32(j) - i32(i));
}

@compute @workgroup_size(64, 1, 1)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let id = (wg.y * nwg.x + wg.x) * 64u + li;
    if (id >= p.batch * p.heads * p.seq) {
        return;
    }
    let i = id % p.seq;
    let h = (id / p.seq) % p.heads;
    let b = id / (p.seq * p.heads);
    let dim = p.head_dim;
    var q: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    let qo = qkv_at(b, i, h, 0u);
    for (var d = 0u; d < dim; d++) {
        q[d] = qkv[qo + d];
        acc[d] = 0.0;
    }
    var m = -3.4028235e38;
    var l = 0.0;
    for (var j = 0u; j <= i; j++) {
        let ko = qkv_at(b, j, h, 1u);
        var dot = 0.0;
        for (var d = 0u; d < dim; d++) {
            dot += q[d] * qkv[ko + d];
        }
        let s = p.scale * dot + alibi(h, i, j);
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let pj = exp(s - m_new);
        l = l * corr + pj;
        let vo = ko + dim;
        for (var d = 0u; d < dim; d++) {
            acc[d] = acc[d] * corr + pj * qkv[vo + d];
        }
        m = m_new;
    }
    let oo = row_at(b, i, h);
    for (var d = 0u; d < dim; d++) {
        out[oo + d] = acc[d] / l;
    }
    lse_out[(b * p.heads + h) * p.seq + i] = m + log(l);
}

@compute @workgroup_size(64, 1, 1)
fn backward_dq(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let id = (wg.y * nwg.x + wg.x) * 64u + li;
    if (id >= p.batch * p.heads * p.seq) {
        return;
    }
    let i = id % p.seq;
    let h = (id / p.seq) % p.heads;
    let b = id / (p.seq * p.heads);
    let dim = p.head_dim;
    let row = (b * p.heads + h) * p.seq + i;
    let oo = row_at(b, i, h);
    var q: array<f32, MAX_D>;
    var dov: array<f32, MAX_D>;
    var dq: array<f32, MAX_D>;
    let qo = qkv_at(b, i, h, 0u);
    var delta = 0.0;
    for (var d = 0u; d < dim; d++) {
        q[d] = qkv[qo + d];
        dov[d] = dout[oo + d];
        dq[d] = 0.0;
        delta += dov[d] * out_in[oo + d];
    }
    delta_out[row] = delta;
    let lse = lse_in[row];
    for (var j = 0u; j <= i; j++) {
        let ko = qkv_at(b, j, h, 1u);
        let vo = ko + dim;
        var dot = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < dim; d++) {
            dot += q[d] * qkv[ko + d];
            dp += dov[d] * qkv[vo + d];
        }
        let pij = exp(p.scale * dot + alibi(h, i, j) - lse);
        let ds = pij * (dp - delta);
        for (var d = 0u; d < dim; d++) {
            dq[d] += ds * qkv[ko + d];
        }
    }
    for (var d = 0u; d < dim; d++) {
        dqkv[qo + d] = p.scale * dq[d];
    }
}

@compute @workgroup_size(64, 1, 1)
fn backward_dkv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let id = (wg.y * nwg.x + wg.x) * 64u + li;
    if (id >= p.batch * p.heads * p.seq) {
        return;
    }
    let j = id % p.seq;
    let h = (id / p.seq) % p.heads;
    let b = id / (p.seq * p.heads);
    let dim = p.head_dim;
    var k: array<f32, MAX_D>;
    var v: array<f32, MAX_D>;
    var dk: array<f32, MAX_D>;
    var dv: array<f32, MAX_D>;
    let ko = qkv_at(b, j, h, 1u);
    let vo = ko + dim;
    for (var d = 0u; d < dim; d++) {
        k[d] = qkv[ko + d];
        v[d] = qkv[vo + d];
        dk[d] = 0.0;
        dv[d] = 0.0;
    }
    for (var i = j; i < p.seq; i++) {
        let row = (b * p.heads + h) * p.seq + i;
        let qo = qkv_at(b, i, h, 0u);
        let oo = row_at(b, i, h);
        var dot = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < dim; d++) {
            dot += qkv[qo + d] * k[d];
            dp += dout[oo + d] * v[d];
        }
        let pij = exp(p.scale * dot + alibi(h, i, j) - lse_in[row]);
        let ds = pij * (dp - delta_in[row]);
        for (var d = 0u; d < dim; d++) {
            dv[d] += pij * dout[oo + d];
            dk[d] += ds * qkv[qo + d];
        }
    }
    for (var d = 0u; d < dim; d++) {
        dqkv[ko + d] = p.scale * dk[d];
        dqkv[vo + d] = dv[d];
    }
}
