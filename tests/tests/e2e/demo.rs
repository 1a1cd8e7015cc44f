//! The demo binary, run as a user runs it.

use std::process::Command;
use std::time::Duration;

use canopy_tests::harness::{Program, binary, run_with_timeout};

/// The JSON objects a `--json` run printed, one per line.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Runs `canopy-coordinator demo ARGS --json --dir DIR` on the CPU path to completion and
/// returns its round objects and its summary.
fn cpu_demo(
    dir: &std::path::Path,
    args: &[&str],
    timeout: Duration,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let bin = binary(Program::Coordinator).expect("build coordinator");
    let mut cmd = Command::new(bin);
    cmd.arg("demo")
        .args(args)
        .args(["--json", "--dir"])
        .arg(dir)
        .env("CANOPY_ADAPTER", "cpu")
        .env_remove("CANOPY_REQUIRE_ADAPTER");
    let out = run_with_timeout(cmd, timeout).expect("demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = json_lines(&out.stdout);
    let summary = lines
        .pop()
        .and_then(|mut l| l.get_mut("summary").map(serde_json::Value::take))
        .expect("a summary line");
    let rounds = lines
        .into_iter()
        .filter_map(|mut l| l.get_mut("round").map(serde_json::Value::take))
        .collect();
    (rounds, summary)
}

/// Bad arguments get a clear error and a non-zero exit, not a panic (nor a swarm started).
#[test]
fn demo_refuses_bad_arguments() {
    let bin = binary(Program::Coordinator).unwrap();
    for (flag, value) in [
        ("--nodes", "0"),
        ("--outer-lr", "0"),
        ("--outer-lr", "NaN"),
        ("--outer-lr", "fast"),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.args(["demo", flag, value]);
        let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `canopy-coordinator demo --json`: a small swarm on loopback trains for two rounds, one
/// line per round, and a summary with the centralized baseline and the communication figures.
#[test]
fn the_swarm_demo_trains_and_reports_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (rounds, s) = cpu_demo(
        dir.path(),
        &[
            "--nodes",
            "2",
            "--datacenter",
            "1",
            "--rounds",
            "2",
            "--inner-steps",
            "10",
        ],
        Duration::from_secs(600),
    );
    assert_eq!(rounds.len(), 2);
    assert!(
        rounds
            .iter()
            .all(|r| r["accepted"] == 3 && r["bytes_sent"].as_u64().unwrap() > 0)
    );
    let initial = s["initial_eval_loss"].as_f64().unwrap();
    let last = s["final_eval_loss"].as_f64().unwrap();
    assert!(last < initial - 0.5, "held-out loss {initial} -> {last}");
    assert!(s["baseline_eval_loss"].as_f64().unwrap() < initial);
    assert!(s["comm_reduction"].as_f64().unwrap() > 1.0);
    // Who served the traffic: the coordinator (models, data) and the nodes (their updates).
    let by_coordinator = s["coordinator_served_bytes"].as_u64().unwrap();
    let by_peers = s["peers_served_bytes"].as_u64().unwrap();
    assert!(by_coordinator > 0 && by_peers > 0, "{s}");
    // What the coordinator received (the updates) was served by the nodes.
    let received = s["coordinator_received_bytes"].as_u64().unwrap();
    assert!(received > 0 && received <= by_peers, "{s}");
    let per_round: u64 = rounds
        .iter()
        .map(|r| r["bytes_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(by_coordinator + by_peers, per_round);
    assert_eq!(s["rounds"], 2);
    // Real text, in bits per byte: below what a unigram byte model of the same text scores.
    let bits = s["final_bits_per_byte"].as_f64().unwrap();
    let unigram = s["unigram_bits_per_byte"].as_f64().unwrap();
    assert!(unigram > 4.0 && unigram < 8.0, "{s}");
    assert!(
        bits < unigram,
        "{bits} bits per byte, unigram {unigram}: {s}"
    );
    assert!(s["tokenizer"].as_str().unwrap().contains("BPE"), "{s}");
    let samples = s["samples"].as_array().unwrap();
    assert!(samples.len() >= 5 && samples.iter().any(|x| x["language"] == "zh"));
    let model = dir.path().join("model");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
    ] {
        assert!(model.join(file).exists(), "{file}");
    }
}

/// The demo's swarm with the WGSL kernels on a software Vulkan adapter (lavapipe): the nodes
/// train on it, the demo says so, and the held-out loss falls. Without such an adapter this
/// skips with a notice, unless `CANOPY_REQUIRE_ADAPTER=1` (CI), where it fails.
#[test]
fn the_swarm_demo_trains_through_wgsl_on_a_software_adapter() {
    let bin = binary(Program::Coordinator).expect("build coordinator");
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(bin);
    cmd.args([
        "demo",
        "--nodes",
        "2",
        "--datacenter",
        "0",
        "--rounds",
        "2",
        "--inner-steps",
        "5",
        "--json",
        "--dir",
    ])
    .arg(dir.path())
    .env("CANOPY_ADAPTER", "software");
    let out = run_with_timeout(cmd, Duration::from_secs(900)).expect("demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let required = std::env::var("CANOPY_REQUIRE_ADAPTER").is_ok_and(|v| v == "1");
        assert!(
            !required && stderr.contains("adapter"),
            "the demo failed on the software adapter: {stderr}"
        );
        eprintln!(
            "notice: no software adapter here; skipping (CANOPY_REQUIRE_ADAPTER=1 makes this a failure): {stderr}"
        );
        return;
    }
    let lines = json_lines(&out.stdout);
    let s = &lines.last().expect("a summary line")["summary"];
    assert_eq!(
        s["adapter"]["kind"], "Software",
        "the nodes trained on the software adapter: {s}"
    );
    let name = s["adapter"]["name"].as_str().expect("adapter name");
    assert!(!name.is_empty(), "{s}");
    eprintln!("the nodes trained on {name} ({})", s["adapter"]["backend"]);
    let rounds: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("round")).collect();
    assert_eq!(rounds.len(), 2);
    assert!(rounds.iter().all(|r| r["accepted"] == 2), "{rounds:?}");
    let initial = s["initial_eval_loss"].as_f64().expect("initial loss");
    let last = s["final_eval_loss"].as_f64().expect("final loss");
    eprintln!("held-out loss {initial:.4} -> {last:.4}");
    assert!(
        last < initial - 0.1,
        "held-out loss fell: {initial} -> {last}"
    );
}

/// Parity: 4 volunteers training `tiny` through the real swarm (3 DiLoCo rounds of 40 inner
/// steps, 128 windows of 64 tokens per step on each) end within 5% of the held-out loss of
/// synchronous data-parallel training on the same tokens, computed in the same run, while
/// sending at least 100× less than that run's per-step f32 all-reduce would have. It measures
/// DiLoCo against data parallelism, so it keeps the byte-level generated text and the plain
/// averaging (outer rate 1) its bound was set on; on the real built-in text this
/// configuration is not yet within 5%.
#[test]
fn four_volunteers_reach_data_parallel_loss_with_100x_less_traffic() {
    let _heavy = canopy_tests::harness::heavy_test();
    let dir = tempfile::tempdir().expect("tmp");
    let (rounds, s) = cpu_demo(
        dir.path(),
        &[
            "--nodes",
            "4",
            "--datacenter",
            "0",
            "--rounds",
            "3",
            "--inner-steps",
            "40",
            "--batch",
            "128",
            "--outer-lr",
            "1",
            "--tokenizer",
            "bytes",
            "--text",
            "generated",
        ],
        Duration::from_secs(1800),
    );
    assert_eq!(rounds.len(), 3);
    assert!(
        rounds
            .iter()
            .all(|r| r["accepted"] == 4 && r["rejected"] == 0),
        "every honest update is accepted: {rounds:?}"
    );
    let initial = s["initial_eval_loss"].as_f64().expect("initial loss");
    let last = s["final_eval_loss"].as_f64().expect("final loss");
    let baseline = s["baseline_eval_loss"].as_f64().expect("baseline loss");
    let reduction = s["comm_reduction"]
        .as_f64()
        .expect("communication reduction");
    eprintln!(
        "held-out loss {initial:.4} -> {last:.4}, baseline {baseline:.4} (ratio {:.4}), {reduction:.1}x less traffic",
        last / baseline
    );
    // The baseline trained too: it is not a run that barely moved.
    assert!(baseline < initial / 2.0, "{s}");
    assert!(last <= 1.05 * baseline, "within 5% of the baseline: {s}");
    assert!(reduction >= 100.0, "at least 100x less traffic: {s}");
}
