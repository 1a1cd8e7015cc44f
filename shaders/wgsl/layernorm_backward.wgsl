// LayerNorm backward, from the mean and rstd the forward pass saved.
//
// `input`:  dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), g = dy · gamma, x̂ = (x − mean) · rstd;
//           one 256-thread workgroup per row.
// `params`: dgamma[c] = Σ_r dy · x̂, dbeta[c] = Σ_r dy; one thread per column, rows summed in
//           order so the result does not depend on scheduling.
// Both over a (x, y) grid of workgroups.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> mean_in: array<f32>;
@group(0) @binding(4) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbeta: array<f32>;

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
fn input(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let mean = mean_in[row];
    let rstd = rstd_in[row];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var c = li; c < p.cols; c += 256u) {
        let xhat = (x[base + c] - mean) * rstd;
        let g = dy[base + c] * gamma[c];
        s1 += g;
        s2 += g * xhat;
    }
    let n = f32(p.cols);
    let mean_g = block_sum(li, s1) / n;
    let mean_gx = block_sum(li, s2) / n;
    for (var c = li; c < p.cols; c += 256u) {
        let xhat = (x[base + c] - mean) * rstd;
        let g = dy[base + c] * gamma[c];
        dx[base + c] = rstd * (g - mean_g - xhat * mean_gx);
    }
}

@compute @workgroup_size(256, 1, 1)
fn params(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let col = (wg.y * nwg.x + wg.x) * 256u + li;
    if (col >= p.cols) {
        return;
    }
    var sg = 0.0;
    var sb = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let i = r * p.cols + col;
        let xhat = (x[i] - mean_in[r]) * rstd_in[r];
        sg += dy[i] * xhat;
        sb += dy[i];
    }
    dgamma[col] = sg;
    dbeta[col] = sb;
}
