//! The coordinator as a real process with real volunteer processes: a whole run with the
//! datacenter tier verifying volunteers, the CLI around it, a coordinator killed mid-round
//! and restarted, and a node handing its lease back on SIGTERM.

use std::time::Duration;

use canopy_tests::processes::{
    Coordinator, Volunteer, coordinator_cli, coordinator_json, export_latest, free_port,
    node_peer_id, signal, small_project,
};

fn accepted_train(ledger: &serde_json::Value) -> Vec<(u64, String)> {
    ledger
        .as_array()
        .expect("ledger array")
        .iter()
        .filter(|e| e["kind"] == "train" && canopy_tests::processes::aggregated_entry(e))
        .map(|e| {
            (
                e["task"].as_u64().expect("task"),
                e["peer"].as_str().expect("peer").to_string(),
            )
        })
        .collect()
}

/// init, allow, run with two volunteers and one datacenter node re-running every volunteer
/// task, then status, ledger and export.
#[test]
fn a_project_trains_verifies_and_exports_through_the_cli() {
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");
    let out = coordinator_cli(&["init", &project.to_string_lossy()]);
    assert!(out.contains("coordinator peer id"), "{out}");
    let template = std::fs::read_to_string(project.join("canopy.toml")).expect("template");
    assert!(
        template.contains("inner_steps"),
        "the template documents the keys"
    );
    let config = small_project(
        &project,
        free_port(),
        &[],
        "[verification]\nrerun_fraction = 1.0\n",
    );
    let dc_dir = tmp.path().join("dc");
    let dc_peer = node_peer_id(&dc_dir);
    let config_s = config.to_string_lossy().to_string();
    let allowed = coordinator_cli(&[
        "allow",
        &dc_peer,
        "--tier",
        "datacenter",
        "--config",
        &config_s,
    ]);
    assert!(allowed.contains("datacenter"), "{allowed}");

    let mut coordinator = Coordinator::start(&config);
    let _dc = Volunteer::start(
        &dc_dir,
        &coordinator.addr,
        &["--tier", "datacenter", "--name", "dc"],
    );
    let _v1 = Volunteer::start(
        &tmp.path().join("v1"),
        &coordinator.addr,
        &["--name", "ada"],
    );
    let _v2 = Volunteer::start(
        &tmp.path().join("v2"),
        &coordinator.addr,
        &["--name", "lin"],
    );
    let status = coordinator.wait_exit(Duration::from_secs(600));
    assert!(status.success(), "the coordinator finishes the run");
    let rounds = coordinator.events_named("round");
    assert_eq!(rounds.len(), 3, "one event per round: {rounds:?}");

    let status = coordinator_json("status", &config);
    let initial = status["initial_eval_loss"].as_f64().expect("initial loss");
    let closed: Vec<&serde_json::Value> = status["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter(|r| !r["closed_ms"].is_null())
        .collect();
    assert_eq!(closed.len(), 3);
    let last = closed[2]["eval_loss"].as_f64().expect("eval loss");
    assert!(last < initial - 0.5, "held-out loss {initial} -> {last}");
    let peers = status["peers"].as_array().expect("peers");
    assert!(
        peers
            .iter()
            .any(|p| p["peer"] == dc_peer.as_str() && p["tier"] == "datacenter")
    );

    let ledger = coordinator_json("ledger", &config);
    let entries = ledger.as_array().expect("ledger");
    let verifications = entries.iter().filter(|e| e["kind"] == "verify").count();
    assert!(
        verifications >= 1,
        "the datacenter node re-ran volunteer tasks: {ledger}"
    );
    assert!(
        entries.iter().any(|e| e["verified"] == "verified"),
        "a volunteer result was verified by a re-run: {ledger}"
    );
    assert!(
        entries.iter().all(|e| e["verified"] != "failed"),
        "honest work passes: {ledger}"
    );
    let csv = coordinator_cli(&["ledger", "--csv", "--config", &config_s]);
    assert_eq!(csv.lines().count(), entries.len() + 1);

    let export = tmp.path().join("export");
    export_latest(&config, &export);
    assert!(export.join("model.safetensors").exists());
    assert!(export.join("config.json").exists());
}

/// SIGKILL in the middle of a round, restart on the same directory: the volunteers reconnect
/// by themselves, the run finishes, and every result accepted before the kill is still in the
/// ledger and was aggregated. Updates and model steps travel in 2 bits, so the restart also
/// reloads the coordinator's step carry and the nodes rebuild every version from low-bit steps.
#[test]
fn the_coordinator_resumes_after_a_kill_mid_round() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[
            ("inner_steps", "40"),
            ("rounds", "4"),
            ("compression", "\"lowbit\""),
            ("compression_bits", "2"),
        ],
        "[aggregation]\nstep_bits = 2\n",
    );
    let mut coordinator = Coordinator::start(&config);
    let _v1 = Volunteer::start(&tmp.path().join("v1"), &coordinator.addr, &[]);
    let _v2 = Volunteer::start(&tmp.path().join("v2"), &coordinator.addr, &[]);
    let _v3 = Volunteer::start(&tmp.path().join("v3"), &coordinator.addr, &[]);
    coordinator
        .wait_for(Duration::from_secs(300), |e| e["round"]["round"] == 0)
        .expect("round 0 closes");
    // A result of round 1 is in: kill the coordinator before the round can close.
    let results = coordinator.events_named("result").len();
    assert!(
        coordinator.wait_for_count("result", results + 1, Duration::from_secs(300)),
        "a result of round 1 arrives"
    );
    signal(&coordinator.child, "KILL");
    let _ = coordinator.child.wait();
    let closed_before = coordinator.events_named("round").len();
    let before = accepted_train(&coordinator_json("ledger", &config));
    assert!(!before.is_empty());

    let mut restarted = Coordinator::start(&config);
    let status = restarted.wait_exit(Duration::from_secs(600));
    assert!(
        status.success(),
        "the restarted coordinator finishes the run"
    );
    assert!(
        closed_before < 4,
        "the kill came before the last round closed"
    );

    let after = accepted_train(&coordinator_json("ledger", &config));
    for entry in &before {
        assert!(
            after.contains(entry),
            "accepted result {entry:?} survived the kill"
        );
    }
    let status = coordinator_json("status", &config);
    let rounds = status["rounds"].as_array().expect("rounds");
    let closed: Vec<&serde_json::Value> = rounds
        .iter()
        .filter(|r| !r["closed_ms"].is_null())
        .collect();
    assert_eq!(closed.len(), 4, "every round closed: {rounds:?}");
    let aggregated: u64 = closed
        .iter()
        .map(|r| r["accepted"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        aggregated as usize,
        after.len(),
        "the ledger and the aggregation inputs agree"
    );
}

/// `backup` beside a running coordinator, then the project's directory is lost (SIGKILL,
/// deleted): run on the backup, the coordinator carries on from the round the backup was
/// taken in, under the same key and address, its volunteer reconnects by itself, and the run
/// finishes with the rounds before the backup as they were.
#[test]
fn a_backup_taken_while_running_restores_and_resumes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");
    let config = small_project(&project, free_port(), &[("rounds", "5")], "");
    let mut coordinator = Coordinator::start(&config);
    let _v1 = Volunteer::start(&tmp.path().join("v1"), &coordinator.addr, &[]);
    let _v2 = Volunteer::start(&tmp.path().join("v2"), &coordinator.addr, &[]);
    coordinator
        .wait_for(Duration::from_secs(300), |e| e["round"]["round"] == 1)
        .expect("round 1 closes");
    let backup = tmp.path().join("backup");
    let out = coordinator_cli(&[
        "backup",
        &backup.to_string_lossy(),
        "--json",
        "--config",
        &config.to_string_lossy(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&out).expect("backup JSON");
    let taken_in = summary["round"].as_u64().expect("round");
    assert!(taken_in >= 2, "{summary}");
    assert!(summary["chunks"].as_u64().expect("chunks") > 0, "{summary}");
    let before = coordinator_json("status", &config);
    signal(&coordinator.child, "KILL");
    let _ = coordinator.child.wait();
    std::fs::remove_dir_all(&project).expect("the project is lost");

    let restored = backup.join("canopy.toml");
    let mut coordinator = Coordinator::start(&restored);
    let status = coordinator.wait_exit(Duration::from_secs(600));
    assert!(status.success(), "the restored project finishes the run");
    let after = coordinator_json("status", &restored);
    let closed = |s: &serde_json::Value| -> Vec<(u64, f64)> {
        s["rounds"]
            .as_array()
            .expect("rounds")
            .iter()
            .filter(|r| !r["closed_ms"].is_null())
            .map(|r| {
                (
                    r["round"].as_u64().expect("round"),
                    r["eval_loss"].as_f64().expect("loss"),
                )
            })
            .collect()
    };
    let (earlier, restored_rounds) = (closed(&before), closed(&after));
    assert_eq!(
        restored_rounds.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4],
        "every round closed once"
    );
    for round in earlier.iter().filter(|r| r.0 < taken_in) {
        assert!(
            restored_rounds.contains(round),
            "round {round:?} is as it was before the backup"
        );
    }
}

/// A node stopped with SIGTERM in the middle of a task hands its lease back at once.
#[test]
fn a_node_hands_its_lease_back_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[("inner_steps", "100000")],
        "",
    );
    let mut coordinator = Coordinator::start(&config);
    let node = Volunteer::start(&tmp.path().join("v1"), &coordinator.addr, &[]);
    let leased = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        coordinator_json("status", &config)["active_leases"] == 1
    });
    assert!(leased, "the node took a lease");
    // Let it start training.
    std::thread::sleep(Duration::from_secs(3));
    signal(&node.child, "TERM");
    let released = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        coordinator_json("status", &config)["active_leases"] == 0
    });
    assert!(released, "the lease was handed back");
    assert_eq!(coordinator_json("status", &config)["open_tasks"], 3);
    assert!(
        coordinator.child.try_wait().expect("wait").is_none(),
        "the coordinator runs on"
    );
}
