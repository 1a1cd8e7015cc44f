//! The crate's error type.
//!
//! Every fallible call in `canopy-shaders` returns [`ShaderError`]. A buffer that would not fit
//! the device gets [`ShaderError::TooLarge`], which names the tensor and what to reduce, so a
//! volunteer with a small GPU sees which setting to change rather than a driver message.

/// Errors from the runtime, the kernels and the CPU path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShaderError {
    /// `CANOPY_ADAPTER` holds a value that is not a known choice.
    #[error("CANOPY_ADAPTER={value:?} is not one of gpu, software, cpu, auto")]
    BadAdapterChoice {
        /// The value found.
        value: String,
    },
    /// No wgpu adapter of the requested kind exists on this machine.
    #[error("no {wanted} wgpu adapter found (adapters seen: {seen})")]
    NoAdapter {
        /// What was asked for ("hardware GPU", "software", "hardware or software").
        wanted: &'static str,
        /// The adapters that were found, for the message.
        seen: String,
    },
    /// The adapter refused to give a device.
    #[error("requesting a device from adapter {adapter:?}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// Why it failed.
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// A buffer or a dispatch would exceed one of the device's limits.
    #[error("{what} needs {needed} {unit} but the device allows {max} ({limit}); reduce {reduce}")]
    TooLarge {
        /// The tensor or dispatch that is too large.
        what: &'static str,
        /// What it needs.
        needed: u64,
        /// What the device allows.
        max: u64,
        /// The unit of `needed` and `max` ("bytes", "workgroups").
        unit: &'static str,
        /// The device limit in question.
        limit: &'static str,
        /// The setting to reduce.
        reduce: &'static str,
    },
    /// A buffer does not have the length the call's shape implies.
    #[error("{what} has {len} elements, expected {expected}")]
    Shape {
        /// The argument.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length the shape implies.
        expected: usize,
    },
    /// A parameter is out of range.
    #[error("parameter {name} = {value}: {reason}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// wgpu reported an error while running a kernel (validation, out of memory, device lost).
    #[error("GPU error while running {kernel}: {message}")]
    Gpu {
        /// The kernel or operation.
        kernel: &'static str,
        /// wgpu's description.
        message: String,
    },
    /// Mapping a buffer for reading failed.
    #[error("mapping a buffer for reading")]
    Map(#[source] wgpu::BufferAsyncError),
    /// Waiting for the device failed.
    #[error("waiting for the device")]
    Poll(#[source] wgpu::PollError),
    /// A value that must be finite is not (an int8 block of a non-finite update, say).
    #[error("non-finite value at index {index}")]
    NonFinite {
        /// Index of the first non-finite value (or of its block's first value).
        index: usize,
    },
    /// The protocol's compression codec refused the input.
    #[error("compression")]
    Compress(#[from] canopy_protocol::error::CompressError),
    /// A corpus chunk or result that does not decode or validate.
    #[error("corpus chunk or result refused")]
    Corpus(#[from] canopy_protocol::corpus::CorpusError),
}

/// The result type of this crate.
pub type Result<T, E = ShaderError> = std::result::Result<T, E>;
