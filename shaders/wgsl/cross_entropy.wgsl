// Softmax cross-entropy over the rows of a [rows, vocab] logit matrix.
//
// `forward`:  lse[r] = log Σ_c exp(logits[r, c]), loss[r] = lse[r] − logits[r, target[r]];
//             one 256-thread workgroup per row.
// `backward`: dlogits[r, c] = scale · (exp(logits[r, c] − lse[r]) − [c = target[r]]);
//             one thread per element.
// A target ≥ vocab (u32::MAX by convention) marks a row to ignore: zero loss, zero gradient.
// Both over a (x, y) grid of workgroups.

struct Params {
    rows: u32,
    vocab: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_out: array<f32>;
@group(0) @binding(5) var<storage, read> lse_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.vocab;
    var m = -3.4028235e38;
    for (var c = li; c < p.vocab; c += 256u) {
        m = max(m, logits[base + c]);
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let row_max = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var c = li; c < p.vocab; c += 256u) {
        sum += exp(logits[base + c] - row_max);
    }
    red[li] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let lse = row_max + log(red[0]);
        lse_out[row] = lse;
        let t = targets[row];
        if (t < p.vocab) {
            loss_out[row] = lse - logits[base + t];
        } else {
            loss_out[row] = 0.0;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.rows * p.vocab) {
        return;
    }
    let row = i / p.vocab;
    let c = i % p.vocab;
    let t = targets[row];
    if (t >= p.vocab) {
        dlogits[i] = 0.0;
        return;
    }
    var g = exp(logits[i] - lse_in[row]);
    if (c == t) {
        g -= 1.0;
    }
    dlogits[i] = p.scale * g;
}
