//! The `canopy-coordinator` binary: runs a Canopy training project.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use canopy_coordinator::config::{Config, FILE_NAME};
use canopy_coordinator::corpus_swarm::CorpusEvent;
use canopy_coordinator::demo;
use canopy_coordinator::project::DB_FILE;
use canopy_coordinator::service::ServiceEvent;
use canopy_coordinator::state::State;
use clap::Parser;

mod cli;

use cli::args::{Cli, Command};
use cli::demo::swarm_demo;
use cli::project::{allow, export, init};
use cli::report::{ledger, ledger_totals, status};
use cli::run::run_project;

#[allow(unsafe_code)] // one environment variable, set before any thread starts
fn main() -> ExitCode {
    // SAFETY: the first thing main does: no other thread exists yet.
    unsafe { canopy_shaders::runtime::quiet_device_select_layer() };
    let cli = Cli::parse();
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
    match cli.command {
        Command::Init { dir } => init(&dir),
        Command::Run { config, json, http } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(run_project(&config, json, &http))
        }
        Command::Backup { dir, json, config } => {
            let summary = canopy_coordinator::backup::backup(&project_dir(&config), &config, &dir)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "backed up {} (round {}): {} objects, {} chunks, {:.1} MiB",
                    dir.display(),
                    summary.round.map_or("none".into(), |r| r.to_string()),
                    summary.objects,
                    summary.chunks,
                    summary.bytes as f64 / 1_048_576.0
                );
                println!(
                    "restore: canopy-coordinator run --config {}",
                    dir.join(FILE_NAME).display()
                );
            }
            Ok(())
        }
        Command::Allow {
            peers,
            file,
            tier,
            config,
        } => allow(&config, &peers, file.as_deref(), tier),
        Command::Status {
            config,
            json,
            history,
        } => status(&config, json, history),
        Command::Ledger {
            config,
            csv,
            json,
            totals,
        } => {
            if totals {
                ledger_totals(&config, json)
            } else {
                ledger(&config, csv, json)
            }
        }
        Command::Export {
            checkpoint,
            dir,
            config,
        } => export(&config, &checkpoint, &dir),
        Command::Demo {
            nodes,
            datacenter,
            rounds,
            inner_steps,
            batch,
            outer_lr,
            preset,
            tokenizer,
            bpe_vocab,
            corpus,
            text,
            dir,
            json,
            http,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("canopy-demo-{}", std::process::id()))
            });
            let settings = demo::DemoSettings {
                nodes,
                datacenter,
                rounds,
                inner_steps,
                batch,
                outer_lr,
                preset,
                tokenizer,
                bpe_vocab,
                corpus,
                text,
                dir,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(swarm_demo(settings, json, &http))
        }
        Command::Corpus { command } => cli::corpus::run(command),
        Command::Invite { command } => cli::invite::run(command),
    }
}

/// The project directory of a configuration file.
fn project_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn open_state(config: &Path) -> anyhow::Result<State> {
    let db = project_dir(config).join(DB_FILE);
    if !db.exists() {
        bail!(
            "{} does not exist: run `canopy-coordinator run --config {}` first",
            db.display(),
            config.display()
        );
    }
    State::open_read_only(&db).with_context(|| format!("opening {}", db.display()))
}

/// Warns when `canopy.toml` holds a token yet others than its owner may read it.
fn warn_if_readable(path: &Path, config: &Config) {
    #[cfg(unix)]
    if config.dashboard.holds_secret()
        && let Ok(meta) = std::fs::metadata(path)
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} holds a dashboard token but others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}
