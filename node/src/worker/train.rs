//! Training tasks on the worker: the model version (rebuilt from the one held and the
//! coordinator's step, or fetched whole), the inner AdamW phase on the worker's backend,
//! paced by `--cpu-share`, and the signed pseudo-gradient it provides.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use canopy_protocol::messages::{ModelDelta, ShardTokens, TrainOutput, TrainSpec};
use canopy_protocol::{Digest, ObjectKind};
use canopy_shaders::{AdamW, InnerSettings, LrSchedule, Params, Runtime, TrainConfig, train_inner};

use super::Worker;
use crate::error::NodeError;
use crate::objects;
use crate::polite::throttle::Throttle;

impl Worker {
    /// Rebuilds the task's model version from the one this node holds and the coordinator's
    /// compressed step, and checks the result against the version's root. `None` (with a
    /// warning) when anything fails: the caller then fetches the full weights.
    pub(super) async fn rebuild(
        &self,
        base: &Params,
        delta: ModelDelta,
        spec: &TrainSpec,
    ) -> Option<Params> {
        let rebuilt = async {
            let (_, bytes) = self.object(delta.delta, ObjectKind::ModelDelta).await?;
            let params = objects::apply_delta(base, &bytes)?;
            let (manifest, _) =
                objects::weights_manifest(ObjectKind::ModelWeights, &params, spec.model_version)?;
            if manifest.root != spec.model {
                return Err(NodeError::BadObject(format!(
                    "the model rebuilt from delta {} is not version {}",
                    delta.delta, spec.model
                )));
            }
            Ok::<_, NodeError>(params)
        }
        .await;
        match rebuilt {
            Ok(params) => {
                tracing::debug!(round = spec.model_version, "model rebuilt from its delta");
                Some(params)
            }
            Err(e) => {
                tracing::warn!("fetching the full model instead of its delta: {e}");
                None
            }
        }
    }

    /// The model version `root` in full: drawn here from its seed when it is the initial model
    /// (and the draw matches its root), fetched otherwise.
    pub(super) async fn full_model(&self, root: Digest) -> Result<Params, NodeError> {
        let signed = self.manifest(root, ObjectKind::ModelWeights).await?;
        match objects::seeded_weights(signed.manifest()) {
            Ok(Some(params)) => {
                tracing::debug!(%root, "initial model drawn from its seed");
                return Ok(params);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("fetching the initial model instead of drawing it: {e}"),
        }
        let fetched = self
            .client
            .fetch_from(signed.clone(), self.coordinator_hint())
            .await?;
        objects::params_from_object(signed.manifest(), &fetched.data)
    }

    /// Runs a training task. `Ok(None)`: interrupted (stop, pause, or the lease was lost).
    pub(super) async fn train(
        &mut self,
        spec: &TrainSpec,
        task: u64,
        progress: Arc<AtomicU32>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Option<(TrainOutput, u64, f64)>, NodeError> {
        self.shared.update(|s| s.state = "fetching".into());
        let params = match &self.model {
            Some((root, params)) if *root == spec.model => params.clone(),
            _ => {
                let rebuilt = match (&self.model, spec.model_delta) {
                    (Some((root, base)), Some(delta)) if *root == delta.base => {
                        self.rebuild(&base.clone(), delta, spec).await
                    }
                    _ => None,
                };
                let params = match rebuilt {
                    Some(params) => Arc::new(params),
                    None => Arc::new(self.full_model(spec.model).await?),
                };
                self.model = Some((spec.model, params.clone()));
                // What this node fetched of the version (its step, or its weights) stays
                // provided for peers a while, then goes.
                if let Some(delta) = spec.model_delta {
                    self.retain(delta.delta).await;
                }
                self.retain(spec.model).await;
                params
            }
        };
        let mut text = Vec::new();
        for root in &spec.data_shards {
            let (_, bytes) = self.object(*root, ObjectKind::TrainingShard).await?;
            text.extend_from_slice(&bytes);
        }
        let config = *params.config();
        let tokens = shard_tokens(spec.tokens, &text, config.vocab)?;
        let (batch, seq) = (spec.batch_size as usize, spec.seq_len as usize);
        if seq > config.seq_len {
            return Err(NodeError::BadObject(format!(
                "the task asks for sequences of {seq}, the model takes at most {}",
                config.seq_len
            )));
        }
        let needed = task_memory(&config, batch, seq);
        if let Some(limit) = self.config.memory_limit
            && needed > limit
        {
            return Err(NodeError::Coordinator(format!(
                "the task needs about {} MiB, more than the {} MiB this node allows",
                needed >> 20,
                limit >> 20
            )));
        }
        if self.shared.interrupted().is_some() || cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.shared.update(|s| s.state = "training".into());
        let settings = inner_settings(spec);
        let runtime = self.runtime.clone();
        let shared = self.shared.clone();
        let start = params.clone();
        let steps = spec.inner_steps;
        let mut throttle = Throttle::new(self.config.cpu_share);
        let report = tokio::task::spawn_blocking(move || {
            let interrupted = || cancel.load(Ordering::Relaxed) || shared.interrupted().is_some();
            let on_step = |step: u32, _loss: f32| {
                let done = (step + 1) as f32 / steps as f32;
                progress.store((done * 1000.0) as u32, Ordering::Relaxed);
                shared.update(|s| s.progress = done);
                if let Some(t) = throttle.as_mut() {
                    t.pace(interrupted);
                }
                if interrupted() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let report = match &*runtime {
                Runtime::Gpu(gpu) => train_inner(&**gpu, &start, &tokens, &settings, on_step),
                Runtime::Cpu(cpu) => train_inner(cpu, &start, &tokens, &settings, on_step),
            };
            // Time spent resting under --cpu-share is not compute.
            let rested = throttle.map_or(0.0, |t| t.rested().as_secs_f64());
            report.map(|r| r.map(|r| (r, rested)))
        })
        .await
        .map_err(|e| NodeError::Coordinator(format!("the training thread failed: {e}")))??;
        let Some((report, rested)) = report else {
            return Ok(None);
        };
        self.shared.update(|s| s.state = "uploading".into());
        let update = objects::pseudo_gradient(&params, &report.params, spec.compression)?;
        let (signed, bytes) = objects::update_object(
            &self.keys,
            &update,
            canopy_protocol::messages::TaskId(task),
            spec.model_version,
        )?;
        self.client.provide(signed.clone(), bytes).await?;
        self.retain(signed.manifest().root).await;
        Ok(Some((
            TrainOutput {
                update: signed,
                train_loss: report.mean_loss,
                tokens: report.tokens,
            },
            report.tokens,
            (report.secs - rested).max(0.0),
        )))
    }
}

/// The token ids of a task's shards, as its spec says they are stored; refused when the
/// bytes do not hold whole ids or an id is outside the model's vocabulary of `vocab`.
pub(super) fn shard_tokens(
    format: ShardTokens,
    bytes: &[u8],
    vocab: usize,
) -> Result<Vec<u32>, NodeError> {
    if let ShardTokens::U16 { vocab: v, .. } = format
        && v as usize != vocab
    {
        return Err(NodeError::BadObject(format!(
            "the task's vocabulary of {v} tokens is not the model's {vocab}"
        )));
    }
    let tokens = format
        .decode(bytes)
        .map_err(|e| NodeError::BadObject(e.to_string()))?;
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(NodeError::BadObject(format!(
            "a shard holds token {bad}, outside the model's vocabulary of {vocab}"
        )));
    }
    Ok(tokens)
}

/// The inner phase a training spec asks for: its steps, batch, window length, learning-rate
/// schedule (warmup, then a cosine from `lr` to `lr_end`) and AdamW settings.
pub fn inner_settings(spec: &TrainSpec) -> InnerSettings {
    let o = spec.optimizer;
    InnerSettings {
        steps: spec.inner_steps,
        batch: spec.batch_size as usize,
        seq: spec.seq_len as usize,
        lr: LrSchedule {
            peak: o.lr,
            warmup: o.warmup_steps,
            min: o.lr_end.min(o.lr),
        },
        optimizer: TrainConfig {
            adamw: AdamW {
                lr: o.lr,
                beta1: o.beta1,
                beta2: o.beta2,
                eps: o.eps,
                weight_decay: o.weight_decay,
            },
            clip_norm: (o.grad_clip > 0.0).then_some(o.grad_clip),
        },
        seed: spec.seed,
    }
}

/// Bytes a training task needs on its device: weights, gradients and both AdamW moments, plus
/// the activations of one batch (a generous estimate).
pub fn task_memory(config: &canopy_shaders::ModelConfig, batch: usize, seq: usize) -> u64 {
    let params = config.num_params() as u64 * 4 * 4;
    let tokens = (batch * seq) as u64;
    let per_layer =
        tokens * config.hidden as u64 * 16 * 4 + (batch * config.heads * seq * seq) as u64 * 4 * 2;
    let logits = tokens * config.vocab as u64 * 4 * 2;
    params + per_layer * config.layers as u64 + logits
}
