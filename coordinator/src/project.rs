//! A training project on disk: its configuration, identity, state database, chunk store,
//! training data, and the model of the round in progress. It opens rounds (publishing a model
//! version and its tasks) and closes them: it gathers and screens the round's updates, takes
//! the outer step ([`outer::outer_step`]), evaluates and stores the new version.
//!
//! Everything a round needs is rebuilt from the directory: the data is deterministic from the
//! configuration, the model and momentum are objects in the store named by the `rounds` table.
//! So a coordinator killed at any point and started again on the same directory carries on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use canopy_node::objects;
use canopy_node::store::ChunkStore;
use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::{Digest, Keypair, Manifest, ObjectKind, SignedManifest};
use canopy_shaders::{ModelConfig, Params};

use crate::aggregate::{self, AggregateConfig, Combine, OuterOptimizer};
use crate::config::Config;
use crate::judge::{LossSpread, LossVerdict};
use crate::outer;
use crate::sampling::{self, Sampler};
use crate::state::{State, StateError};
use crate::training::make_tasks;

mod close;
pub use crate::training::{
    TrainingData, codec, decode_spec, encode_spec, evaluate, lr_schedule, step_codec, train_spec,
    training_text,
};

/// The state's meta key naming the checkpoint of the step carry (see
/// [`OuterOptimizer::step_carry`]) after the latest closed round.
pub const STEP_CARRY_META: &str = "step_carry";

/// What can go wrong running a project.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store, an object or the swarm failed.
    #[error(transparent)]
    Node(#[from] canopy_node::NodeError),
    /// The model or a kernel failed.
    #[error(transparent)]
    Compute(#[from] canopy_shaders::ShaderError),
    /// Aggregation failed.
    #[error(transparent)]
    Aggregate(#[from] aggregate::AggregateError),
    /// The outer step failed.
    #[error(transparent)]
    OuterStep(#[from] outer::OuterStepError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The project's data or directory is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The run's sampling secret could not be had.
    #[error(transparent)]
    Sampling(#[from] sampling::SamplingError),
}

impl ProjectError {
    /// Whether trying again later may succeed: a busy or locked database, or an interrupted
    /// or timed-out read or write. The coordinator retries these instead of stopping.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectError::State(e) => e.is_transient(),
            ProjectError::Node(canopy_node::NodeError::Io { source, .. })
            | ProjectError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, ProjectError>;

/// The state database's file name inside a project directory.
pub const DB_FILE: &str = "canopy.db";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    canopy_node::worker::now_ms()
}

/// The model of the round in progress.
#[derive(Debug, Clone)]
pub struct Current {
    /// The round.
    pub round: u64,
    /// Its model version.
    pub params: Arc<Params>,
    /// That version's object root.
    pub model_root: Digest,
}

/// An open project.
pub struct Project {
    /// The configuration.
    pub config: Config,
    /// The project directory.
    pub dir: PathBuf,
    /// The coordinator's identity.
    pub keys: Keypair,
    /// The state database (see [`Project::state`]).
    state: Mutex<State>,
    /// The chunk store.
    pub store: Arc<ChunkStore>,
    /// The model size.
    pub model: ModelConfig,
    /// The held-out token ids the coordinator evaluates on.
    pub heldout: Vec<u32>,
    /// Bytes of text per held-out token (see [`TrainingData`]).
    pub heldout_bytes_per_token: f64,
    /// The tokenizer of the training data.
    pub tokenizer: canopy_text::Tokenizer,
    /// How the training shards hold tokens.
    pub tokens: canopy_protocol::messages::ShardTokens,
    /// The training shards, by root.
    pub shards: Vec<Digest>,
    current: Mutex<Current>,
    optimizer: Mutex<OuterOptimizer>,
    /// Counters the service updates and the dashboard's `/metrics` reports.
    pub metrics: Arc<crate::dashboard::Metrics>,
    /// The held-out loss of the last model version an update was checked against.
    check_base: Mutex<Option<(u64, f32)>>,
    /// The secret re-runs are drawn with (never sent).
    sampler: Sampler,
    /// The loss changes of recently accepted updates, which the next are judged against.
    loss_spread: Mutex<LossSpread>,
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What closing a round produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundSummary {
    /// The round closed.
    pub round: u64,
    /// Mean inner training loss of the updates used.
    pub train_loss: Option<f64>,
    /// Held-out loss of the new model.
    pub eval_loss: f64,
    /// Updates accepted in the round.
    pub accepted: u64,
    /// Updates rejected in the round.
    pub rejected: u64,
    /// Updates aggregated (late ones included).
    pub aggregated: usize,
    /// Updates clipped.
    pub clipped: usize,
    /// Whether this was the last round.
    pub finished: bool,
}

impl Project {
    /// Opens the project in `dir` with `config`, creating round 0 on first run.
    pub fn open(dir: &Path, config: Config) -> Result<Self> {
        let store = Arc::new(ChunkStore::open(dir, config.store.cap_mib << 20)?);
        Self::open_with_store(dir, config, store)
    }

    /// [`Project::open`] on a chunk store already open (the one a swarm serves from).
    pub fn open_with_store(dir: &Path, config: Config, store: Arc<ChunkStore>) -> Result<Self> {
        config.validate()?;
        let (keys, _) = canopy_node::identity::load_or_create(dir)?;
        let mut state = State::open(&dir.join(DB_FILE))?;
        let data = TrainingData::load(&config, Some(dir))?;
        let mut model = config.model.preset.config();
        model.vocab = data.tokenizer.vocab() as usize;
        if config.training.seq_len as usize > model.seq_len {
            return Err(ProjectError::Invalid(format!(
                "training.seq_len {} exceeds the model's context of {}",
                config.training.seq_len, model.seq_len
            )));
        }
        let need = config.training.seq_len as usize + 2;
        if data.shards.is_empty()
            || data.shards.iter().any(|s| data.shard_tokens(s) < need)
            || data.heldout.len() < need
        {
            let tokens: usize = data.shards.iter().map(|s| data.shard_tokens(s)).sum();
            return Err(ProjectError::Invalid(format!(
                "the training text ({tokens} tokens) is too short for shards of {} bytes and sequences of {}",
                config.data.shard_bytes, config.training.seq_len
            )));
        }
        let now = now_ms();
        let mut roots = Vec::with_capacity(data.shards.len());
        let mut manifests = Vec::with_capacity(data.shards.len() + 1);
        // A BPE tokenizer is stored and signed like the model, and named by every task.
        if let Some((manifest, json)) = &data.tokenizer_object {
            store.put_object(manifest, json)?;
            manifests.push(
                manifest
                    .clone()
                    .sign(&keys)
                    .map_err(canopy_node::NodeError::from)?,
            );
        }
        let tokens = data.tokens;
        for shard in &data.shards {
            let manifest = Manifest::build(
                ObjectKind::TrainingShard,
                shard,
                DEFAULT_CHUNK_SIZE,
                Default::default(),
            )
            .map_err(canopy_node::NodeError::from)?;
            store.put_object(&manifest, shard)?;
            roots.push(manifest.root);
            manifests.push(manifest.sign(&keys).map_err(canopy_node::NodeError::from)?);
        }
        let layout = Digest::of(
            &roots
                .iter()
                .flat_map(|r| *r.as_bytes())
                .collect::<Vec<u8>>(),
        )
        .to_string();
        let existing = state.read().current_round()?;
        match (state.read().meta("data_layout")?, &existing) {
            (Some(stored), Some(_)) if stored != layout => {
                return Err(ProjectError::Invalid(
                    "the training data differs from the data this run started with; \
                     restore the [data] settings or start a new project directory"
                        .into(),
                ));
            }
            _ => {}
        }
        let (current, optimizer) = match existing {
            Some(round) => {
                let params = load_params(&state, &store, &round.model_root)?;
                let momentum = match &round.momentum_root {
                    Some(root) => load_params(&state, &store, root)?.into_values(),
                    None => vec![0.0; model.num_params()],
                };
                // What the published steps have not carried yet (low-bit steps only).
                let carry = match state.read().meta(STEP_CARRY_META)? {
                    Some(root) => {
                        let root = root.parse().map_err(|e| {
                            ProjectError::Invalid(format!("the step carry's root: {e}"))
                        })?;
                        load_params(&state, &store, &root)?.into_values()
                    }
                    _ => Vec::new(),
                };
                let optimizer = OuterOptimizer::with_momentum(
                    config.aggregation.outer_lr,
                    config.aggregation.outer_momentum,
                    momentum,
                )?
                .with_step(step_codec(&config), carry)?;
                (
                    Current {
                        round: round.round,
                        params: Arc::new(params),
                        model_root: round.model_root,
                    },
                    optimizer,
                )
            }
            None => {
                let (signed, bytes, params) =
                    objects::initial_weights_object(&keys, &model, config.project.seed)?;
                store.put_object(signed.manifest(), &bytes)?;
                let root = signed.manifest().root;
                let eval = evaluate(&config, &params, &data.heldout)?;
                state.transaction(|tx| {
                    for m in &manifests {
                        tx.put_manifest(m, now)?;
                    }
                    tx.put_manifest(&signed, now)?;
                    tx.set_meta("data_layout", &layout)?;
                    tx.set_meta("coordinator", &keys.peer_id().to_string())?;
                    tx.set_meta("initial_eval_loss", &eval.to_string())?;
                    tx.open_round(0, &root, None, now)?;
                    make_tasks(tx, &config, &roots, 0, &root, None, tokens)
                })?;
                let optimizer = OuterOptimizer::new(
                    model.num_params(),
                    config.aggregation.outer_lr,
                    config.aggregation.outer_momentum,
                )?
                .with_step(step_codec(&config), Vec::new())?;
                (
                    Current {
                        round: 0,
                        params: Arc::new(params),
                        model_root: root,
                    },
                    optimizer,
                )
            }
        };
        let freed = crate::retention::collect_on_start(
            &mut state,
            &store,
            current.round,
            config.store.checkpoint_every,
        )?;
        if freed > 0 {
            tracing::info!(freed, "collected objects the run no longer needs");
        }
        let sampler = sampling::load_or_create(&mut state)?;
        state.transaction(|tx| {
            tx.set_meta(
                crate::samples::BYTES_PER_TOKEN_META,
                &data.heldout_bytes_per_token.to_string(),
            )
        })?;
        let ver = &config.verification;
        let loss_spread = Mutex::new(LossSpread::new(ver.max_loss_increase, ver.outlier_spreads));
        Ok(Self {
            sampler,
            loss_spread,
            heldout_bytes_per_token: data.heldout_bytes_per_token,
            heldout: data.heldout,
            tokenizer: data.tokenizer,
            tokens,
            shards: roots,
            current: Mutex::new(current),
            optimizer: Mutex::new(optimizer),
            metrics: Arc::new(crate::dashboard::Metrics::new()),
            check_base: Mutex::new(None),
            state: Mutex::new(state),
            store,
            model,
            keys,
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Whether the result of `task` is re-run by the datacenter tier, drawn with the run's
    /// secret at `verification.rerun_fraction`.
    pub fn rerun_sampled(&self, task: u64) -> bool {
        self.sampler
            .rerun(task, self.config.verification.rerun_fraction)
    }

    /// Judges an update's change of held-out loss against recent accepted ones.
    pub fn judge_loss_change(&self, change: f64) -> LossVerdict {
        self.loss_spread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .judge(change)
    }

    /// Remembers an accepted update's change of held-out loss.
    pub fn record_loss_change(&self, change: f64) {
        self.loss_spread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(change);
    }

    /// The state database, locked.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outer optimizer as the last closed round left it (for tests of its checkpoint).
    #[cfg(test)]
    pub(crate) fn outer_optimizer(&self) -> OuterOptimizer {
        self.optimizer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The round in progress.
    pub fn current(&self) -> Current {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether every configured round has closed.
    pub fn finished(&self) -> bool {
        self.current().round >= u64::from(self.config.training.rounds)
    }

    /// The parameters of model version `round` (the current one, or one from the store).
    pub fn params_of(&self, round: u64) -> Result<Arc<Params>> {
        let current = self.current();
        if current.round == round {
            return Ok(current.params);
        }
        let record = self
            .state()
            .read()
            .round(round)?
            .ok_or_else(|| ProjectError::Invalid(format!("no round {round}")))?;
        Ok(Arc::new(load_params(
            &self.state(),
            &self.store,
            &record.model_root,
        )?))
    }

    /// The held-out loss of model `version` and of that version with `update` subtracted, on
    /// the same held-out batches as the rounds' evaluation (one batch alone is too noisy to
    /// judge an honest update by). The first figure is computed once per version.
    pub fn update_loss_change(&self, version: u64, update: &[f32]) -> Result<(f32, f32)> {
        let base = self.params_of(version)?;
        let cached = *self.check_base.lock().unwrap_or_else(|e| e.into_inner());
        let before = match cached {
            Some((v, loss)) if v == version => loss,
            _ => {
                let loss = evaluate(&self.config, &base, &self.heldout)?;
                *self.check_base.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, loss));
                loss
            }
        };
        let mut applied = (*base).clone();
        for (p, d) in applied.values_mut().iter_mut().zip(update) {
            *p -= d;
        }
        Ok((before, evaluate(&self.config, &applied, &self.heldout)?))
    }

    /// The signed manifest and bytes of an object the coordinator holds.
    pub fn object(&self, root: &Digest) -> Result<Option<(SignedManifest, Vec<u8>)>> {
        let Some(signed) = self.state().read().manifest(root)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_object(signed.manifest())?
            .map(|bytes| (signed, bytes)))
    }
}

/// Reads model weights (or a momentum buffer) from the store.
pub fn load_params(state: &State, store: &ChunkStore, root: &Digest) -> Result<Params> {
    let signed = state.read().manifest(root)?.ok_or_else(|| {
        ProjectError::Invalid(format!("object {root} is not in the state database"))
    })?;
    let bytes = store.get_object(signed.manifest())?.ok_or_else(|| {
        ProjectError::Invalid(format!("object {root} is missing from the chunk store"))
    })?;
    Ok(objects::params_from_object(signed.manifest(), &bytes)?)
}

/// How the configuration's `[aggregation]` combines a round's updates.
pub fn aggregate_config(config: &Config) -> Result<AggregateConfig> {
    let a = &config.aggregation;
    let combine = match a.combine.parse()? {
        Combine::TrimmedMean { .. } => Combine::TrimmedMean { trim: a.trim },
        other => other,
    };
    Ok(AggregateConfig {
        combine,
        clip_multiple: a.clip_multiple,
    })
}
