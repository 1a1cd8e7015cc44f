//! The corpus build on the swarm: a project with `[corpus]`, a real coordinator process and
//! volunteer processes (and, in the second test, the in-test adversary) on loopback. The
//! outputs must be byte-identical to a local `canopy-coordinator corpus build` of the same
//! sources, every chunk must be computed by two distinct peers, the dashboard's `/api/corpus`
//! must show the build as `status --json` does, a peer that returns tampered
//! signatures must be caught by the two-peer rule, and a coordinator killed mid-build must
//! resume the build from its database without redoing or losing an agreed chunk.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy_tests::adversary::Adversary;
use canopy_tests::http::get;
use canopy_tests::processes::{
    Coordinator, Volunteer, coordinator_cli, coordinator_json, coordinator_output, dir_files,
    free_port, signal, small_project,
};

/// Sample sources of `documents` documents each cut into small chunks (about 15 for 30
/// documents), and the chunk count and kept-document count of their local build in `local`.
pub(crate) fn sources_and_local_build(tmp: &Path, documents: u32) -> (PathBuf, PathBuf, u64, u64) {
    let sources = tmp.join("sources");
    coordinator_cli(&[
        "corpus",
        "sample",
        &sources.to_string_lossy(),
        "--documents",
        &documents.to_string(),
    ]);
    std::fs::write(sources.join("corpus.toml"), "chunk_bytes = 16384\n").expect("corpus.toml");
    let local = tmp.join("local");
    let out = coordinator_output(
        &[
            "corpus",
            "build",
            "--sources",
            &sources.to_string_lossy(),
            "--out",
            &local.to_string_lossy(),
            "--adapter",
            "cpu",
            "--json",
        ],
        &[("CANOPY_REQUIRE_ADAPTER", None)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    let chunks = summary["chunks"].as_u64().expect("chunks");
    let kept = summary["kept_documents"].as_u64().expect("kept");
    assert!(
        chunks >= 4,
        "the sample should make several chunks: {summary}"
    );
    (sources, local, chunks, kept)
}

/// The project also serves its dashboard, on the returned address.
fn corpus_project(dir: &Path, sources: &Path, rounds: &str) -> (PathBuf, SocketAddr) {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "[corpus]\nsources = {:?}\nout = \"corpus-out\"\n[verification]\nrerun_fraction = 0.0\n\
         [dashboard]\nlisten = \"{http}\"\n",
        sources.to_string_lossy()
    );
    let config = small_project(
        dir,
        free_port(),
        &[
            ("rounds", rounds),
            ("tasks_per_round", "2"),
            ("min_updates", "2"),
        ],
        &extra,
    );
    (config, http)
}

/// The ledger's corpus entries.
pub(crate) fn corpus_ledger(config: &Path) -> Vec<serde_json::Value> {
    let ledger = coordinator_json("ledger", config);
    ledger
        .as_array()
        .expect("ledger entries")
        .iter()
        .filter(|e| e["kind"] == "corpus")
        .cloned()
        .collect()
}

/// Verified corpus entries grouped by result root: one group per chunk.
fn verified_by_result(entries: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["verified"] == "verified") {
        groups
            .entry(e["result_hash"].as_str().expect("result hash").to_string())
            .or_default()
            .push(e["peer"].as_str().expect("peer").to_string());
    }
    groups
}

pub(crate) fn wait_finished(coordinator: &mut Coordinator) -> serde_json::Value {
    coordinator
        .wait_for(Duration::from_secs(600), |e| {
            e["corpus"]["event"] == "finished"
        })
        .expect("the swarm build finishes")
}

/// The corpus events named `event` printed so far.
fn corpus_events(coordinator: &Coordinator, event: &str) -> Vec<serde_json::Value> {
    coordinator
        .events_named("corpus")
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

#[test]
fn the_swarm_builds_the_corpus_like_a_local_build_and_then_trains_on_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (sources, local, chunks, kept) = sources_and_local_build(tmp.path(), 30);
    let project = tmp.path().join("project");
    let (config, http) = corpus_project(&project, &sources, "2");
    let mut coordinator = Coordinator::start(&config);
    let nodes: Vec<Volunteer> =
        Volunteer::start_many(tmp.path(), "volunteer", 3, &coordinator.addr);
    let finished = wait_finished(&mut coordinator);
    assert_eq!(finished["corpus"]["kept_documents"].as_u64(), Some(kept));
    let agreed = corpus_events(&coordinator, "agreed");
    assert_eq!(agreed.len() as u64, chunks, "one agreement per chunk");
    // The dashboard shows the finished build while the training rounds run.
    let api = get(http, "/api/corpus").json();

    // Training runs on the kept text, then the coordinator exits.
    assert!(coordinator.wait_exit(Duration::from_secs(600)).success());
    drop(nodes);
    assert_eq!(coordinator.events_named("round").len(), 2);

    // The outputs are the local build's, byte for byte.
    let swarm = dir_files(&project.join("corpus-out"));
    let local = dir_files(&local);
    assert_eq!(
        swarm.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &local {
        assert!(swarm[name] == *bytes, "{name} differs from the local build");
    }

    // Every chunk was computed by two distinct peers whose results agreed.
    let entries = corpus_ledger(&config);
    let groups = verified_by_result(&entries);
    assert_eq!(groups.len() as u64, chunks, "{entries:#?}");
    for (result, peers) in &groups {
        let distinct: BTreeSet<&String> = peers.iter().collect();
        assert!(
            distinct.len() >= 2,
            "chunk result {result}: runs by {peers:?}"
        );
    }
    assert!(entries.iter().all(|e| e["accepted"] == true));

    // `status --json` reports the build with its data card.
    let status = coordinator_json("status", &config);
    let build = &status["corpus_builds"][0];
    assert_eq!(build["chunks_done"].as_u64(), Some(chunks), "{build}");
    assert_eq!(build["chunks_total"].as_u64(), Some(chunks));
    assert_eq!(build["documents_kept"].as_u64(), Some(kept));
    assert!(build["finished_ms"].is_u64());
    assert!(build["datacard"]["sources"].is_array(), "{build}");
    assert_eq!(
        api["builds"], status["corpus_builds"],
        "`/api/corpus` and `status --json` agree"
    );
}

/// SIGKILL after the first chunks agree, restart on the same directory: the build resumes
/// with those chunks done, the volunteers reconnect by themselves, every chunk is agreed
/// exactly once across both runs, and the outputs are still the local build's.
#[test]
fn a_killed_coordinator_resumes_the_swarm_corpus_build() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Enough chunks (about 150) that the build is still running when the kill comes.
    let (sources, local, chunks, kept) = sources_and_local_build(tmp.path(), 300);
    let project = tmp.path().join("project");
    let (config, _) = corpus_project(&project, &sources, "1");
    let mut coordinator = Coordinator::start(&config);
    let nodes: Vec<Volunteer> =
        Volunteer::start_many(tmp.path(), "volunteer", 3, &coordinator.addr);
    coordinator
        .wait_for(Duration::from_secs(300), |e| {
            e["corpus"]["event"] == "agreed"
        })
        .expect("a first chunk is agreed");
    signal(&coordinator.child, "KILL");
    let _ = coordinator.child.wait();
    let agreed_before = corpus_events(&coordinator, "agreed").len();
    assert!(
        (agreed_before as u64) < chunks,
        "the kill came before the build finished ({agreed_before} of {chunks} chunks)"
    );
    let ledger_before: Vec<serde_json::Value> = corpus_ledger(&config)
        .into_iter()
        .filter(|e| e["verified"] == "verified")
        .collect();

    let mut restarted = Coordinator::start(&config);
    let planned = restarted
        .wait_for(Duration::from_secs(60), |e| {
            e["corpus"]["event"] == "planned"
        })
        .expect("the build is planned again");
    let done = planned["corpus"]["done"].as_u64().expect("done");
    assert!(
        done >= agreed_before as u64,
        "every chunk agreed before the kill is still agreed: {planned}"
    );
    let finished = wait_finished(&mut restarted);
    assert_eq!(finished["corpus"]["kept_documents"].as_u64(), Some(kept));
    let agreed_after = corpus_events(&restarted, "agreed").len() as u64;
    assert_eq!(
        done + agreed_after,
        chunks,
        "each chunk is agreed once across the two runs"
    );
    assert!(restarted.wait_exit(Duration::from_secs(600)).success());
    drop(nodes);

    let entries = corpus_ledger(&config);
    for entry in &ledger_before {
        assert!(entries.contains(entry), "{entry} survived the kill");
    }
    assert_eq!(verified_by_result(&entries).len() as u64, chunks);
    assert!(
        dir_files(&project.join("corpus-out")) == dir_files(&local),
        "the outputs differ from the local build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_returning_tampered_signatures_is_caught_by_the_two_peer_rule() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (sources, local, chunks, _) =
        tokio::task::block_in_place(|| sources_and_local_build(tmp.path(), 30));
    let project = tmp.path().join("project");
    let (config, _) = corpus_project(&project, &sources, "1");
    let mut coordinator = tokio::task::block_in_place(|| Coordinator::start(&config));
    // The adversary joins first, so it takes a run of many chunks.
    let mut adversary = Adversary::join(&tmp.path().join("mallory"), &coordinator.addr).await;
    let mallory = adversary.peer_id().to_string();
    let first = adversary
        .attack_corpus(Duration::from_secs(60))
        .await
        .expect("a corpus lease");
    let nodes: Vec<Volunteer> =
        Volunteer::start_many(tmp.path(), "volunteer", 2, &coordinator.addr);
    let mut outcomes = vec![first];
    while let Some(o) = adversary.attack_corpus(Duration::from_secs(5)).await {
        outcomes.push(o);
    }
    adversary.shutdown().await;
    tokio::task::block_in_place(|| {
        wait_finished(&mut coordinator);
    });
    eprintln!("adversary outcomes: {outcomes:#?}");

    // Its results disagree with the honest runs: refused, ledger `failed`, reputation down.
    let entries = tokio::task::block_in_place(|| corpus_ledger(&config));
    let its: Vec<_> = entries.iter().filter(|e| e["peer"] == mallory).collect();
    assert!(!its.is_empty());
    assert!(
        its.iter().all(|e| e["accepted"] == false),
        "no tampered result is accepted: {its:#?}"
    );
    assert!(
        its.iter().any(|e| e["verified"] == "failed"),
        "the two-peer rule caught it: {its:#?}"
    );
    let failed_events = coordinator
        .events_named("corpus")
        .into_iter()
        .filter(|e| e["event"] == "agreed")
        .filter(|e| {
            e["failed"]
                .as_array()
                .is_some_and(|f| f.iter().any(|p| p == mallory.as_str()))
        })
        .count();
    assert!(failed_events >= 1);
    let status = tokio::task::block_in_place(|| coordinator_json("status", &config));
    let peers = status["peers"].as_array().expect("peers");
    let reputation = |p: &serde_json::Value| p["reputation"].as_i64().expect("reputation");
    let attacker = peers
        .iter()
        .find(|p| p["peer"] == mallory.as_str())
        .expect("the adversary is known");
    assert!(reputation(attacker) < 0, "{attacker}");
    for p in peers.iter().filter(|p| p["peer"] != mallory.as_str()) {
        assert!(reputation(p) > 0, "honest peers gain: {p}");
    }

    // The outputs are still the local build's.
    let groups = verified_by_result(&entries);
    assert_eq!(groups.len() as u64, chunks);
    let swarm = dir_files(&project.join("corpus-out"));
    assert!(
        swarm == dir_files(&local),
        "the outputs differ from the local build"
    );
    drop(nodes);
}
