//! Scratch: DiLoCo vs data-parallel tuning (not committed).
use canopy_coordinator::aggregate::{self, AggregateConfig, Candidate, Combine, OuterOptimizer};
use canopy_coordinator::config::Preset;
use canopy_coordinator::demo::{DemoSettings, demo_config};
use canopy_coordinator::project::{evaluate, split_text, training_text};
use canopy_shaders::{AdamW, Cpu, InnerSettings, LrSchedule, Params, TrainConfig};
use rayon::prelude::*;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    let n: u32 = env("N", 4);
    let rounds: u32 = env("ROUNDS", 8);
    let h: u32 = env("H", 40);
    let outer_lr: f32 = env("OLR", 0.7);
    let outer_mom: f32 = env("OMOM", 0.9);
    let lr: f32 = env("LR", 3e-3);
    let sched: String = env("SCHED", "task".to_string());
    let trim: f32 = env("TRIM", 0.25);
    let dir = std::env::temp_dir();
    let settings = DemoSettings {
        nodes: n,
        datacenter: 0,
        rounds,
        inner_steps: h,
        preset: Preset::Tiny,
        corpus: None,
        dir,
    };
    let mut config = demo_config(&settings);
    config.training.lr = lr;
    config.training.batch_size = env("BATCH", 8);
    let model = canopy_coordinator::project::preset_config(config.model.preset);
    let text = training_text(&config).unwrap();
    let (shards, heldout) =
        split_text(&text, config.data.holdout, config.data.shard_bytes as usize);
    let heldout = heldout.to_vec();
    let t = config.training.clone();
    let mut params = Params::init(&model, config.project.seed).unwrap();
    let warm: u32 = env("WARM", 0);
    if warm > 0 {
        let all: Vec<u8> = shards.concat();
        let s = InnerSettings {
            steps: warm,
            batch: 8,
            seq: t.seq_len as usize,
            lr: LrSchedule {
                peak: lr,
                warmup: 5,
                min: lr,
            },
            optimizer: TrainConfig {
                adamw: AdamW {
                    lr,
                    weight_decay: t.weight_decay,
                    ..AdamW::default()
                },
                clip_norm: Some(t.grad_clip),
            },
            seed: 999,
        };
        params = canopy_shaders::train_inner(&Cpu::new(), &params, &all, &s, None, |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap()
        .params;
    }
    let warm_params = params.clone();
    let init = evaluate(&config, &params, &heldout).unwrap();
    let mut opt = OuterOptimizer::new(params.values().len(), outer_lr, outer_mom).unwrap();
    let total = rounds * h;
    let t0 = std::time::Instant::now();
    let mut states: Vec<Option<canopy_shaders::OptimizerState>> = vec![None; n as usize];
    for r in 0..rounds {
        let per_task = shards.len().div_ceil(n as usize).max(1);
        let keep = env("KEEP", 0) == 1;
        let out: Vec<(Vec<f32>, canopy_shaders::OptimizerState)> = (0..n)
            .into_par_iter()
            .map(|k| {
                let start = (k as usize * per_task + r as usize * per_task) % shards.len();
                let data: Vec<u8> = (0..per_task.min(shards.len()))
                    .flat_map(|j| shards[(start + j) % shards.len()].to_vec())
                    .collect();
                let global = LrSchedule {
                    peak: lr,
                    warmup: t.warmup_steps,
                    min: lr * 0.1,
                };
                let lrs = match sched.as_str() {
                    "global" => LrSchedule {
                        peak: global.at(r * h, total),
                        warmup: if r == 0 { t.warmup_steps } else { env("RW", 0) },
                        min: global.at(r * h + h - 1, total).min(global.at(r * h, total)),
                    },
                    _ => global,
                };
                let s = InnerSettings {
                    steps: h,
                    batch: t.batch_size as usize,
                    seq: t.seq_len as usize,
                    lr: lrs,
                    optimizer: TrainConfig {
                        adamw: AdamW {
                            lr,
                            weight_decay: t.weight_decay,
                            ..AdamW::default()
                        },
                        clip_norm: Some(t.grad_clip),
                    },
                    seed: u64::from(r) * 1000 + u64::from(k),
                };
                let rep = canopy_shaders::train_inner(
                    &Cpu::new(),
                    &params,
                    &data,
                    &s,
                    if keep {
                        states[k as usize].as_ref()
                    } else {
                        None
                    },
                    |_, _| std::ops::ControlFlow::Continue(()),
                )
                .unwrap()
                .unwrap();
                (
                    params
                        .values()
                        .iter()
                        .zip(rep.params.values())
                        .map(|(a, b)| a - b)
                        .collect(),
                    rep.optimizer,
                )
            })
            .collect();
        let mut deltas = Vec::new();
        for (k, (d, st)) in out.into_iter().enumerate() {
            deltas.push(d);
            states[k] = Some(st);
        }
        let cands: Vec<Candidate<'_>> = deltas
            .iter()
            .map(|v| Candidate {
                values: v,
                weight: 1.0,
            })
            .collect();
        let cfg = AggregateConfig {
            combine: if trim > 0.0 {
                Combine::TrimmedMean { trim }
            } else {
                Combine::Mean
            },
            clip_multiple: 2.0,
        };
        let agg = aggregate::aggregate(&cands, params.values().len(), &cfg).unwrap();
        opt.step(params.values_mut(), &agg.delta).unwrap();
        let e = evaluate(&config, &params, &heldout).unwrap();
        eprintln!(
            "round {r}: eval {e:.4} ({:.0}s)",
            t0.elapsed().as_secs_f64()
        );
    }
    let fin = evaluate(&config, &params, &heldout).unwrap();
    let mut bconfig = config.clone();
    bconfig.training.tasks_per_round = n;
    let b = if env("BASE", 1) == 1 {
        base_from(&bconfig, &warm_params, &heldout)
    } else {
        f32::NAN
    };
    println!(
        "N={n} R={rounds} H={h} OLR={outer_lr} OMOM={outer_mom} LR={lr} SCHED={sched} TRIM={trim}: init {init:.4} diloco {fin:.4} base {b:.4} ratio {:.4}",
        fin / b
    );
}

fn base_from(config: &canopy_coordinator::config::Config, params: &Params, heldout: &[u8]) -> f32 {
    let text = training_text(config).unwrap();
    let (shards, _) = split_text(&text, config.data.holdout, config.data.shard_bytes as usize);
    let train: Vec<u8> = shards.concat();
    let t = &config.training;
    let settings = InnerSettings {
        steps: t.rounds * t.inner_steps,
        batch: (t.batch_size * t.tasks_per_round) as usize,
        seq: t.seq_len as usize,
        lr: canopy_coordinator::project::lr_schedule(config),
        optimizer: TrainConfig {
            adamw: AdamW {
                lr: t.lr,
                weight_decay: t.weight_decay,
                ..AdamW::default()
            },
            clip_norm: Some(t.grad_clip),
        },
        seed: config.project.seed,
    };
    let r = canopy_shaders::train_inner(&Cpu::new(), params, &train, &settings, None, |_, _| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
    .unwrap();
    evaluate(config, &r.params, heldout).unwrap()
}
