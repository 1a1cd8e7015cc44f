//! A plain f64 forward pass of the model (loss only), written independently of the kernels:
//! the truth the finite-difference gradient check differentiates.

use crate::kernels::attention::alibi_slopes;
use crate::model::config::{LAYERNORM_EPS, ModelConfig};
use crate::model::params::{EMB_LN, TensorInfo, WTE, final_ln, layer_tensor, slot};

fn layernorm(x: &[f64], w: &[f64], b: &[f64], cols: usize) -> Vec<f64> {
    let eps = f64::from(LAYERNORM_EPS);
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            out[c] = (row[c] - mean) * rstd * w[c] + b[c];
        }
    }
    y
}

/// `x [rows, inp] · Wᵀ + b` with `W [out, inp]`.
fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, inp: usize, out: usize) -> Vec<f64> {
    let rows = x.len() / inp;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..inp {
                s += x[r * inp + i] * w[o * inp + i];
            }
            y[r * out + o] = s;
        }
    }
    y
}

fn gelu(v: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
    0.5 * v * (1.0 + u.tanh())
}

/// The mean cross-entropy of the model with flat parameters `p` on `inputs` against
/// `targets` (`batch` sequences; targets ≥ vocab ignored).
pub(crate) fn loss(
    config: &ModelConfig,
    index: &[TensorInfo],
    p: &[f64],
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> f64 {
    let tensor = |i: usize| &p[index[i].range()];
    let (h, f, v) = (config.hidden, config.ffn(), config.vocab);
    let (heads, d) = (config.heads, config.head_dim());
    let seq = inputs.len() / batch;
    let slopes: Vec<f64> = alibi_slopes(heads).into_iter().map(f64::from).collect();
    let wte = tensor(WTE);
    let emb: Vec<f64> = inputs
        .iter()
        .flat_map(|&id| wte[id as usize * h..][..h].iter().copied())
        .collect();
    let mut x = layernorm(&emb, tensor(EMB_LN), tensor(EMB_LN + 1), h);
    for l in 0..config.layers {
        let w = |s: usize| tensor(layer_tensor(l, s));
        let ln1 = layernorm(&x, w(slot::INPUT_LN_W), w(slot::INPUT_LN_B), h);
        let qkv = linear(&ln1, w(slot::QKV_W), Some(w(slot::QKV_B)), h, 3 * h);
        // qkv per token: [heads, 3, d].
        let at = |b: usize, s: usize, hh: usize, which: usize| {
            ((b * seq + s) * 3 * h) + (hh * 3 + which) * d
        };
        let mut attn = vec![0.0; x.len()];
        for b in 0..batch {
            for i in 0..seq {
                for hh in 0..heads {
                    let q = &qkv[at(b, i, hh, 0)..][..d];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let k = &qkv[at(b, j, hh, 1)..][..d];
                            let dot: f64 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                            dot / (d as f64).sqrt() + slopes[hh] * (j as f64 - i as f64)
                        })
                        .collect();
                    let m = scores.iter().fold(f64::MIN, |a, &s| a.max(s));
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    let out = &mut attn[(b * seq + i) * h + hh * d..][..d];
                    for (j, s) in scores.iter().enumerate() {
                        let pj = (s - m).exp() / z;
                        let vv = &qkv[at(b, j, hh, 2)..][..d];
                        for (o, vv) in out.iter_mut().zip(vv) {
                            *o += pj * vv;
                        }
                    }
                }
            }
        }
        let proj = linear(&attn, w(slot::DENSE_W), Some(w(slot::DENSE_B)), h, h);
        let mid: Vec<f64> = x.iter().zip(&proj).map(|(a, b)| a + b).collect();
        let ln2 = layernorm(&mid, w(slot::POST_LN_W), w(slot::POST_LN_B), h);
        let act: Vec<f64> = linear(&ln2, w(slot::FC1_W), Some(w(slot::FC1_B)), h, f)
            .into_iter()
            .map(gelu)
            .collect();
        let out = linear(&act, w(slot::FC2_W), Some(w(slot::FC2_B)), f, h);
        x = mid.iter().zip(&out).map(|(a, b)| a + b).collect();
    }
    let fl = final_ln(config);
    let lnf = layernorm(&x, tensor(fl), tensor(fl + 1), h);
    let logits = linear(&lnf, wte, None, h, v);
    let (mut sum, mut count) = (0.0, 0usize);
    for (row, &t) in logits.chunks(v).zip(targets) {
        if (t as usize) < v {
            let m = row.iter().fold(f64::MIN, |a, &s| a.max(s));
            let lse = m + row.iter().map(|s| (s - m).exp()).sum::<f64>().ln();
            sum += lse - row[t as usize];
            count += 1;
        }
    }
    sum / count.max(1) as f64
}
