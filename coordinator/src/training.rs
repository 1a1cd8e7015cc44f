//! What a project trains on and how: the training text and its shards, the run's
//! learning-rate schedule, the update codec, and the training tasks of each round with their
//! specs. [`project`](crate::project) re-exports these under their old paths.

use std::path::{Path, PathBuf};

use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::compress::{CodecSpec, DEFAULT_INT8_BLOCK};
use canopy_protocol::messages::{AdamWParams, ModelDelta, ShardTokens, TaskSpec, TrainSpec};
use canopy_protocol::{Digest, Manifest, ObjectKind};
use canopy_text::{Tokenizer, TokenizerKind};

use canopy_shaders::{Cpu, Params};

use crate::config::{BuiltinText, Compression, Config, TokenizerChoice};
use crate::project::ProjectError;
use crate::state::{self, StateError, TaskKind};

type Result<T> = std::result::Result<T, ProjectError>;

/// The project's training text: the files of `data.corpus` (plain text, or JSONL with a
/// `text` field; `data.corpus` may also name one such file), or the built-in text
/// (`data.text`: the Universal Declaration of Human Rights in 24 languages, or generated
/// sentences).
pub fn training_text(config: &Config) -> Result<Vec<u8>> {
    let Some(dir) = &config.data.corpus else {
        return Ok(match config.data.text {
            BuiltinText::Udhr => canopy_text::udhr::training_text(),
            BuiltinText::Generated => canopy_shaders::textgen::generate(
                config.project.seed,
                config.data.generated_bytes as usize,
            ),
        });
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

/// The file in a project directory that keeps its BPE tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The project's training data as the swarm trains on it: the tokenizer, the shards' bytes
/// (text for byte-level, 16-bit token ids for BPE) and the held-out token ids.
#[derive(Debug, Clone)]
pub struct TrainingData {
    /// The tokenizer that made the shards and the held-out ids.
    pub tokenizer: Tokenizer,
    /// A BPE tokenizer as the object the swarm stores (its `tokenizer.json`), which every
    /// task names; `None` for byte-level.
    pub tokenizer_object: Option<(Manifest, Vec<u8>)>,
    /// How the shards hold token ids, as task specs say it.
    pub tokens: ShardTokens,
    /// Each training shard's bytes.
    pub shards: Vec<Vec<u8>>,
    /// The held-out token ids the coordinator evaluates on.
    pub heldout: Vec<u32>,
    /// Bytes of text per held-out token, over the targets [`evaluate`](crate::project::evaluate)
    /// scores (1 for byte-level): a loss in nats per token times this, over ln 2, is bits per
    /// byte.
    pub heldout_bytes_per_token: f64,
}

impl TrainingData {
    /// The project's data by `config`. A BPE tokenizer is read from `dir/tokenizer.json`
    /// when the project has one, else trained on the training part of the text (never the
    /// held-out tail) and written there, so a restart shards the text the same way.
    pub fn load(config: &Config, dir: Option<&Path>) -> Result<Self> {
        let text = training_text(config)?;
        let (train, tail) = holdout_split(&text, config.data.holdout);
        let shard_bytes = config.data.shard_bytes.max(1) as usize;
        let tokenizer = tokenizer(config, dir, train)?;
        let invalid = |e: canopy_text::TokenizerError| ProjectError::Invalid(e.to_string());
        let TokenizerKind::Bpe { vocab } = tokenizer.kind() else {
            return Ok(Self {
                tokenizer,
                tokenizer_object: None,
                tokens: ShardTokens::Bytes,
                shards: train.chunks(shard_bytes).map(<[u8]>::to_vec).collect(),
                heldout: tail.iter().map(|&b| u32::from(b)).collect(),
                heldout_bytes_per_token: 1.0,
            });
        };
        let json = tokenizer.to_json().map_err(invalid)?.into_bytes();
        let manifest = Manifest::build(
            ObjectKind::Tokenizer,
            &json,
            DEFAULT_CHUNK_SIZE,
            Default::default(),
        )
        .map_err(canopy_node::NodeError::from)?;
        let tokens = ShardTokens::U16 {
            tokenizer: manifest.root,
            vocab,
        };
        let encode = |part: &[u8]| {
            let docs = documents(part);
            tokenizer
                .encode_documents(docs.iter().map(String::as_str))
                .map_err(invalid)
        };
        let heldout = encode(tail)?;
        let shards = encode(train)?
            .chunks((shard_bytes / tokens.width()).max(1))
            .map(|ids| tokens.encode(ids))
            .collect();
        Ok(Self {
            heldout_bytes_per_token: bytes_per_token(&tokenizer, &heldout, config),
            tokenizer,
            tokenizer_object: Some((manifest, json)),
            tokens,
            shards,
            heldout,
        })
    }

    /// Tokens in one shard's bytes.
    pub fn shard_tokens(&self, shard: &[u8]) -> usize {
        shard.len() / self.tokens.width()
    }

    /// The token ids of all training shards, in order (what a centralized baseline trains on).
    pub fn train_tokens(&self) -> Vec<u32> {
        self.shards
            .iter()
            .flat_map(|s| self.tokens.decode(s).unwrap_or_default())
            .collect()
    }
}

/// The documents of a training text (separated by blank lines), as UTF-8 (invalid bytes
/// replaced).
fn documents(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .split("\n\n")
        .filter(|d| !d.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The project's tokenizer: byte-level, or BPE read from or trained into `dir`.
fn tokenizer(config: &Config, dir: Option<&Path>, train: &[u8]) -> Result<Tokenizer> {
    if config.model.tokenizer == TokenizerChoice::Bytes {
        return Ok(Tokenizer::bytes());
    }
    let invalid = |e: canopy_text::TokenizerError| ProjectError::Invalid(e.to_string());
    let path = dir.map(|d| d.join(TOKENIZER_FILE));
    if let Some(path) = &path
        && path.exists()
    {
        return read_tokenizer(config, path);
    }
    let docs = documents(train);
    let tk = Tokenizer::train_bpe(config.model.bpe_vocab, docs.iter()).map_err(invalid)?;
    if let Some(path) = &path {
        let json = tk.to_json().map_err(invalid)?;
        std::fs::write(path, json).map_err(|source| ProjectError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(tk)
}

/// The project's tokenizer as an export needs it: byte-level, or the BPE tokenizer the
/// project trained when it started (kept in `dir`).
pub fn project_tokenizer(config: &Config, dir: &Path) -> Result<Tokenizer> {
    match config.model.tokenizer {
        TokenizerChoice::Bytes => Ok(Tokenizer::bytes()),
        TokenizerChoice::Bpe => read_tokenizer(config, &dir.join(TOKENIZER_FILE)),
    }
}

/// Reads a project's BPE tokenizer, which must have `model.bpe_vocab` tokens.
fn read_tokenizer(config: &Config, path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let tk = Tokenizer::from_json(&bytes)
        .map_err(|e| ProjectError::Invalid(format!("{}: {e}", path.display())))?;
    if tk.vocab() != config.model.bpe_vocab {
        return Err(ProjectError::Invalid(format!(
            "{} has {} tokens but model.bpe_vocab is {}; restore the setting or start a new \
             project directory",
            path.display(),
            tk.vocab(),
            config.model.bpe_vocab
        )));
    }
    Ok(tk)
}

/// Bytes of text per token over the held-out targets that evaluation scores (the windows of
/// [`canopy_shaders::eval_window_starts`]).
fn bytes_per_token(tokenizer: &Tokenizer, heldout: &[u32], config: &Config) -> f64 {
    let seq = config.training.seq_len.max(1) as usize;
    let windows = EVAL_BATCHES * config.training.batch_size.max(1) as usize;
    let (mut tokens, mut bytes) = (0usize, 0usize);
    for start in canopy_shaders::eval_window_starts(heldout.len(), seq, windows) {
        for &t in &heldout[start + 1..=start + seq] {
            tokens += 1;
            bytes += tokenizer.token_bytes(t).len();
        }
    }
    if tokens == 0 || bytes == 0 {
        1.0
    } else {
        bytes as f64 / tokens as f64
    }
}

/// Held-out loss of `params` ([`EVAL_BATCHES`] batches of the training batch size).
pub fn evaluate(config: &Config, params: &Params, heldout: &[u32]) -> Result<f32> {
    let t = &config.training;
    Ok(canopy_shaders::evaluate(
        &Cpu::new(),
        params,
        heldout,
        t.batch_size as usize,
        t.seq_len as usize,
        EVAL_BATCHES,
    )?)
}

/// Batches of held-out windows the coordinator evaluates on.
pub const EVAL_BATCHES: usize = 8;

/// The training part of a text and its held-out tail (the last `holdout` share of it).
pub fn holdout_split(text: &[u8], holdout: f64) -> (&[u8], &[u8]) {
    text.split_at(text.len() - (text.len() as f64 * holdout) as usize)
}

/// The codec of the model step the coordinator publishes each round.
pub fn step_codec(config: &Config) -> CodecSpec {
    CodecSpec::Quant {
        block: DEFAULT_INT8_BLOCK,
        bits: config.aggregation.step_bits,
    }
}

/// Bits per value of `lowbit` compression when `compression_bits` is unset.
pub const DEFAULT_LOWBIT_BITS: u8 = 4;

/// The codec of the configuration.
pub fn codec(config: &Config) -> CodecSpec {
    match config.training.compression {
        Compression::F32 => CodecSpec::F32,
        Compression::F16 => CodecSpec::F16,
        Compression::Int8 => CodecSpec::Int8 {
            block: DEFAULT_INT8_BLOCK,
        },
        Compression::TopK => {
            let density_ppm = ((config.training.topk_density * 1e6) as u32).clamp(1, 1_000_000);
            match config.training.compression_bits {
                None => CodecSpec::TopK { density_ppm },
                Some(bits) => CodecSpec::TopKQuant { density_ppm, bits },
            }
        }
        Compression::LowBit => CodecSpec::Quant {
            block: DEFAULT_INT8_BLOCK,
            bits: config
                .training
                .compression_bits
                .unwrap_or(DEFAULT_LOWBIT_BITS),
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
    tokens: ShardTokens,
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
        tokens,
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
    tokens: ShardTokens,
) -> std::result::Result<(), StateError> {
    let t = &config.training;
    for index in 0..t.tasks_per_round {
        let spec = train_spec(config, shards, round, index, model, delta, tokens);
        let tokens = u64::from(t.inner_steps) * u64::from(t.batch_size) * u64::from(t.seq_len);
        tx.insert_task(
            round,
            TaskKind::Train,
            &encode_spec(&TaskSpec::Train(spec))?,
            None,
            tokens,
        )?;
    }
    Ok(())
}
