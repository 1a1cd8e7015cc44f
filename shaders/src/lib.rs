//! canopy-shaders: the compute that volunteers contribute.
//!
//! Every WGSL kernel Canopy ships lives in `wgsl/` and is compiled into this crate with
//! `include_str!` ([`registry`]); no API takes shader source, so a node runs only what it
//! shipped with. Each kernel has a CPU reference beside its launcher in [`kernels`], and a test
//! that runs both on seeded random inputs and compares them.
//!
//! - [`runtime`]: adapter choice (`CANOPY_ADAPTER`, `CANOPY_REQUIRE_ADAPTER`), the [`Gpu`]
//!   device wrapper, device buffers and kernel launches.
//! - [`backend`]: the [`Backend`] trait, implemented by [`Gpu`] and by the plain-Rust [`Cpu`]
//!   path, so code (and tests) are written once for both.
//! - [`registry`]: the list of shipped kernels with their bind-group layouts.
//! - [`kernels`]: matrix multiply, bias, GELU, LayerNorm, embedding, cross-entropy, AdamW,
//!   global norm, int8 codec, ALiBi attention; and the corpus kernels: per-document quality
//!   signals and MinHash signatures (integer kernels, bit-identical on both paths).
//! - [`corpus`]: one corpus chunk through the corpus kernels (the function volunteers and
//!   the coordinator share).
//! - [`model`]: the BLOOM-architecture decoder over bytes (config, flat parameters with
//!   BLOOM's names, forward, backward, AdamW training step), written against [`Backend`].
//!
//! It sits on top of `canopy-protocol` (whose int8 codec the int8 kernels reproduce bit for
//! bit) and under `canopy-node`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod backend;
pub mod corpus;
pub mod cpu;
pub mod error;
pub mod export;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod quickbench;
pub mod registry;
pub mod runtime;
pub mod selftest;
pub mod textgen;
pub mod tokens;
pub mod train_loop;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

pub use backend::{Backend, Buffers, Element};

/// The backend's traits, for calling kernels on a concrete backend ([`Cpu`], [`Gpu`]):
/// `use canopy_shaders::prelude::*;`. Code generic over [`Backend`] needs none of them.
pub mod prelude {
    pub use crate::backend::{Backend, Buffers};
    pub use crate::kernels::adamw::AdamWOps;
    pub use crate::kernels::attention::AttentionOps;
    pub use crate::kernels::bias::BiasOps;
    pub use crate::kernels::cross_entropy::CrossEntropyOps;
    pub use crate::kernels::embedding::EmbeddingOps;
    pub use crate::kernels::gelu::GeluOps;
    pub use crate::kernels::int8::Int8Ops;
    pub use crate::kernels::layernorm::LayerNormOps;
    pub use crate::kernels::matmul::MatmulOps;
    pub use crate::kernels::minhash::MinHashOps;
    pub use crate::kernels::norm::NormOps;
    pub use crate::kernels::quality::QualityOps;
}
pub use cpu::Cpu;
pub use error::{Result, ShaderError};
pub use export::{ExportError, export, import};
pub use generate::{Decoding, greedy, logits};
pub use kernels::adamw::AdamW;
pub use kernels::attention::{AttentionShape, alibi_slopes};
pub use kernels::matmul::{MatmulShape, Transpose};
pub use kernels::quality::QualitySignals;
pub use model::{Model, ModelConfig, Params, Preset, StepStats, TrainConfig, Trainer, Workspace};
pub use runtime::{AdapterChoice, AdapterKind, AdapterReport, Gpu, GpuBuffer, Runtime};
pub use train_loop::{
    InnerReport, InnerSettings, LrSchedule, Token, TrainReport, TrainSettings, eval_window_starts,
    evaluate, train_inner, train_local,
};
/// The wgpu version the runtime is built on, for callers that pick adapters themselves.
pub use wgpu;
