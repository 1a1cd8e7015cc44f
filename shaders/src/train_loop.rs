//! A local training loop over a byte stream: what a node runs for the inner steps of a
//! `TrainShard` task, and what tests and benches use to see that the model learns.
//!
//! [`train_local`] initializes a model from a seed (or [`train_local_from`] takes given
//! parameters), splits the text into a training head and a held-out tail, and takes
//! `steps` AdamW steps ([`Trainer`]) on batches of random windows of the head, drawn from
//! ChaCha8 seeded with the settings' seed, with a learning rate of linear warmup then cosine
//! decay ([`LrSchedule`]). Every `eval_every` steps (and before the first step and after the
//! last) it measures the mean loss on fixed windows of the tail. Each byte is a token; the
//! target of each position is the next byte.
//!
//! Wall-clock time is measured only to report throughput; nothing depends on it, so a run
//! is reproducible from its inputs.

use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::backend::Backend;
use crate::error::{Result, ShaderError};
use crate::model::{Model, ModelConfig, Params, TrainConfig, Trainer, Workspace};

/// A learning rate of linear warmup then cosine decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The rate at the end of warmup.
    pub peak: f32,
    /// Steps of linear warmup: step `i < warmup` (from 0) uses `peak · (i + 1) / warmup`.
    pub warmup: u32,
    /// The rate the cosine decays to at the last step.
    pub min: f32,
}

impl LrSchedule {
    /// The rate of step `step` (from 0) of a run of `total` steps: warmup, then
    /// `min + (peak − min) · (1 + cos(π · p)) / 2` with `p` going from 0 after warmup to 1 at
    /// the last step.
    pub fn at(&self, step: u32, total: u32) -> f32 {
        if step < self.warmup {
            return self.peak * (step + 1) as f32 / self.warmup as f32;
        }
        let span = total.saturating_sub(self.warmup).saturating_sub(1).max(1);
        let p = (f64::from(step - self.warmup) / f64::from(span)).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        (f64::from(self.min) + f64::from(self.peak - self.min) * cos) as f32
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [("lr.peak", self.peak), ("lr.min", self.min)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(param(name, v, "must be finite and not negative"));
            }
        }
        if self.min > self.peak {
            return Err(param("lr.min", self.min, "must not exceed lr.peak"));
        }
        Ok(())
    }
}

/// Settings of [`train_local`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    /// AdamW steps to take.
    pub steps: u32,
    /// Windows per batch.
    pub batch: usize,
    /// Tokens per window (at most the model's `seq_len`).
    pub seq: usize,
    /// The learning-rate schedule (it overrides `optimizer.adamw.lr`).
    pub lr: LrSchedule,
    /// AdamW's other hyperparameters and gradient clipping.
    pub optimizer: TrainConfig,
    /// Seeds the init of [`train_local`] and the draw of the training windows.
    pub seed: u64,
    /// Evaluate every this many steps (0: only before the first step and after the last).
    pub eval_every: u32,
    /// Batches of held-out windows per evaluation (at most as many as the tail holds).
    pub eval_batches: usize,
    /// Share of the text, at its end, held out for evaluation (in `(0, 1)`).
    pub holdout: f32,
}

impl Default for TrainSettings {
    /// 200 steps of 8 windows of 128 bytes, peak rate 3·10⁻³ after 20 steps of warmup down to
    /// 3·10⁻⁴, BLOOM's AdamW with clipping at 1, an evaluation of 4 batches every 50 steps on
    /// the last 10% of the text.
    fn default() -> Self {
        Self {
            steps: 200,
            batch: 8,
            seq: 128,
            lr: LrSchedule {
                peak: 3e-3,
                warmup: 20,
                min: 3e-4,
            },
            optimizer: TrainConfig::default(),
            seed: 0,
            eval_every: 50,
            eval_batches: 4,
            holdout: 0.1,
        }
    }
}

/// What one step measured, passed to the `on_step` callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step, from 0.
    pub step: u32,
    /// Mean cross-entropy of the batch before the update (nats per byte).
    pub loss: f32,
    /// The learning rate the step used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Whether the gradients were clipped.
    pub clipped: bool,
    /// The held-out loss after this step, when the step was followed by an evaluation.
    pub eval_loss: Option<f32>,
}

/// A held-out loss and when it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    /// Steps taken before the evaluation (0: the initial model).
    pub after_steps: u32,
    /// Mean cross-entropy over the held-out windows (nats per byte).
    pub loss: f32,
}

/// The result of [`train_local`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// The training loss of every step, before its update.
    pub losses: Vec<f32>,
    /// The held-out losses, the first before any step and the last after the last step.
    pub eval_losses: Vec<EvalPoint>,
    /// Training tokens per second of the steps (evaluation time excluded).
    pub tokens_per_sec: f64,
    /// The trained parameters.
    pub params: Params,
}

/// Trains a model of size `config`, initialized from `settings.seed`, on `text`; see the
/// module docs. `on_step` sees each step's numbers as they come.
pub fn train_local<B: Backend, T: Token>(
    backend: &B,
    config: &ModelConfig,
    text: &[T],
    settings: &TrainSettings,
    on_step: impl FnMut(&StepReport),
) -> Result<TrainReport> {
    let params = Params::init(config, settings.seed)?;
    train_local_from(backend, &params, text, settings, on_step)
}

/// [`train_local`] starting from `params` (a published model version, say).
pub fn train_local_from<B: Backend, T: Token>(
    backend: &B,
    params: &Params,
    text: &[T],
    settings: &TrainSettings,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainReport> {
    let s = settings;
    s.lr.validate()?;
    if !(s.holdout > 0.0 && s.holdout < 1.0) {
        return Err(param("holdout", s.holdout, "must be between 0 and 1"));
    }
    if s.eval_batches == 0 {
        return Err(param("eval_batches", 0, "must be at least 1"));
    }
    let split = text.len() - (text.len() as f64 * f64::from(s.holdout)) as usize;
    let (train, tail) = text.split_at(split);
    // Each window reads seq + 1 bytes (inputs and next-byte targets).
    for (name, part) in [
        ("text (training part)", train),
        ("text (held-out tail)", tail),
    ] {
        if part.len() <= s.seq {
            return Err(ShaderError::Parameter {
                name,
                value: format!("{} bytes", part.len()),
                reason: "must hold more than seq bytes",
            });
        }
    }

    let mut model = Model::new(backend, params)?;
    let mut ws = model.workspace(backend, s.batch, s.seq)?;
    let mut trainer = Trainer::new(backend, &model, s.optimizer)?;
    let eval = EvalSet::new(tail, s.batch, s.seq, s.eval_batches);
    let mut windows = Windows::new(train, s.batch, s.seq, s.seed);

    let mut losses = Vec::with_capacity(s.steps as usize);
    let mut eval_losses = vec![EvalPoint {
        after_steps: 0,
        loss: eval.loss(backend, &model, &mut ws)?,
    }];
    let mut train_secs = 0.0;
    for step in 0..s.steps {
        let (inputs, targets) = windows.next_batch();
        let lr = s.lr.at(step, s.steps);
        trainer.set_lr(lr);
        let t0 = Instant::now();
        let stats = trainer.step(backend, &mut model, &mut ws, inputs, targets)?;
        train_secs += t0.elapsed().as_secs_f64();
        losses.push(stats.loss);

        let done = step + 1;
        let eval_loss = if done == s.steps || (s.eval_every > 0 && done % s.eval_every == 0) {
            let loss = eval.loss(backend, &model, &mut ws)?;
            eval_losses.push(EvalPoint {
                after_steps: done,
                loss,
            });
            Some(loss)
        } else {
            None
        };
        on_step(&StepReport {
            step,
            loss: stats.loss,
            lr,
            grad_norm: stats.grad_norm,
            clipped: stats.clipped,
            eval_loss,
        });
    }
    let trained = (u64::from(s.steps) * ws.tokens() as u64) as f64;
    Ok(TrainReport {
        losses,
        eval_losses,
        tokens_per_sec: if train_secs > 0.0 {
            trained / train_secs
        } else {
            0.0
        },
        params: model.params(backend)?,
    })
}

/// Settings of one DiLoCo inner phase: what a `TrainShard` task asks a node to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InnerSettings {
    /// AdamW steps to take.
    pub steps: u32,
    /// Windows per batch.
    pub batch: usize,
    /// Tokens per window (at most the model's `seq_len`).
    pub seq: usize,
    /// The learning-rate schedule over the inner steps.
    pub lr: LrSchedule,
    /// AdamW's other hyperparameters and gradient clipping.
    pub optimizer: TrainConfig,
    /// Seeds the draw of the training windows, so a re-run gives the same steps.
    pub seed: u64,
}

/// What [`train_inner`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct InnerReport {
    /// The parameters after the inner steps.
    pub params: Params,
    /// Mean training loss over the steps (before each update).
    pub mean_loss: f32,
    /// Training tokens processed.
    pub tokens: u64,
    /// Seconds spent in the steps.
    pub secs: f64,
}

/// Takes `settings.steps` AdamW steps from `params` on random windows of `text` (all of it:
/// the coordinator keeps the held-out data). `on_step` sees each step's number and loss and
/// may stop the run early (a volunteer stopping or pausing the node): then the result is
/// `Ok(None)`.
pub fn train_inner<B: Backend, T: Token>(
    backend: &B,
    params: &Params,
    text: &[T],
    settings: &InnerSettings,
    mut on_step: impl FnMut(u32, f32) -> std::ops::ControlFlow<()>,
) -> Result<Option<InnerReport>> {
    let s = settings;
    s.lr.validate()?;
    if text.len() <= s.seq {
        return Err(ShaderError::Parameter {
            name: "text",
            value: format!("{} bytes", text.len()),
            reason: "must hold more than seq bytes",
        });
    }
    let mut model = Model::new(backend, params)?;
    let mut ws = model.workspace(backend, s.batch, s.seq)?;
    let mut trainer = Trainer::new(backend, &model, s.optimizer)?;
    let mut windows = Windows::new(text, s.batch, s.seq, s.seed);
    let (mut loss_sum, mut secs) = (0.0f64, 0.0f64);
    for step in 0..s.steps {
        let (inputs, targets) = windows.next_batch();
        trainer.set_lr(s.lr.at(step, s.steps));
        let t0 = Instant::now();
        let stats = trainer.step(backend, &mut model, &mut ws, inputs, targets)?;
        secs += t0.elapsed().as_secs_f64();
        loss_sum += f64::from(stats.loss);
        if on_step(step, stats.loss).is_break() {
            return Ok(None);
        }
    }
    Ok(Some(InnerReport {
        params: model.params(backend)?,
        mean_loss: (loss_sum / f64::from(s.steps.max(1))) as f32,
        tokens: u64::from(s.steps) * ws.tokens() as u64,
        secs,
    }))
}

/// Mean loss of `params` on held-out `text`: up to `batches` batches of consecutive,
/// non-overlapping windows from its start.
pub fn evaluate<B: Backend, T: Token>(
    backend: &B,
    params: &Params,
    text: &[T],
    batch: usize,
    seq: usize,
    batches: usize,
) -> Result<f32> {
    if text.len() <= seq || batches == 0 {
        return Err(ShaderError::Parameter {
            name: "held-out text",
            value: format!("{} bytes, {batches} batches", text.len()),
            reason: "must hold more than seq bytes, and at least one batch is needed",
        });
    }
    let model = Model::new(backend, params)?;
    let mut ws = model.workspace(backend, batch, seq)?;
    EvalSet::new(text, batch, seq, batches).loss(backend, &model, &mut ws)
}

/// Mixed into the seed for the window draws, so they do not reuse the init's stream.
const WINDOW_STREAM: u64 = 0x7769_6e64_6f77_7321;

/// Batches of random training windows (inputs and next-byte targets), drawn from ChaCha8.
struct Windows<'a, T> {
    text: &'a [T],
    batch: usize,
    seq: usize,
    rng: ChaCha8Rng,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl<'a, T: Token> Windows<'a, T> {
    /// `text` must hold more than `seq` tokens.
    fn new(text: &'a [T], batch: usize, seq: usize, seed: u64) -> Self {
        Self {
            text,
            batch,
            seq,
            rng: ChaCha8Rng::seed_from_u64(seed ^ WINDOW_STREAM),
            inputs: vec![0; batch * seq],
            targets: vec![0; batch * seq],
        }
    }

    fn next_batch(&mut self) -> (&[u32], &[u32]) {
        let (seq, starts) = (self.seq, self.text.len() - self.seq);
        for b in 0..self.batch {
            let start = (self.rng.next_u64() % starts as u64) as usize;
            let window = &self.text[start..=start + seq];
            fill(&mut self.inputs[b * seq..][..seq], &window[..seq]);
            fill(&mut self.targets[b * seq..][..seq], &window[1..]);
        }
        (&self.inputs, &self.targets)
    }
}

fn fill<T: Token>(dst: &mut [u32], tokens: &[T]) {
    for (d, &t) in dst.iter_mut().zip(tokens) {
        *d = t.into();
    }
}

/// A token id as the training loop reads it: a byte of byte-level text (`u8`), or an id of
/// a larger vocabulary (`u16`, `u32`).
pub trait Token: Copy + Into<u32> + Send + Sync {}

impl<T: Copy + Into<u32> + Send + Sync> Token for T {}

fn param(name: &'static str, value: impl ToString, reason: &'static str) -> ShaderError {
    ShaderError::Parameter {
        name,
        value: value.to_string(),
        reason,
    }
}

/// Where the held-out windows start in a tail of `len` tokens: at most `windows` runs of
/// `seq + 1` tokens (inputs and targets), spread evenly from the start of the tail to its end
/// and never overlapping, so a tail that holds several languages or documents is scored on
/// all of them. Empty when the tail is shorter than one window.
pub fn eval_window_starts(len: usize, seq: usize, windows: usize) -> Vec<usize> {
    let seq = seq.max(1);
    let n = (len.saturating_sub(1) / seq).min(windows);
    if n == 0 {
        return Vec::new();
    }
    // n windows of seq targets fit in len - 1 targets, so the spacing is at least seq.
    let span = len - 1 - seq;
    (0..n)
        .map(|k| if n == 1 { 0 } else { k * span / (n - 1) })
        .collect()
}

/// The held-out windows ([`eval_window_starts`]), at most `batches · batch` of them,
/// grouped into batches (the last padded with ignored targets).
struct EvalSet {
    batches: Vec<(Vec<u32>, Vec<u32>)>,
}

impl EvalSet {
    fn new<T: Token>(tail: &[T], batch: usize, seq: usize, batches: usize) -> Self {
        let windows: Vec<&[T]> = eval_window_starts(tail.len(), seq, batch * batches)
            .into_iter()
            .map(|start| &tail[start..=start + seq])
            .collect();
        let batches = windows
            .chunks(batch)
            .map(|group| {
                let mut inputs = vec![0u32; batch * seq];
                let mut targets = vec![u32::MAX; batch * seq];
                for (b, window) in group.iter().enumerate() {
                    fill(&mut inputs[b * seq..][..seq], &window[..seq]);
                    fill(&mut targets[b * seq..][..seq], &window[1..]);
                }
                (inputs, targets)
            })
            .collect();
        Self { batches }
    }

    /// Mean loss per counted target over every batch.
    fn loss<B: Backend>(
        &self,
        backend: &B,
        model: &Model<B>,
        ws: &mut Workspace<B>,
    ) -> Result<f32> {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (inputs, targets) in &self.batches {
            let valid = targets.iter().filter(|&&t| t != u32::MAX).count();
            let loss = model.forward(backend, ws, inputs, targets)?;
            sum += f64::from(loss) * valid as f64;
            count += valid;
        }
        Ok((sum / count.max(1) as f64) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::textgen;

    #[test]
    fn held_out_windows_spread_over_the_tail_without_overlap() {
        // Room for 9 windows of 10 targets in 100 tokens; 4 asked for: first at 0, last
        // ending on the last token.
        let starts = eval_window_starts(100, 10, 4);
        assert_eq!(starts, [0, 29, 59, 89]);
        assert_eq!(starts[3] + 10, 99);
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= 10);
        }
        // More asked for than fit: as many as fit, packed.
        assert_eq!(eval_window_starts(31, 10, 8), [0, 10, 20]);
        assert_eq!(eval_window_starts(11, 10, 8), [0]);
        assert!(eval_window_starts(10, 10, 8).is_empty());
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_the_minimum() {
        let lr = LrSchedule {
            peak: 1.0,
            warmup: 4,
            min: 0.1,
        };
        let total = 14;
        let rates: Vec<f32> = (0..total).map(|s| lr.at(s, total)).collect();
        assert_eq!(rates[..4], [0.25, 0.5, 0.75, 1.0]);
        assert_eq!(rates[4], 1.0);
        assert!((rates[13] - 0.1).abs() < 1e-6, "{rates:?}");
        // Halfway through the decay (between steps 8 and 9) it is halfway down.
        assert!(
            ((rates[8] + rates[9]) / 2.0 - 0.55).abs() < 1e-6,
            "{rates:?}"
        );
        assert!(rates[4..].windows(2).all(|w| w[1] <= w[0]), "{rates:?}");
        // Past the end it stays at the minimum; no warmup starts at the peak.
        assert!((lr.at(100, total) - 0.1).abs() < 1e-6);
        let flat = LrSchedule { warmup: 0, ..lr };
        assert_eq!(flat.at(0, 10), 1.0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let backend = Cpu::new();
        let config = ModelConfig {
            vocab: 260,
            hidden: 16,
            layers: 1,
            heads: 2,
            seq_len: 16,
        };
        let text = textgen::generate(0, 1000);
        let ok = TrainSettings {
            steps: 1,
            batch: 2,
            seq: 16,
            ..TrainSettings::default()
        };
        let cases = [
            (TrainSettings { holdout: 0.0, ..ok }, "holdout"),
            (TrainSettings { seq: 17, ..ok }, "seq"),
            (TrainSettings { batch: 0, ..ok }, "batch"),
            (
                TrainSettings {
                    eval_batches: 0,
                    ..ok
                },
                "eval_batches",
            ),
            (
                TrainSettings {
                    holdout: 0.01,
                    ..ok
                },
                "text (held-out tail)",
            ),
            (
                TrainSettings {
                    lr: LrSchedule {
                        peak: f32::NAN,
                        ..ok.lr
                    },
                    ..ok
                },
                "lr.peak",
            ),
        ];
        for (settings, name) in cases {
            match train_local(&backend, &config, &text, &settings, |_| {}) {
                Err(ShaderError::Parameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(train_local(&backend, &config, &text, &ok, |_| {}).is_ok());
    }

    /// Same inputs, same run: the losses, the held-out losses and the weights repeat bit for
    /// bit, and the callback sees every step.
    #[test]
    fn runs_are_reproducible() {
        let backend = Cpu::new();
        let config = ModelConfig {
            vocab: 260,
            hidden: 16,
            layers: 1,
            heads: 2,
            seq_len: 16,
        };
        let text = textgen::generate(5, 20_000);
        let settings = TrainSettings {
            steps: 6,
            batch: 2,
            seq: 16,
            eval_every: 4,
            ..TrainSettings::default()
        };
        let mut seen = Vec::new();
        let a = train_local(&backend, &config, &text, &settings, |r| seen.push(*r)).unwrap();
        let b = train_local(&backend, &config, &text, &settings, |_| {}).unwrap();
        assert_eq!(a.losses, b.losses);
        assert_eq!(a.eval_losses, b.eval_losses);
        assert_eq!(a.params, b.params);
        assert_eq!(seen.len(), 6);
        assert_eq!(seen.iter().map(|r| r.loss).collect::<Vec<_>>(), a.losses);
        let steps: Vec<u32> = a.eval_losses.iter().map(|e| e.after_steps).collect();
        assert_eq!(steps, [0, 4, 6]);
        assert_eq!(seen[3].eval_loss, Some(a.eval_losses[1].loss));
        assert_eq!(seen[4].eval_loss, None);
        let other = TrainSettings {
            seed: 1,
            ..settings
        };
        let c = train_local(&backend, &config, &text, &other, |_| {}).unwrap();
        assert_ne!(a.losses, c.losses);
    }

    /// An inner phase repeats from the same inputs, lowers the held-out loss, counts its
    /// tokens, and stops early (with no result) when its callback says so.
    #[test]
    fn inner_phases_repeat_learn_and_stop_when_asked() {
        let backend = Cpu::new();
        let config = ModelConfig {
            vocab: 260,
            hidden: 16,
            layers: 1,
            heads: 2,
            seq_len: 16,
        };
        let text = textgen::generate(7, 20_000);
        let (train, tail) = text.split_at(18_000);
        let params = Params::init(&config, 3).unwrap();
        let settings = InnerSettings {
            steps: 30,
            batch: 4,
            seq: 16,
            lr: LrSchedule {
                peak: 1e-2,
                warmup: 2,
                min: 1e-3,
            },
            optimizer: TrainConfig::default(),
            seed: 11,
        };
        let go = |_, _| std::ops::ControlFlow::Continue(());
        let a = train_inner(&backend, &params, train, &settings, go)
            .unwrap()
            .unwrap();
        let b = train_inner(&backend, &params, train, &settings, go)
            .unwrap()
            .unwrap();
        assert_eq!(a.params, b.params);
        assert_eq!(a.tokens, 30 * 4 * 16);
        let before = evaluate(&backend, &params, tail, 4, 16, 4).unwrap();
        let after = evaluate(&backend, &a.params, tail, 4, 16, 4).unwrap();
        assert!(after < before - 0.3, "held-out loss {before} -> {after}");
        let mut steps = 0;
        let stopped = train_inner(&backend, &params, train, &settings, |step, _| {
            steps += 1;
            if step == 4 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert!(stopped.is_none());
        assert_eq!(steps, 5);
        assert!(evaluate(&backend, &params, &tail[..10], 4, 16, 4).is_err());
        assert!(train_inner(&backend, &params, &train[..16], &settings, go).is_err());
    }

    /// The tiny preset learns the generated multilingual text on the CPU path: from about
    /// ln 260 ≈ 5.56 nats per byte to well below 3, on held-out text as well.
    #[test]
    fn tiny_learns_the_generated_text() {
        let backend = Cpu::new();
        let config = ModelConfig::tiny();
        let text = textgen::generate(0, 1 << 20);
        let settings = TrainSettings {
            steps: 300,
            batch: 8,
            seq: 64,
            lr: LrSchedule {
                peak: 5e-3,
                warmup: 20,
                min: 5e-4,
            },
            eval_every: 100,
            eval_batches: 8,
            ..TrainSettings::default()
        };
        let report = train_local(&backend, &config, &text, &settings, |r| {
            if r.step % 10 == 0 || r.eval_loss.is_some() {
                eprintln!(
                    "step {:4} loss {:.3} lr {:.2e} grad norm {:.2} eval {:?}",
                    r.step, r.loss, r.lr, r.grad_norm, r.eval_loss
                );
            }
        })
        .unwrap();
        let tail = report.losses[report.losses.len() - 10..]
            .iter()
            .sum::<f32>()
            / 10.0;
        let first_eval = report.eval_losses[0].loss;
        let last_eval = report.eval_losses[report.eval_losses.len() - 1].loss;
        eprintln!(
            "tiny: first loss {:.3}, mean of the last 10 {tail:.3}, held-out {first_eval:.3} -> {last_eval:.3}, {:.0} tokens/s",
            report.losses[0], report.tokens_per_sec
        );
        assert!(
            (report.losses[0] - 260f32.ln()).abs() < 0.3,
            "start {}",
            report.losses[0]
        );
        assert!(tail < 2.5, "{:?}", report.losses);
        assert!(last_eval < 2.5, "{:?}", report.eval_losses);
        assert!(report.tokens_per_sec > 0.0);
    }
}
