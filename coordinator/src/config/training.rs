//! `[training]` and `[aggregation]`: rounds, the inner optimiser, update compression, and how
//! a round's updates are combined.

use serde::{Deserialize, Serialize};

/// How a volunteer compresses the update it sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit integers with a per-tensor scale.
    Int8,
    /// Only the largest-magnitude entries (see `topk_density`); `"topk"`.
    TopK,
    /// Every entry in a few bits (see `compression_bits`); `"lowbit"`, the default.
    #[default]
    LowBit,
}

/// What happens to an update that arrives after its round has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LateUpdates {
    /// Discard it.
    #[default]
    Drop,
    /// Apply it in a later round, weighted by `staleness_decay ^ age`.
    Weight,
}

/// `[training]`: rounds, inner optimiser and round closing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Number of outer rounds to run; at least 1.
    pub rounds: u32,
    /// Local optimiser steps per training task; at least 1.
    pub inner_steps: u32,
    /// Sequences per inner step; at least 1.
    pub batch_size: u32,
    /// Tokens per sequence; at least 1.
    pub seq_len: u32,
    /// Peak inner learning rate; finite and above 0. Over the rounds the rate follows one
    /// cosine from `lr` (after warmup) down to `lr / 10`; each task follows its round's
    /// stretch of it, decaying at least to `task_lr_decay` of its starting rate.
    pub lr: f32,
    /// The share of its starting rate a task's rate decays to, in (0, 1]. 1 follows the run's
    /// schedule; lower values anneal every task, which keeps the local model of a small-batch
    /// task from ending noisy (its update would fail the held-out check) but costs progress.
    pub task_lr_decay: f32,
    /// Inner steps of linear learning-rate warmup at the start of the run (round 0).
    pub warmup_steps: u32,
    /// Inner steps of linear warmup at the start of every later task: each inner phase starts
    /// with fresh AdamW moments, whose first steps are large.
    pub round_warmup_steps: u32,
    /// Inner AdamW weight decay; finite and at least 0.
    pub weight_decay: f32,
    /// Maximum global gradient norm; finite and above 0.
    pub grad_clip: f32,
    /// How volunteers compress their updates.
    pub compression: Compression,
    /// Share of entries kept by `topk` compression, in (0, 1].
    pub topk_density: f32,
    /// Bits per entry: for `lowbit`, 2 to 8 (4 when unset); for `topk`, 2 to 8 send each kept
    /// entry as a sign and a magnitude level, unset sends them exactly (f32).
    pub compression_bits: Option<u8>,
    /// Training tasks handed out per round; at least 1.
    pub tasks_per_round: u32,
    /// Accepted updates that let a round close early; 1 to `tasks_per_round`.
    pub min_updates: u32,
    /// Seconds after which a round closes if at least one update was accepted.
    pub round_deadline_secs: u64,
    /// What to do with updates that arrive after their round closed.
    pub late_updates: LateUpdates,
    /// Weight factor per round of age for late updates, in (0, 1].
    pub staleness_decay: f32,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            rounds: 10,
            inner_steps: 50,
            batch_size: 8,
            seq_len: 64,
            lr: 3e-3,
            warmup_steps: 5,
            round_warmup_steps: 5,
            task_lr_decay: 0.1,
            weight_decay: 0.1,
            grad_clip: 1.0,
            compression: Compression::LowBit,
            topk_density: 0.01,
            compression_bits: None,
            tasks_per_round: 4,
            min_updates: 3,
            round_deadline_secs: 900,
            late_updates: LateUpdates::Drop,
            staleness_decay: 0.5,
        }
    }
}

/// `[aggregation]`: how accepted updates become the next global model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// `"trimmed_mean"`, `"median"` or `"mean"`.
    pub combine: String,
    /// Share trimmed from each end by `trimmed_mean`, in [0, 0.5).
    pub trim: f32,
    /// Clip each update's norm to this multiple of the median norm; 0 disables.
    pub clip_multiple: f32,
    /// Outer learning rate; finite and above 0.
    pub outer_lr: f32,
    /// Outer momentum, in [0, 1).
    pub outer_momentum: f32,
    /// Bits per value of the model step published each round, 2 to 8; the coordinator
    /// carries the rounding into the next step.
    pub step_bits: u8,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            combine: "trimmed_mean".to_owned(),
            trim: 0.25,
            clip_multiple: 2.0,
            outer_lr: 0.7,
            outer_momentum: 0.9,
            step_bits: 4,
        }
    }
}
