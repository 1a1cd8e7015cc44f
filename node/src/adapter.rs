//! `canopy-node selftest` and `canopy-node bench`: the compute adapter checked against the
//! CPU reference, and timed.

use canopy_shaders::Runtime;

use crate::runtime;

/// Runs every kernel on the chosen adapter against the CPU reference and reports each.
pub(crate) fn selftest(json: bool) -> anyhow::Result<()> {
    let runtime = runtime(json)?;
    let rows = match &runtime {
        Runtime::Gpu(gpu) => canopy_shaders::selftest::run(gpu.as_ref(), 7),
        Runtime::Cpu(cpu) => canopy_shaders::selftest::run(cpu, 7),
    };
    let failed = rows.iter().filter(|r| !r.passed).count();
    if json {
        println!(
            "{}",
            serde_json::json!({ "adapter": runtime.report().to_string(), "rows": rows, "failed": failed })
        );
    } else {
        println!(
            "{:<28} {:<22} {:>11} {:>10}  result",
            "kernel", "shape", "max error", "tolerance"
        );
        for r in &rows {
            println!(
                "{:<28} {:<22} {:>11.2e} {:>10.0e}  {}{}",
                r.kernel,
                r.shape,
                r.max_error,
                r.tolerance,
                if r.passed { "pass" } else { "FAIL" },
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        println!("{} of {} kernels pass", rows.len() - failed, rows.len());
    }
    if failed > 0 {
        anyhow::bail!("{failed} kernel(s) computed wrongly on this adapter");
    }
    Ok(())
}

/// Measures the chosen adapter against the CPU: matrix products of `size` (GFLOPS) and the
/// tiny model's training tokens a second.
pub(crate) fn bench(json: bool, size: usize) -> anyhow::Result<()> {
    use canopy_shaders::quickbench::{matmul_gflops, train_tokens_per_sec};
    let runtime = runtime(json)?;
    let cpu = canopy_shaders::Cpu::new();
    let config = canopy_shaders::ModelConfig::tiny();
    let (batch, seq, steps) = (8, 128, 5);
    let cpu_gflops = matmul_gflops(&cpu, size, 3)?;
    let (adapter_gflops, tokens) = match &runtime {
        Runtime::Gpu(gpu) => (
            Some(matmul_gflops(gpu.as_ref(), size, 3)?),
            train_tokens_per_sec(gpu.as_ref(), &config, batch, seq, steps)?,
        ),
        Runtime::Cpu(cpu) => (None, train_tokens_per_sec(cpu, &config, batch, seq, steps)?),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": runtime.report().to_string(),
                "matmul_size": size,
                "matmul_gflops_wgsl": adapter_gflops,
                "matmul_gflops_cpu": cpu_gflops,
                "train_preset": "tiny",
                "train_tokens_per_sec": tokens,
            })
        );
    } else {
        if let Some(g) = adapter_gflops {
            println!(
                "matmul {size}x{size}x{size} f32, WGSL:     {g:>9.1} GFLOP/s ({:.2}x the CPU path)",
                g / cpu_gflops
            );
        }
        println!("matmul {size}x{size}x{size} f32, CPU path: {cpu_gflops:>9.1} GFLOP/s");
        println!(
            "training, preset tiny ({} parameters), batch {batch}x{seq}: {tokens:.0} tokens/s",
            config.num_params()
        );
    }
    Ok(())
}
