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

/// Environment variable that forces the adapter choice.
pub const ADAPTER_ENV: &str = "CANOPY_ADAPTER";
/// Environment variable that makes a missing wgpu adapter an error.
pub const REQUIRE_ADAPTER_ENV: &str = "CANOPY_REQUIRE_ADAPTER";

/// Threads per workgroup of the one-dimensional kernels.
pub(crate) const WORKGROUP: u32 = 256;

/// Where kernels should run, as `CANOPY_ADAPTER` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// A hardware GPU if there is one, else the CPU path.
    #[default]
    Auto,
    /// A hardware GPU, or an error.
    Gpu,
    /// A software wgpu adapter, or an error.
    Software,
    /// The plain-Rust CPU path.
    Cpu,
}

impl AdapterChoice {
    /// Parses a `CANOPY_ADAPTER` value (case-insensitive; empty means `auto`).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "software" => Ok(Self::Software),
            "cpu" => Ok(Self::Cpu),
            _ => Err(ShaderError::BadAdapterChoice {
                value: value.to_owned(),
            }),
        }
    }

    /// Reads `CANOPY_ADAPTER`.
    pub fn from_env() -> Result<Self> {
        match std::env::var(ADAPTER_ENV) {
            Ok(value) => Self::parse(&value),
            Err(_) => Ok(Self::Auto),
        }
    }
}

/// Whether `CANOPY_REQUIRE_ADAPTER` is set to a true value (`1`, `true`, `yes`).
pub fn require_adapter_from_env() -> bool {
    std::env::var(REQUIRE_ADAPTER_ENV)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Which kind of wgpu adapter to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A discrete or integrated GPU.
    Hardware,
    /// A software rasteriser (lavapipe, llvmpipe, SwiftShader, WARP).
    Software,
    /// A hardware GPU if there is one, else a software adapter.
    Any,
}

/// Whether an adapter is a software implementation, by type or by well-known name.
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    if info.device_type == wgpu::DeviceType::Cpu {
        return true;
    }
    let name = info.name.to_ascii_lowercase();
    [
        "llvmpipe",
        "lavapipe",
        "softpipe",
        "swiftshader",
        "basic render",
    ]
    .iter()
    .any(|s| name.contains(s))
}

fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    !is_software(info)
        && matches!(
            info.device_type,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
        )
}

/// The device limits that bound what Canopy can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Largest storage buffer binding, in bytes: bounds every tensor.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup along x, y, z.
    pub max_workgroup_size: [u32; 3],
    /// Most invocations in one workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Most workgroups along one dispatch dimension.
    pub max_workgroups_per_dimension: u32,
    /// Workgroup memory, in bytes.
    pub max_workgroup_storage_size: u32,
}

impl DeviceLimits {
    fn from_wgpu(l: &wgpu::Limits) -> Self {
        Self {
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_workgroup_size: [
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z,
            ],
            max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_workgroup_storage_size: l.max_compute_workgroup_storage_size,
        }
    }
}

/// What a node reports about the compute it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterReport {
    /// The adapter's name, or `"cpu"`.
    pub name: String,
    /// The wgpu backend (`Vulkan`, `Metal`, `Dx12`), or `"cpu"`.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (software), … or `"plain Rust"`.
    pub device_type: String,
    /// The driver and its version, when known.
    pub driver: String,
    /// The limits; `None` for the CPU path.
    pub limits: Option<DeviceLimits>,
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        write!(f, ")")?;
        if let Some(l) = &self.limits {
            write!(
                f,
                "; max storage binding {} MiB, max buffer {} MiB, workgroup ≤ {:?} / {} invocations, {} groups per dimension",
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                l.max_workgroup_size,
                l.max_invocations_per_workgroup,
                l.max_workgroups_per_dimension,
            )?;
        }
        Ok(())
    }
}

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
/// Created by [`crate::Backend::alloc`] or [`crate::Backend::upload`]; kernels write into buffers
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

/// Turns off Mesa's device-select Vulkan layer for this process, unless the user asked for it
/// (`MESA_VK_DEVICE_SELECT`) or set `NODEVICE_SELECT` themselves. The layer connects to a
/// Wayland display to choose a default GPU, and on every headless machine prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." twice, which reads as a
/// failure; Canopy chooses its GPUs itself.
///
/// # Safety
///
/// It sets an environment variable: call it first thing in `main`, before any other thread
/// exists (as [`std::env::set_var`] requires).
#[allow(unsafe_code)]
pub unsafe fn quiet_device_select_layer() {
    if std::env::var_os("NODEVICE_SELECT").is_none()
        && std::env::var_os("MESA_VK_DEVICE_SELECT").is_none()
    {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// Lists the adapters of the primary backends (Vulkan, Metal, DX12), or of the others (OpenGL)
/// where those find none. OpenGL is not probed otherwise: on a machine without a display its
/// probe prints EGL errors a newcomer reads as a failure, and every GPU it would list, Vulkan
/// lists too.
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let list = |backends: wgpu::Backends| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        pollster::block_on(instance.enumerate_adapters(backends))
    };
    let primary = list(wgpu::Backends::PRIMARY);
    if primary.is_empty() {
        list(wgpu::Backends::SECONDARY)
    } else {
        primary
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

    fn compiled(&self, state: &mut State, kernel: &'static Kernel) -> Result<Arc<Compiled>> {
        if let Some(c) = state.pipelines.get(kernel.name) {
            return Ok(Arc::clone(c));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = state
            .modules
            .entry(kernel.file)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.file),
                        source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(kernel.source)),
                    })
            })
            .clone();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.index,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        BindingKind::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(ShaderError::Gpu {
                kernel: kernel.name,
                message: e.to_string(),
            });
        }
        let compiled = Arc::new(Compiled { pipeline, layout });
        state.pipelines.insert(kernel.name, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Records `dispatches` into one compute pass and submits it. Dispatches run in order and
    /// each sees the writes of the ones before it.
    pub(crate) fn run(&self, dispatches: &[Dispatch<'_>]) -> Result<()> {
        let mut state = self.lock();
        self.run_locked(&mut state, dispatches)
    }

    fn run_locked(&self, state: &mut State, dispatches: &[Dispatch<'_>]) -> Result<()> {
        let max_groups = self.limits.max_compute_workgroups_per_dimension;
        for d in dispatches {
            if d.buffers.len() != d.kernel.storage_count() {
                return Err(ShaderError::Parameter {
                    name: "buffers",
                    value: d.buffers.len().to_string(),
                    reason: "does not match the kernel's storage bindings",
                });
            }
            if d.kernel.has_params() == d.params.is_empty() {
                return Err(ShaderError::Parameter {
                    name: "params",
                    value: d.params.len().to_string(),
                    reason: "a kernel has params exactly when it has a uniform binding",
                });
            }
            if let Some(&g) = d.groups.iter().find(|&&g| g > max_groups) {
                return Err(ShaderError::TooLarge {
                    what: d.kernel.name,
                    needed: u64::from(g),
                    max: u64::from(max_groups),
                    unit: "workgroups",
                    limit: "max_compute_workgroups_per_dimension",
                    reduce: "the batch size or sequence length",
                });
            }
        }
        let align = u64::from(self.limits.min_uniform_buffer_offset_alignment).max(16);
        let mut offsets = Vec::with_capacity(dispatches.len());
        let mut uniform_bytes: Vec<u8> = Vec::new();
        for d in dispatches {
            offsets.push(uniform_bytes.len() as u64);
            uniform_bytes.extend_from_slice(d.params);
            let padded = (uniform_bytes.len() as u64).next_multiple_of(align) as usize;
            uniform_bytes.resize(padded, 0);
        }
        let uniform_len = (uniform_bytes.len() as u64).max(align);
        let uniforms = match &state.uniforms {
            Some(u) if u.size() >= uniform_len => u.clone(),
            _ => {
                let u = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("canopy uniforms"),
                    size: uniform_len.next_power_of_two().max(4096),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                state.uniforms = Some(u.clone());
                u
            }
        };
        if !uniform_bytes.is_empty() {
            self.queue.write_buffer(&uniforms, 0, &uniform_bytes);
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            for (d, &offset) in dispatches.iter().zip(&offsets) {
                let compiled = self.compiled(state, d.kernel)?;
                let mut storage = d.buffers.iter();
                let entries: Vec<wgpu::BindGroupEntry<'_>> = d
                    .kernel
                    .bindings
                    .iter()
                    .filter_map(|b| {
                        let resource = match b.kind {
                            BindingKind::Uniform => {
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &uniforms,
                                    offset,
                                    size: wgpu::BufferSize::new(d.params.len() as u64),
                                })
                            }
                            _ => storage.next()?.as_entire_binding(),
                        };
                        Some(wgpu::BindGroupEntry {
                            binding: b.index,
                            resource,
                        })
                    })
                    .collect();
                let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.kernel.name),
                    layout: &compiled.layout,
                    entries: &entries,
                });
                pass.set_pipeline(&compiled.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        self.queue.submit([encoder.finish()]);
        let name = dispatches.first().map_or("submit", |d| d.kernel.name);
        self.take_error(name)
    }

    /// A (x, y) grid of `groups` workgroups within the per-dimension limit; kernels recover
    /// the linear index as `y · nx + x` and skip indices past the end.
    pub(crate) fn grid(&self, groups: u64, what: &'static str) -> Result<[u32; 3]> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        if groups == 0 {
            return Ok([1, 1, 1]);
        }
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(ShaderError::TooLarge {
                what,
                needed: groups,
                max: max * max,
                unit: "workgroups",
                limit: "max_compute_workgroups_per_dimension²",
                reduce: "the batch size or sequence length",
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// The grid for one thread per item, `per_group` threads per workgroup.
    pub(crate) fn grid_threads(
        &self,
        threads: u64,
        per_group: u32,
        what: &'static str,
    ) -> Result<[u32; 3]> {
        self.grid(threads.div_ceil(u64::from(per_group)), what)
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
