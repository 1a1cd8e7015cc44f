//! The plain-Rust CPU path: what machines without a GPU run.
//!
//! It implements [`crate::Backend`] with vectors as buffers, using rayon across rows and
//! `matrixmultiply` for matrix products. Its results are the CPU references (or, for matrix
//! products, are tested against a naive triple loop).

use crate::runtime::AdapterReport;

/// The CPU backend. Work runs on rayon's global pool.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    _private: (),
}

impl Cpu {
    /// The CPU backend on rayon's global pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// What this backend runs on.
    pub fn report(&self) -> AdapterReport {
        AdapterReport {
            name: format!("cpu ({} threads)", rayon::current_num_threads()),
            backend: "cpu".into(),
            device_type: "plain Rust".into(),
            driver: String::new(),
            limits: None,
        }
    }
}
