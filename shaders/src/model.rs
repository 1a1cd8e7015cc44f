//! The BLOOM-architecture decoder over bytes that volunteers train: its size
//! ([`ModelConfig`]), its parameters as one flat vector with BLOOM's tensor names
//! ([`Params`]), and forward, backward and AdamW on any [`crate::Backend`] ([`Model`],
//! [`Workspace`], [`Trainer`]), so the same code runs on the wgpu path and the CPU path.
//!
//! - [`config`]: sizes, presets, parameter count, validation.
//! - [`params`]: the flat vector, its index of `(name, offset, shape)`, seeded init.
//! - [`bloom`]: the model on a backend, its activations, the training step.

pub mod bloom;
pub mod config;
pub mod params;
mod scale;

#[cfg(test)]
mod reference;

pub use bloom::{Model, StepStats, TrainConfig, Trainer, Workspace};
pub use config::{ModelConfig, Preset, UnknownPreset};
pub use params::{Params, TensorInfo, TensorKind, tensor_index};
