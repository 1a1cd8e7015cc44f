//! The training step on a model: AdamW with weight decay and gradient clipping, on the
//! backend, with the step's loss and gradient norm.

use super::{Model, Workspace};
use crate::backend::Backend;
use crate::error::{Result, ShaderError};
use crate::kernels::adamw::AdamW;
use crate::model::params::TensorKind;
use crate::model::scale::Scale;

/// Settings of the inner optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// AdamW hyperparameters. Weight decay applies to the weight matrices and the embedding
    /// only, never to biases or LayerNorm parameters (as in Megatron-DeepSpeed's BLOOM).
    pub adamw: AdamW,
    /// Scale the gradients down to this global L2 norm when it is larger (BLOOM: 1.0).
    pub clip_norm: Option<f32>,
}

impl Default for TrainConfig {
    /// BLOOM's AdamW settings with clipping at 1.0.
    fn default() -> Self {
        Self {
            adamw: AdamW::default(),
            clip_norm: Some(1.0),
        }
    }
}

/// What one training step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch, before the update (nats per token).
    pub loss: f32,
    /// Global L2 norm of the gradients, before clipping.
    pub grad_norm: f32,
    /// Whether the gradients were scaled down.
    pub clipped: bool,
}

/// AdamW over a [`Model`]: its moment buffers, its step count, and the scratch that gradient
/// clipping writes into.
pub struct Trainer<B: Backend> {
    config: TrainConfig,
    m: Vec<B::Buffer<f32>>,
    v: Vec<B::Buffer<f32>>,
    decay: Vec<bool>,
    step: u32,
    scale: Scale<B>,
    /// One clipped-gradient buffer per distinct tensor length.
    scratch: Vec<B::Buffer<f32>>,
    /// For each tensor, its buffer in `scratch`.
    scratch_of: Vec<usize>,
}

impl<B: Backend> Trainer<B> {
    /// Zeroed moments for `model`.
    pub fn new(backend: &B, model: &Model<B>, config: TrainConfig) -> Result<Self> {
        if let Some(clip) = config.clip_norm
            && !(clip.is_finite() && clip > 0.0)
        {
            return Err(ShaderError::Parameter {
                name: "clip_norm",
                value: clip.to_string(),
                reason: "must be positive and finite",
            });
        }
        let n = model.index.len();
        let (mut m, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut lengths: Vec<usize> = Vec::new();
        let mut scratch_of = Vec::with_capacity(n);
        for info in &model.index {
            m.push(backend.alloc(info.len(), "adamw m")?);
            v.push(backend.alloc(info.len(), "adamw v")?);
            let at = match lengths.iter().position(|&l| l == info.len()) {
                Some(at) => at,
                None => {
                    lengths.push(info.len());
                    lengths.len() - 1
                }
            };
            scratch_of.push(at);
        }
        let mut scratch = Vec::with_capacity(lengths.len());
        if config.clip_norm.is_some() {
            for &len in &lengths {
                scratch.push(backend.alloc(len, "clipped gradient")?);
            }
        }
        Ok(Self {
            config,
            m,
            v,
            decay: model
                .index
                .iter()
                .map(|t| t.kind == TensorKind::Weight)
                .collect(),
            step: 0,
            scale: Scale::new(backend, 1.0)?,
            scratch,
            scratch_of,
        })
    }

    /// AdamW steps taken so far.
    pub fn steps(&self) -> u32 {
        self.step
    }

    /// The optimizer's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Sets the learning rate of the following steps (for a schedule).
    pub fn set_lr(&mut self, lr: f32) {
        self.config.adamw.lr = lr;
    }

    /// One training step: forward, backward, clipping, AdamW.
    pub fn step(
        &mut self,
        backend: &B,
        model: &mut Model<B>,
        ws: &mut Workspace<B>,
        inputs: &[u32],
        targets: &[u32],
    ) -> Result<StepStats> {
        let loss = model.loss_and_grads(backend, ws, inputs, targets)?;
        let (grad_norm, clipped) = self.update(backend, model)?;
        Ok(StepStats {
            loss,
            grad_norm,
            clipped,
        })
    }

    /// Applies the gradients in `model` (from [`Model::backward`]): clips them to the
    /// configured norm, then takes one AdamW step. Returns the norm before clipping and
    /// whether it clipped. A non-finite gradient is an error and changes nothing.
    pub fn update(&mut self, backend: &B, model: &mut Model<B>) -> Result<(f32, bool)> {
        let grads: Vec<&B::Buffer<f32>> = model.grads.iter().collect();
        let norm = backend.global_norm(&grads)?;
        if !norm.is_finite() {
            let flat = model.grads(backend)?;
            let index = flat
                .values()
                .iter()
                .position(|v| !v.is_finite())
                .unwrap_or(0);
            return Err(ShaderError::NonFinite { index });
        }
        let factor = match self.config.clip_norm {
            Some(clip) if norm > clip => clip / norm,
            _ => 1.0,
        };
        let clipped = factor < 1.0;
        if clipped {
            self.scale.set(backend, factor)?;
        }
        let step = self.step.checked_add(1).ok_or(ShaderError::Parameter {
            name: "step",
            value: self.step.to_string(),
            reason: "AdamW step count overflows",
        })?;
        let no_decay = AdamW {
            weight_decay: 0.0,
            ..self.config.adamw
        };
        for (i, weight) in model.weights.iter_mut().enumerate() {
            let hp = if self.decay[i] {
                &self.config.adamw
            } else {
                &no_decay
            };
            let grad = if clipped {
                let s = &mut self.scratch[self.scratch_of[i]];
                self.scale.apply(backend, &model.grads[i], s, false)?;
                &*s
            } else {
                &model.grads[i]
            };
            backend.adamw(weight, grad, &mut self.m[i], &mut self.v[i], hp, step)?;
        }
        self.step = step;
        Ok((norm, clipped))
    }
}
