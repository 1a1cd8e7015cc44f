//! The demo's DiLoCo rounds in one process, without the network, against centralized
//! synchronous data parallelism on the same tokens, in the same run: a quicker loop than
//! `swarm_compare` for studying what the loss ratio depends on.
//!
//! Every round uses the swarm's own pieces: each task's `train_spec` and inner settings, the
//! CPU path's inner AdamW steps, the update codec, and the coordinator's own outer step
//! ([`outer_step`]: the configured robust aggregation, the outer optimizer and the int8 model
//! step the coordinator publishes). Every task of a round is run and accepted; there is no
//! verification, no churn and no staleness (the coordinator's screening of updates opposed
//! to their round, which happens before the outer step, is not simulated).
//!
//! The settings are those of `canopy-coordinator demo`, overridden by `ROUNDS_SIM_NODES`,
//! `_DATACENTER`, `_ROUNDS`, `_INNER_STEPS`, `_BATCH`, `_SEQ`, `_LR`, `_TASK_LR_DECAY`,
//! `_OUTER_LR`, `_OUTER_MOMENTUM`, `_COMBINE`, `_BPE_VOCAB` (0: byte-level tokens), `_SEED`
//! (the project seed: the initial model and every task's windows), `_COMPRESSION` (`f32`,
//! `f16`, `int8`, `lowbit`, `topk`), `_TOPK_DENSITY`, `_BITS` (0: unset) and `_STEP_BITS`
//! (each prefixed with `ROUNDS_SIM`),
//! on the built-in text. `ROUNDS_SIM_ERROR_FEEDBACK=1` carries each task slot's top-k residual
//! from round to round (as a node that kept its residual would); `ROUNDS_SIM_BASELINE` takes
//! the baseline's held-out loss from an earlier run of the same settings instead of training
//! it again. It prints the held-out loss of every round, then the loss ratio (final over
//! baseline) and the traffic reduction (a per-step f32 ring all-reduce of the same model over
//! the bytes of updates, model steps and data shards the tasks moved) as lines and as one
//! JSON object (`{"rounds_sim": …}`).
//!
//! ```text
//! cargo bench -p canopy-benches --bench rounds_sim
//! ROUNDS_SIM_DATACENTER=0 ROUNDS_SIM_INNER_STEPS=10 ROUNDS_SIM_ROUNDS=40 cargo bench -p canopy-benches --bench rounds_sim
//! ```

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;

use canopy_coordinator::aggregate::{Held, OuterOptimizer};
use canopy_coordinator::config::Compression;
use canopy_coordinator::config::{BuiltinText, Preset, TokenizerChoice};
use canopy_coordinator::demo::{self, DemoSettings};
use canopy_coordinator::outer::outer_step;
use canopy_coordinator::project::{
    TrainingData, aggregate_config, evaluate, step_codec, train_spec,
};
use canopy_node::objects::{pseudo_gradient_with, update_values};
use canopy_protocol::{Compressor, Digest};
use canopy_shaders::{Cpu, Params};

/// `ROUNDS_SIM_<name>` from the environment, or `default`.
fn setting<T: FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    canopy_benches::env_setting("ROUNDS_SIM", name, default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let bpe_vocab = setting("BPE_VOCAB", demo::DEFAULT_BPE_VOCAB);
    let settings = DemoSettings {
        nodes: setting("NODES", 4),
        datacenter: setting("DATACENTER", 1),
        rounds: setting("ROUNDS", 8),
        inner_steps: setting("INNER_STEPS", 50),
        batch: setting("BATCH", demo::DEFAULT_BATCH),
        outer_lr: setting("OUTER_LR", demo::DEFAULT_OUTER_LR),
        preset: Preset::Tiny,
        tokenizer: if bpe_vocab > 0 {
            TokenizerChoice::Bpe
        } else {
            TokenizerChoice::Bytes
        },
        // Unused with byte-level tokens, but a project's setting is checked either way.
        bpe_vocab: if bpe_vocab > 0 {
            bpe_vocab
        } else {
            demo::DEFAULT_BPE_VOCAB
        },
        text: BuiltinText::Udhr,
        corpus: None,
        dir: std::env::temp_dir(),
    };
    let mut config = demo::demo_config(&settings);
    config.project.seed = setting("SEED", config.project.seed);
    let t = &mut config.training;
    t.seq_len = setting("SEQ", t.seq_len);
    t.lr = setting("LR", t.lr);
    t.task_lr_decay = setting("TASK_LR_DECAY", t.task_lr_decay);
    let a = &mut config.aggregation;
    a.outer_momentum = setting("OUTER_MOMENTUM", a.outer_momentum);
    a.combine = setting("COMBINE", a.combine.clone());
    let t = &mut config.training;
    t.compression = match setting("COMPRESSION", String::from("lowbit")).as_str() {
        "f32" => Compression::F32,
        "f16" => Compression::F16,
        "int8" => Compression::Int8,
        "topk" => Compression::TopK,
        "lowbit" => Compression::LowBit,
        other => panic!("ROUNDS_SIM_COMPRESSION: {other} is not f32, f16, int8, lowbit or topk"),
    };
    t.topk_density = setting("TOPK_DENSITY", t.topk_density);
    let bits = setting("BITS", 0u8);
    t.compression_bits = (bits > 0).then_some(bits);
    config.aggregation.step_bits = setting("STEP_BITS", config.aggregation.step_bits);
    let error_feedback = setting("ERROR_FEEDBACK", 0u8) == 1;
    let given_baseline = setting("BASELINE", 0f32);
    config.validate().expect("the settings");
    let t = config.training.clone();
    println!(
        "rounds_sim: {} tasks per round, {} rounds x {} inner steps, batch {} x {}, lr {}, outer lr {} momentum {}, {}, {:?}{}, steps {:?}",
        t.tasks_per_round,
        t.rounds,
        t.inner_steps,
        t.batch_size,
        t.seq_len,
        t.lr,
        config.aggregation.outer_lr,
        config.aggregation.outer_momentum,
        config.aggregation.combine,
        canopy_coordinator::project::codec(&config),
        if error_feedback {
            " with error feedback"
        } else {
            ""
        },
        step_codec(&config)
    );

    let data = TrainingData::load(&config, None).expect("the training data");
    let mut model = config.model.preset.config();
    model.vocab = data.tokenizer.vocab() as usize;
    let heldout = &data.heldout;
    let digests: Vec<Digest> = data.shards.iter().map(|s| Digest::of(s)).collect();
    let shard_of: HashMap<Digest, &[u8]> = digests
        .iter()
        .copied()
        .zip(data.shards.iter().map(Vec::as_slice))
        .collect();
    let tokens = data.tokens;
    let agg_config = aggregate_config(&config).expect("the aggregation settings");
    let mut params = Params::init(&model, config.project.seed).expect("the initial model");
    let mut outer = OuterOptimizer::new(
        params.values().len(),
        config.aggregation.outer_lr,
        config.aggregation.outer_momentum,
    )
    .expect("the outer optimizer")
    .with_step(step_codec(&config), Vec::new())
    .expect("the step codec");
    let initial = evaluate(&config, &params, heldout).expect("evaluation");
    println!("  initial held-out {initial:.4}");
    let model_root = Digest::of(b"rounds_sim model");
    let cpu = Cpu::new();
    let t0 = Instant::now();
    let mut evals = Vec::new();
    let len = params.values().len();
    let codec = canopy_coordinator::project::codec(&config);
    let mut slots: Vec<Compressor> = (0..t.tasks_per_round)
        .map(|_| Compressor::new(codec, len).expect("the codec"))
        .collect();
    let (mut update_bytes, mut step_bytes, mut data_bytes) = (0u64, 0u64, 0u64);
    for round in 0..u64::from(t.rounds) {
        let updates: Vec<Vec<f32>> = slots
            .iter_mut()
            .enumerate()
            .map(|(index, slot)| {
                let index = index as u32;
                let spec = train_spec(&config, &digests, round, index, &model_root, None, tokens);
                let bytes: Vec<u8> = spec
                    .data_shards
                    .iter()
                    .flat_map(|d| shard_of[d].iter().copied())
                    .collect();
                let ids = tokens.decode(&bytes).expect("the shards' token ids");
                let inner = canopy_node::worker::inner_settings(&spec);
                let report = canopy_shaders::train_inner(&cpu, &params, &ids, &inner, |_, _| {
                    std::ops::ControlFlow::Continue(())
                })
                .expect("the inner steps")
                .expect("not stopped");
                if !error_feedback {
                    *slot = Compressor::new(spec.compression, len).expect("the codec");
                }
                let frame = pseudo_gradient_with(&params, &report.params, slot)
                    .expect("compressing the update")
                    .to_frame()
                    .expect("framing the update");
                update_bytes += frame.len() as u64;
                data_bytes += bytes.len() as u64;
                update_values(&frame, len).expect("decoding the update")
            })
            .collect();
        let held: Vec<(Held, f32)> = updates.into_iter().map(|v| (Held::new(v), 1.0)).collect();
        let step = outer_step(&params, &outer, &held, &agg_config).expect("the outer step");
        step_bytes += u64::from(t.tasks_per_round)
            * step.step.to_frame().expect("framing the step").len() as u64;
        params = step.params;
        outer = step.optimizer;
        let eval = evaluate(&config, &params, heldout).expect("evaluation");
        println!(
            "  round {round:>3}: held-out {eval:.4} ({:.0}s)",
            t0.elapsed().as_secs_f64()
        );
        evals.push(eval);
    }
    let decentralized_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let baseline = if given_baseline > 0.0 {
        given_baseline
    } else {
        demo::baseline(&config, &model, &data).expect("the baseline")
    };
    let baseline_s = t1.elapsed().as_secs_f64();
    let last = evals.last().copied().unwrap_or(initial);
    let ratio = last / baseline;
    println!("  baseline held-out {baseline:.4} ({baseline_s:.0}s)");
    println!("loss ratio (final / baseline): {ratio:.4}");
    // Every node of a synchronous run sends and receives 2·(n−1)/n of the f32 gradient a step.
    let n = f64::from(t.tasks_per_round);
    let steps = f64::from(t.rounds) * f64::from(t.inner_steps);
    let ddp = n * 2.0 * (n - 1.0).max(1.0) / n * 4.0 * len as f64 * steps;
    let moved = update_bytes + step_bytes + data_bytes;
    let comm_reduction = ddp / moved.max(1) as f64;
    println!(
        "traffic: updates {update_bytes} B, model steps {step_bytes} B, data {data_bytes} B; {comm_reduction:.0}x less than a per-step f32 all-reduce"
    );
    println!(
        "{}",
        serde_json::json!({
            "rounds_sim": {
                "tasks_per_round": t.tasks_per_round,
                "rounds": t.rounds,
                "inner_steps": t.inner_steps,
                "batch_size": t.batch_size,
                "seq_len": t.seq_len,
                "lr": t.lr,
                "seed": config.project.seed,
                "task_lr_decay": t.task_lr_decay,
                "outer_lr": config.aggregation.outer_lr,
                "outer_momentum": config.aggregation.outer_momentum,
                "combine": config.aggregation.combine,
                "initial_eval_loss": initial,
                "eval_loss": evals,
                "final_eval_loss": last,
                "baseline_eval_loss": baseline,
                "loss_ratio": ratio,
                "codec": format!("{codec:?}"),
                "step_codec": format!("{:?}", step_codec(&config)),
                "error_feedback": error_feedback,
                "update_bytes": update_bytes,
                "step_bytes": step_bytes,
                "data_bytes": data_bytes,
                "comm_reduction": comm_reduction,
                "decentralized_s": decentralized_s,
                "baseline_s": baseline_s,
            }
        })
    );
}
