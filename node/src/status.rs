//! `canopy-node status`, and the status line `join` prints: what the node is doing, why it
//! is or is not working, its network and its credit, in words.

use canopy_node::control;
use canopy_node::worker::{self, WorkerStatus};

use crate::credit;

pub(crate) fn status_line(file: &control::NodeStatus, w: &WorkerStatus) -> String {
    let task = match (w.task, w.round) {
        (Some(t), Some(r)) => format!(
            "task {t} (round {r}) {} {:>3.0}%",
            w.state,
            w.progress * 100.0
        ),
        _ => w.state.clone(),
    };
    format!(
        "peers {:>3} | {task} | {:.0} tok/s | done {} ok, {} refused, {} tokens, {:.0}s compute | up {}s",
        file.peers,
        w.tokens_per_sec,
        w.accepted,
        w.rejected,
        w.tokens,
        w.compute_ms as f64 / 1000.0,
        file.uptime_s
    )
}

pub(crate) fn node_status(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let status = control::read_status(dir)?;
    let running = status
        .as_ref()
        .is_some_and(|s| worker::now_ms().saturating_sub(s.updated_ms) < control::STALE_MS);
    if json {
        println!(
            "{}",
            serde_json::json!({ "running": running, "paused_flag": control::is_paused(dir), "status": status })
        );
        return Ok(());
    }
    match &status {
        Some(s) if running => {
            let w: WorkerStatus = serde_json::from_value(s.worker.clone()).unwrap_or_default();
            println!("running (pid {}), peer {}", s.pid, s.peer);
            println!("compute on {}", s.adapters.join(", "));
            println!("{}", status_line(s, &w));
            if let Some(e) = &w.last_error {
                println!("last problem: {e}");
            }
            println!("network: {}", reachability_words(s));
            println!("{}", paths_line(s));
            if let Some(report) = &s.credit {
                println!("credit: {}", credit::words(report));
            }
        }
        _ => println!("no node is running on {}", dir.display()),
    }
    let why = if control::is_paused(dir) {
        Some("paused by you (`canopy-node resume` to go on)".to_owned())
    } else {
        status
            .as_ref()
            .filter(|_| running)
            .and_then(|s| s.paused_by.as_ref())
            .map(|why| format!("paused: {why} (goes on by itself when that changes)"))
    };
    match (why, &status) {
        (Some(why), _) => println!("{why}"),
        (None, Some(s)) if running => println!("working: its rules allow it now"),
        _ => {}
    }
    if let Some(s) = status.as_ref().filter(|_| running) {
        println!("rules: {}", s.rules);
    }
    Ok(())
}

/// The node's reachability in a volunteer's words, with what to do about it if anything.
pub(crate) fn reachability_words(file: &control::NodeStatus) -> String {
    let Some(r) = file.reachability else {
        return "unknown".into();
    };
    let mut words = r.describe().to_owned();
    if !file.relays.is_empty() {
        words.push_str(&format!(" (relays: {})", file.relays.join(", ")));
    }
    if let Some(advice) = r.advice() {
        words.push_str(&format!("; {advice}"));
    }
    words
}

/// Where the node's data came from and went, and its limits.
fn paths_line(file: &control::NodeStatus) -> String {
    let p = &file.paths;
    let limit = |n: u64| match n {
        0 => "no limit".to_owned(),
        n => format!("{}/s", human_bytes(n)),
    };
    format!(
        "traffic: fetched {} directly, {} through relays ({} from the coordinator); served {} ({} through relays); {} hole punch(es), {} failed; upload {}, download {}",
        human_bytes(p.fetched_direct),
        human_bytes(p.fetched_relayed),
        human_bytes(p.fetched_from_bootstrap),
        human_bytes(file.bytes_served),
        human_bytes(p.served_relayed),
        p.hole_punches,
        p.hole_punch_failures,
        limit(file.upload_limit),
        limit(file.download_limit),
    )
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
