//! The kernels: for each, its CPU reference, its CPU-path implementation where that differs,
//! its wgpu launcher, and tests that compare the two on seeded random inputs.
//!
//! The corpus kernels ([`quality`], [`minhash`]) share the batch layout and word definition of
//! [`documents`].
//!
//! The WGSL sources are in `wgsl/<name>.wgsl` and registered in [`crate::registry`].

pub mod adamw;
pub mod attention;
pub mod bias;
pub mod cross_entropy;
pub mod documents;
pub mod embedding;
mod exp;
pub mod gelu;
pub mod int8;
pub mod layernorm;
pub mod matmul;
pub mod minhash;
pub mod norm;
pub mod quality;
