//! The volunteer's self-test (`canopy-node selftest`): every kernel runs on the chosen backend
//! and on the CPU path with the same seeded inputs, and the outputs are compared, float kernels
//! with a relative tolerance and integer kernels bit for bit. The CPU path's matrix multiply is
//! also checked against the naive reference, so a machine with no adapter still tests
//! something real.

use canopy_protocol::messages::MinHashParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::Backend;
use crate::cpu::Cpu;
use crate::error::Result;
use crate::kernels::adamw::AdamW;
use crate::kernels::attention::{AttentionShape, alibi_slopes};
use crate::kernels::documents::pack_documents;
use crate::kernels::matmul::{MatmulShape, Transpose, matmul_cpu, matmul_reference};
use crate::kernels::quality::QUALITY_SIGNALS;

/// Relative tolerance for float kernels (of the largest magnitude in the reference output,
/// element by element): loose enough for a GPU's fused multiply-adds and reduction order,
/// tight enough to catch an indexing bug.
pub const FLOAT_TOLERANCE: f64 = 1e-3;

/// One line of the self-test table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelftestRow {
    /// The kernel.
    pub kernel: &'static str,
    /// The shape it ran at.
    pub shape: String,
    /// Largest error found: relative for float kernels, count of differing values for integer
    /// kernels.
    pub max_error: f64,
    /// The tolerance it is held to.
    pub tolerance: f64,
    /// Whether it passed.
    pub passed: bool,
    /// The error, when the kernel failed to run.
    pub error: Option<String>,
}

enum Out {
    F(Vec<f32>),
    U(Vec<u32>),
}

/// The largest elementwise error, relative to the reference's largest magnitude (floored at
/// 1e-3 of it so values near zero do not dominate).
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0f64, |m, x| m.max(f64::from(x.abs())));
    let floor = (scale * 1e-3).max(f64::MIN_POSITIVE);
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_nan() != w.is_nan() {
                f64::INFINITY
            } else if g.is_nan() {
                0.0
            } else {
                f64::from((g - w).abs()) / f64::from(w.abs()).max(floor)
            }
        })
        .fold(0.0, f64::max)
}

fn random(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The kernels and the shapes the self-test runs them at.
const CASES: &[&str] = &[
    "matmul",
    "matmul_at",
    "matmul_bt",
    "bias_add",
    "bias_grad",
    "gelu",
    "gelu_backward",
    "layernorm",
    "layernorm_backward",
    "embedding",
    "embedding_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "adamw",
    "global_norm",
    "int8_quantize",
    "int8_dequantize",
    "attention",
    "attention_backward",
    "quality_signals",
    "minhash",
];

struct Inputs {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    ids: Vec<u32>,
    text: Vec<u32>,
    offsets: Vec<u32>,
}

const M: usize = 67;
const K: usize = 45;
const N: usize = 53;
const ROWS: usize = 24;
const COLS: usize = 96;
const VOCAB: usize = 260;
const ATT: AttentionShape = AttentionShape {
    batch: 2,
    seq: 16,
    heads: 4,
    head_dim: 16,
};
const BLOCK: usize = 64;

fn inputs(seed: u64) -> Result<Inputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let big = (M * K)
        .max(K * N)
        .max(ROWS * VOCAB)
        .max(VOCAB * COLS)
        .max(ATT.qkv_len());
    let docs: Vec<String> = (0..12)
        .map(|d| {
            (0..(d * 17 + 3))
                .map(|w| format!("w{}{}", (w * 7 + d) % 13, if w % 9 == 0 { "!" } else { "" }))
                .collect::<Vec<_>>()
                .join(if d % 2 == 0 { " " } else { "\n" })
        })
        .collect();
    let (text, offsets) = pack_documents(&docs)?;
    Ok(Inputs {
        a: random(&mut rng, big, 1.0),
        b: random(&mut rng, big, 1.0),
        c: random(&mut rng, big, 0.5),
        d: (0..big).map(|_| rng.random_range(0.01..1.0)).collect(),
        ids: (0..ROWS)
            .map(|i| {
                if i == 5 {
                    u32::MAX // an ignored target
                } else {
                    rng.random_range(0..VOCAB as u32)
                }
            })
            .collect(),
        text,
        offsets,
    })
}

fn shape_of(case: &str) -> String {
    match case {
        "matmul" | "matmul_at" | "matmul_bt" => format!("{M}x{K}x{N}"),
        "embedding" | "embedding_backward" => format!("{ROWS} ids, {VOCAB}x{COLS}"),
        "cross_entropy" | "cross_entropy_backward" => format!("{ROWS}x{VOCAB}"),
        "attention" | "attention_backward" => format!(
            "b{} s{} h{} d{}",
            ATT.batch, ATT.seq, ATT.heads, ATT.head_dim
        ),
        "int8_quantize" | "int8_dequantize" => format!("{} values, block {BLOCK}", ROWS * COLS),
        "quality_signals" | "minhash" => "12 documents".into(),
        _ => format!("{ROWS}x{COLS}"),
    }
}

/// Runs one case on `b`.
fn exec<B: Backend>(b: &B, case: &str, x: &Inputs) -> Result<Vec<Out>> {
    let rc = ROWS * COLS;
    Ok(match case {
        "matmul" | "matmul_at" | "matmul_bt" => {
            let transpose = match case {
                "matmul_at" => Transpose::A,
                "matmul_bt" => Transpose::B,
                _ => Transpose::None,
            };
            let shape = MatmulShape {
                m: M,
                k: K,
                n: N,
                transpose,
                accumulate: true,
            };
            let a = b.upload(&x.a[..M * K], "a")?;
            let bb = b.upload(&x.b[..K * N], "b")?;
            let mut c = b.upload(&x.c[..M * N], "c")?;
            b.matmul(&a, &bb, &mut c, shape)?;
            vec![Out::F(b.read(&c)?)]
        }
        "bias_add" => {
            let mut y = b.upload(&x.a[..rc], "x")?;
            let bias = b.upload(&x.b[..COLS], "bias")?;
            b.bias_add(&mut y, &bias, ROWS, COLS)?;
            vec![Out::F(b.read(&y)?)]
        }
        "bias_grad" => {
            let dy = b.upload(&x.a[..rc], "dy")?;
            let mut db = b.alloc(COLS, "dbias")?;
            b.bias_grad(&dy, &mut db, ROWS, COLS)?;
            vec![Out::F(b.read(&db)?)]
        }
        "gelu" | "gelu_backward" => {
            let xs = b.upload(&x.a[..rc], "x")?;
            let mut y = b.alloc(rc, "y")?;
            if case == "gelu" {
                b.gelu(&xs, &mut y)?;
            } else {
                let dy = b.upload(&x.b[..rc], "dy")?;
                b.gelu_backward(&xs, &dy, &mut y)?;
            }
            vec![Out::F(b.read(&y)?)]
        }
        "layernorm" | "layernorm_backward" => {
            let xs = b.upload(&x.a[..rc], "x")?;
            let gamma = b.upload(&x.d[..COLS], "gamma")?;
            let beta = b.upload(&x.c[..COLS], "beta")?;
            let mut y = b.alloc(rc, "y")?;
            let mut mean = b.alloc(ROWS, "mean")?;
            let mut rstd = b.alloc(ROWS, "rstd")?;
            b.layernorm(&xs, &gamma, &beta, &mut y, &mut mean, &mut rstd, COLS, 1e-5)?;
            if case == "layernorm" {
                vec![Out::F(b.read(&y)?)]
            } else {
                let dy = b.upload(&x.b[..rc], "dy")?;
                let mut dx = b.alloc(rc, "dx")?;
                let mut dg = b.alloc(COLS, "dgamma")?;
                let mut db = b.alloc(COLS, "dbeta")?;
                b.layernorm_backward(&xs, &gamma, &mean, &rstd, &dy, &mut dx, &mut dg, &mut db)?;
                vec![
                    Out::F(b.read(&dx)?),
                    Out::F(b.read(&dg)?),
                    Out::F(b.read(&db)?),
                ]
            }
        }
        "embedding" | "embedding_backward" => {
            let ids: Vec<u32> = x.ids.iter().map(|i| i % VOCAB as u32).collect();
            let ids = b.upload(&ids, "ids")?;
            if case == "embedding" {
                let table = b.upload(&x.a[..VOCAB * COLS], "table")?;
                let mut out = b.alloc(rc, "out")?;
                b.embedding(&ids, &table, &mut out, COLS)?;
                vec![Out::F(b.read(&out)?)]
            } else {
                let dy = b.upload(&x.b[..rc], "dy")?;
                let mut dt = b.upload(&x.c[..VOCAB * COLS], "dtable")?;
                b.embedding_backward(&ids, &dy, &mut dt, COLS)?;
                vec![Out::F(b.read(&dt)?)]
            }
        }
        "cross_entropy" | "cross_entropy_backward" => {
            let logits: Vec<f32> = x.a[..ROWS * VOCAB].iter().map(|v| v * 4.0).collect();
            let logits = b.upload(&logits, "logits")?;
            let targets = b.upload(&x.ids, "targets")?;
            let mut loss = b.alloc(ROWS, "loss")?;
            let mut lse = b.alloc(ROWS, "lse")?;
            b.cross_entropy(&logits, &targets, &mut loss, &mut lse)?;
            if case == "cross_entropy" {
                vec![Out::F(b.read(&loss)?), Out::F(b.read(&lse)?)]
            } else {
                let mut d = b.alloc(ROWS * VOCAB, "dlogits")?;
                b.cross_entropy_backward(&logits, &targets, &lse, &mut d, 1.0 / ROWS as f32)?;
                vec![Out::F(b.read(&d)?)]
            }
        }
        "adamw" => {
            let mut p = b.upload(&x.a[..rc], "params")?;
            let g = b.upload(&x.b[..rc], "grads")?;
            let mut m = b.upload(&x.c[..rc], "m")?;
            let mut v = b.upload(&x.d[..rc], "v")?;
            let hp = AdamW {
                lr: 1e-2,
                ..AdamW::default()
            };
            for t in 1..=3 {
                b.adamw(&mut p, &g, &mut m, &mut v, &hp, t)?;
            }
            vec![
                Out::F(b.read(&p)?),
                Out::F(b.read(&m)?),
                Out::F(b.read(&v)?),
            ]
        }
        "global_norm" => {
            let t1 = b.upload(&x.a[..rc], "t1")?;
            let t2 = b.upload(&x.b[..COLS], "t2")?;
            vec![Out::F(vec![b.global_norm(&[&t1, &t2])?])]
        }
        "int8_quantize" | "int8_dequantize" => {
            let values = b.upload(&x.a[..rc], "values")?;
            let blocks = rc.div_ceil(BLOCK);
            let mut scales = b.alloc(blocks, "scales")?;
            let mut quants = b.alloc(rc.div_ceil(4), "quants")?;
            b.int8_quantize(&values, &mut scales, &mut quants, BLOCK)?;
            if case == "int8_quantize" {
                let scales = b.read(&scales)?.iter().map(|s| s.to_bits()).collect();
                vec![Out::U(scales), Out::U(b.read(&quants)?)]
            } else {
                let mut out = b.alloc(rc, "out")?;
                b.int8_dequantize(&scales, &quants, &mut out, BLOCK)?;
                vec![Out::U(b.read(&out)?.iter().map(|v| v.to_bits()).collect())]
            }
        }
        "attention" | "attention_backward" => {
            let qkv = b.upload(&x.a[..ATT.qkv_len()], "qkv")?;
            let slopes = b.upload(&alibi_slopes(ATT.heads), "slopes")?;
            let mut out = b.alloc(ATT.out_len(), "out")?;
            let mut lse = b.alloc(ATT.lse_len(), "lse")?;
            b.attention(&qkv, &slopes, &mut out, &mut lse, ATT)?;
            if case == "attention" {
                vec![Out::F(b.read(&out)?)]
            } else {
                let dout = b.upload(&x.b[..ATT.out_len()], "dout")?;
                let mut dqkv = b.alloc(ATT.qkv_len(), "dqkv")?;
                b.attention_backward(&qkv, &slopes, &out, &lse, &dout, &mut dqkv, ATT)?;
                vec![Out::F(b.read(&dqkv)?)]
            }
        }
        "quality_signals" | "minhash" => {
            let text = b.upload(&x.text, "text")?;
            let offsets = b.upload(&x.offsets, "offsets")?;
            let docs = x.offsets.len() - 1;
            if case == "quality_signals" {
                let mut out = b.alloc(docs * QUALITY_SIGNALS, "signals")?;
                b.quality_signals(&text, &offsets, &mut out)?;
                vec![Out::U(b.read(&out)?)]
            } else {
                let params = MinHashParams::default();
                let mut sig = b.alloc(docs * params.num_perm as usize, "signatures")?;
                b.minhash(&text, &offsets, &mut sig, &params)?;
                vec![Out::U(b.read(&sig)?)]
            }
        }
        other => {
            return Err(crate::error::ShaderError::Parameter {
                name: "selftest case",
                value: other.to_string(),
                reason: "unknown",
            });
        }
    })
}

fn compare(got: &[Out], want: &[Out]) -> (f64, bool) {
    let mut worst = 0f64;
    let mut integer = false;
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Out::F(g), Out::F(w)) => worst = worst.max(relative_error(g, w)),
            (Out::U(g), Out::U(w)) => {
                integer = true;
                let differing = if g.len() == w.len() {
                    g.iter().zip(w).filter(|(a, b)| a != b).count()
                } else {
                    usize::MAX
                };
                worst = worst.max(differing as f64);
            }
            _ => worst = f64::INFINITY,
        }
    }
    (worst, integer)
}

/// Runs every kernel on `backend` and on the CPU path with inputs from `seed`, and compares.
pub fn run<B: Backend>(backend: &B, seed: u64) -> Vec<SelftestRow> {
    let cpu = Cpu::new();
    let mut rows = Vec::new();
    let inputs = match inputs(seed) {
        Ok(i) => i,
        Err(e) => {
            rows.push(SelftestRow {
                kernel: "inputs",
                shape: String::new(),
                max_error: f64::INFINITY,
                tolerance: 0.0,
                passed: false,
                error: Some(e.to_string()),
            });
            return rows;
        }
    };
    // The CPU path's own matrix multiply against the naive triple loop.
    let shape = MatmulShape {
        m: M,
        k: K,
        n: N,
        transpose: Transpose::None,
        accumulate: false,
    };
    let mut fast = vec![0f32; M * N];
    let mut naive = vec![0f32; M * N];
    let naive_check = matmul_cpu(&inputs.a[..M * K], &inputs.b[..K * N], &mut fast, shape)
        .and_then(|()| matmul_reference(&inputs.a[..M * K], &inputs.b[..K * N], &mut naive, shape));
    let err = relative_error(&fast, &naive);
    rows.push(SelftestRow {
        kernel: "matmul (CPU path vs naive)",
        shape: format!("{M}x{K}x{N}"),
        max_error: err,
        tolerance: FLOAT_TOLERANCE,
        passed: naive_check.is_ok() && err <= FLOAT_TOLERANCE,
        error: naive_check.err().map(|e| e.to_string()),
    });
    for case in CASES {
        let result = exec(backend, case, &inputs).and_then(|got| {
            let want = exec(&cpu, case, &inputs)?;
            Ok(compare(&got, &want))
        });
        rows.push(match result {
            Ok((max_error, integer)) => {
                let tolerance = if integer { 0.0 } else { FLOAT_TOLERANCE };
                SelftestRow {
                    kernel: case,
                    shape: shape_of(case),
                    max_error,
                    tolerance,
                    passed: max_error <= tolerance,
                    error: None,
                }
            }
            Err(e) => SelftestRow {
                kernel: case,
                shape: shape_of(case),
                max_error: f64::INFINITY,
                tolerance: FLOAT_TOLERANCE,
                passed: false,
                error: Some(e.to_string()),
            },
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn cpu_path_passes_every_case() {
        let rows = run(&Cpu::new(), 1);
        assert_eq!(rows.len(), CASES.len() + 1);
        for row in &rows {
            assert!(row.passed, "{row:?}");
        }
    }

    #[test]
    fn wgsl_passes_every_case() {
        let Some(gpu) = testing::gpu() else {
            return;
        };
        for row in run(gpu, 2) {
            assert!(row.passed, "{row:?}");
        }
    }

    #[test]
    fn a_wrong_result_fails() {
        let (err, integer) = compare(&[Out::F(vec![1.0, 2.0])], &[Out::F(vec![1.0, 2.5])]);
        assert!(!integer && err > FLOAT_TOLERANCE);
        let (err, integer) = compare(&[Out::U(vec![1, 2])], &[Out::U(vec![1, 3])]);
        assert!(integer && err == 1.0);
    }
}
