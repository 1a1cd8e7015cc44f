// One AdamW step with decoupled weight decay (Loshchilov & Hutter), in place, elementwise:
//
// θ ← θ − lr · wd · θ
// m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
// θ ← θ − lr · (m / bc1) / (√(v / bc2) + ε),   bc1 = 1 − β₁ᵗ, bc2 = 1 − β₂ᵗ (from the host)
// Dispatch: 256-thread workgroups over a (x, y) grid.

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> theta: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let g = grad[i];
    var t = theta[i];
    t = t - p.lr * p.weight_decay * t;
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    theta[i] = t - p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
}
