//! The alternative to DiLoCo rounds that exchanges something at every step, in one process,
//! against centralized synchronous data parallelism on the same tokens, in the same run: the
//! figures behind the choice of DiLoCo for the swarm.
//!
//! Every step, each of the demo's volunteers computes the gradient of its own batch on the
//! shared model, and sends a compressed share of it:
//!
//! - `grad` mode: the gradient is added to the volunteer's error-feedback residual, and the
//!   `STEP_SIM_DENSITY` share of each tensor's entries largest in magnitude leaves it (top-k
//!   with error feedback, as in Deep Gradient Compression). The mean of what the volunteers
//!   sent is clipped and goes through one AdamW step that every volunteer applies alike, so
//!   no model needs broadcasting. With density 1 this is the data-parallel run itself.
//! - `sign` mode: the gradient goes into the volunteer's momentum (decay 0.999); the top-k of
//!   the momentum leaves it, and the model moves by the learning rate times the mean of their
//!   signs, with weight decay (DeMo without its DCT).
//!
//! Traffic is counted as the demo counts it: an index (4 bytes) and an f16 value per entry
//! sent, per volunteer per step, against a ring all-reduce of the f32 gradient
//! (`2 (N − 1) / N · 4 · params` bytes per volunteer per step). The aggregate's broadcast is
//! not counted, which favours this scheme.
//!
//! The settings are those of `canopy-coordinator demo --datacenter 0` (steps = rounds × inner
//! steps), overridden by `STEP_SIM_NODES`, `_ROUNDS`, `_INNER_STEPS`, `_BATCH`, `_LR`,
//! `_MODE`, `_DENSITY` and `_WINDOW_SEED`. It prints the held-out loss every inner-steps steps, then the loss ratio
//! (final over baseline) and the traffic reduction, as a line and as one JSON object
//! (`{"step_sync_sim": …}`).
//!
//! ```text
//! cargo bench -p canopy-benches --bench step_sync_sim
//! STEP_SIM_MODE=sign STEP_SIM_DENSITY=0.002 cargo bench -p canopy-benches --bench step_sync_sim
//! ```

use std::str::FromStr;
use std::time::Instant;

use canopy_coordinator::config::{BuiltinText, Preset, TokenizerChoice};
use canopy_coordinator::demo::{self, DemoSettings};
use canopy_coordinator::project::{TrainingData, evaluate, lr_schedule};
use canopy_shaders::model::TensorKind;
use canopy_shaders::{AdamW, Cpu, Model, Params};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `STEP_SIM_<name>` from the environment, or `default`.
fn setting<T: FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    canopy_benches::env_setting("STEP_SIM", name, default)
}

/// What each volunteer sends every step.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Top-k of the gradient with error feedback; AdamW on the mean.
    Grad,
    /// Top-k of the local momentum; signs averaged.
    Sign,
}

impl Mode {
    /// Its `STEP_SIM_MODE` name.
    fn name(self) -> &'static str {
        match self {
            Mode::Grad => "grad",
            Mode::Sign => "sign",
        }
    }
}

fn main() {
    let mode = match setting("MODE", "grad".to_string()).as_str() {
        "grad" => Mode::Grad,
        "sign" => Mode::Sign,
        other => panic!("STEP_SIM_MODE={other:?}: grad or sign"),
    };
    let density: f64 = setting("DENSITY", 0.01);
    assert!(
        density > 0.0 && density <= 1.0,
        "STEP_SIM_DENSITY={density}: must be in (0, 1]"
    );
    let settings = DemoSettings {
        nodes: setting("NODES", 4),
        datacenter: 0,
        rounds: setting("ROUNDS", 8),
        inner_steps: setting("INNER_STEPS", 50),
        batch: setting("BATCH", demo::DEFAULT_BATCH),
        outer_lr: demo::DEFAULT_OUTER_LR,
        preset: Preset::Tiny,
        tokenizer: TokenizerChoice::Bytes,
        bpe_vocab: demo::DEFAULT_BPE_VOCAB,
        text: BuiltinText::Udhr,
        corpus: None,
        dir: std::env::temp_dir(),
    };
    let mut config = demo::demo_config(&settings);
    config.training.lr = setting("LR", config.training.lr);
    config.validate().expect("the settings");
    let t = config.training.clone();
    let nodes = t.tasks_per_round as usize;
    let steps = t.rounds * t.inner_steps;
    let (batch, seq) = (t.batch_size as usize, t.seq_len as usize);
    println!(
        "step_sync_sim: {nodes} volunteers, {steps} steps, batch {batch} x {seq}, lr {}, {} mode, density {density}",
        t.lr,
        mode.name(),
    );

    let data = TrainingData::load(&config, None).expect("the training data");
    let mut model_config = config.model.preset.config();
    model_config.vocab = data.tokenizer.vocab() as usize;
    let heldout = &data.heldout;
    let train = data.train_tokens();
    let schedule = lr_schedule(&config);
    let cpu = Cpu::new();
    let mut params = Params::init(&model_config, config.project.seed).expect("the initial model");
    let n = params.values().len();
    let index = params.index().to_vec();
    let mut model = Model::new(&cpu, &params).expect("the model");
    let mut ws = model.workspace(&cpu, batch, seq).expect("the activations");
    // Each volunteer draws its own windows; `_WINDOW_SEED` draws others (the same model).
    let window_seed: u64 = setting("WINDOW_SEED", 0);
    let mut windows: Vec<ChaCha8Rng> = (0..nodes as u64)
        .map(|i| ChaCha8Rng::seed_from_u64(config.project.seed ^ window_seed ^ (i << 32)))
        .collect();
    // Per volunteer: the error-feedback residual (grad) or the momentum (sign).
    let mut kept = vec![vec![0f32; n]; nodes];
    let mut adam = HostAdamW::new(
        n,
        AdamW {
            lr: t.lr,
            weight_decay: t.weight_decay,
            ..AdamW::default()
        },
    );
    let (mut inputs, mut targets) = (vec![0u32; batch * seq], vec![0u32; batch * seq]);
    let mut sent_entries = 0u64;
    let t0 = Instant::now();
    let mut evals = Vec::new();
    for step in 0..steps {
        model.load(&cpu, &params).expect("loading the model");
        let mut mean = vec![0f32; n];
        for (rng, kept) in windows.iter_mut().zip(&mut kept) {
            for b in 0..batch {
                let start = (rng.next_u64() % (train.len() - seq) as u64) as usize;
                for (j, pair) in train[start..=start + seq].windows(2).enumerate() {
                    inputs[b * seq + j] = pair[0];
                    targets[b * seq + j] = pair[1];
                }
            }
            model
                .loss_and_grads(&cpu, &mut ws, &inputs, &targets)
                .expect("the gradients");
            let grads = model.grads(&cpu).expect("the gradients");
            for (k, g) in kept.iter_mut().zip(grads.values()) {
                *k = if mode == Mode::Sign { 0.999 * *k } else { *k } + g;
            }
            for info in &index {
                let range = info.range();
                let chosen = top_k(&kept[range.clone()], density);
                for j in &chosen {
                    let i = range.start + j;
                    let value = if mode == Mode::Sign {
                        kept[i].signum()
                    } else {
                        kept[i]
                    };
                    mean[i] += value / nodes as f32;
                    kept[i] = 0.0;
                }
                sent_entries += chosen.len() as u64;
            }
        }
        let lr = schedule.at(step, steps);
        match mode {
            Mode::Grad => {
                let norm = mean
                    .iter()
                    .map(|x| f64::from(*x).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let scale = if norm > f64::from(t.grad_clip) {
                    (f64::from(t.grad_clip) / norm) as f32
                } else {
                    1.0
                };
                mean.iter_mut().for_each(|x| *x *= scale);
                adam.step(&mut params, &mean, lr);
            }
            Mode::Sign => {
                for info in &index {
                    let wd = if info.kind == TensorKind::Weight {
                        t.weight_decay
                    } else {
                        0.0
                    };
                    for i in info.range() {
                        let p = &mut params.values_mut()[i];
                        *p -= lr * (mean[i] + wd * *p);
                    }
                }
            }
        }
        if (step + 1) % t.inner_steps == 0 {
            let eval = evaluate(&config, &params, heldout).expect("evaluation");
            println!(
                "  step {:>4}: held-out {eval:.4} ({:.0}s)",
                step + 1,
                t0.elapsed().as_secs_f64()
            );
            evals.push(eval);
        }
    }
    let decentralized_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let baseline = demo::baseline(&config, &model_config, &data).expect("the baseline");
    let baseline_s = t1.elapsed().as_secs_f64();
    // The last step always ends an evaluation interval (steps = rounds × inner steps).
    let last = match evals.last() {
        Some(&loss) => loss,
        None => evaluate(&config, &params, heldout).expect("evaluation"),
    };
    let ratio = last / baseline;
    let per_step = sent_entries as f64 * 6.0 / f64::from(steps) / nodes as f64;
    let ddp = 2.0 * (nodes as f64 - 1.0) / nodes as f64 * 4.0 * n as f64;
    let reduction = ddp / per_step;
    println!("  baseline held-out {baseline:.4} ({baseline_s:.0}s)");
    println!("loss ratio (final / baseline): {ratio:.4}, traffic reduction {reduction:.1}x");
    println!(
        "{}",
        serde_json::json!({
            "step_sync_sim": {
                "volunteers": nodes,
                "steps": steps,
                "batch_size": batch,
                "seq_len": seq,
                "lr": t.lr,
                "mode": mode.name(),
                "density": density,
                "eval_loss": evals,
                "final_eval_loss": last,
                "baseline_eval_loss": baseline,
                "loss_ratio": ratio,
                "bytes_per_node_per_step": per_step,
                "ddp_bytes_per_node_per_step": ddp,
                "comm_reduction": reduction,
                "decentralized_s": decentralized_s,
                "baseline_s": baseline_s,
            }
        })
    );
}

/// AdamW on the host, as the kernel computes it: bias-corrected moments, decoupled weight
/// decay on the weight matrices and the embedding only.
struct HostAdamW {
    hp: AdamW,
    m: Vec<f32>,
    v: Vec<f32>,
    step: i32,
}

impl HostAdamW {
    fn new(len: usize, hp: AdamW) -> Self {
        Self {
            hp,
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
        }
    }

    fn step(&mut self, params: &mut Params, grads: &[f32], lr: f32) {
        self.step += 1;
        let AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.hp;
        let (c1, c2) = (1.0 - beta1.powi(self.step), 1.0 - beta2.powi(self.step));
        let index = params.index().to_vec();
        let values = params.values_mut();
        for info in &index {
            let wd = if info.kind == TensorKind::Weight {
                weight_decay
            } else {
                0.0
            };
            for i in info.range() {
                let g = grads[i];
                self.m[i] = beta1 * self.m[i] + (1.0 - beta1) * g;
                self.v[i] = beta2 * self.v[i] + (1.0 - beta2) * g * g;
                let update = (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
                values[i] -= lr * (update + wd * values[i]);
            }
        }
    }
}

/// Indices of the `density` share of `values` largest in magnitude (at least one).
fn top_k(values: &[f32], density: f64) -> Vec<usize> {
    let k = ((values.len() as f64 * density).ceil() as usize).clamp(1, values.len());
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < values.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| values[b].abs().total_cmp(&values[a].abs()));
        idx.truncate(k);
    }
    idx
}
