//! The wgpu runtime: choosing an adapter, device buffers, and launching registered kernels.
//!
//! # Choosing where kernels run
//!
//! `CANOPY_ADAPTER` forces a choice:
//!
//! | value | runs on |
//! | --- | --- |
//! | `gpu` | a hardware GPU (discrete or integrated), else an error |
//! | `software` | a software Vulkan/Metal/DX12 adapter (lavapipe, llvmpipe, SwiftShader, WARP), else an error |
//! | `cpu` | the plain-Rust CPU path |
//! | `auto` or unset | a hardware GPU if there is one, else the CPU path |
//!
//! Software adapters are never chosen by `auto`: they run the real WGSL, which makes them right
//! for tests, but they are about 50x slower than the plain-Rust path. With
//! `CANOPY_REQUIRE_ADAPTER=1`, ending up without a wgpu adapter is an error instead of a
//! fallback; under `auto` it then accepts a software adapter when there is no hardware one
//! (this is how CI runs the WGSL on lavapipe).
//!
//! # Getting a device versus using it
//!
//! [`Runtime::select`] and [`Gpu::request`] find an adapter and open a device; everything that
//! runs kernels takes a [`Gpu`], which [`Gpu::from_device`] also builds around a device the
//! caller opened itself (tests do this).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Result, ShaderError};
use crate::registry::{BindingKind, Kernel};

mod adapter;
mod launch;

use adapter::is_hardware;
pub use adapter::*;

/// Where this process runs its kernels.
#[derive(Debug)]
pub enum Runtime {
    /// A wgpu device.
    Gpu(Box<Gpu>),
    /// The plain-Rust CPU path.
    Cpu(crate::cpu::Cpu),
}

impl Runtime {
    /// Chooses from `CANOPY_ADAPTER` and `CANOPY_REQUIRE_ADAPTER`.
    pub fn from_env() -> Result<Self> {
        Self::select(AdapterChoice::from_env()?, require_adapter_from_env())
    }

    /// Chooses as the module documentation describes.
    pub fn select(choice: AdapterChoice, require_adapter: bool) -> Result<Self> {
        let runtime = match choice {
            AdapterChoice::Cpu if require_adapter => {
                return Err(ShaderError::Parameter {
                    name: "CANOPY_ADAPTER",
                    value: "cpu".into(),
                    reason: "CANOPY_REQUIRE_ADAPTER=1 asks for a wgpu adapter",
                });
            }
            AdapterChoice::Cpu => Self::Cpu(crate::cpu::Cpu::new()),
            AdapterChoice::Gpu => Self::Gpu(Box::new(Gpu::request(AdapterKind::Hardware)?)),
            AdapterChoice::Software => Self::Gpu(Box::new(Gpu::request(AdapterKind::Software)?)),
            AdapterChoice::Auto if require_adapter => {
                Self::Gpu(Box::new(Gpu::request(AdapterKind::Any)?))
            }
            AdapterChoice::Auto => match Gpu::request(AdapterKind::Hardware) {
                Ok(gpu) => Self::Gpu(Box::new(gpu)),
                Err(e) => {
                    tracing::info!("no hardware GPU ({e}); using the CPU path");
                    Self::Cpu(crate::cpu::Cpu::new())
                }
            },
        };
        tracing::info!("compute runs on {}", runtime.report());
        Ok(runtime)
    }

    /// What this runtime runs on.
    pub fn report(&self) -> AdapterReport {
        match self {
            Self::Gpu(gpu) => gpu.report(),
            Self::Cpu(cpu) => cpu.report(),
        }
    }
}

/// A reusable device buffer holding `len` elements of `T`.
///
/// Created by [`crate::Buffers::alloc`] or [`crate::Buffers::upload`]; kernels write into buffers
/// the caller owns, so a training loop allocates once and reuses them.
pub struct GpuBuffer<T> {
    pub(crate) buffer: wgpu::Buffer,
    len: usize,
    _element: PhantomData<T>,
}

impl<T> GpuBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Wraps a raw storage buffer holding `len` elements (kernel scratch read back as a tensor).
    pub(crate) fn wrap(buffer: wgpu::Buffer, len: usize) -> Self {
        Self {
            buffer,
            len,
            _element: PhantomData,
        }
    }

    /// The wgpu buffer (at least 4 bytes, even when empty).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl<T> fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .finish()
    }
}

/// One kernel launch within a [`Gpu::run`] submission.
pub(crate) struct Dispatch<'a> {
    pub(crate) kernel: &'static Kernel,
    /// The uniform block (empty for kernels without one).
    pub(crate) params: &'a [u8],
    /// The storage buffers, in the order of the kernel's storage bindings.
    pub(crate) buffers: &'a [&'a wgpu::Buffer],
    pub(crate) groups: [u32; 3],
}

struct Compiled {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
struct State {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<&'static str, Arc<Compiled>>,
    /// Uniform blocks of one submission, one aligned slot per dispatch; grows, never shrinks.
    uniforms: Option<wgpu::Buffer>,
    /// Readback staging; grows, never shrinks.
    staging: Option<wgpu::Buffer>,
    /// Kernel-private scratch buffers by name; grow, never shrink.
    scratch: HashMap<&'static str, wgpu::Buffer>,
}

/// An open wgpu device with the pipelines and reusable buffers Canopy's kernels need.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
    state: Mutex<State>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Finds an adapter of `kind` and opens a device on it, with the adapter's full limits.
    pub fn request(kind: AdapterKind) -> Result<Self> {
        let adapters = enumerate_adapters();
        let seen = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            _ => 2,
        };
        let mut hardware: Vec<_> = adapters
            .iter()
            .filter(|a| is_hardware(&a.get_info()))
            .collect();
        hardware.sort_by_key(|a| rank(a));
        let software = adapters.iter().find(|a| is_software(&a.get_info()));
        let (chosen, wanted) = match kind {
            AdapterKind::Hardware => (hardware.first().copied(), "hardware GPU"),
            AdapterKind::Software => (software, "software"),
            AdapterKind::Any => (
                hardware.first().copied().or(software),
                "hardware or software",
            ),
        };
        let adapter = chosen.ok_or_else(|| ShaderError::NoAdapter {
            wanted,
            seen: if seen.is_empty() { "none".into() } else { seen },
        })?;
        Self::open(adapter)
    }

    /// Opens a device on `adapter`.
    pub fn open(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let desc = wgpu::DeviceDescriptor {
            label: Some("canopy"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|source| {
                ShaderError::RequestDevice {
                    adapter: info.name.clone(),
                    source,
                }
            })?;
        Ok(Self::from_device(device, queue))
    }

    /// Wraps a device the caller opened. It installs an uncaptured-error handler that turns
    /// wgpu errors into [`ShaderError::Gpu`] results instead of panics.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            tracing::error!("wgpu: {e}");
            if let Ok(mut errors) = sink.lock() {
                errors.push(e.to_string());
            }
        }));
        let info = device.adapter_info();
        let limits = device.limits();
        Self {
            device,
            queue,
            info,
            limits,
            errors,
            state: Mutex::default(),
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits that matter to Canopy.
    pub fn limits(&self) -> DeviceLimits {
        DeviceLimits::from_wgpu(&self.limits)
    }

    /// Whether this is a software adapter.
    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    /// What this device is, for logs and the node's status.
    pub fn report(&self) -> AdapterReport {
        let driver = [self.info.driver.as_str(), self.info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        AdapterReport {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver,
            limits: Some(self.limits()),
        }
    }

    /// Checks that a buffer of `bytes` fits the device; `what` names the tensor and `reduce`
    /// the setting a user would lower.
    pub fn check_buffer(&self, what: &'static str, reduce: &'static str, bytes: u64) -> Result<()> {
        let checks = [
            (
                self.limits.max_storage_buffer_binding_size,
                "max_storage_buffer_binding_size",
            ),
            (self.limits.max_buffer_size, "max_buffer_size"),
        ];
        for (max, limit) in checks {
            if bytes > max {
                return Err(ShaderError::TooLarge {
                    what,
                    needed: bytes,
                    max,
                    unit: "bytes",
                    limit,
                    reduce,
                });
            }
        }
        Ok(())
    }

    fn take_error(&self, kernel: &'static str) -> Result<()> {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(ShaderError::Gpu { kernel, message })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates a zeroed buffer of `len` elements.
    pub(crate) fn alloc<T: bytemuck::Pod>(
        &self,
        len: usize,
        what: &'static str,
    ) -> Result<GpuBuffer<T>> {
        let bytes = (len as u64).saturating_mul(size_of::<T>() as u64);
        self.check_buffer(what, "the batch size, sequence length or model size", bytes)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.take_error("create_buffer")?;
        Ok(GpuBuffer {
            buffer,
            len,
            _element: PhantomData,
        })
    }

    /// Overwrites `buf` with `data` (which must have its length).
    pub(crate) fn write<T: bytemuck::Pod>(&self, buf: &GpuBuffer<T>, data: &[T]) -> Result<()> {
        check_len("data", data.len(), buf.len)?;
        if !data.is_empty() {
            self.queue
                .write_buffer(&buf.buffer, 0, bytemuck::cast_slice(data));
        }
        self.take_error("write_buffer")
    }

    /// Copies `buf` back to the host.
    pub(crate) fn read<T: bytemuck::Pod>(&self, buf: &GpuBuffer<T>) -> Result<Vec<T>> {
        let mut state = self.lock();
        self.read_locked(&mut state, buf)
    }

    /// Runs `dispatches` and reads `buf` back without letting another thread's work in
    /// between (for results left in shared scratch buffers).
    pub(crate) fn run_then_read<T: bytemuck::Pod>(
        &self,
        dispatches: &[Dispatch<'_>],
        buf: &GpuBuffer<T>,
    ) -> Result<Vec<T>> {
        let mut state = self.lock();
        self.run_locked(&mut state, dispatches)?;
        self.read_locked(&mut state, buf)
    }

    fn read_locked<T: bytemuck::Pod>(
        &self,
        state: &mut State,
        buf: &GpuBuffer<T>,
    ) -> Result<Vec<T>> {
        let bytes = (buf.len * size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = match &state.staging {
            Some(s) if s.size() >= bytes => s.clone(),
            _ => {
                let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("canopy staging"),
                    size: grow_to(bytes, self.limits.max_buffer_size),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                state.staging = Some(s.clone());
                s
            }
        };
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        if let Err(e) = self.map_for_read(&staging, bytes) {
            // The staging buffer may be left mapped or pending: start afresh next time.
            state.staging = None;
            return Err(e);
        }
        let out = {
            let view = staging
                .get_mapped_range(0..bytes)
                .map_err(|e| ShaderError::Gpu {
                    kernel: "read",
                    message: e.to_string(),
                })?;
            bytemuck::pod_collect_to_vec::<u8, T>(&view)
        };
        staging.unmap();
        Ok(out)
    }

    /// Maps `staging[..bytes]` for reading and waits for it.
    fn map_for_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            // The receiver waits below; if it is gone there is no one to tell.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(ShaderError::Poll)?;
        self.take_error("read")?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShaderError::Map(e)),
            Err(_) => Err(ShaderError::Gpu {
                kernel: "read",
                message: "the map callback never ran".into(),
            }),
        }
    }

    /// A kernel-private scratch buffer of at least `bytes`, reused across calls.
    pub(crate) fn scratch(&self, name: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_buffer(name, "the batch size or sequence length", bytes)?;
        let mut state = self.lock();
        if let Some(b) = state.scratch.get(name)
            && b.size() >= bytes
        {
            return Ok(b.clone());
        }
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: grow_to(bytes, self.limits.max_storage_buffer_binding_size),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        state.scratch.insert(name, b.clone());
        Ok(b)
    }
}

/// The size to allocate for a grow-only buffer that must hold `bytes`: the next power of two
/// (at least 4 KiB), unless that passes `max`.
fn grow_to(bytes: u64, max: u64) -> u64 {
    bytes.next_power_of_two().max(4096).min(max).max(bytes)
}

/// Checks that an argument has the length its shape implies.
pub(crate) fn check_len(what: &'static str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(ShaderError::Shape {
            what,
            len,
            expected,
        })
    }
}

/// Checks that a product of dimensions fits a u32 index, as the kernels use.
pub(crate) fn index_u32(what: &'static str, elements: usize) -> Result<u32> {
    u32::try_from(elements).map_err(|_| ShaderError::TooLarge {
        what,
        needed: elements as u64,
        max: u64::from(u32::MAX),
        unit: "elements",
        limit: "32-bit indexing",
        reduce: "the batch size, sequence length or model size",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_choice_parses() {
        assert_eq!(AdapterChoice::parse("gpu").unwrap(), AdapterChoice::Gpu);
        assert_eq!(
            AdapterChoice::parse(" Software ").unwrap(),
            AdapterChoice::Software
        );
        assert_eq!(AdapterChoice::parse("CPU").unwrap(), AdapterChoice::Cpu);
        assert_eq!(AdapterChoice::parse("").unwrap(), AdapterChoice::Auto);
        assert_eq!(AdapterChoice::parse("auto").unwrap(), AdapterChoice::Auto);
        let err = AdapterChoice::parse("tpu").unwrap_err();
        assert!(err.to_string().contains("tpu"), "{err}");
    }

    #[test]
    fn cpu_choice_gives_the_cpu_path_and_conflicts_with_require() {
        let runtime = Runtime::select(AdapterChoice::Cpu, false).unwrap();
        assert!(matches!(runtime, Runtime::Cpu(_)));
        assert_eq!(runtime.report().backend, "cpu");
        assert!(Runtime::select(AdapterChoice::Cpu, true).is_err());
    }

    #[test]
    fn auto_picks_hardware_or_the_cpu_path_never_software() {
        let hardware = enumerate_adapters()
            .iter()
            .any(|a| is_hardware(&a.get_info()));
        let runtime = Runtime::select(AdapterChoice::Auto, false).unwrap();
        match runtime {
            Runtime::Gpu(gpu) => assert!(hardware && !gpu.is_software(), "{gpu:?}"),
            Runtime::Cpu(_) => assert!(!hardware),
        }
    }

    #[test]
    fn software_choice_gives_a_software_adapter() {
        let software = enumerate_adapters()
            .iter()
            .any(|a| is_software(&a.get_info()));
        match Runtime::select(AdapterChoice::Software, false) {
            Ok(Runtime::Gpu(gpu)) => assert!(gpu.is_software()),
            Ok(other) => panic!("software choice gave {other:?}"),
            Err(e) => {
                assert!(!software, "{e}");
                assert!(matches!(e, ShaderError::NoAdapter { .. }), "{e}");
            }
        }
    }

    #[test]
    fn software_names_are_recognised() {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::Other, wgpu::Backend::Vulkan);
        info.name = "llvmpipe (LLVM 15.0.7, 256 bits)".into();
        assert!(is_software(&info));
        assert!(!is_hardware(&info));
        info.name = "NVIDIA GeForce RTX 4090".into();
        info.device_type = wgpu::DeviceType::DiscreteGpu;
        assert!(!is_software(&info));
        assert!(is_hardware(&info));
    }

    #[test]
    fn oversized_buffers_name_what_to_reduce() {
        let Some(gpu) = crate::testing::gpu() else {
            return;
        };
        let max = gpu.limits().max_storage_buffer_binding_size;
        let err = gpu
            .alloc::<f32>((max / 4 + 1) as usize, "attention scores")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("attention scores") && text.contains("reduce"),
            "{text}"
        );
        let report = gpu.report().to_string();
        assert!(report.contains("max storage binding"), "{report}");
    }
}
