// Sum of squares (for the global L2 norm), as a two-stage reduction with a fixed shape, so the
// result is the same on every run.
//
// `partial`: workgroup g sums x² over elements [g·4096, (g+1)·4096) (16 per thread, then a
//            tree) into partials[offset + g]. One dispatch per tensor.
// `finish`:  one workgroup sums partials[0..count] into out[0].

struct Params {
    n: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
}

const CHUNK: u32 = 4096u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;

fn tree(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

@compute @workgroup_size(256, 1, 1)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wg.y * nwg.x + wg.x;
    let base = group * CHUNK;
    if (base >= p.n) {
        return;
    }
    var s = 0.0;
    for (var j = 0u; j < CHUNK / 256u; j++) {
        let i = base + j * 256u + li;
        if (i < p.n) {
            let v = x[i];
            s += v * v;
        }
    }
    let total = tree(li, s);
    if (li == 0u) {
        partials[p.offset + group] = total;
    }
}

@compute @workgroup_size(256, 1, 1)
fn finish(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < p.n; i += 256u) {
        s += partials[i];
    }
    let total = tree(li, s);
    if (li == 0u) {
        out[0] = total;
    }
}
