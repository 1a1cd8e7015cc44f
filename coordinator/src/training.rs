//! What a project trains on and how: the training text and its shards, the run's
//! learning-rate schedule, the update codec, and the training tasks of each round with their
//! specs. [`project`](crate::project) re-exports these under their old paths.

use std::path::{Path, PathBuf};

use canopy_protocol::Digest;
use canopy_protocol::compress::{CodecSpec, DEFAULT_INT8_BLOCK};
use canopy_protocol::messages::{AdamWParams, ModelDelta, TaskSpec, TrainSpec};

use crate::config::{Compression, Config};
use crate::project::ProjectError;
use crate::state::{self, StateError, TRAIN};

type Result<T> = std::result::Result<T, ProjectError>;

/// The project's training text: the files of `data.corpus` (plain text, or JSONL with a
/// `text` field; `data.corpus` may also name one such file), or the generated multilingual
/// text.
pub fn training_text(config: &Config) -> Result<Vec<u8>> {
    let Some(dir) = &config.data.corpus else {
        return Ok(canopy_shaders::textgen::generate(
            config.project.seed,
            config.data.generated_bytes as usize,
        ));
    };
    let io = |path: &Path, source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A single file (a corpus build's kept.jsonl) or a directory of them.
    let mut files: Vec<PathBuf> = if dir.is_file() {
        vec![dir.clone()]
    } else {
        std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt" || x == "jsonl"))
            .collect()
    };
    files.sort();
    let mut text = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        if path.extension().is_some_and(|x| x == "jsonl") {
            for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let doc: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                    ProjectError::Invalid(format!("{}:{}: {e}", path.display(), n + 1))
                })?;
                let Some(t) = doc.get("text").and_then(|t| t.as_str()) else {
                    return Err(ProjectError::Invalid(format!(
                        "{}:{}: no string field `text`",
                        path.display(),
                        n + 1
                    )));
                };
                text.extend_from_slice(t.as_bytes());
                text.extend_from_slice(b"\n\n");
            }
        } else {
            text.extend_from_slice(&bytes);
            text.extend_from_slice(b"\n\n");
        }
    }
    Ok(text)
}

/// Splits the text into training shards and the held-out tail.
pub fn split_text(text: &[u8], holdout: f64, shard_bytes: usize) -> (Vec<&[u8]>, &[u8]) {
    let split = text.len() - (text.len() as f64 * holdout) as usize;
    let (train, tail) = text.split_at(split);
    (train.chunks(shard_bytes.max(1)).collect(), tail)
}

/// The codec of the configuration.
pub fn codec(config: &Config) -> CodecSpec {
    match config.training.compression {
        Compression::F32 => CodecSpec::F32,
        Compression::F16 => CodecSpec::F16,
        Compression::Int8 => CodecSpec::Int8 {
            block: DEFAULT_INT8_BLOCK,
        },
        Compression::TopK => CodecSpec::TopK {
            density_ppm: ((config.training.topk_density * 1e6) as u32).clamp(1, 1_000_000),
        },
    }
}

/// The run's learning-rate schedule over all inner steps of all rounds: warmup, then a cosine
/// from `training.lr` to a tenth of it. Each task follows its round's stretch of it (after a
/// short warmup of its own, and annealed by `training.task_lr_decay`); the centralized
/// baseline follows it step by step.
pub fn lr_schedule(config: &Config) -> canopy_shaders::LrSchedule {
    let t = &config.training;
    canopy_shaders::LrSchedule {
        peak: t.lr,
        warmup: t.warmup_steps,
        min: t.lr * 0.1,
    }
}

/// The training spec of task `index` of `round`: its share of the shards (rotating with the
/// round), its seed, the inner optimizer.
pub fn train_spec(
    config: &Config,
    shards: &[Digest],
    round: u64,
    index: u32,
    model: &Digest,
    model_delta: Option<ModelDelta>,
) -> TrainSpec {
    let t = &config.training;
    let tasks = t.tasks_per_round.max(1) as usize;
    let per_task = shards.len().div_ceil(tasks).max(1);
    let start = (index as usize * per_task + round as usize * per_task) % shards.len().max(1);
    let data_shards = (0..per_task.min(shards.len()))
        .map(|k| shards[(start + k) % shards.len()])
        .collect();
    let seed = u64::from_le_bytes(
        *Digest::of(format!("{}/{round}/{index}", config.project.seed).as_bytes())
            .as_bytes()
            .first_chunk::<8>()
            .unwrap_or(&[0; 8]),
    );
    let schedule = lr_schedule(config);
    let total = t.rounds.saturating_mul(t.inner_steps);
    let start_step = u32::try_from(round)
        .unwrap_or(u32::MAX)
        .saturating_mul(t.inner_steps);
    // Each task follows its stretch of the run's schedule, after a warmup of its own (AdamW
    // starts afresh in every task), and decays at least to `task_lr_decay` of its start.
    let first = start_step.max(t.warmup_steps);
    let last = start_step
        .saturating_add(t.inner_steps.saturating_sub(1))
        .max(first);
    TrainSpec {
        model_version: round,
        model: *model,
        data_shards,
        inner_steps: t.inner_steps,
        batch_size: t.batch_size,
        seq_len: t.seq_len,
        seed,
        optimizer: AdamWParams {
            lr: schedule.at(first, total),
            lr_end: schedule
                .at(last, total)
                .min(schedule.at(first, total) * t.task_lr_decay),
            warmup_steps: if round == 0 {
                t.warmup_steps
            } else {
                t.round_warmup_steps
            },
            weight_decay: t.weight_decay,
            grad_clip: t.grad_clip,
            ..AdamWParams::default()
        },
        compression: codec(config),
        model_delta,
    }
}

/// Encodes a task spec for the `tasks` table.
pub fn encode_spec(spec: &TaskSpec) -> std::result::Result<Vec<u8>, StateError> {
    canopy_protocol::codec::encode(spec).map_err(|e| StateError::Corrupt {
        what: "task spec",
        reason: e.to_string(),
    })
}

/// Decodes a task spec from the `tasks` table.
pub fn decode_spec(bytes: &[u8]) -> std::result::Result<TaskSpec, StateError> {
    canopy_protocol::codec::decode::<TaskSpec, { canopy_protocol::codec::MAX_FRAME_LEN }>(bytes)
        .map_err(|e| StateError::Corrupt {
            what: "task spec",
            reason: e.to_string(),
        })
}

/// Inserts the training tasks of `round` (their specs by [`train_spec`]).
pub(crate) fn make_tasks(
    tx: &state::Tx<'_>,
    config: &Config,
    shards: &[Digest],
    round: u64,
    model: &Digest,
    delta: Option<ModelDelta>,
) -> std::result::Result<(), StateError> {
    let t = &config.training;
    for index in 0..t.tasks_per_round {
        let spec = train_spec(config, shards, round, index, model, delta);
        let tokens = u64::from(t.inner_steps) * u64::from(t.batch_size) * u64::from(t.seq_len);
        tx.insert_task(
            round,
            TRAIN,
            &encode_spec(&TaskSpec::Train(spec))?,
            None,
            tokens,
        )?;
    }
    Ok(())
}
