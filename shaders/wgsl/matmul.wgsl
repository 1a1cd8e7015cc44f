// Tiled matrix multiply: C (+)= op(A) · op(B), with op = identity or transpose.
//
// A is [m, k] row-major ([k, m] when trans_a = 1), B is [k, n] ([n, k] when trans_b = 1),
// C is [m, n]. Each workgroup computes a 64×64 tile of C; each of its 16×16 threads computes a
// 4×4 block of that tile (rows ly + 16·i, columns lx + 16·j), reading A and B through 16-deep
// tiles staged in workgroup memory. Dispatch: (ceil(n / 64), ceil(m / 64), 1).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// Tiles stored k-major: sa[kk * TM + row], sb[kk * TN + col].
var<workgroup> sa: array<f32, 1024>;
var<workgroup> sb: array<f32, 1024>;

fn load_a(row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (p.trans_a != 0u) {
        return a[kk * p.m + row];
    }
    return a[row * p.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if (kk >= p.k || col >= p.n) {
        return 0.0;
    }
    if (p.trans_b != 0u) {
        return b[col * p.k + kk];
    }
    return b[kk * p.n + col];
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var t = 0u; t < p.k; t += TK) {
        // 1024 elements per tile, 256 threads: 4 loads each. Neighbouring threads read
        // neighbouring addresses in whichever layout the operand is stored.
        for (var e = li; e < TK * TM; e += 256u) {
            var r: u32;
            var kk: u32;
            if (p.trans_a != 0u) {
                kk = e / TM;
                r = e % TM;
            } else {
                r = e / TK;
                kk = e % TK;
            }
            sa[kk * TM + r] = load_a(row0 + r, t + kk);
            var col: u32;
            var kb: u32;
            if (p.trans_b != 0u) {
                col = e / TK;
                kb = e % TK;
            } else {
                kb = e / TN;
                col = e % TN;
            }
            sb[kb * TN + col] = load_b(t + kb, col0 + col);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = sa[kk * TM + lid.y + 16u * i];
                bv[i] = sb[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 16u * i;
        if (row >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col >= p.n) {
                continue;
            }
            let idx = row * p.n + col;
            if (p.accumulate != 0u) {
                c[idx] = c[idx] + acc[i * 4u + j];
            } else {
                c[idx] = acc[i * 4u + j];
            }
        }
    }
}
