//! The `canopy-coordinator` binary: runs a Canopy project.

use std::process::ExitCode;

use anyhow::Context;
use canopy_coordinator::walkthrough::{self, Settings};
use clap::{Parser, Subcommand};

/// The Canopy coordinator: schedules, verifies and aggregates a training project.
#[derive(Parser)]
#[command(name = "canopy-coordinator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk through the protocol in one process: signed model chunks, out-of-order
    /// reassembly, signed compressed updates, batch verification, refused replays.
    Demo {
        /// Volunteer identities to simulate.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// Parameters of the synthetic model.
        #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        params: u32,
        /// One JSON object per step and a final {"summary": …} object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            nodes,
            params,
            json,
        } => demo(nodes, params, json),
    }
}

fn demo(nodes: u16, params: u32, json: bool) -> anyhow::Result<()> {
    let settings = Settings {
        volunteers: usize::from(nodes),
        params: params as usize,
        ..Settings::default()
    };
    if !json {
        println!(
            "Canopy protocol walkthrough: 1 coordinator, {nodes} volunteers, {params} parameters \
             (in one process; the networked swarm demo replaces this once the swarm lands)\n"
        );
    }
    let summary = walkthrough::run(settings, |step| {
        if json {
            if let Ok(line) = serde_json::to_string(step) {
                println!("{line}");
            }
        } else {
            println!("[{}] {}", step.actor, step.event);
        }
    })
    .context("protocol walkthrough failed")?;
    if json {
        println!("{}", serde_json::json!({ "summary": summary }));
        return Ok(());
    }
    println!("\nrefused:");
    for reason in &summary.rejected {
        println!("  - {reason}");
    }
    println!("\nupdate codecs on the same {} updates:", nodes);
    println!(
        "  {:<10} {:>12} {:>10} {:>16}",
        "codec", "bytes", "vs f32", "max |err| of mean"
    );
    for c in &summary.codecs {
        println!(
            "  {:<10} {:>12} {:>9.3}x {:>16.2e}",
            c.codec, c.bytes, c.ratio_to_f32, c.mean_max_abs_error
        );
    }
    println!(
        "\nsummary: {} of {} results accepted, {} refused, model in {} chunks",
        summary.accepted,
        nodes,
        summary.rejected.len(),
        summary.model_chunks
    );
    Ok(())
}
