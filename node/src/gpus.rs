//! The node binary's choice of adapters: one worker runtime per GPU `--gpus` names, or the
//! default choice (`CANOPY_ADAPTER`, else the best adapter, else the CPU path).

use anyhow::Context;
use canopy_node::cli::GpuChoice;
use canopy_shaders::Runtime;

/// The runtimes `--gpus` asks for: one per listed hardware adapter, or the default choice.
pub(crate) fn worker_runtimes(choice: &GpuChoice) -> anyhow::Result<Vec<Runtime>> {
    let hardware = || -> Vec<canopy_shaders::wgpu::Adapter> {
        canopy_shaders::runtime::enumerate_adapters()
            .into_iter()
            .filter(|a| !canopy_shaders::runtime::is_software(&a.get_info()))
            .collect()
    };
    let open = |a: &canopy_shaders::wgpu::Adapter| -> anyhow::Result<Runtime> {
        Ok(Runtime::Gpu(Box::new(
            canopy_shaders::Gpu::open(a)
                .with_context(|| format!("opening {}", a.get_info().name))?,
        )))
    };
    match choice {
        GpuChoice::Default => Ok(vec![
            Runtime::from_env().context("choosing where kernels run")?,
        ]),
        GpuChoice::All => {
            let adapters = hardware();
            if adapters.is_empty() {
                anyhow::bail!(
                    "--gpus all: no GPU adapter found; leave --gpus out to use the CPU path"
                );
            }
            adapters.iter().map(open).collect()
        }
        GpuChoice::List(list) => {
            let adapters = hardware();
            list.iter()
                .map(|&i| {
                    let a = adapters.get(i).with_context(|| {
                        format!("--gpus: there is no GPU {i}; this machine has {} (`canopy-node info` lists them)", adapters.len())
                    })?;
                    open(a)
                })
                .collect()
        }
    }
}
