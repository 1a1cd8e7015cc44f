//! `canopy-node train`: a model trained on this machine alone, from local text, without a coordinator, with its model card.

use std::time::Instant;

use anyhow::Context;
use canopy_node::cli::TrainArgs;
use canopy_shaders::Runtime;

use crate::runtime;

/// Trains a model on local text alone and writes it, with its model card, as `args` say.
pub(crate) fn train(args: TrainArgs) -> anyhow::Result<()> {
    use canopy_shaders::train_loop::StepReport;
    use canopy_shaders::{LrSchedule, TrainSettings, train_local};
    let config = args.preset.config();
    let seq = args.seq as usize;
    anyhow::ensure!(
        seq <= config.seq_len,
        "--seq {seq} is longer than the {:?} preset's context of {}",
        args.preset,
        config.seq_len
    );
    let text = match &args.text {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => canopy_text::udhr::training_text(),
    };
    anyhow::ensure!(
        text.len() >= 20 * (seq + 1),
        "the text has {} bytes; it needs at least {} for --seq {seq} and a held-out tail",
        text.len(),
        20 * (seq + 1)
    );
    let settings = TrainSettings {
        steps: args.steps,
        batch: args.batch as usize,
        seq,
        lr: LrSchedule {
            peak: args.lr,
            warmup: (args.steps / 15).max(1),
            min: args.lr / 10.0,
        },
        seed: args.seed,
        eval_every: (args.steps / 3).max(1),
        ..TrainSettings::default()
    };
    let runtime = runtime(args.json)?;
    if !args.json {
        println!(
            "training {:?} ({} parameters) on {} bytes of {}, {} steps of {}x{seq} bytes",
            args.preset,
            config.num_params(),
            text.len(),
            args.text.as_ref().map_or(
                "the Universal Declaration of Human Rights in 24 languages".into(),
                |p| p.display().to_string()
            ),
            args.steps,
            args.batch
        );
    }
    let started = Instant::now();
    let tokens_per_step = (args.batch as usize * seq) as f64;
    let log_every = (args.steps / 20).max(1);
    let json = args.json;
    let on_step = |r: &StepReport| {
        if !r.step.is_multiple_of(log_every) && r.eval_loss.is_none() && r.step + 1 != args.steps {
            return;
        }
        let rate = tokens_per_step * f64::from(r.step + 1) / started.elapsed().as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::json!({ "step": r.step, "loss": r.loss, "lr": r.lr,
                    "grad_norm": r.grad_norm, "eval_loss": r.eval_loss, "tokens_per_sec": rate })
            );
        } else {
            let eval = r
                .eval_loss
                .map(|l| format!("  held-out {l:.3}"))
                .unwrap_or_default();
            println!(
                "step {:>5}  loss {:.3}{eval}  lr {:.2e}  {rate:.0} tokens/s",
                r.step, r.loss, r.lr
            );
        }
    };
    let report = match &runtime {
        Runtime::Gpu(gpu) => train_local(gpu.as_ref(), &config, &text, &settings, on_step),
        Runtime::Cpu(cpu) => train_local(cpu, &config, &text, &settings, on_step),
    }
    .context("training")?;
    let first = report.losses.first().copied().unwrap_or(f32::NAN);
    let tail = &report.losses[report.losses.len().saturating_sub(10)..];
    let last = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    let eval = report.eval_losses.last().map(|e| e.loss);
    if let Some(dir) = &args.export {
        canopy_shaders::export(&report.params, dir)
            .with_context(|| format!("exporting to {}", dir.display()))?;
        write_local_card(dir, &args, &config, &report)?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "summary": { "first_loss": first, "final_loss": last,
                "final_eval_loss": eval, "tokens_per_sec": report.tokens_per_sec,
                "export": args.export } })
        );
    } else {
        println!(
            "loss {first:.3} -> {last:.3} (last 10 steps), held-out {}, {:.0} tokens/s",
            eval.map_or("n/a".into(), |l| format!("{l:.3}")),
            report.tokens_per_sec
        );
        if let Some(dir) = &args.export {
            println!(
                "exported model.safetensors, config.json, the tokenizer and a model card to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The byte-level tokenizer's files and a model card beside a local training's export.
fn write_local_card(
    dir: &std::path::Path,
    args: &TrainArgs,
    config: &canopy_shaders::ModelConfig,
    report: &canopy_shaders::TrainReport,
) -> anyhow::Result<()> {
    use canopy_text::card::{ModelCard, Source};
    let tokenizer = canopy_text::Tokenizer::bytes();
    tokenizer.write_files(dir, config.seq_len)?;
    let source = match &args.text {
        None => Source {
            name: canopy_text::udhr::NAME.into(),
            license: canopy_text::udhr::LICENSE.into(),
            provenance: "the Universal Declaration of Human Rights in 24 translations".into(),
            bytes_per_language: canopy_text::udhr::bytes_per_language(),
        },
        Some(path) => Source {
            name: path
                .file_name()
                .map_or("text".into(), |n| n.to_string_lossy().into_owned()),
            license: "as given by the text's owner".into(),
            provenance: format!("the bytes of {}", path.display()),
            bytes_per_language: Vec::new(),
        },
    };
    let eval = report.eval_losses.last().map(|e| f64::from(e.loss));
    let card = ModelCard {
        name: "canopy-local".into(),
        license: "apache-2.0".into(),
        architecture: format!(
            "BLOOM (ALiBi): hidden size {}, {} layers, {} heads, vocabulary of {}",
            config.hidden, config.layers, config.heads, config.vocab
        ),
        parameters: config.num_params() as u64,
        context: config.seq_len,
        tokenizer: tokenizer.describe(),
        sources: vec![source],
        training: format!(
            "Trained on one machine by `canopy-node train`: {} AdamW steps of {} × {} bytes \
             (peak rate {}), the last 10% of the text held out.",
            args.steps, args.batch, args.seq, args.lr
        ),
        tokens: u64::from(args.steps) * u64::from(args.batch) * u64::from(args.seq),
        eval_loss: eval,
        bits_per_byte: eval.map(|l| l / std::f64::consts::LN_2),
        limitations: vec![
            "A small model trained briefly on one machine, to try Canopy's training; not an \
             assistant, and not to be relied on."
                .into(),
        ],
        ..ModelCard::default()
    };
    std::fs::write(dir.join("README.md"), card.to_markdown())
        .with_context(|| format!("writing the model card in {}", dir.display()))
}
