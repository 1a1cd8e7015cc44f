//! The `canopy-node` binary: a Canopy peer.

use std::process::ExitCode;

use anyhow::Context;

use canopy_node::cli::{Cli, Command, JoinConfig, data_dir};
use canopy_node::control;
use canopy_node::polite::{self, Priority};
use canopy_node::settings::SettingsError;
use canopy_shaders::Runtime;

mod adapter;
mod credit;
mod info;
mod join;
mod status;
mod train;

use adapter::{bench, selftest};
use join::join;
use train::train;

#[allow(unsafe_code)] // one environment variable, set before any thread starts
fn main() -> ExitCode {
    // SAFETY: the first thing main does: no other thread exists yet.
    unsafe { canopy_shaders::runtime::quiet_device_select_layer() };
    let cli = match canopy_node::settings::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(SettingsError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Join(args) = &cli.command
        && let Some(n) = args.threads
    {
        // The matrix products size their thread pool from this when they first run.
        // SAFETY: still before any other thread exists.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", n.to_string()) };
    }
    canopy_node::logging::init(cli.log.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = || {
        data_dir(cli.data_dir.clone())
            .context("no data directory: pass --data-dir or set CANOPY_DATA_DIR")
    };
    match cli.command {
        Command::Info { json } => info::info(&dir()?, cli.identity.as_deref(), json),
        Command::Selftest { json } => selftest(json),
        Command::Bench { json, size } => bench(json, size as usize),
        Command::Train(args) => train(args),
        Command::Status { json } => status::node_status(&dir()?, json),
        Command::Pause => {
            let dir = dir()?;
            control::set_paused(&dir, true)?;
            println!(
                "paused: the node on {} hands its task back and waits",
                dir.display()
            );
            Ok(())
        }
        Command::Resume => {
            let dir = dir()?;
            control::set_paused(&dir, false)?;
            println!("resumed");
            Ok(())
        }
        Command::Credit { coordinator, json } => async_runtime()?.block_on(credit::command(
            &dir()?,
            cli.identity.as_deref(),
            coordinator,
            json,
        )),
        Command::Join(args) => {
            let config = JoinConfig::from_args(*args)?;
            limit_threads(config.threads)?;
            // Before the runtime starts its threads: they inherit it.
            if config.priority == Priority::Low {
                polite::lower_priority().context("lowering the node's priority")?;
            }
            async_runtime()?.block_on(join(&dir()?, cli.identity.as_deref(), config))
        }
        Command::Service(command) => Ok(canopy_node::service::run(
            command,
            cli.data_dir.clone(),
            cli.identity.clone(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )?),
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Applies `--threads` to rayon's pool (`main` has set the matrix products' limit already).
fn limit_threads(threads: Option<u32>) -> anyhow::Result<()> {
    let Some(n) = threads else { return Ok(()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n as usize)
        .build_global()
        .context("limiting the CPU threads")?;
    Ok(())
}

/// The compute runtime from `CANOPY_ADAPTER` / `CANOPY_REQUIRE_ADAPTER`, with a word for
/// people when it is the CPU path.
fn runtime(json: bool) -> anyhow::Result<Runtime> {
    let runtime = Runtime::from_env().context("choosing where kernels run")?;
    if !json {
        println!("compute: {}", runtime.report());
        if matches!(runtime, Runtime::Cpu(_)) {
            println!(
                "no GPU adapter found (or CANOPY_ADAPTER=cpu): kernels run on the CPU path. \
                 CANOPY_ADAPTER=software runs the WGSL on a software Vulkan driver."
            );
        }
    }
    Ok(runtime)
}
