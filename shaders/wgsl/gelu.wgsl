// tanh-approximated GELU (the BLOOM MLP activation) and its derivative, elementwise.
//
// y = 0.5 · x · (1 + tanh(u)),  u = √(2/π) · (x + 0.044715 · x³)
// computed as y = x · σ(2u), σ the logistic function, which is the same function but keeps
// its relative accuracy in the negative tail (1 + tanh(u) cancels there, and GPU tanh is only
// accurate in absolute terms). 2u is clamped to ±80, where σ is 0 or 1 to f32 precision, so
// exp never overflows.
// Dispatch: 256-thread workgroups over a (x, y) grid.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const COEF: f32 = 0.044715;

// σ(2u) = 0.5 · (1 + tanh(u)).
fn sigma(v: f32) -> f32 {
    let two_u = 2.0 * SQRT_2_OVER_PI * (v + COEF * v * v * v);
    return 1.0 / (1.0 + exp(-clamp(two_u, -80.0, 80.0)));
}

@compute @workgroup_size(256, 1, 1)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    out[i] = v * sigma(v);
}

@compute @workgroup_size(256, 1, 1)
fn backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    // d/dx [x · σ(2u)] = σ + x · 2σ(1 − σ) · du/dx.
    let s = sigma(v);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * v * v);
    let d = s + v * 2.0 * s * (1.0 - s) * du;
    out[i] = dy[i] * d;
}
