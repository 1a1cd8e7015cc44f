//! Choosing where kernels run: `CANOPY_ADAPTER`, adapter kinds, what an adapter reports, and
//! listing the adapters quietly.

use std::fmt;

use super::*;

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

pub(super) fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
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
    pub(super) fn from_wgpu(l: &wgpu::Limits) -> Self {
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
