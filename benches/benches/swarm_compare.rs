//! Side-by-side comparison: decentralized DiLoCo training through a real local swarm against
//! centralized synchronous data parallelism, on the same tokens, in the same run.
//!
//! Runs [`canopy_coordinator::demo::run`]: a coordinator, the volunteer nodes and the
//! datacenter-tier nodes, each its own libp2p peer on loopback, train the model with DiLoCo
//! rounds; then the same model is trained centrally (one process taking as many steps as each
//! node took, with the batch of all nodes together). The settings are those of
//! `canopy-coordinator demo` (4 volunteers, 1 datacenter node, 8 rounds of 50 inner steps of
//! 8 windows per node, the tiny model), or overridden with `SWARM_COMPARE_NODES`,
//! `SWARM_COMPARE_DATACENTER`, `SWARM_COMPARE_ROUNDS`, `SWARM_COMPARE_INNER_STEPS`,
//! `SWARM_COMPARE_BATCH` and `SWARM_COMPARE_OUTER_LR`. The nodes compute on the adapter
//! `CANOPY_ADAPTER` picks (the CPU path where there is no GPU).
//!
//! Reports, as a table and as one JSON line (`{"swarm_compare": …}`):
//! - the loss ratio: final held-out loss of the decentralized run over the baseline's;
//! - the communication reduction: what a ring all-reduce of f32 gradients at every step would
//!   have sent, over the bytes the swarm actually sent (model, data and update chunks);
//! - the wall-clock overhead of decentralization: decentralized seconds over baseline seconds.
//!
//! ```text
//! cargo bench -p canopy-benches --bench swarm_compare
//! SWARM_COMPARE_NODES=2 SWARM_COMPARE_ROUNDS=3 cargo bench -p canopy-benches --bench swarm_compare
//! ```

use std::sync::Arc;

use canopy_coordinator::config::{BuiltinText, Preset, TokenizerChoice};
use canopy_coordinator::demo::{self, DemoSettings};
use canopy_shaders::Runtime;

/// `SWARM_COMPARE_<name>` from the environment, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    canopy_benches::env_setting("SWARM_COMPARE", name, default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = DemoSettings {
        nodes: setting("NODES", 4),
        datacenter: setting("DATACENTER", 1),
        rounds: setting("ROUNDS", 8),
        inner_steps: setting("INNER_STEPS", 50),
        batch: setting("BATCH", demo::DEFAULT_BATCH),
        outer_lr: setting("OUTER_LR", demo::DEFAULT_OUTER_LR),
        preset: Preset::Tiny,
        tokenizer: TokenizerChoice::Bytes,
        bpe_vocab: demo::DEFAULT_BPE_VOCAB,
        text: BuiltinText::Udhr,
        corpus: None,
        dir: dir.path().to_path_buf(),
    };
    assert!(
        settings.nodes >= 1 && settings.rounds >= 1 && settings.inner_steps >= 1,
        "nodes, rounds and inner steps must be at least 1"
    );
    let runtime = Runtime::from_env().expect("choosing where kernels run (CANOPY_ADAPTER)");
    println!(
        "swarm_compare: {} volunteers + {} datacenter node(s), {} rounds x {} inner steps of {} windows, tiny model, on {}",
        settings.nodes,
        settings.datacenter,
        settings.rounds,
        settings.inner_steps,
        settings.batch,
        runtime.report().name
    );
    let rt = tokio::runtime::Runtime::new().expect("the async runtime");
    let (nodes, datacenter, rounds, inner_steps, batch) = (
        settings.nodes,
        settings.datacenter,
        settings.rounds,
        settings.inner_steps,
        settings.batch,
    );
    let summary = rt
        .block_on(demo::run(settings, Arc::new(runtime), None, |r| {
            println!(
                "  round {:>3}: held-out {:.4}, {} accepted, {:.1} MB sent, {:.1}s",
                r.round,
                r.eval_loss,
                r.accepted,
                r.bytes_sent as f64 / 1e6,
                r.elapsed_s
            );
        }))
        .expect("the demo run");

    let loss_ratio = summary.final_eval_loss / summary.baseline_eval_loss;
    let overhead = summary.decentralized_s / summary.baseline_s;
    println!();
    println!("{:<34} {:>14} {:>14}", "", "decentralized", "centralized");
    println!(
        "{:<34} {:>14.4} {:>14.4}",
        format!("held-out loss (initial {:.4})", summary.initial_eval_loss),
        summary.final_eval_loss,
        summary.baseline_eval_loss
    );
    println!(
        "{:<34} {:>14.1} {:>14.1}",
        "wall clock (s)", summary.decentralized_s, summary.baseline_s
    );
    println!(
        "{:<34} {:>14.1} {:>14.1}",
        "MB per node per round",
        summary.bytes_per_node_per_round / 1e6,
        summary.ddp_bytes_equivalent / f64::from(nodes + datacenter) / f64::from(rounds) / 1e6
    );
    println!();
    println!("loss ratio (final / baseline):        {loss_ratio:.3}");
    println!(
        "communication reduction:              {:.1}x",
        summary.comm_reduction
    );
    println!(
        "coordinator traffic (sent / received): {:.1} / {:.1} MB",
        summary.coordinator_served_bytes as f64 / 1e6,
        summary.coordinator_received_bytes as f64 / 1e6
    );
    println!("decentralization overhead (wall):     {overhead:.2}x");
    println!(
        "updates accepted / rejected:          {} / {}",
        summary.accepted, summary.rejected
    );
    println!(
        "{}",
        serde_json::json!({
            "swarm_compare": {
                "nodes": nodes,
                "datacenter": datacenter,
                "rounds": rounds,
                "inner_steps": inner_steps,
                "batch": batch,
                "adapter": summary.adapter,
                "initial_eval_loss": summary.initial_eval_loss,
                "final_eval_loss": summary.final_eval_loss,
                "baseline_eval_loss": summary.baseline_eval_loss,
                "loss_ratio": loss_ratio,
                "bytes_per_node_per_round": summary.bytes_per_node_per_round,
                "ddp_bytes_equivalent": summary.ddp_bytes_equivalent,
                "comm_reduction": summary.comm_reduction,
                "coordinator_served_bytes": summary.coordinator_served_bytes,
                "coordinator_received_bytes": summary.coordinator_received_bytes,
                "decentralized_s": summary.decentralized_s,
                "baseline_s": summary.baseline_s,
                "overhead": overhead,
                "accepted": summary.accepted,
                "rejected": summary.rejected,
            }
        })
    );
}
