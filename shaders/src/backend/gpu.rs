//! The wgpu path's buffers: device buffers. Each kernel's WGSL launch is in its own file under
//! `kernels/`.

use super::{Buffers, Element};
use crate::error::Result;
use crate::runtime::{AdapterReport, Gpu, GpuBuffer};

impl Buffers for Gpu {
    type Buffer<T: Element> = GpuBuffer<T>;

    fn report(&self) -> AdapterReport {
        Gpu::report(self)
    }

    fn alloc<T: Element>(&self, len: usize, what: &'static str) -> Result<GpuBuffer<T>> {
        Gpu::alloc(self, len, what)
    }

    fn upload<T: Element>(&self, data: &[T], what: &'static str) -> Result<GpuBuffer<T>> {
        let buf = Gpu::alloc(self, data.len(), what)?;
        Gpu::write(self, &buf, data)?;
        Ok(buf)
    }

    fn write<T: Element>(&self, buf: &mut GpuBuffer<T>, data: &[T]) -> Result<()> {
        Gpu::write(self, buf, data)
    }

    fn read<T: Element>(&self, buf: &GpuBuffer<T>) -> Result<Vec<T>> {
        Gpu::read(self, buf)
    }

    fn len<T: Element>(&self, buf: &GpuBuffer<T>) -> usize {
        buf.len()
    }
}
