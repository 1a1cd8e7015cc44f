//! Messages about work: task specs, leases and results.

use serde::{Deserialize, Serialize};

use super::{MAX_TEXT, check_list, check_text};
use crate::chunk::SignedManifest;
use crate::compress::CodecSpec;
use crate::error::MessageError;
use crate::id::Digest;

/// A task's number, unique within a coordinator's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// A lease's number; a task re-leased after expiry gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

/// Most data shards one task may name.
pub const MAX_SHARDS_PER_TASK: usize = 1024;

/// What a node is asked to compute. Only the kernels shipped with Canopy run these: a spec
/// names data and parameters, never code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskSpec {
    /// Train the model on a data shard and return a pseudo-gradient.
    Train(TrainSpec),
    /// Compute quality signals and MinHash signatures over a corpus chunk.
    Corpus(CorpusSpec),
}

impl TaskSpec {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        match self {
            TaskSpec::Train(train) => train.validate(),
            TaskSpec::Corpus(corpus) => corpus.validate(),
        }
    }
}

/// AdamW hyperparameters for the inner steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    /// Learning rate at the end of warmup.
    pub lr: f32,
    /// Learning rate of the last step: the rate follows a cosine from `lr` down to it, so a
    /// project's rounds together follow one schedule (at most `lr`).
    pub lr_end: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Linear warm-up steps.
    pub warmup_steps: u32,
    /// Gradient-norm clip (0 disables).
    pub grad_clip: f32,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            lr_end: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: 0,
            grad_clip: 1.0,
        }
    }
}

/// One DiLoCo inner phase: start from a model version, take `inner_steps` AdamW steps on the
/// named shards, return the compressed pseudo-gradient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The model version (round) the task starts from.
    pub model_version: u64,
    /// Root digest of that version's weights manifest.
    pub model: Digest,
    /// Training data shards, by object root.
    #[serde(with = "crate::id::digest_list")]
    pub data_shards: Vec<Digest>,
    /// Inner optimizer steps.
    pub inner_steps: u32,
    /// Sequences per step.
    pub batch_size: u32,
    /// Tokens per sequence.
    pub seq_len: u32,
    /// Seed for data order and dropout, so a re-run gives the same update.
    pub seed: u64,
    /// Inner optimizer settings.
    pub optimizer: AdamWParams,
    /// How to compress the pseudo-gradient.
    pub compression: CodecSpec,
    /// A cheaper way to the model: the previous version and the compressed step from it. A
    /// node that holds `base` fetches `delta` instead of the full weights and checks that the
    /// rebuilt weights have the root `model`.
    pub model_delta: Option<ModelDelta>,
    /// How the shards' bytes are token ids.
    pub tokens: ShardTokens,
}

/// How a training shard's bytes are token ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardTokens {
    /// Byte-level: each byte is a token id.
    #[default]
    Bytes,
    /// 16-bit little-endian token ids of a byte-level BPE vocabulary of `vocab` tokens,
    /// made with the tokenizer stored as the object `tokenizer` (`ObjectKind::Tokenizer`,
    /// its `tokenizer.json`). A shard of odd length, or with an id of `vocab` or more, is
    /// refused.
    U16 {
        /// Root of the tokenizer object the ids come from.
        tokenizer: Digest,
        /// Tokens in the vocabulary.
        vocab: u32,
    },
}

impl ShardTokens {
    /// The token ids of a shard's bytes; refused when the bytes do not hold whole 16-bit ids
    /// (the vocabulary bound is the model's to check).
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<u32>, MessageError> {
        match self {
            ShardTokens::Bytes => Ok(bytes.iter().map(|&b| u32::from(b)).collect()),
            ShardTokens::U16 { .. } if !bytes.len().is_multiple_of(2) => {
                Err(MessageError::Invalid {
                    field: "train.tokens",
                    reason: "a shard of 16-bit token ids has an odd length",
                })
            }
            ShardTokens::U16 { .. } => Ok(bytes
                .chunks_exact(2)
                .map(|p| u32::from(u16::from_le_bytes([p[0], p[1]])))
                .collect()),
        }
    }

    /// Encodes token ids (each below 2¹⁶ for `U16`, below 2⁸ for `Bytes`) as a shard.
    pub fn encode(self, ids: &[u32]) -> Vec<u8> {
        match self {
            ShardTokens::Bytes => ids.iter().map(|&t| t as u8).collect(),
            ShardTokens::U16 { .. } => ids.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect(),
        }
    }

    /// Bytes one token takes in a shard.
    pub fn width(self) -> usize {
        match self {
            ShardTokens::Bytes => 1,
            ShardTokens::U16 { .. } => 2,
        }
    }
}

/// How a node rebuilds a model version from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDelta {
    /// Root of the previous version's weights.
    pub base: Digest,
    /// Root of the compressed step (`ObjectKind::ModelDelta`): new = base + step.
    pub delta: Digest,
}

impl TrainSpec {
    fn validate(&self) -> Result<(), MessageError> {
        check_list("train.data_shards", &self.data_shards, MAX_SHARDS_PER_TASK)?;
        let positive = [
            ("train.inner_steps", self.inner_steps),
            ("train.batch_size", self.batch_size),
            ("train.seq_len", self.seq_len),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(MessageError::Invalid {
                    field,
                    reason: "must be at least 1",
                });
            }
        }
        let o = &self.optimizer;
        let finite = [
            o.lr,
            o.lr_end,
            o.beta1,
            o.beta2,
            o.eps,
            o.weight_decay,
            o.grad_clip,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0)
            || o.beta1 >= 1.0
            || o.beta2 >= 1.0
            || o.lr_end > o.lr
        {
            return Err(MessageError::Invalid {
                field: "train.optimizer",
                reason: "hyperparameters must be finite, non-negative, betas below 1, lr_end at most lr",
            });
        }
        if let ShardTokens::U16 { vocab, .. } = self.tokens
            && !(1..=1 << 16).contains(&vocab)
        {
            return Err(MessageError::Invalid {
                field: "train.tokens",
                reason: "a 16-bit vocabulary holds 1 to 65536 tokens",
            });
        }
        self.compression
            .validate()
            .map_err(|_| MessageError::Invalid {
                field: "train.compression",
                reason: "codec parameters out of range",
            })
    }
}

/// MinHash settings for corpus tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinHashParams {
    /// Number of hash permutations (signature length).
    pub num_perm: u32,
    /// Words per shingle.
    pub shingle_words: u32,
    /// Seed of the permutation family.
    pub seed: u64,
}

impl Default for MinHashParams {
    fn default() -> Self {
        Self {
            num_perm: 128,
            shingle_words: 5,
            seed: 0x00ca_0097,
        }
    }
}

/// Per-document quality signals and MinHash over one corpus chunk. Deterministic: two peers
/// must produce the same result hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusSpec {
    /// The corpus chunk, by object root.
    pub chunk: Digest,
    /// MinHash settings.
    pub minhash: MinHashParams,
}

/// Largest MinHash signature a task may ask for.
pub const MAX_NUM_PERM: u32 = 1024;

impl CorpusSpec {
    fn validate(&self) -> Result<(), MessageError> {
        let m = &self.minhash;
        if m.num_perm == 0 || m.num_perm > MAX_NUM_PERM {
            return Err(MessageError::Invalid {
                field: "corpus.minhash.num_perm",
                reason: "must be between 1 and 1024",
            });
        }
        if m.shingle_words == 0 || m.shingle_words > 32 {
            return Err(MessageError::Invalid {
                field: "corpus.minhash.shingle_words",
                reason: "must be between 1 and 32",
            });
        }
        Ok(())
    }
}

/// The coordinator leases a task to a node until a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The lease.
    pub lease: LeaseId,
    /// The task leased.
    pub task: TaskId,
    /// What to compute.
    pub spec: TaskSpec,
    /// When the lease expires unless renewed, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// A node asks to keep a lease while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenew {
    /// The lease.
    pub lease: LeaseId,
    /// Progress so far in thousandths.
    pub progress_permille: u16,
}

/// The coordinator extends a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenewed {
    /// The lease.
    pub lease: LeaseId,
    /// The new deadline, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why a node hands a lease back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// The volunteer stopped the node (Ctrl-C, SIGTERM).
    Shutdown,
    /// The volunteer paused the node.
    Paused,
    /// The task failed on this node.
    Failed(String),
}

/// A node hands a lease back so the task can go elsewhere at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRelease {
    /// The lease.
    pub lease: LeaseId,
    /// Why.
    pub reason: ReleaseReason,
}

impl LeaseRelease {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        match &self.reason {
            ReleaseReason::Failed(why) => check_text("lease_release.reason", why, MAX_TEXT),
            _ => Ok(()),
        }
    }
}

/// What a training task produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutput {
    /// The compressed pseudo-gradient, as a manifest signed by the node; its chunks are
    /// uploaded or served separately.
    pub update: SignedManifest,
    /// Mean training loss over the inner steps.
    pub train_loss: f32,
    /// Tokens processed.
    pub tokens: u64,
}

/// What a corpus task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusOutput {
    /// The per-document results object (signals and signatures), by root digest. Two honest
    /// peers produce the same one.
    pub result: Digest,
    /// Documents processed.
    pub documents: u64,
}

/// A finished task's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskOutput {
    /// See [`TrainOutput`].
    Train(Box<TrainOutput>),
    /// See [`CorpusOutput`].
    Corpus(CorpusOutput),
}

/// A node returns a finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The lease it ran under.
    pub lease: LeaseId,
    /// The task.
    pub task: TaskId,
    /// What it produced.
    pub output: TaskOutput,
    /// Wall time spent, in milliseconds (feeds the node's throughput estimate).
    pub compute_ms: u64,
}

impl TaskResult {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        match &self.output {
            TaskOutput::Train(train) => {
                if !train.train_loss.is_finite() {
                    return Err(MessageError::Invalid {
                        field: "task_result.train_loss",
                        reason: "must be finite",
                    });
                }
                train
                    .update
                    .manifest()
                    .validate_structure()
                    .map_err(|_| MessageError::Invalid {
                        field: "task_result.update",
                        reason: "manifest breaks the chunking rules",
                    })
            }
            TaskOutput::Corpus(_) => Ok(()),
        }
    }
}

/// The coordinator's answer to a result: sent only once the result is durably recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAck {
    /// The task.
    pub task: TaskId,
    /// Whether it was accepted.
    pub accepted: bool,
    /// Why not, when refused.
    pub reason: Option<String>,
}

impl ResultAck {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        match &self.reason {
            Some(reason) => check_text("result_ack.reason", reason, MAX_TEXT),
            None => Ok(()),
        }
    }
}
