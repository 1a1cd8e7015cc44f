//! A node as a library: its swarm and one worker per compute runtime, started together and
//! stopped together. `canopy-node join` runs one around its status display and control file;
//! the coordinator's `demo` runs several in one process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use canopy_protocol::Keypair;
use canopy_protocol::messages::{AdapterInfo, Capabilities, Join, Tier};
use canopy_shaders::Runtime;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::VERSION;
use crate::error::NodeError;
use crate::network::{self, Client, NetworkConfig, NetworkEvent, NetworkStatus};
use crate::store::ChunkStore;
use crate::worker::{self, Shared, Worker, WorkerConfig, WorkerStop};

/// What a node is started with, besides its identity and its store.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The coordinator; only its signatures are accepted on model versions and data.
    pub coordinator: PeerId,
    /// The swarm's settings (listen addresses, the coordinator to bootstrap from, limits).
    pub network: NetworkConfig,
    /// One worker is started on each.
    pub runtimes: Vec<Arc<Runtime>>,
    /// The tier asked for; the coordinator grants `datacenter` only to allowlisted keys.
    pub tier: Tier,
    /// CPU threads the node offers (told to the coordinator).
    pub threads: u32,
    /// Self-declared display name, organisation and country, shown on the dashboard.
    pub display_name: Option<String>,
    /// See [`NodeSettings::display_name`].
    pub organisation: Option<String>,
    /// See [`NodeSettings::display_name`].
    pub country: Option<String>,
    /// An institution's invitation code, if any.
    pub invite: Option<String>,
    /// Most device (or host) memory one task may use, in bytes.
    pub memory_limit: Option<u64>,
    /// Most share of the time spent computing, in percent.
    pub cpu_share: Option<u8>,
    /// Whether the workers start paused.
    pub paused: bool,
}

impl NodeSettings {
    /// A volunteer of the coordinator `coordinator` on `network`, one worker on each of
    /// `runtimes`, one CPU thread offered, nothing self-declared, no limits, not paused.
    pub fn volunteer(
        coordinator: PeerId,
        network: NetworkConfig,
        runtimes: Vec<Arc<Runtime>>,
    ) -> Self {
        Self {
            coordinator,
            network,
            runtimes,
            tier: Tier::Volunteer,
            threads: 1,
            display_name: None,
            organisation: None,
            country: None,
            invite: None,
            memory_limit: None,
            cpu_share: None,
            paused: false,
        }
    }
}

/// A started node: its swarm, running in a task of its own, and its workers.
pub struct Node {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    workers: tokio::task::JoinSet<Result<(), WorkerStop>>,
    shared: Arc<Shared>,
    adapters: Vec<AdapterInfo>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("adapters", &self.adapters)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts the swarm with `keys` and `store`, then a worker per runtime, which joins the
    /// coordinator and asks it for work. Returns the node and its swarm's events, which the
    /// caller must keep reading (or drop).
    pub async fn start(
        keys: Keypair,
        store: Arc<ChunkStore>,
        settings: NodeSettings,
    ) -> Result<(Self, mpsc::Receiver<NetworkEvent>), NodeError> {
        let (client, events, task) = network::start(keys.clone(), store, settings.network).await?;
        let adapters: Vec<AdapterInfo> = settings
            .runtimes
            .iter()
            .map(|r| worker::adapter_info(r, settings.memory_limit))
            .collect();
        let join = Join {
            capabilities: Capabilities {
                adapters: adapters.clone(),
                threads: settings.threads,
                tier: settings.tier,
                software_version: VERSION.into(),
            },
            display_name: settings.display_name,
            organisation: settings.organisation,
            country: settings.country,
            invite: settings.invite,
            work: None,
        };
        let shared = Arc::new(Shared::default());
        shared.paused.store(settings.paused, Ordering::Relaxed);
        let mut workers = tokio::task::JoinSet::new();
        for runtime in settings.runtimes {
            let worker = Worker::new(
                client.clone(),
                keys.clone(),
                runtime,
                WorkerConfig {
                    coordinator: settings.coordinator,
                    join: join.clone(),
                    memory_limit: settings.memory_limit,
                    cpu_share: settings.cpu_share,
                },
                shared.clone(),
            );
            workers.spawn(worker.run());
        }
        let node = Self {
            client,
            task,
            workers,
            shared,
            adapters,
        };
        Ok((node, events))
    }

    /// The handle to the node's swarm.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The state the workers share with whoever runs the node: pause and stop flags, and
    /// what the workers have done.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The adapters the workers compute on, as told to the coordinator.
    pub fn adapters(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    /// Resolves when a worker stops for good with an error (the coordinator refused the
    /// node, the swarm stopped); pending while the workers run.
    pub async fn worker_failed(&mut self) -> WorkerStop {
        loop {
            match self.workers.join_next().await {
                Some(Ok(Err(stop))) => return stop,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Leaves: the workers hand their leases back (waiting at most `grace` for them), then
    /// the swarm stops. Returns the swarm's last status (bytes served and fetched), if it
    /// still answered.
    pub async fn leave(mut self, grace: Duration) -> Option<NetworkStatus> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let workers = &mut self.workers;
        let _ = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        let status = self.client.status().await.ok();
        let _ = self.client.shutdown().await;
        let _ = self.task.await;
        status
    }
}
