//! The backends: one interface to the kernels, implemented by the wgpu path
//! ([`Gpu`](crate::runtime::Gpu)) and the plain-Rust CPU path ([`Cpu`](crate::Cpu)).
//!
//! [`Buffers`] is what every backend offers besides kernels (buffers and their transfers; its
//! two implementations are in `backend/cpu.rs` and `backend/gpu.rs`). Each kernel adds a trait
//! of its own, defined and implemented for both paths in that kernel's file under `kernels/`;
//! [`Backend`], in [`crate::registry`] beside the WGSL each kernel ships, is all of them
//! together. Adding a kernel therefore touches its own file and the registry.
//!
//! Buffers live on the backend (device memory on the GPU, vectors on the CPU); kernels read
//! their inputs and write into output buffers the caller allocated once, so a loop that repeats
//! a kernel allocates nothing per call. Every shape is checked against the buffer lengths
//! before anything runs. Code written against [`Backend`] runs on either path, and the tests
//! are written that way too: once, then instantiated for both.

use std::fmt;

use crate::error::Result;
use crate::runtime::AdapterReport;

mod cpu;
mod gpu;

/// Element types a buffer can hold.
pub trait Element: bytemuck::Pod + Send + Sync + fmt::Debug + 'static {}

impl Element for f32 {}
impl Element for u32 {}

pub use crate::registry::Backend;

/// Buffers on one backend, and their transfers to and from the host: what every kernel trait
/// builds on.
///
/// Matrices are row-major. Gradient kernels overwrite their outputs unless the method says it
/// accumulates.
pub trait Buffers {
    /// A buffer of `T` on this backend.
    type Buffer<T: Element>;

    /// What this backend runs on.
    fn report(&self) -> AdapterReport;
    /// A zeroed buffer of `len` elements; `what` names it in errors.
    fn alloc<T: Element>(&self, len: usize, what: &'static str) -> Result<Self::Buffer<T>>;
    /// A buffer holding `data`.
    fn upload<T: Element>(&self, data: &[T], what: &'static str) -> Result<Self::Buffer<T>>;
    /// Overwrites `buf` with `data`, which must have its length.
    fn write<T: Element>(&self, buf: &mut Self::Buffer<T>, data: &[T]) -> Result<()>;
    /// Copies `buf` to the host.
    fn read<T: Element>(&self, buf: &Self::Buffer<T>) -> Result<Vec<T>>;
    /// The number of elements in `buf`.
    fn len<T: Element>(&self, buf: &Self::Buffer<T>) -> usize;
}
