//! canopy-shaders: the compute that volunteers contribute.
//!
//! This crate will hold every WGSL kernel Canopy ships (`wgsl/*.wgsl`), the wgpu runtime that
//! picks an adapter, the plain-Rust CPU path that machines without a GPU run, the CPU references
//! the kernels are tested against, and the BLOOM-architecture model with its optimizers. It sits
//! on top of `canopy-protocol` and under `canopy-node`.
