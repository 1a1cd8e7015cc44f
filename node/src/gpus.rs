//! Which GPUs a node runs its workers on, and why.
//!
//! The GPUs are the hardware wgpu adapters, each counted once (a GPU that Vulkan and OpenGL
//! both list is one GPU, used through the better backend) and numbered in PCI bus order: the
//! numbers `--gpus` takes and `canopy-node info` prints.
//!
//! The choice, first that applies:
//!
//! 1. `--gpus all` or `--gpus 0,2`: those GPUs.
//! 2. `CANOPY_ADAPTER=cpu` or `software`: that, whatever a scheduler says.
//! 3. A scheduler's variables: `CUDA_VISIBLE_DEVICES` (NVIDIA GPUs), `ROCR_VISIBLE_DEVICES`
//!    or else `HIP_VISIBLE_DEVICES` (AMD), `ZE_AFFINITY_MASK` (Intel), each numbering its
//!    vendor's GPUs in PCI order as the vendor's runtime does (with `CUDA_DEVICE_ORDER=PCI_BUS_ID`;
//!    on a machine of identical GPUs its default order is the same). Slurm, Kubernetes device
//!    plugins and container runtimes set them; the node then runs one worker on each GPU named
//!    and on no other. An empty list (or Slurm's `NoDevFiles`, or CUDA's `-1`) names none: the
//!    node runs on the CPU path. Where no vendor variable is set, Slurm's `GPU_DEVICE_ORDINAL`
//!    numbers every GPU.
//! 4. Otherwise one worker on the best adapter, or the CPU path ([`canopy_shaders::Runtime`]).

use canopy_shaders::runtime::{self, AdapterChoice};
use canopy_shaders::wgpu::{self, AdapterInfo, Backend};
use canopy_shaders::{Gpu, Runtime};

use crate::cli::GpuChoice;

/// PCI vendor id of NVIDIA.
const NVIDIA: u32 = 0x10de;
/// PCI vendor id of AMD.
const AMD: u32 = 0x1002;
/// PCI vendor id of Intel.
const INTEL: u32 = 0x8086;

/// The vendor variables schedulers set: (variable, the vendor whose GPUs it numbers). Of the
/// two AMD ones, the first set is read.
const VENDOR_VARS: [(&str, u32); 4] = [
    ("CUDA_VISIBLE_DEVICES", NVIDIA),
    ("ROCR_VISIBLE_DEVICES", AMD),
    ("HIP_VISIBLE_DEVICES", AMD),
    ("ZE_AFFINITY_MASK", INTEL),
];

/// Slurm's vendor-neutral list of allocated GPUs, read where no vendor variable is set.
const ORDINAL_VAR: &str = "GPU_DEVICE_ORDINAL";

/// Why the GPUs asked for cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// A list names a GPU that is not there.
    #[error(
        "{source_name} names GPU {index}, but this machine shows {count} such GPU(s) to wgpu (`canopy-node info` lists them)"
    )]
    Missing {
        /// `--gpus` or the variable.
        source_name: String,
        /// The number asked for.
        index: usize,
        /// How many there are.
        count: usize,
    },
    /// A variable's value is not a list of GPU numbers.
    #[error(
        "{var}={value:?}: Canopy reads only GPU numbers here (such as 0,1){hint}; set --gpus to choose by hand"
    )]
    BadList {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// A hint for UUIDs.
        hint: &'static str,
    },
    /// `--gpus all` on a machine without a GPU.
    #[error("--gpus all: no GPU adapter found; leave --gpus out to use the CPU path")]
    NoneFound,
    /// A GPU or the default adapter could not be opened.
    #[error("opening {name}: {source}")]
    Open {
        /// The adapter.
        name: String,
        /// The cause.
        #[source]
        source: canopy_shaders::ShaderError,
    },
}

/// The GPUs chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Positions in the GPU list; empty: the CPU path.
    pub gpus: Vec<usize>,
    /// Why, for people (`canopy-node info`, the log).
    pub reason: String,
}

/// The hardware adapters, each GPU once, in PCI bus order.
pub fn hardware_gpus() -> Vec<wgpu::Adapter> {
    let adapters: Vec<_> = runtime::enumerate_adapters()
        .into_iter()
        .filter(|a| !runtime::is_software(&a.get_info()))
        .collect();
    let infos: Vec<_> = adapters.iter().map(wgpu::Adapter::get_info).collect();
    let mut slots: Vec<Option<wgpu::Adapter>> = adapters.into_iter().map(Some).collect();
    distinct(&infos)
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect()
}

/// Which of `infos` to keep, in the order to number them: one per GPU (the same PCI bus id,
/// or without one the same vendor, device and name, is the same GPU), through the best
/// backend, sorted by PCI bus id.
pub fn distinct(infos: &[AdapterInfo]) -> Vec<usize> {
    let backend_rank = |b: Backend| match b {
        Backend::Vulkan | Backend::Metal | Backend::Dx12 => 0,
        Backend::Gl => 1,
        _ => 2,
    };
    let same = |a: &AdapterInfo, b: &AdapterInfo| {
        if !a.device_pci_bus_id.is_empty() && !b.device_pci_bus_id.is_empty() {
            a.device_pci_bus_id == b.device_pci_bus_id
        } else {
            a.vendor == b.vendor && a.device == b.device && a.name == b.name
        }
    };
    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by_key(|&i| backend_rank(infos[i].backend));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if !kept.iter().any(|&k| same(&infos[k], &infos[i])) {
            kept.push(i);
        }
    }
    kept.sort_by(|&a, &b| (&infos[a].device_pci_bus_id, a).cmp(&(&infos[b].device_pci_bus_id, b)));
    kept
}

/// Parses a scheduler's list: GPU numbers separated by commas. `None` entries stop the list
/// (CUDA's `-1`); an empty value or `NoDevFiles` names no GPU. Intel's `card.tile` entries
/// name their card.
fn parse_list(var: &'static str, value: &str) -> Result<Vec<usize>, GpuError> {
    let value = value.trim();
    if value.is_empty() || value == "NoDevFiles" {
        return Ok(Vec::new());
    }
    let mut list = Vec::new();
    for part in value.split(',').map(str::trim) {
        if part.starts_with('-') {
            break;
        }
        let card = part.split('.').next().unwrap_or(part);
        let Ok(n) = card.parse::<usize>() else {
            let uuid = part.starts_with("GPU-") || part.starts_with("MIG-");
            return Err(GpuError::BadList {
                var,
                value: value.to_owned(),
                hint: if uuid {
                    " (wgpu reports no GPU UUIDs; number the GPUs instead)"
                } else {
                    ""
                },
            });
        };
        if !list.contains(&n) {
            list.push(n);
        }
    }
    Ok(list)
}

/// The GPUs to use among `gpus` (the list [`hardware_gpus`] returns, as infos), given
/// `--gpus` and the environment read through `env`; `None`: nothing asks for particular GPUs
/// (the default choice applies).
pub fn select(
    gpus: &[AdapterInfo],
    choice: &GpuChoice,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Selection>, GpuError> {
    let pick = |source_name: &str, within: &[usize], list: &[usize]| {
        list.iter()
            .map(|&n| {
                within.get(n).copied().ok_or_else(|| GpuError::Missing {
                    source_name: source_name.to_owned(),
                    index: n,
                    count: within.len(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let every: Vec<usize> = (0..gpus.len()).collect();
    match choice {
        GpuChoice::All if gpus.is_empty() => return Err(GpuError::NoneFound),
        GpuChoice::All => {
            return Ok(Some(Selection {
                gpus: every,
                reason: "--gpus all".into(),
            }));
        }
        GpuChoice::List(list) => {
            return Ok(Some(Selection {
                gpus: pick("--gpus", &every, list)?,
                reason: format!(
                    "--gpus {}",
                    list.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }));
        }
        GpuChoice::Default => {}
    }
    let forced = env(runtime::ADAPTER_ENV)
        .and_then(|v| AdapterChoice::parse(&v).ok())
        .is_some_and(|c| matches!(c, AdapterChoice::Cpu | AdapterChoice::Software));
    if forced {
        return Ok(None);
    }
    let mut chosen = Vec::new();
    let mut reasons = Vec::new();
    let mut vendors_read = Vec::new();
    for (var, vendor) in VENDOR_VARS {
        if vendors_read.contains(&vendor) {
            continue;
        }
        let Some(value) = env(var) else { continue };
        vendors_read.push(vendor);
        let of_vendor: Vec<usize> = every
            .iter()
            .copied()
            .filter(|&i| gpus[i].vendor == vendor)
            .collect();
        let list = parse_list(var, &value)?;
        chosen.extend(pick(var, &of_vendor, &list)?);
        reasons.push(format!("{var}={}", value.trim()));
    }
    if reasons.is_empty()
        && let Some(value) = env(ORDINAL_VAR)
    {
        chosen = pick(ORDINAL_VAR, &every, &parse_list(ORDINAL_VAR, &value)?)?;
        reasons.push(format!("{ORDINAL_VAR}={}", value.trim()));
    }
    if reasons.is_empty() {
        return Ok(None);
    }
    chosen.sort_unstable();
    chosen.dedup();
    let mut reason = format!("the scheduler's {}", reasons.join(" "));
    if chosen.is_empty() {
        reason.push_str(" names no GPU here: the CPU path");
    }
    Ok(Some(Selection {
        gpus: chosen,
        reason,
    }))
}

/// The worker runtimes for `choice` in this process's environment: one per GPU chosen, or
/// the default choice; with the reason, for the log.
pub fn worker_runtimes(choice: &GpuChoice) -> Result<(Vec<Runtime>, String), GpuError> {
    let adapters = hardware_gpus();
    let infos: Vec<_> = adapters.iter().map(wgpu::Adapter::get_info).collect();
    let open = |a: &wgpu::Adapter| -> Result<Runtime, GpuError> {
        Gpu::open(a)
            .map(|gpu| Runtime::Gpu(Box::new(gpu)))
            .map_err(|source| GpuError::Open {
                name: a.get_info().name,
                source,
            })
    };
    match select(&infos, choice, |var| std::env::var(var).ok())? {
        Some(selection) if selection.gpus.is_empty() => Ok((
            vec![Runtime::Cpu(canopy_shaders::cpu::Cpu::new())],
            selection.reason,
        )),
        Some(selection) => Ok((
            selection
                .gpus
                .iter()
                .map(|&i| open(&adapters[i]))
                .collect::<Result<_, _>>()?,
            selection.reason,
        )),
        None => Runtime::from_env()
            .map(|r| {
                (
                    vec![r],
                    "the default choice (CANOPY_ADAPTER, else the best GPU)".into(),
                )
            })
            .map_err(|source| GpuError::Open {
                name: "the default adapter".into(),
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, vendor: u32, bus: &str, backend: Backend) -> AdapterInfo {
        AdapterInfo {
            name: name.into(),
            vendor,
            device: 0x2330,
            device_type: wgpu::DeviceType::DiscreteGpu,
            device_pci_bus_id: bus.into(),
            driver: String::new(),
            driver_info: String::new(),
            backend,
            ..AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, backend)
        }
    }

    /// Two NVIDIA GPUs (listed out of bus order, the second also through OpenGL), an AMD
    /// one and an Intel one.
    fn machine() -> Vec<AdapterInfo> {
        let listed = vec![
            gpu("H200 b", NVIDIA, "0000:41:00.0", Backend::Vulkan),
            gpu("MI300", AMD, "0000:81:00.0", Backend::Vulkan),
            gpu("H200 b", NVIDIA, "0000:41:00.0", Backend::Gl),
            gpu("H200 a", NVIDIA, "0000:01:00.0", Backend::Vulkan),
            gpu("Arc", INTEL, "0000:c1:00.0", Backend::Vulkan),
        ];
        distinct(&listed)
            .into_iter()
            .map(|i| listed[i].clone())
            .collect()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn names(gpus: &[AdapterInfo], s: &Selection) -> Vec<String> {
        s.gpus.iter().map(|&i| gpus[i].name.clone()).collect()
    }

    #[test]
    fn each_gpu_counts_once_in_bus_order_through_its_best_backend() {
        let gpus = machine();
        let listed: Vec<_> = gpus.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(listed, ["H200 a", "H200 b", "MI300", "Arc"]);
        assert!(gpus.iter().all(|g| g.backend == Backend::Vulkan));
        // Without bus ids, vendor, device and name tell the same GPU.
        let no_bus = vec![
            gpu("iGPU", INTEL, "", Backend::Gl),
            gpu("iGPU", INTEL, "", Backend::Vulkan),
        ];
        assert_eq!(distinct(&no_bus), vec![1]);
    }

    #[test]
    fn scheduler_variables_choose_their_vendors_gpus() {
        let gpus = machine();
        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("CUDA_VISIBLE_DEVICES", "1")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["H200 b"]);
        assert!(s.reason.contains("CUDA_VISIBLE_DEVICES=1"), "{}", s.reason);

        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[
                ("CUDA_VISIBLE_DEVICES", "0,1"),
                ("ROCR_VISIBLE_DEVICES", "0"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["H200 a", "H200 b", "MI300"]);

        // ROCR wins over HIP; Intel's card.tile names the card.
        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[
                ("HIP_VISIBLE_DEVICES", "5"),
                ("ROCR_VISIBLE_DEVICES", "0"),
                ("ZE_AFFINITY_MASK", "0.1"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["MI300", "Arc"]);

        // Slurm's GPU_DEVICE_ORDINAL numbers every GPU, and only counts without a vendor's.
        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("GPU_DEVICE_ORDINAL", "3")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["Arc"]);
        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("GPU_DEVICE_ORDINAL", "3"), ("CUDA_VISIBLE_DEVICES", "0")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["H200 a"]);
    }

    #[test]
    fn an_empty_list_means_the_cpu_path() {
        let gpus = machine();
        for value in ["", "NoDevFiles", "-1", " "] {
            let s = select(
                &gpus,
                &GpuChoice::Default,
                env(&[("CUDA_VISIBLE_DEVICES", value)]),
            )
            .unwrap()
            .unwrap();
            assert!(s.gpus.is_empty(), "{value:?}");
            assert!(s.reason.contains("CPU path"), "{}", s.reason);
        }
        // CUDA stops reading at the first negative entry.
        let s = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("CUDA_VISIBLE_DEVICES", "1,-1,0")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&gpus, &s), ["H200 b"]);
    }

    #[test]
    fn nothing_set_leaves_the_default_and_flags_and_canopy_adapter_win() {
        let gpus = machine();
        assert_eq!(select(&gpus, &GpuChoice::Default, env(&[])).unwrap(), None);
        let cuda = [("CUDA_VISIBLE_DEVICES", "1")];
        let s = select(&gpus, &GpuChoice::List(vec![3, 0]), env(&cuda))
            .unwrap()
            .unwrap();
        assert_eq!(names(&gpus, &s), ["Arc", "H200 a"]);
        assert_eq!(s.reason, "--gpus 3,0");
        let s = select(&gpus, &GpuChoice::All, env(&cuda)).unwrap().unwrap();
        assert_eq!(s.gpus.len(), 4);
        for forced in ["cpu", "software"] {
            let vars = [("CUDA_VISIBLE_DEVICES", "1"), ("CANOPY_ADAPTER", forced)];
            assert_eq!(
                select(&gpus, &GpuChoice::Default, env(&vars)).unwrap(),
                None
            );
        }
    }

    #[test]
    fn lists_naming_what_is_not_there_are_refused_clearly() {
        let gpus = machine();
        let err = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("CUDA_VISIBLE_DEVICES", "2")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("CUDA_VISIBLE_DEVICES names GPU 2") && err.contains("shows 2 such"),
            "{err}"
        );
        let err = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("CUDA_VISIBLE_DEVICES", "GPU-5f1e3a2b-0000")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("UUIDs"), "{err}");
        let err = select(
            &gpus,
            &GpuChoice::Default,
            env(&[("ROCR_VISIBLE_DEVICES", "one")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ROCR_VISIBLE_DEVICES=\"one\""), "{err}");
        assert!(select(&gpus, &GpuChoice::List(vec![4]), env(&[])).is_err());
        assert!(matches!(
            select(&[], &GpuChoice::All, env(&[])),
            Err(GpuError::NoneFound)
        ));
    }
}
