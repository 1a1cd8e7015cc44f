//! The CPU path's buffers: vectors in host memory. Each kernel's CPU path is in its own file
//! under `kernels/`.

use super::{Buffers, Element};
use crate::Cpu;
use crate::error::Result;
use crate::runtime::AdapterReport;

impl Buffers for Cpu {
    type Buffer<T: Element> = Vec<T>;

    fn report(&self) -> AdapterReport {
        Cpu::report(self)
    }

    fn alloc<T: Element>(&self, len: usize, _what: &'static str) -> Result<Vec<T>> {
        Ok(vec![T::zeroed(); len])
    }

    fn upload<T: Element>(&self, data: &[T], _what: &'static str) -> Result<Vec<T>> {
        Ok(data.to_vec())
    }

    fn write<T: Element>(&self, buf: &mut Vec<T>, data: &[T]) -> Result<()> {
        crate::runtime::check_len("data", data.len(), buf.len())?;
        buf.copy_from_slice(data);
        Ok(())
    }

    fn read<T: Element>(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }

    fn len<T: Element>(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
}
