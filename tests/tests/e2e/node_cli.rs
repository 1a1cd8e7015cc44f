//! The `canopy-node` binary as a volunteer runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use canopy_tests::harness::{Program, binary, run_with_timeout, spawn_node, wait_until};
use canopy_tests::http::{get, metric, parse_metrics};
use canopy_tests::processes::{Coordinator, free_port, small_project};

fn info(dir: &std::path::Path) -> serde_json::Value {
    let bin = binary(Program::Node).unwrap();
    let mut cmd = Command::new(bin);
    // As on a headless machine: no display session, Mesa's layers as installed.
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["info", "--json"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT");
    let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Probing the adapters prints nothing a newcomer would read as a failure.
    assert!(!stderr.contains("error"), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_creates_the_identity_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = info(dir.path());
    assert_eq!(first["identity_created"], true);
    let second = info(dir.path());
    assert_eq!(second["identity_created"], false);
    assert_eq!(first["peer_id"], second["peer_id"]);
    assert!(first["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
}

/// `--identity FILE` keeps the key apart from the data directory (one key per machine where
/// home directories are shared).
#[test]
fn an_identity_file_can_live_outside_the_data_directory() {
    let (dir, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = keys.path().join("host-a.key");
    let run = |identity: Option<&std::path::Path>| {
        let mut cmd = Command::new(binary(Program::Node).unwrap());
        cmd.arg("--data-dir").arg(dir.path());
        if let Some(identity) = identity {
            cmd.arg("--identity").arg(identity);
        }
        cmd.args(["info", "--json"]);
        let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let own = run(Some(&key));
    assert_eq!(own["identity_created"], true);
    assert_eq!(own["identity"], key.to_str().unwrap());
    assert!(key.exists());
    assert_eq!(run(Some(&key))["peer_id"], own["peer_id"]);
    let default = run(None);
    assert_ne!(default["peer_id"], own["peer_id"]);
}

#[test]
fn join_refuses_an_address_without_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let bin = binary(Program::Node).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["join", "/ip4/127.0.0.1/tcp/9"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/p2p/"), "{stderr}");
}

/// A node joins a swarm through a bootstrap peer, is seen there, and leaves cleanly on
/// SIGTERM with a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_connects_and_leaves_on_sigterm() {
    let boot = spawn_node(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let peer_id = info(dir.path())["peer_id"].as_str().unwrap().to_string();
    let bin = binary(Program::Node).unwrap();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // A laptop running on battery, as its power-supply directory says.
    let power = tempfile::tempdir().unwrap();
    let supply = |name: &str, files: &[(&str, &str)]| {
        let d = power.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (file, text) in files {
            std::fs::write(d.join(file), format!("{text}\n")).unwrap();
        }
    };
    supply("AC", &[("type", "Mains"), ("online", "0")]);
    supply("BAT0", &[("type", "Battery"), ("status", "Discharging")]);
    let child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env("CANOPY_POWER_SUPPLY_DIR", power.path())
        .arg("join")
        .arg(boot.addrs[0].to_string())
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--json",
            "--country",
            "fr",
            "--metrics",
            &metrics_addr.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = wait_until(Duration::from_secs(60), || async {
        boot.client
            .connected_peers()
            .await
            .unwrap_or_default()
            .iter()
            .any(|p| p.to_string() == peer_id)
    })
    .await;
    // Its /metrics (asked for with --metrics): its own figures and libp2p's.
    let scraped = wait_until(Duration::from_secs(30), || async {
        let samples = parse_metrics(&get(metrics_addr, "/metrics").body);
        samples
            .iter()
            .any(|(n, v)| n == "canopy_node_peers" && *v >= 1.0)
    })
    .await;
    let samples = parse_metrics(&get(metrics_addr, "/metrics").body);
    assert!(scraped, "{samples:?}");
    let build = format!(
        "canopy_node_build_info{{version=\"{}\"}}",
        canopy_node::VERSION
    );
    assert_eq!(metric(&samples, &build), 1.0);
    let dialled: f64 = samples
        .iter()
        .filter(|(n, _)| {
            n.starts_with("libp2p_swarm_connections_established_total{role=\"Dialer\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert!(dialled >= 1.0, "{samples:?}");
    // Polite: the lowest CPU priority (nice 19, field 19 of /proc/PID/stat), and paused
    // while on battery, going on by itself once plugged in.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let nice: i32 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
    assert_eq!(nice, 19, "{stat}");
    let paused_by = || {
        let mut cmd = Command::new(binary(Program::Node).unwrap());
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["status", "--json"]);
        let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["status"]["paused_by"].as_str().map(str::to_owned)
    };
    let on_battery = wait_until(Duration::from_secs(30), || async {
        paused_by().as_deref() == Some("on battery")
    })
    .await;
    assert!(on_battery, "{:?}", paused_by());
    supply("AC", &[("online", "1")]);
    supply("BAT0", &[("status", "Charging")]);
    let plugged = wait_until(Duration::from_secs(30), || async { paused_by().is_none() }).await;
    assert!(plugged, "{:?}", paused_by());
    let pid = child.id().to_string();
    // While it runs, no second node starts on its data directory, nor with its key from
    // another directory (as on a shared home); each is told why and by whom.
    let other = tempfile::tempdir().unwrap();
    let key = dir.path().join("identity.key");
    for (data_dir, identity, expect) in [
        (dir.path(), None, format!("(pid {pid}) is using")),
        (
            other.path(),
            Some(&key),
            format!("is using {}", key.display()),
        ),
    ] {
        let mut cmd = Command::new(binary(Program::Node).unwrap());
        cmd.arg("--data-dir").arg(data_dir);
        if let Some(identity) = identity {
            cmd.arg("--identity").arg(identity);
        }
        cmd.args(["join", &boot.addrs[0].to_string()])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        let out = run_with_timeout(cmd, Duration::from_secs(60)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second node started: {stderr}");
        assert!(stderr.contains(&expect), "{stderr}");
    }
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen,
        "the bootstrap peer never saw the node; stdout: {stdout}"
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(last["summary"]["uptime_s"].is_u64(), "{stdout}");
    // --log-format json: one object per event, no colour codes off a terminal.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\x1b'), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "INFO" && e["fields"]["message"].is_string()),
        "{stderr}"
    );
    assert!(last["summary"]["compute_ms"].is_u64(), "{stdout}");
    assert!(last["summary"]["tasks_done"].is_u64(), "{stdout}");
}

/// `canopy-node info` lists the GPUs and which `join` would use, following a scheduler's
/// variables: an empty CUDA_VISIBLE_DEVICES means the CPU path; one naming a GPU that is not
/// there is an error `info` reports and `join` refuses to start with.
#[test]
fn info_and_join_follow_the_schedulers_gpu_variables() {
    let dir = tempfile::tempdir().unwrap();
    let bin = binary(Program::Node).unwrap();
    let info_with = |cuda: &str| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["info", "--json"])
            .env("CUDA_VISIBLE_DEVICES", cuda);
        let out = run_with_timeout(cmd, Duration::from_secs(60)).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let none = info_with("");
    assert_eq!(none["gpu_choice_ok"], true, "{none}");
    let why = none["gpu_choice"].as_str().unwrap();
    assert!(
        why.contains("CUDA_VISIBLE_DEVICES=") && why.contains("CPU path"),
        "{why}"
    );
    let gpus = none["gpus"].as_array().unwrap();
    assert!(gpus.iter().all(|g| g["chosen"] == false), "{none}");
    // One past the NVIDIA GPUs this machine has (none on CI): not there.
    let nvidia = gpus.iter().filter(|g| g["vendor"] == 0x10de).count();
    let missing = info_with(&nvidia.to_string());
    assert_eq!(missing["gpu_choice_ok"], false, "{missing}");
    let why = missing["gpu_choice"].as_str().unwrap();
    assert!(
        why.contains(&format!("CUDA_VISIBLE_DEVICES names GPU {nvidia}")),
        "{why}"
    );
    let mut join = Command::new(&bin);
    join.arg("--data-dir")
        .arg(dir.path())
        .arg("join")
        .arg(format!(
            "/ip4/127.0.0.1/tcp/9/p2p/{}",
            none["peer_id"].as_str().unwrap()
        ))
        .env("CUDA_VISIBLE_DEVICES", nvidia.to_string());
    let out = run_with_timeout(join, Duration::from_secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("CUDA_VISIBLE_DEVICES names GPU {nvidia}")),
        "{stderr}"
    );
}

/// A coordinator that admits `canopy-node` 99.0.0 and newer: this node is told, in plain
/// words, which version it needs and that it runs an older one, and stops.
#[test]
fn a_node_older_than_the_project_admits_is_told_to_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[],
        "[admission]\nmin_node_version = \"99.0.0\"\n",
    );
    let coordinator = Coordinator::start(&config);
    let mut cmd = Command::new(binary(Program::Node).unwrap());
    cmd.arg("--data-dir").arg(tmp.path().join("node")).args([
        "join",
        &coordinator.addr,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    let out = run_with_timeout(cmd, Duration::from_secs(120)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let runs = format!("this node runs {}", canopy_node::VERSION);
    assert!(
        stderr.contains("needs canopy-node 99.0.0 or newer")
            && stderr.contains(&runs)
            && stderr.contains("upgrade canopy-node"),
        "{stderr}"
    );
}

/// `canopy-node selftest` runs every kernel through the WGSL on a software Vulkan driver and
/// compares it with the CPU path: all pass, exit status 0.
#[test]
fn selftest_passes_on_the_software_adapter() {
    let bin = binary(Program::Node).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["selftest", "--json"])
        .env("CANOPY_ADAPTER", "software");
    let out = run_with_timeout(cmd, Duration::from_secs(300)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && stderr.contains("adapter")
        && std::env::var("CANOPY_REQUIRE_ADAPTER").as_deref() != Ok("1")
    {
        eprintln!(
            "no software Vulkan adapter here; skipping (CI sets CANOPY_REQUIRE_ADAPTER=1): {stderr}"
        );
        return;
    }
    assert!(
        out.status.success(),
        "selftest failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 0);
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() >= 22, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["kernel"] == "minhash" && r["passed"] == true)
    );
}

/// `canopy-node bench` on the CPU path reports positive throughput figures.
#[test]
fn bench_reports_figures_on_the_cpu_path() {
    let bin = binary(Program::Node).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["bench", "--json", "--size", "128"])
        .env("CANOPY_ADAPTER", "cpu")
        .env_remove("CANOPY_REQUIRE_ADAPTER");
    let out = run_with_timeout(cmd, Duration::from_secs(300)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["matmul_gflops_cpu"].as_f64().unwrap() > 0.0);
    assert!(report["train_tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["matmul_gflops_wgsl"].is_null());
}

/// `canopy-node train` trains the tiny preset on the built-in real text, its loss falls, and
/// the export it writes holds the weights, the byte-level tokenizer's files and a model card.
#[test]
fn train_lowers_the_loss_and_exports() {
    let out_dir = tempfile::tempdir().unwrap();
    let bin = binary(Program::Node).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "train", "--steps", "40", "--batch", "4", "--seq", "32", "--json", "--export",
    ])
    .arg(out_dir.path())
    .env("CANOPY_ADAPTER", "cpu")
    .env_remove("CANOPY_REQUIRE_ADAPTER");
    let out = run_with_timeout(cmd, Duration::from_secs(300)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let summary = &last["summary"];
    let first = summary["first_loss"].as_f64().unwrap();
    let fin = summary["final_loss"].as_f64().unwrap();
    assert!(fin < first - 1.0, "loss {first} -> {fin}");
    assert!(out_dir.path().join("model.safetensors").exists());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BloomForCausalLM");
    let tokenizer = std::fs::read(out_dir.path().join("tokenizer.json")).expect("tokenizer.json");
    let tokenizer = canopy_text::Tokenizer::from_json(&tokenizer).expect("Canopy's layout");
    assert_eq!(
        tokenizer.vocab() as u64,
        config["vocab_size"].as_u64().unwrap()
    );
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        assert!(out_dir.path().join(file).exists(), "{file}");
    }
    let card = std::fs::read_to_string(out_dir.path().join("README.md")).expect("model card");
    for part in [
        "license: \"apache-2.0\"",
        "- \"zh\"",
        "udhr-24",
        "## Limitations",
    ] {
        assert!(card.contains(part), "{part}: {card}");
    }
}
