//! `canopy-node join`: the node's run on a coordinator's swarm, until it is stopped.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use canopy_node::cli::JoinConfig;
use canopy_node::metrics::NodeMetrics;
use canopy_node::network::{self, NetworkEvent};
use canopy_node::polite;
use canopy_node::settings;
use canopy_node::store::ChunkStore;
use canopy_node::worker;
use canopy_node::{Node, NodeSettings};
use canopy_node::{VERSION, control, gpus, identity, lock};
use canopy_shaders::Runtime;

use crate::{credit, status};

/// Starts serving `/metrics` on `addr` when asked: the node's figures and libp2p's.
async fn serve_metrics(addr: Option<SocketAddr>) -> anyhow::Result<Option<NodeMetrics>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics: listening on {addr}"))?;
    let metrics = NodeMetrics::new();
    let registry = metrics.registry();
    tokio::spawn(async move {
        if let Err(e) = canopy_node::metrics::serve(listener, registry).await {
            tracing::warn!("the metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("metrics at http://{addr}/metrics");
    Ok(Some(metrics))
}

/// Joins the coordinator in `config` with the identity in `dir` (or `identity`) and works
/// until stopped (SIGINT/SIGTERM, or the control socket), then hands back what it holds.
pub(crate) async fn join(
    dir: &Path,
    identity: Option<&Path>,
    config: JoinConfig,
) -> anyhow::Result<()> {
    // Catch Ctrl-C and SIGTERM from the start, so leaving is always clean.
    let shutdown =
        canopy_node::control::shutdown_signal().context("listening for Ctrl-C and SIGTERM")?;
    tokio::pin!(shutdown);
    let key_file = lock::identity_file(dir, identity);
    let (keys, _) = identity::load_or_create_at(&key_file)
        .with_context(|| format!("loading the identity {}", key_file.display()))?;
    // One node per data directory and per key, for as long as this one runs.
    let _lock = lock::NodeLock::acquire(dir, &key_file)?;
    let (runtimes, gpu_reason) = gpus::worker_runtimes(&config.gpus)?;
    let store =
        Arc::new(ChunkStore::open(dir, config.store_cap).context("opening the chunk store")?);
    // Nothing is held yet: what an earlier run of this node kept (its last tasks' objects,
    // shards) is not known to be needed, and would otherwise stay until the cap forced it out.
    // Shards come back on demand.
    let freed = store.collect();
    if freed > 0 {
        tracing::info!(
            bytes = freed,
            "deleted what an earlier run left in the chunk store"
        );
    }
    let node_metrics = serve_metrics(config.metrics).await?;
    let network_config = network::NetworkConfig {
        metrics: node_metrics.as_ref().map(NodeMetrics::registry),
        ..config.network.clone()
    };
    if config.paused {
        control::set_paused(dir, true)?;
    }
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    // What each worker computes on, and whether that is the CPU path.
    let reports: Vec<(String, bool)> = runtimes
        .iter()
        .map(|r| (r.report().to_string(), matches!(r, Runtime::Cpu(_))))
        .collect();
    let settings = NodeSettings {
        coordinator: config.coordinator,
        network: network_config,
        runtimes: runtimes.into_iter().map(Arc::new).collect(),
        tier: config.tier,
        threads,
        display_name: config.display_name.clone(),
        organisation: config.organisation.clone(),
        country: config.country.clone(),
        invite: config.invite.clone(),
        memory_limit: config.memory_limit,
        cpu_share: config.rules.cpu_share,
        paused: control::is_paused(dir),
    };
    let (mut node, mut events) = Node::start(keys.clone(), store.clone(), settings)
        .await
        .context("starting the swarm")?;
    let client = node.client().clone();
    let shared = node.shared().clone();
    let started = Instant::now();
    let credit = credit::watch(client.clone(), config.coordinator);
    let mut probes = polite::Probes::from_env();
    let rules_words = config.rules.describe();
    let say = |line: String| {
        if !config.json {
            eprintln!("{line}");
        }
    };
    say(format!("canopy-node {VERSION}: peer {}", keys.peer_id()));
    match settings::write_template_if_missing(dir) {
        Ok(path) => say(format!("settings: {}", path.display())),
        Err(e) => tracing::warn!("writing the settings file: {e}"),
    }
    say(format!("rules: {rules_words}"));
    if config.rules.when == polite::When::Idle && probes.idle.idle_for().is_none() {
        say(
            "this machine does not tell when it is in use: --when idle works as --when always"
                .into(),
        );
    }
    for addr in client.listen_addrs().await.unwrap_or_default() {
        say(format!("listening on {addr}"));
    }
    say(format!("workers: {} ({gpu_reason})", reports.len()));
    for (i, (report, cpu)) in reports.iter().enumerate() {
        say(format!("worker {i} computes on {report}"));
        if *cpu {
            say(
                "no GPU adapter in use: this node trains on the CPU path (slower, but it counts)"
                    .into(),
            );
        }
    }
    let adapter_names: Vec<String> = node.adapters().iter().map(|a| a.name.clone()).collect();

    let live = std::io::stderr().is_terminal() && !config.json;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut banned = 0u64;
    let mut ticks = 0u64;
    let mut reachability = None;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = events.recv() => match event {
                Some(NetworkEvent::PeerBanned(peer)) => {
                    banned += 1;
                    tracing::warn!(%peer, "banned a misbehaving peer");
                }
                Some(_) => {}
                None => {
                    failure = Some(anyhow::anyhow!("the swarm stopped unexpectedly"));
                    break;
                }
            },
            stop = node.worker_failed() => {
                failure = Some(anyhow::anyhow!(stop));
                break;
            },
            _ = tick.tick() => {
                ticks += 1;
                let by_volunteer = control::is_paused(dir);
                let paused_by = config.rules.why_not(&mut probes, polite::Hours::now_minute());
                let paused = by_volunteer || paused_by.is_some();
                if paused != shared.paused.swap(paused, Ordering::Relaxed) {
                    say(match (&paused_by, paused) {
                        (Some(why), true) if !by_volunteer => format!("\npaused: {why}; the node hands its task back and goes on when that changes"),
                        (_, true) => "\npaused: handing back the task; `canopy-node resume` to go on".into(),
                        _ => "\nresumed".into(),
                    });
                }
                let status = client.status().await.context("asking the swarm for its status")?;
                let w = shared.status();
                let file = control::NodeStatus {
                    paused_by: paused_by.filter(|_| !by_volunteer),
                    rules: rules_words.clone(),
                    credit: *credit.lock().unwrap_or_else(|e| e.into_inner()),
                    pid: std::process::id(),
                    peer: keys.peer_id().to_string(),
                    updated_ms: worker::now_ms(),
                    uptime_s: started.elapsed().as_secs(),
                    peers: status.connected,
                    bytes_served: status.bytes_served,
                    bytes_fetched: status.bytes_fetched,
                    adapters: adapter_names.clone(),
                    paused,
                    worker: serde_json::to_value(&w).unwrap_or_default(),
                    store_bytes: store.stats().bytes,
                    store_objects: store.stats().objects,
                    provider_records: status.provider_records,
                    remote_provider_records: status.remote_provider_records,
                    reachability: Some(status.reachability),
                    relays: status.relays.clone(),
                    paths: status.paths,
                    upload_limit: status.max_upload_bytes_per_sec,
                    download_limit: status.max_download_bytes_per_sec,
                };
                if reachability != Some(status.reachability) {
                    reachability = Some(status.reachability);
                    say(format!("\nnetwork: {}", status::reachability_words(&file)));
                }
                if let Some(m) = &node_metrics {
                    m.update(&file, &w);
                }
                if let Err(e) = control::write_status(dir, &file) {
                    tracing::warn!("writing the status file: {e}");
                }
                if config.json {
                    if ticks % 5 == 1 {
                        println!("{}", serde_json::json!({ "status": file }));
                    }
                } else {
                    let line = status::status_line(&file, &w);
                    if live {
                        eprint!("\r{line}\x1b[K");
                        let _ = std::io::stderr().flush();
                    } else if ticks % 10 == 1 {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
    // Hand leases back: the workers see the flag, cancel their task, and release it.
    let status = node.leave(Duration::from_secs(10)).await;
    let _ = std::fs::remove_file(dir.join(control::STATUS_FILE));
    let w = shared.status();
    let (served, fetched) = status.map_or((0, 0), |s| (s.bytes_served, s.bytes_fetched));
    if config.json {
        println!(
            "{}",
            serde_json::json!({ "summary": {
                "uptime_s": started.elapsed().as_secs(),
                "bytes_served": served,
                "bytes_fetched": fetched,
                "peers_banned": banned,
                "tasks_done": w.accepted + w.rejected,
                "tasks_accepted": w.accepted,
                "tasks_rejected": w.rejected,
                "tokens": w.tokens,
                "compute_ms": w.compute_ms,
            }})
        );
    } else {
        if live {
            eprintln!();
        }
        eprintln!(
            "left the swarm after {}s: {} task(s) done ({} accepted, {} refused), {} tokens trained in {:.1}s of compute; served {}, fetched {}, banned {banned} misbehaving peer(s)",
            started.elapsed().as_secs(),
            w.accepted + w.rejected,
            w.accepted,
            w.rejected,
            w.tokens,
            w.compute_ms as f64 / 1000.0,
            status::human_bytes(served),
            status::human_bytes(fetched)
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
