// Embedding gather and its deterministic scatter-add backward.
//
// `gather`:  out[t, d] = table[ids[t], d]; an id ≥ vocab gives a zero row.
//            One thread per output element (src = table, dst = out).
// `scatter`: dtable[v, d] += Σ_{t : ids[t] = v} dy[t, d], one thread per (v, d) adding the
//            tokens in order, so there are no float atomics and the sums are reproducible
//            (src = dy, dst = dtable). Ids ≥ vocab contribute nothing.
// Both over 256-thread workgroups on a (x, y) grid.

struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn gather(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.tokens * p.dim) {
        return;
    }
    let t = i / p.dim;
    let d = i % p.dim;
    let id = ids[t];
    if (id >= p.vocab) {
        dst[i] = 0.0;
    } else {
        dst[i] = src[id * p.dim + d];
    }
}

@compute @workgroup_size(256, 1, 1)
fn scatter(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.vocab * p.dim) {
        return;
    }
    let v = i / p.dim;
    let d = i % p.dim;
    var acc = dst[i];
    for (var t = 0u; t < p.tokens; t++) {
        if (ids[t] == v) {
            acc += src[t * p.dim + d];
        }
    }
    dst[i] = acc;
}
