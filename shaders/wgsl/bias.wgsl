// Bias add and its gradient over a row-major [rows, cols] matrix.
//
// `add`:  x[r, c] += bias[c]       (one thread per element; a = x, b = bias)
// `grad`: dbias[c] = Σ_r dy[r, c]   (one thread per column, rows summed in order; a = dbias,
//                                    b = dy), so the result does not depend on scheduling.
// Dispatch: 256-thread workgroups over a (x, y) grid, linear index (y · nx + x) · 256 + local.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.rows * p.cols) {
        return;
    }
    a[i] = a[i] + b[i % p.cols];
}

@compute @workgroup_size(256, 1, 1)
fn grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let col = (wg.y * nwg.x + wg.x) * 256u + li;
    if (col >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += b[r * p.cols + col];
    }
    a[col] = s;
}
