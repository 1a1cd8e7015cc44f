//! `canopy-coordinator demo`: the local swarm demo run in one process, and its summary.

use std::io::Write;

use anyhow::Context;
use canopy_coordinator::demo;

use crate::cli::args::HttpArgs;

/// `demo`: the coordinator, volunteer and datacenter nodes in this process on loopback,
/// then the centralized baseline, with progress or `--json` lines and a summary.
pub(crate) async fn swarm_demo(
    settings: demo::DemoSettings,
    json: bool,
    http: &HttpArgs,
) -> anyhow::Result<()> {
    let runtime = canopy_shaders::Runtime::from_env().context("choosing where kernels run")?;
    let listener = http.bind(None).await?;
    let url = listener.as_ref().map(|l| l.url()).transpose()?;
    if let Some(url) = &url {
        if json {
            println!("{}", serde_json::json!({ "dashboard": { "url": url } }));
        } else {
            println!("dashboard at {url}");
        }
    }
    if !json {
        println!(
            "Canopy local swarm demo: 1 coordinator, {} volunteers, {} datacenter node(s), each its own libp2p peer on loopback",
            settings.nodes, settings.datacenter
        );
        println!("compute: {}", runtime.report());
        if matches!(runtime, canopy_shaders::Runtime::Cpu(_)) {
            println!("(no GPU adapter: the nodes train on the CPU path)");
        }
        println!("run directory: {}\n", settings.dir.display());
        println!(
            "{:>5} {:>10} {:>10} {:>8} {:>8} {:>10} {:>8}",
            "round", "train", "held-out", "accepted", "rejected", "sent", "elapsed"
        );
    }
    let summary = demo::run(settings, std::sync::Arc::new(runtime), listener, |r| {
        if json {
            println!("{}", serde_json::json!({ "round": r }));
        } else {
            println!(
                "{:>5} {:>10} {:>10.4} {:>8} {:>8} {:>9.1}M {:>7.1}s",
                r.round,
                r.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
                r.eval_loss,
                r.accepted,
                r.rejected,
                r.bytes_sent as f64 / 1e6,
                r.elapsed_s
            );
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    if json {
        println!("{}", serde_json::json!({ "summary": summary }));
    } else {
        print_demo_summary(&summary);
    }
    if let Some(url) = url {
        if !json {
            println!("\nthe dashboard keeps serving at {url}; Ctrl-C to quit");
        }
        let _ = std::io::stdout().flush();
        canopy_node::control::shutdown_signal()
            .context("listening for Ctrl-C and SIGTERM")?
            .await;
    }
    Ok(())
}

fn print_demo_summary(summary: &demo::DemoSummary) {
    println!(
        "\nthe nodes trained on: {} ({}, {:?})",
        summary.adapter.name, summary.adapter.backend, summary.adapter.kind
    );
    println!(
        "held-out loss: initial {:.4}, decentralized {:.4}, centralized baseline {:.4} ({:+.1}%)",
        summary.initial_eval_loss,
        summary.final_eval_loss,
        summary.baseline_eval_loss,
        (summary.final_eval_loss / summary.baseline_eval_loss - 1.0) * 100.0
    );
    println!(
        "in bits per byte: decentralized {:.3}, centralized {:.3}, unigram byte model {:.3}",
        summary.final_bits_per_byte, summary.baseline_bits_per_byte, summary.unigram_bits_per_byte
    );
    println!("tokenizer: {}", summary.tokenizer);
    if !summary.samples.is_empty() {
        println!(
            "what the final model writes (greedy, without repeating itself, after each prompt):"
        );
        for s in &summary.samples {
            println!(
                "  [{}] {}⟨{}⟩",
                s.language,
                s.prompt,
                s.continuation.replace('\n', " ⏎ ")
            );
        }
    }
    println!(
        "communication: {:.1} MB per node per round; data-parallel would send {:.0}x as much",
        summary.bytes_per_node_per_round / 1e6,
        summary.comm_reduction
    );
    let served = (summary.coordinator_served_bytes + summary.peers_served_bytes).max(1) as f64;
    println!(
        "traffic served: {:.0}% by the coordinator ({:.1} MB), {:.0}% by the nodes ({:.1} MB)",
        100.0 * summary.coordinator_served_bytes as f64 / served,
        summary.coordinator_served_bytes as f64 / 1e6,
        100.0 * summary.peers_served_bytes as f64 / served,
        summary.peers_served_bytes as f64 / 1e6,
    );
    println!(
        "coordinator traffic: {:.1} MB sent, {:.1} MB received ({:.2} MB a round)",
        summary.coordinator_served_bytes as f64 / 1e6,
        summary.coordinator_received_bytes as f64 / 1e6,
        (summary.coordinator_served_bytes + summary.coordinator_received_bytes) as f64
            / 1e6
            / summary.rounds.max(1) as f64,
    );
    println!(
        "time: decentralized {:.0}s, centralized {:.0}s; {} updates accepted, {} rejected",
        summary.decentralized_s, summary.baseline_s, summary.accepted, summary.rejected
    );
    println!("exported model: {}", summary.exported.display());
}
