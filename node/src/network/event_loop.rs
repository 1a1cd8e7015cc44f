//! The swarm task: owns the libp2p swarm, answers [`Command`]s, serves chunks, drives fetches,
//! judges peers, and forwards verified messages as [`NetworkEvent`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_protocol::messages::{ChunkRequest, ManifestResponse, NoWork};
use canopy_protocol::{Digest, Envelope, Keypair, Message};
use futures::StreamExt;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, gossipsub, identify, mdns, noise, relay, tcp, upnp,
    yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{
    Behaviour, BehaviourEvent, KAD_PROTOCOL, MODELS_TOPIC, RELAY_HOP_PROTOCOL, TASKS_TOPIC,
};
use super::codec::{RawChunk, Response};
use super::fetch::{Fetch, Fetched, MAX_PROVIDER_QUERIES};
use super::rate::TokenBucket;
use super::reachability::Paths;
use super::scores::{Offence, Scores};
use super::serve::{Delayed, UploadLimits};
use super::writer::{Finish, WriteJob, spawn_writer};
use super::{Command, NetworkConfig, NetworkEvent, NetworkStatus, provider_key};
use crate::error::NodeError;
use crate::store::{ChunkStore, Durability};

mod answers;
mod commands;
mod events;
mod fetching;
mod paths;
mod providing;

/// Requests from others waiting for the application's answer, at most.
const MAX_PENDING_INBOUND: usize = 1024;
/// How often answers and requests held back by a bandwidth limit are looked at again.
const PACE_EVERY: Duration = Duration::from_millis(50);
/// How often the event loop withdraws the provider records of objects the store let go.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Manifests of provided objects kept to answer manifest requests, at most (oldest go first).
const MAX_PROVIDED_MANIFESTS: usize = 4096;

enum Pending {
    Chunk {
        fetch: u64,
        index: usize,
        id: Digest,
        /// When the request went out (the fetch sizes the peer's window by it).
        sent: Instant,
    },
    Request(oneshot::Sender<Result<Message, NodeError>>),
}

enum QueryPurpose {
    Provide(Option<oneshot::Sender<Result<(), NodeError>>>),
    Providers(u64),
    FindProviders(Vec<PeerId>, oneshot::Sender<Vec<PeerId>>),
    Bootstrap(Option<oneshot::Sender<Result<(), NodeError>>>),
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    keys: Keypair,
    store: Arc<ChunkStore>,
    config: NetworkConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    scores: Scores,
    fetches: HashMap<u64, Fetch>,
    next_fetch: u64,
    requests: HashMap<OutboundRequestId, Pending>,
    queries: HashMap<QueryId, QueryPurpose>,
    inbound: HashMap<u64, ResponseChannel<Response>>,
    next_inbound: u64,
    nonce: u64,
    /// Upload pacing: per peer and in total, with the answers that wait for it.
    upload: UploadLimits,
    bytes_served: u64,
    bytes_fetched: u64,
    dropped_events: u64,
    /// Requests answered "busy" because the application's queue was full.
    refused_busy: u64,
    /// When provider records of released objects were last withdrawn.
    swept_at: Instant,
    /// Bootstrap peers, by id, to redial when none of them is connected.
    bootstrap_peers: Vec<PeerId>,
    /// When the bootstrap peers may be dialled again, and the wait after that (doubling up to
    /// a minute, back to a second once one is connected).
    redial_at: Instant,
    redial_backoff: Duration,
    /// Where each bootstrap peer was reached (to use it as a relay if it serves as one).
    bootstrap_addrs: HashMap<PeerId, Multiaddr>,
    /// The signed manifests of the objects this peer provided, so that a peer holding only a
    /// root (a corpus result named in a task output) can ask for the manifest; bounded.
    provided: HashMap<Digest, canopy_protocol::SignedManifest>,
    provided_order: std::collections::VecDeque<Digest>,
    /// Connections by path, relays, reachability.
    paths: Paths,
    /// The total download limit, when set.
    download: Option<TokenBucket>,
    /// Objects fetched and now stored (by a blocking task), to announce.
    stored_tx: mpsc::Sender<Digest>,
    stored_rx: mpsc::Receiver<Digest>,
    /// libp2p's metrics, where the configuration asks for them.
    p2p_metrics: Option<libp2p::metrics::Metrics>,
}

const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);

/// The peer id at the end of `addr` (`…/p2p/<peer>`) and the address without it.
fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some((
            peer,
            addr.iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect(),
        )),
        _ => None,
    }
}

fn network_error(e: impl std::fmt::Display) -> NodeError {
    NodeError::Network(e.to_string())
}

impl EventLoop {
    pub(crate) async fn new(
        keys: Keypair,
        store: Arc<ChunkStore>,
        config: NetworkConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
    ) -> Result<Self, NodeError> {
        let behaviour_config = config.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keys.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(network_error)?
            .with_quic()
            .with_dns()
            .map_err(network_error)?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(network_error)?
            .with_behaviour(|key, relay| {
                Behaviour::new(key, relay, &behaviour_config)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(network_error)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for topic in [MODELS_TOPIC, TASKS_TOPIC] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&gossipsub::IdentTopic::new(topic))
                .map_err(network_error)?;
        }
        let mut listening = 0;
        for addr in &config.listen {
            swarm.listen_on(addr.clone()).map_err(network_error)?;
            listening += 1;
        }
        // Wait until every listener has an address, so callers can hand them out at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut bound = 0;
        while bound < listening {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                    tracing::info!(%address, "listening");
                    if config.advertise_listen_addrs {
                        swarm.add_external_address(address);
                    }
                    bound += 1;
                }
                Ok(SwarmEvent::ListenerError { error, .. }) => return Err(network_error(error)),
                Ok(_) => {}
                Err(_) => return Err(NodeError::Network("listeners did not start in 10 s".into())),
            }
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let paths = Paths::new(config.advertise_listen_addrs, config.relay_server);
        let upload = UploadLimits::new(
            config.serve_rate_bytes_per_sec,
            config.max_upload_bytes_per_sec,
        );
        let download = (config.max_download_bytes_per_sec > 0)
            .then(|| TokenBucket::new(config.max_download_bytes_per_sec, Instant::now()));
        let (stored_tx, stored_rx) = mpsc::channel(256);
        let mut this = Self {
            swarm,
            keys,
            store,
            config,
            commands,
            events,
            scores: Scores::default(),
            fetches: HashMap::new(),
            next_fetch: 0,
            requests: HashMap::new(),
            queries: HashMap::new(),
            inbound: HashMap::new(),
            next_inbound: 0,
            nonce,
            upload,
            bytes_served: 0,
            bytes_fetched: 0,
            dropped_events: 0,
            refused_busy: 0,
            swept_at: Instant::now(),
            bootstrap_peers: Vec::new(),
            redial_at: Instant::now() + REDIAL_MIN,
            redial_backoff: REDIAL_MIN,
            bootstrap_addrs: HashMap::new(),
            provided: HashMap::new(),
            provided_order: std::collections::VecDeque::new(),
            paths,
            download,
            stored_tx,
            stored_rx,
            p2p_metrics: None,
        };
        this.p2p_metrics = this
            .config
            .metrics
            .as_ref()
            .map(|r| libp2p::metrics::Metrics::new(&mut crate::metrics::lock(r)));
        this.bootstrap_peers = this
            .config
            .bootstrap
            .iter()
            .filter_map(|a| split_peer(a).map(|(p, _)| p))
            .collect();
        this.update_kad_mode();
        // A node never bans the coordinator (or other bootstrap peer) it joined through.
        for peer in this.bootstrap_peers.clone() {
            this.scores.protect(peer);
        }
        for addr in this.config.bootstrap.clone() {
            if let Err(e) = this.dial(addr.clone()) {
                tracing::warn!(%addr, "bootstrap peer: {e}");
            }
        }
        if !this.config.bootstrap.is_empty()
            && let Ok(id) = this.swarm.behaviour_mut().kad.bootstrap()
        {
            this.queries.insert(id, QueryPurpose::Bootstrap(None));
        }
        Ok(this)
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Paced uploads and downloads under a limit go on every 50 ms.
        let mut pace = tokio::time::interval(PACE_EVERY);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
                // Every peer that holds an object serves it.
                Some(root) = self.stored_rx.recv() => self.announce(root, None),
                _ = pace.tick(), if self.upload.is_pacing() || self.download.is_some() => {
                    self.on_pace()
                }
            }
        }
        for (_, fetch) in self.fetches.drain() {
            if let Some(reply) = fetch.reply {
                let _ = reply.send(Err(NodeError::NetworkStopped));
            }
        }
        tracing::info!("swarm stopped");
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce = self.nonce.wrapping_add(1);
        self.nonce
    }

    fn seal(&mut self, round: u64, message: &Message) -> Result<Envelope, NodeError> {
        let nonce = self.next_nonce();
        Envelope::seal(&self.keys, round, nonce, message).map_err(network_error)
    }

    /// Seals `message` for `round` and sends it on `channel`; whether it went out (a failure
    /// to seal is logged, naming `what` was being answered).
    fn send_sealed(
        &mut self,
        channel: ResponseChannel<Response>,
        round: u64,
        message: &Message,
        what: &str,
    ) -> bool {
        match self.seal(round, message) {
            Ok(env) => self
                .swarm
                .behaviour_mut()
                .canopy
                .send_response(channel, Response::Signed(Box::new(env)))
                .is_ok(),
            Err(e) => {
                tracing::warn!("cannot answer {what}: {e}");
                false
            }
        }
    }

    /// Queues `event` for the application; false (and counted) when its queue is full.
    fn emit(&mut self, event: NetworkEvent) -> bool {
        if self.events.try_send(event).is_err() {
            self.dropped_events += 1;
            if self.dropped_events.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped_events,
                    "event queue full; events dropped"
                );
            }
            return false;
        }
        true
    }

    fn penalise(&mut self, peer: PeerId, offence: Offence) {
        if self.scores.penalise(peer, offence, Instant::now()) {
            tracing::warn!(%peer, "peer banned");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.swarm.behaviour_mut().kad.remove_peer(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            for fetch in self.fetches.values_mut() {
                fetch.exclude(peer);
            }
            self.emit(NetworkEvent::PeerBanned(peer));
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NodeError> {
        if let Some((peer, base)) = split_peer(&addr) {
            self.swarm.behaviour_mut().kad.add_address(&peer, base);
        }
        self.swarm.dial(addr).map_err(network_error)
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.swarm
            .listeners()
            .map(|a| a.clone().with(Protocol::P2p(me)))
            .collect()
    }

    fn on_pace(&mut self) {
        self.send_paced();
        if self.download.is_some() {
            let ids: Vec<u64> = self.fetches.keys().copied().collect();
            for id in ids {
                self.pump(id);
            }
        }
    }

    fn on_tick(&mut self) {
        self.redial_bootstrap();
        self.manage_relays();
        for id in self.paths.relayed_to_close(Instant::now()) {
            self.swarm.close_connection(id);
        }
        // Requests whose peer gave up (its stream timed out or closed) free their slot.
        self.inbound.retain(|_, channel| channel.is_open());
        let expired = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .purge_expired(Instant::now());
        if expired > 0 {
            tracing::debug!(expired, "expired provider records dropped");
        }
        for peer in self.scores.recover(Instant::now()) {
            tracing::info!(%peer, "ban lifted");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        if self.swept_at.elapsed() >= SWEEP_EVERY {
            self.swept_at = Instant::now();
            self.withdraw_released();
        }
        // Fetches waiting to start, or for the download limit, go on.
        let waiting: Vec<u64> = self.fetches.keys().copied().collect();
        for id in waiting {
            self.pump(id);
        }
        let stuck: Vec<u64> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.is_stuck() && !f.query_running)
            .map(|(id, _)| *id)
            .collect();
        for id in stuck {
            let queries = self.fetches.get(&id).map_or(0, |f| f.provider_queries);
            if queries < MAX_PROVIDER_QUERIES {
                self.query_providers(id);
            } else {
                self.fail_fetch(
                    id,
                    format!(
                        "no provider could supply the remaining chunks after {queries} lookups"
                    ),
                );
            }
        }
    }
}
