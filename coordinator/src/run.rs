//! The coordinator as a library: a project directory served on the network until it finishes
//! or `shutdown` resolves, with the swarm corpus build first when `[corpus]` asks for one.
//! What happens is reported as [`RunEvent`]s; `canopy-coordinator run` is this plus printing
//! them, and a program or a test can run a coordinator in-process the same way.

use std::path::PathBuf;
use std::sync::Arc;

use canopy_node::error::NodeError;
use canopy_node::network::{Multiaddr, NetworkConfig};
use canopy_protocol::Digest;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::corpus_swarm::{CorpusEvent, CorpusSwarmError, SwarmBuild};
use crate::dashboard::{self, DashboardError, Metrics};
use crate::project::{DB_FILE, Project, ProjectError};
use crate::service::{Service, ServiceEvent};

/// What to run.
pub struct RunOptions {
    /// The project's settings.
    pub config: Config,
    /// The project directory (state, chunk store, identity).
    pub dir: PathBuf,
    /// The dashboard's listener, when the coordinator serves one.
    pub dashboard: Option<dashboard::Listener>,
}

/// What a run reports as it goes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent {
    /// On the network and ready for nodes.
    Started {
        /// The coordinator's peer id.
        peer: PeerId,
        /// Where it listens.
        listen: Vec<Multiaddr>,
        /// The round training is at (0 before a corpus build).
        round: u64,
        /// The dashboard's address, when it serves one.
        dashboard: Option<String>,
        /// The corpus build that runs first, if any.
        corpus_build: Option<u64>,
        /// Training rounds in all.
        rounds: u32,
    },
    /// The corpus build's progress.
    Corpus(CorpusEvent),
    /// Training's progress.
    Service(ServiceEvent),
}

/// What runs first: training, or the corpus build it trains on.
enum First {
    Training(Box<Project>),
    Corpus(Arc<SwarmBuild>),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every round is done.
    Finished {
        /// The last round.
        round: u64,
        /// The final model's root.
        model: Digest,
    },
    /// Shut down before the end; running again carries on.
    Stopped {
        /// Whether it stopped during the corpus build.
        during_corpus_build: bool,
    },
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `network.listen` holds an address that is not a multiaddr.
    #[error("network.listen: {0:?} is not a multiaddr")]
    Listen(String),
    /// The chunk store, the identity or the network failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Opening the project or running its service failed.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The corpus build failed.
    #[error("the corpus build: {0}")]
    CorpusBuild(#[from] CorpusSwarmError),
    /// The dashboard failed.
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    /// A blocking step (opening the project, planning the build) failed to finish.
    #[error("{0} did not finish")]
    Panicked(&'static str),
}

/// Runs the project of `options` until it finishes or `shutdown` resolves, sending what
/// happens to `events` (a full or closed channel loses events, never the run).
pub async fn run(
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
    events: mpsc::Sender<RunEvent>,
) -> Result<Outcome, RunError> {
    let RunOptions {
        config,
        dir,
        dashboard,
    } = options;
    let mut shutdown = std::pin::pin!(shutdown);
    let listen = config
        .network
        .listen
        .iter()
        .map(|a| a.parse().map_err(|_| RunError::Listen(a.clone())))
        .collect::<Result<Vec<Multiaddr>, _>>()?;
    let metrics = Arc::new(Metrics::new());
    let network = NetworkConfig {
        listen,
        metrics: Some(metrics.registry()),
        mdns: config.network.mdns,
        kad_server: true,
        relay_server: true,
        sync_fetched: true,
        advertise_listen_addrs: config.network.public,
        provider_ttl: std::time::Duration::from_secs(config.network.provider_ttl_secs),
        ..NetworkConfig::default()
    };
    let store = Arc::new(canopy_node::store::ChunkStore::open(
        &dir,
        config.store.cap_mib << 20,
    )?);
    let (keys, _) = canopy_node::identity::load_or_create(&dir)?;
    let open_project = |config: Config| {
        let (d, s) = (dir.clone(), store.clone());
        async move {
            tokio::task::spawn_blocking(move || Project::open_with_store(&d, config, s))
                .await
                .map_err(|_| RunError::Panicked("opening the project"))?
                .map_err(RunError::from)
        }
    };
    // With [corpus], the build runs on the swarm first and training opens on its output.
    let first = match &config.corpus {
        Some(_) => {
            let (d, c, s) = (dir.clone(), config.clone(), store.clone());
            let build = tokio::task::spawn_blocking(move || SwarmBuild::open(&d, &c, s))
                .await
                .map_err(|_| RunError::Panicked("planning the corpus build"))??;
            First::Corpus(Arc::new(build))
        }
        None => First::Training(Box::new(open_project(config.clone()).await?)),
    };
    let (client, mut network_events, net_task) =
        canopy_node::network::start(keys.clone(), store.clone(), network).await?;
    let addrs = client.listen_addrs().await.unwrap_or_default();
    let dashboard = match dashboard {
        Some(listener) => {
            let url = listener.url()?;
            listener.spawn(
                dir.join(DB_FILE),
                dashboard::ProjectInfo {
                    name: config.project.name.clone(),
                    rounds: config.training.rounds,
                    peer: keys.peer_id().to_string(),
                },
                metrics.clone(),
            );
            Some(url)
        }
        None => None,
    };
    let _ = events.try_send(RunEvent::Started {
        peer: keys.peer_id(),
        listen: addrs,
        round: match &first {
            First::Training(p) => p.current().round,
            First::Corpus(_) => 0,
        },
        dashboard,
        corpus_build: match &first {
            First::Training(_) => None,
            First::Corpus(b) => Some(b.id()),
        },
        rounds: config.training.rounds,
    });
    let mut project = match first {
        First::Training(project) => *project,
        First::Corpus(build) => {
            if !build.finished()? {
                let (ctx, mut crx) = mpsc::channel(256);
                let forward = events.clone();
                let forwarder = tokio::spawn(async move {
                    while let Some(event) = crx.recv().await {
                        let _ = forward.send(RunEvent::Corpus(event)).await;
                    }
                });
                let done = build
                    .clone()
                    .run(&client, &mut network_events, shutdown.as_mut(), ctx)
                    .await;
                let _ = forwarder.await;
                if !done? {
                    let _ = client.shutdown().await;
                    let _ = net_task.await;
                    return Ok(Outcome::Stopped {
                        during_corpus_build: true,
                    });
                }
            }
            let mut training = config.clone();
            training.data.corpus = Some(build.kept());
            training.corpus = None;
            open_project(training).await?
        }
    };
    project.metrics = metrics;
    let project = Arc::new(project);
    let (tx, mut rx) = mpsc::channel(256);
    let service =
        Service::with_network(project.clone(), client, network_events, net_task, tx).await?;
    let forwarder = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let _ = events.send(RunEvent::Service(event)).await;
        }
    });
    let result = service.run(shutdown.as_mut()).await;
    // The service's events are all sent once it has returned; the last few still on their
    // way are waited for briefly.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), forwarder).await;
    result?;
    Ok(if project.finished() {
        let current = project.current();
        Outcome::Finished {
            round: current.round,
            model: current.model_root,
        }
    } else {
        Outcome::Stopped {
            during_corpus_build: false,
        }
    })
}
