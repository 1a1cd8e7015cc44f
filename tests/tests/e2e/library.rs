//! The coordinator and a node as libraries, in this process: `canopy_coordinator::run` serves
//! a small project and `canopy_node::Node` trains on it until every round is done, and a run
//! shut down midway says so and carries on from its directory when run again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use canopy_coordinator::config::Config;
use canopy_coordinator::service::ServiceEvent;
use canopy_coordinator::{Outcome, RunEvent, RunOptions};
use canopy_node::network::{Multiaddr, NetworkConfig};
use canopy_node::store::ChunkStore;
use canopy_node::{Node, NodeSettings};
use canopy_protocol::Keypair;
use canopy_shaders::{Cpu, Runtime};
use canopy_tests::processes::small_project;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

/// A running in-process coordinator: its events, how to stop it, and its outcome.
struct Running {
    events: mpsc::Receiver<RunEvent>,
    stop: Option<oneshot::Sender<()>>,
    outcome: tokio::task::JoinHandle<Result<Outcome, canopy_coordinator::RunError>>,
}

/// Starts the project in `dir` (a [`small_project`] on port 0) and waits for it to listen.
async fn start(dir: &Path, rounds: &str) -> (Running, PeerId, Multiaddr) {
    let config = small_project(dir, 0, &[("rounds", rounds)], "");
    let config = Config::load(&config).expect("the project's settings");
    let (tx, mut events) = mpsc::channel(256);
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        config,
        dir: dir.to_path_buf(),
        dashboard: None,
    };
    let outcome = tokio::spawn(canopy_coordinator::run(
        options,
        async move {
            let _ = stopped.await;
        },
        tx,
    ));
    let started = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("the coordinator starts in time");
    let Some(RunEvent::Started { peer, listen, .. }) = started else {
        panic!("the first event is Started: {started:?}");
    };
    let addr = listen.into_iter().next().expect("a listen address");
    let running = Running {
        events,
        stop: Some(stop),
        outcome,
    };
    (running, peer, addr)
}

/// A volunteer in `dir`, on the CPU path, bootstrapped from the coordinator at `addr`.
async fn volunteer(dir: &Path, coordinator: PeerId, addr: Multiaddr) -> Node {
    std::fs::create_dir_all(dir).expect("node dir");
    let store = Arc::new(ChunkStore::open(dir, 1 << 30).expect("store"));
    let network = NetworkConfig {
        bootstrap: vec![addr],
        ..NetworkConfig::loopback()
    };
    let runtime = Arc::new(Runtime::Cpu(Cpu::new()));
    let settings = NodeSettings::volunteer(coordinator, network, vec![runtime]);
    let keys = Keypair::generate().expect("key");
    let (node, mut events) = Node::start(keys, store, settings).await.expect("node");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    node
}

/// Waits for the next closed round; returns it and whether it was the last.
async fn next_round(running: &mut Running) -> (u64, bool) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(300), running.events.recv())
            .await
            .expect("a round closes in time")
            .expect("the coordinator is still running");
        if let RunEvent::Service(ServiceEvent::RoundClosed(summary)) = event {
            return (summary.round, summary.finished);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_and_nodes_run_in_process_to_the_end_and_stop_when_asked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");

    // A run stopped after its first round says so, and its directory carries on.
    let (mut running, peer, addr) = start(&project, "2").await;
    let a = volunteer(&tmp.path().join("a"), peer, addr.clone()).await;
    let b = volunteer(&tmp.path().join("b"), peer, addr).await;
    let (first, finished) = next_round(&mut running).await;
    assert_eq!((first, finished), (0, false));
    let _ = running.stop.take().expect("stop").send(());
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.outcome)
        .await
        .expect("the coordinator stops in time")
        .expect("the run's task")
        .expect("the run");
    assert_eq!(
        outcome,
        Outcome::Stopped {
            during_corpus_build: false
        }
    );
    a.leave(Duration::from_secs(5)).await;
    b.leave(Duration::from_secs(5)).await;

    // Run again on the same directory: it resumes at round 1 and finishes.
    let (mut running, peer, addr) = start(&project, "2").await;
    let _a = volunteer(&tmp.path().join("a"), peer, addr.clone()).await;
    let _b = volunteer(&tmp.path().join("b"), peer, addr).await;
    let (round, finished) = next_round(&mut running).await;
    assert_eq!(
        (round, finished),
        (1, true),
        "the second run takes up round 1"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.outcome)
        .await
        .expect("the coordinator ends in time")
        .expect("the run's task")
        .expect("the run");
    let Outcome::Finished { round, .. } = outcome else {
        panic!("the run finishes: {outcome:?}");
    };
    assert_eq!(round, 2, "two rounds done");
}
