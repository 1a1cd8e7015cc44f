// LayerNorm over the rows of a [rows, cols] matrix, forward.
//
// y = (x − mean) · rstd · gamma + beta, rstd = 1 / √(var + eps), var the biased variance
// (two passes: mean first, then the squared deviations). Saves mean and rstd per row for the
// backward pass. One 256-thread workgroup per row over a (x, y) grid of rows.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;

var<workgroup> red: array<f32, 256>;

fn block_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

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
    let base = row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = li; c < p.cols; c += 256u) {
        s += x[base + c];
    }
    let mean = block_sum(li, s) / n;
    var sq = 0.0;
    for (var c = li; c < p.cols; c += 256u) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(block_sum(li, sq) / n + p.eps);
    for (var c = li; c < p.cols; c += 256u) {
        y[base + c] = (x[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
    if (li == 0u) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}
