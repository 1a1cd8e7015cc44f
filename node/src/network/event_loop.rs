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
        };
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

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs());
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Bootstrap(reply) => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => {
                    self.queries
                        .insert(id, QueryPurpose::Bootstrap(Some(reply)));
                }
                Err(e) => {
                    let _ = reply.send(Err(network_error(e)));
                }
            },
            Command::Provide {
                manifest,
                data,
                reply,
            } => self.provide(manifest, data, reply),
            Command::Fetch {
                manifest,
                hints,
                reply,
            } => self.start_fetch(manifest, hints, reply),
            Command::Providers(root, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(provider_key(&root));
                self.queries
                    .insert(id, QueryPurpose::FindProviders(Vec::new(), reply));
            }
            Command::Release(root, reply) => {
                let freed = self.store.release(&root);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&provider_key(&root));
                if self.provided.remove(&root).is_some() {
                    self.provided_order.retain(|r| *r != root);
                }
                let _ = reply.send(freed);
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::RoutingTable(reply) => {
                let mut peers = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        peers.push(*entry.node.key.preimage());
                    }
                }
                let _ = reply.send(peers);
            }
            Command::Scores(reply) => {
                let _ = reply.send(self.scores.snapshot());
            }
            Command::Status(reply) => {
                let routing_table = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                let records = self.swarm.behaviour_mut().kad.store_mut();
                let (provider_records, remote_provider_records) =
                    (records.local_count(), records.remote_count());
                let _ = reply.send(NetworkStatus {
                    provider_records,
                    remote_provider_records,
                    pending_requests: self.inbound.len(),
                    refused_busy: self.refused_busy,
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen_addrs: self.listen_addrs().iter().map(|a| a.to_string()).collect(),
                    connected: self.swarm.connected_peers().count(),
                    routing_table,
                    bytes_served: self.bytes_served,
                    bytes_fetched: self.bytes_fetched,
                    reachability: self.paths.reachability(),
                    public_addrs: self.paths.confirmed(),
                    relays: self.paths.reserved_on(),
                    paths: self.paths.counters,
                    relayed_open: self.paths.relayed_open(),
                    max_upload_bytes_per_sec: self.config.max_upload_bytes_per_sec,
                    max_download_bytes_per_sec: self.config.max_download_bytes_per_sec,
                });
            }
            Command::Publish {
                topic,
                round,
                message,
                reply,
            } => {
                let result = self.seal(round, &message).and_then(|env| {
                    let frame = env.to_frame().map_err(network_error)?;
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(gossipsub::IdentTopic::new(topic), frame)
                        .map(|_| ())
                        .map_err(network_error)
                });
                let _ = reply.send(result);
            }
            Command::Request {
                peer,
                round,
                message,
                reply,
            } => match self.seal(round, &message) {
                Ok(env) => {
                    let id = self.swarm.behaviour_mut().canopy.send_request(&peer, env);
                    self.requests.insert(id, Pending::Request(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Respond { id, round, message } => {
                if let Some(channel) = self.inbound.remove(&id) {
                    self.send_sealed(channel, round, &message, "request");
                }
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.swarm
            .listeners()
            .map(|a| a.clone().with(Protocol::P2p(me)))
            .collect()
    }

    fn provide(
        &mut self,
        signed: canopy_protocol::SignedManifest,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    ) {
        let result = signed
            .verify()
            .map_err(NodeError::from)
            .and_then(|m| self.store.put_object(m, &data).map(|()| m.root));
        match result {
            Ok(root) => {
                self.remember_manifest(root, signed);
                self.announce(root, Some(reply))
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Keeps the manifest of a provided object for [`Self::answer_manifest`], dropping the
    /// oldest beyond [`MAX_PROVIDED_MANIFESTS`].
    fn remember_manifest(&mut self, root: Digest, signed: canopy_protocol::SignedManifest) {
        if self.provided.insert(root, signed).is_none() {
            self.provided_order.push_back(root);
        }
        while self.provided_order.len() > MAX_PROVIDED_MANIFESTS {
            if let Some(old) = self.provided_order.pop_front() {
                self.provided.remove(&old);
            }
        }
    }

    fn announce(&mut self, root: Digest, reply: Option<oneshot::Sender<Result<(), NodeError>>>) {
        match self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(provider_key(&root))
        {
            Ok(id) => {
                self.queries.insert(id, QueryPurpose::Provide(reply));
            }
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(network_error(e)));
                }
            }
        }
    }

    fn start_fetch(
        &mut self,
        signed: canopy_protocol::SignedManifest,
        hints: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Fetched, NodeError>>,
    ) {
        let manifest = match signed.verify() {
            Ok(m) => m.clone(),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        if self.store.has_object(&manifest)
            && let Ok(Some(data)) = self.store.get_object(&manifest)
        {
            self.store.hold(&manifest);
            let _ = reply.send(Ok(Fetched {
                data,
                sources: HashMap::new(),
                direct_bytes: 0,
                relayed_bytes: 0,
            }));
            return;
        }
        let mut fetch = match Fetch::reassembler(manifest) {
            Ok(reassembler) => Fetch::new(reassembler, reply),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let me = *self.swarm.local_peer_id();
        for addr in hints {
            if let Some((peer, base)) = split_peer(&addr)
                && peer != me
                && !self.scores.is_banned(&peer)
            {
                // A bare /p2p/<peer> hint names a peer already known (connected, say).
                if !base.is_empty() {
                    self.swarm.add_peer_address(peer, base);
                }
                fetch.add_providers([peer]);
                // Named providers need no gathering: start at once.
                fetch.started = true;
            }
        }
        let id = self.next_fetch;
        self.next_fetch += 1;
        self.fetches.insert(id, fetch);
        self.query_providers(id);
        self.pump(id);
    }

    fn query_providers(&mut self, fetch_id: u64) {
        let Some(fetch) = self.fetches.get_mut(&fetch_id) else {
            return;
        };
        fetch.provider_queries += 1;
        fetch.query_running = true;
        let key = provider_key(&fetch.root());
        let id = self.swarm.behaviour_mut().kad.get_providers(key);
        self.queries.insert(id, QueryPurpose::Providers(fetch_id));
    }

    /// Sends as many chunk requests as providers have room for, then finishes the fetch if
    /// every chunk is in.
    fn pump(&mut self, fetch_id: u64) {
        let max = self.config.max_in_flight_per_peer;
        if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
            fetch.maybe_start();
        }
        loop {
            let Some(fetch) = self.fetches.get_mut(&fetch_id) else {
                return;
            };
            let Some((index, id, peer)) = fetch.next_request(max) else {
                break;
            };
            // Over the total download limit, requests wait for the next response or tick.
            let chunk = fetch.reassembler.manifest().chunk_len(index).unwrap_or(0);
            if let Some(bucket) = &mut self.download
                && !bucket.spend(chunk, Instant::now())
            {
                fetch.finished(peer, index, true);
                break;
            }
            let message = Message::ChunkRequest(ChunkRequest { id });
            // A provider not connected yet may be behind NAT: it is also tried through each
            // known relay, where it may hold a slot.
            let routes = if self.swarm.is_connected(&peer) {
                Vec::new()
            } else {
                self.paths.routes_to(peer)
            };
            match self.seal(0, &message) {
                Ok(env) => {
                    let rid = self
                        .swarm
                        .behaviour_mut()
                        .canopy
                        .send_request_with_addresses(&peer, env, routes);
                    self.requests.insert(
                        rid,
                        Pending::Chunk {
                            fetch: fetch_id,
                            index,
                            id,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!("cannot seal a chunk request: {e}");
                    if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
                        fetch.finished(peer, index, true);
                    }
                    break;
                }
            }
        }
        if self.fetches.get(&fetch_id).is_some_and(Fetch::is_complete) {
            self.finish_fetch(fetch_id);
        }
    }

    fn finish_fetch(&mut self, fetch_id: u64) {
        let Some(mut fetch) = self.fetches.remove(&fetch_id) else {
            return;
        };
        let reply = fetch.reply.take();
        let sources = std::mem::take(&mut fetch.sources);
        // Assembling and writing the object is disk work: its writer does it after the
        // chunks it is still writing, off the swarm's task, which goes on serving and
        // fetching meanwhile; the object is announced once it is stored.
        let finish = Finish {
            reassembler: fetch.reassembler,
            reply,
            sources,
            direct_bytes: fetch.direct_bytes,
            relayed_bytes: fetch.relayed_bytes,
            stored: self.stored_tx.clone(),
        };
        let writer = fetch
            .writer
            .take()
            .unwrap_or_else(|| spawn_writer(self.store.clone(), self.durability()));
        match writer.try_send(WriteJob::Finish(Box::new(finish))) {
            Ok(()) => {}
            // Its queue is full: wait for room off the swarm's task.
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || {
                    if let Err(std::sync::mpsc::SendError(WriteJob::Finish(f))) = writer.send(job)
                        && let Some(reply) = f.reply
                    {
                        let _ = reply.send(Err(NodeError::NetworkStopped));
                    }
                });
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(WriteJob::Finish(f))) => {
                if let Some(reply) = f.reply {
                    let _ = reply.send(Err(NodeError::NetworkStopped));
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(WriteJob::Chunk(..))) => {}
        }
    }

    /// How fetched objects reach the disk.
    fn durability(&self) -> Durability {
        if self.config.sync_fetched {
            Durability::Synced
        } else {
            Durability::Cached
        }
    }

    fn fail_fetch(&mut self, fetch_id: u64, reason: String) {
        if let Some(mut fetch) = self.fetches.remove(&fetch_id)
            && let Some(reply) = fetch.reply.take()
        {
            let _ = reply.send(Err(NodeError::Fetch {
                root: fetch.root(),
                reason,
            }));
        }
    }

    /// Redials the bootstrap peers, with backoff, while none of them is connected: a node
    /// whose network dropped, or whose coordinator restarted, finds its way back by itself.
    fn redial_bootstrap(&mut self) {
        if self.bootstrap_peers.is_empty()
            || self
                .bootstrap_peers
                .iter()
                .any(|p| self.swarm.is_connected(p))
        {
            self.redial_backoff = REDIAL_MIN;
            return;
        }
        if Instant::now() < self.redial_at {
            return;
        }
        tracing::info!(backoff = ?self.redial_backoff, "no bootstrap peer connected; redialling");
        for addr in self.config.bootstrap.clone() {
            if let Err(e) = self.dial(addr.clone()) {
                tracing::debug!(%addr, "redial: {e}");
            }
        }
        self.redial_at = Instant::now() + self.redial_backoff;
        self.redial_backoff = (self.redial_backoff * 2).min(REDIAL_MAX);
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

    /// Stops providing the objects the chunk store no longer holds (released as superseded,
    /// or never fully stored), so provider records and kept manifests follow what is live.
    fn withdraw_released(&mut self) {
        let gone: Vec<kad::RecordKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .local_keys()
            .filter(|key| {
                <[u8; 32]>::try_from(key.as_ref())
                    .map(Digest::from_bytes)
                    .is_ok_and(|root| !self.store.holds(&root))
            })
            .cloned()
            .collect();
        for key in &gone {
            self.swarm.behaviour_mut().kad.stop_providing(key);
        }
        let store = &self.store;
        self.provided.retain(|root, _| store.holds(root));
        let provided = &self.provided;
        self.provided_order
            .retain(|root| provided.contains_key(root));
        if !gone.is_empty() {
            tracing::debug!(
                withdrawn = gone.len(),
                "provider records of released objects withdrawn"
            );
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.config.advertise_listen_addrs {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                self.paths.opened(connection_id, peer_id, relayed);
                // Direct paths win: relayed connections to a peer also reached directly
                // (punched from either side, or dialled) close after a grace period.
                if self.paths.has_direct(peer_id) && !self.paths.relayed_to(peer_id).is_empty() {
                    self.paths.retire_relayed(peer_id, Instant::now());
                }
                if !relayed && self.bootstrap_peers.contains(&peer_id) && endpoint.is_dialer() {
                    // Remember how the bootstrap peer was reached, should it serve as a relay.
                    self.bootstrap_addrs
                        .insert(peer_id, endpoint.get_remote_address().clone());
                }
                if self.scores.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else if num_established.get() == 1 {
                    if self.bootstrap_peers.contains(&peer_id)
                        && let Ok(id) = self.swarm.behaviour_mut().kad.bootstrap()
                    {
                        // Back in touch with a bootstrap peer: refresh the routing table.
                        self.queries.insert(id, QueryPurpose::Bootstrap(None));
                    }
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.paths.closed(connection_id);
                if num_established == 0 {
                    self.emit(NetworkEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "reachable at");
                self.paths.address_confirmed(address);
                self.update_kad_mode();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.paths.address_expired(&address);
                self.update_kad_mode();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                tracing::debug!(?reason, "listener closed");
                self.paths.listener_closed(listener_id);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&RELAY_HOP_PROTOCOL)
                    && let Some(addr) = self.bootstrap_addrs.get(&peer_id)
                {
                    // The dialled address may end in the peer id already.
                    let base = split_peer(addr).map_or_else(|| addr.clone(), |(_, base)| base);
                    self.paths
                        .add_relay(peer_id, base.with(Protocol::P2p(peer_id)));
                }
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            }) => match result {
                Ok(()) => tracing::info!(%tested_addr, %server, "a peer reached this node"),
                Err(e) => {
                    tracing::info!(%tested_addr, %server, "a peer could not reach this node: {e}");
                    self.paths.probe_failed();
                }
            },
            BehaviourEvent::RelayClient(event) => self.on_relay_client(event),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => self.on_hole_punch(remote_peer_id, result),
            BehaviourEvent::Upnp(event) => match event {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "the router forwards a port (UPnP)");
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "the router's port forward expired (UPnP)");
                }
                upnp::Event::GatewayNotFound | upnp::Event::NonRoutableGateway => {
                    tracing::debug!(?event, "no UPnP port forward");
                }
            },
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.on_query(id, result, step.last),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                self.on_gossip(message)
            }
            BehaviourEvent::Canopy(request_response::Event::Message {
                peer,
                connection_id,
                message,
            }) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, connection_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(peer, connection_id, request_id, response),
            },
            BehaviourEvent::Canopy(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => self.on_outbound_failure(peer, request_id, error),
            BehaviourEvent::Canopy(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                if let request_response::InboundFailure::Io(e) = &error
                    && e.kind() == std::io::ErrorKind::InvalidData
                {
                    self.penalise(peer, Offence::MalformedFrame);
                }
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            other => tracing::trace!(?other, "behaviour event"),
        }
    }

    fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if self.paths.reservation_accepted(relay_peer_id) || !renewal {
                    tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                }
            }
            other => tracing::debug!(?other, "relay client"),
        }
    }

    /// A hole punch to `peer` ended: on success the direct connection replaces the relayed
    /// ones, which close once the requests already on them had time to finish, so that every
    /// later request takes the direct path.
    fn on_hole_punch(&mut self, peer: PeerId, result: Result<ConnectionId, dcutr::Error>) {
        match result {
            Ok(_) => {
                self.paths.counters.hole_punches += 1;
                tracing::info!(%peer, "direct connection by hole punching");
            }
            Err(e) => {
                self.paths.counters.hole_punch_failures += 1;
                tracing::info!(%peer, "hole punching failed, staying relayed: {e}");
            }
        }
    }

    /// Answers DHT queries (server mode) when configured to, or once reachable directly; a
    /// node reached only through a relay stays a client, so the relay does not carry the
    /// DHT's traffic and the node does not collect others' provider records.
    fn update_kad_mode(&mut self) {
        let server = self.config.kad_server
            || self.paths.reachability() == super::reachability::Reachability::Public;
        self.swarm.behaviour_mut().kad.set_mode(Some(if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
    }

    /// Takes or drops relay slots as this node's reachability requires.
    fn manage_relays(&mut self) {
        for id in self.paths.surplus_listeners() {
            self.swarm.remove_listener(id);
        }
        for (relay, addr) in self.paths.to_reserve(Instant::now()) {
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    tracing::info!(%addr, "not reachable directly; asking a relay for a slot");
                    self.paths.listening_via(id, relay);
                }
                Err(e) => {
                    tracing::warn!(%addr, "cannot listen through the relay: {e:?}");
                    self.paths.reserve_failed();
                }
            }
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        let Some(purpose) = self.queries.remove(&id) else {
            return;
        };
        match (purpose, result) {
            (QueryPurpose::Providers(fetch_id), QueryResult::GetProviders(result)) => {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                    let me = *self.swarm.local_peer_id();
                    let usable: Vec<PeerId> = providers
                        .into_iter()
                        .filter(|p| *p != me && !self.scores.is_banned(p))
                        .collect();
                    if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
                        let added = fetch.add_providers(usable);
                        tracing::debug!(added, "providers found");
                    }
                }
                if last {
                    if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
                        fetch.query_running = false;
                    }
                } else {
                    self.queries.insert(id, QueryPurpose::Providers(fetch_id));
                }
                self.pump(fetch_id);
            }
            (QueryPurpose::FindProviders(mut found, reply), QueryResult::GetProviders(result)) => {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                    for p in providers {
                        if !found.contains(&p) {
                            found.push(p);
                        }
                    }
                }
                if last {
                    let _ = reply.send(found);
                } else {
                    self.queries
                        .insert(id, QueryPurpose::FindProviders(found, reply));
                }
            }
            (QueryPurpose::Provide(reply), QueryResult::StartProviding(result)) => {
                if let Some(reply) = reply {
                    let _ = reply.send(result.map(|_| ()).map_err(network_error));
                }
            }
            (QueryPurpose::Bootstrap(reply), QueryResult::Bootstrap(result)) => {
                if last || result.is_err() {
                    if let Some(reply) = reply {
                        let _ = reply.send(result.map(|_| ()).map_err(network_error));
                    }
                } else {
                    self.queries.insert(id, QueryPurpose::Bootstrap(reply));
                }
            }
            (purpose, _) => {
                if !last {
                    self.queries.insert(id, purpose);
                }
            }
        }
    }

    fn on_gossip(&mut self, message: gossipsub::Message) {
        let Some(source) = message.source else {
            return;
        };
        let topic = message.topic.as_str().to_string();
        let verdict = Envelope::from_frame(&message.data)
            .map_err(|_| Offence::MalformedFrame)
            .and_then(|env| {
                let verified = env.verify().map_err(|_| Offence::InvalidMessage)?;
                if verified.sender().peer_id() != source {
                    return Err(Offence::WrongKey);
                }
                let round = verified.header().round;
                let msg = verified.message().map_err(|_| Offence::InvalidMessage)?;
                Ok((round, msg))
            });
        match verdict {
            Ok((round, msg)) => {
                self.emit(NetworkEvent::Gossip {
                    sender: source,
                    topic,
                    message: msg,
                    round,
                });
            }
            Err(offence) => self.penalise(source, offence),
        }
    }

    /// Checks an envelope from `peer`: signature, payload, sender key. Penalises on failure.
    fn open(&mut self, peer: PeerId, envelope: &Envelope) -> Option<(u64, Message)> {
        let verified = match envelope.verify() {
            Ok(v) => v,
            Err(_) => {
                self.penalise(peer, Offence::InvalidMessage);
                return None;
            }
        };
        if verified.sender().peer_id() != peer {
            self.penalise(peer, Offence::WrongKey);
            return None;
        }
        match verified.message() {
            Ok(m) => Some((verified.header().round, m)),
            Err(_) => {
                self.penalise(peer, Offence::InvalidMessage);
                None
            }
        }
    }

    /// Answers a chunk request with `data` (or "absent") as a raw chunk, counting the bytes by
    /// path.
    fn serve_chunk(
        &mut self,
        connection: ConnectionId,
        channel: ResponseChannel<Response>,
        id: Digest,
        data: Option<Vec<u8>>,
    ) {
        let served = data.as_ref().map_or(0, Vec::len) as u64;
        let response = Response::Chunk(RawChunk { id, data });
        if self
            .swarm
            .behaviour_mut()
            .canopy
            .send_response(channel, response)
            .is_ok()
        {
            self.bytes_served += served;
            if self.paths.is_relayed(connection) {
                self.paths.counters.served_relayed += served;
            }
        }
    }

    /// Sends the chunk answers the upload limits now allow.
    fn send_paced(&mut self) {
        while let Some(d) = self.upload.next_due(Instant::now()) {
            let data = self.store.get(&d.id).ok().flatten();
            self.serve_chunk(d.connection, d.channel, d.id, data);
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        envelope: Envelope,
        channel: ResponseChannel<Response>,
    ) {
        if self.scores.is_banned(&peer) {
            return;
        }
        let Some((round, message)) = self.open(peer, &envelope) else {
            return;
        };
        match message {
            Message::ChunkRequest(ChunkRequest { id }) => {
                let data = match self.store.get(&id) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!("chunk store: {e}");
                        None
                    }
                };
                // Over an upload limit, the answer waits its turn (or, when too many wait,
                // the chunk is answered absent and the peer asks elsewhere).
                let len = data.as_ref().map_or(0, Vec::len);
                if data.is_some() && !self.upload.admit(peer, len, Instant::now()) {
                    let delayed = Delayed {
                        peer,
                        connection,
                        channel,
                        id,
                        len,
                    };
                    if let Some(d) = self.upload.defer(delayed) {
                        self.serve_chunk(d.connection, d.channel, d.id, None);
                    }
                    return;
                }
                self.serve_chunk(connection, channel, id, data);
            }
            // A manifest request for an object this peer provides is answered here (the
            // coordinator asks a volunteer for the manifest of the corpus result it names);
            // any other goes to the application (the coordinator answers from its state).
            Message::ManifestRequest(req) if self.provided.contains_key(&req.root) => {
                let response = Message::ManifestResponse(Box::new(ManifestResponse {
                    root: req.root,
                    manifest: self.provided.get(&req.root).cloned(),
                }));
                self.send_sealed(channel, round, &response, "a manifest request");
            }
            message => {
                if self.inbound.len() >= MAX_PENDING_INBOUND {
                    tracing::warn!(%peer, "too many requests waiting for an answer; dropped");
                    return;
                }
                let id = self.next_inbound;
                self.next_inbound += 1;
                self.inbound.insert(id, channel);
                let queued = self.emit(NetworkEvent::Request {
                    peer,
                    id,
                    round,
                    message,
                });
                // A request the application will never see must not stay stored (a full
                // queue used to leak its slot until, 1,024 drops later, nothing was answered):
                // it is answered at once with "busy, ask again".
                if !queued && let Some(channel) = self.inbound.remove(&id) {
                    self.refused_busy += 1;
                    let busy = Message::NoWork(NoWork {
                        retry_after_ms: 1000,
                        reason: super::PEER_BUSY.into(),
                        join_first: false,
                    });
                    self.send_sealed(channel, round, &busy, "a request while busy");
                }
            }
        }
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request_id: OutboundRequestId,
        response: Response,
    ) {
        let Some(pending) = self.requests.remove(&request_id) else {
            return;
        };
        match pending {
            Pending::Request(reply) => {
                let opened = match &response {
                    Response::Signed(envelope) => self.open(peer, envelope),
                    Response::Chunk(_) => {
                        self.penalise(peer, Offence::InvalidMessage);
                        None
                    }
                };
                let _ =
                    reply.send(opened.map(|(_, m)| m).ok_or_else(|| {
                        NodeError::Network(format!("invalid response from {peer}"))
                    }));
            }
            Pending::Chunk { fetch, index, id } => {
                // A raw chunk, as peers answer; a signed chunk response is taken too.
                let answer = match response {
                    Response::Chunk(raw) => Some(raw),
                    Response::Signed(envelope) => match self.open(peer, &envelope) {
                        Some((_, Message::ChunkResponse(resp))) => Some(RawChunk {
                            id: resp.id,
                            data: resp.data,
                        }),
                        Some(_) => {
                            self.penalise(peer, Offence::InvalidMessage);
                            None
                        }
                        None => None,
                    },
                };
                let retry = match answer {
                    Some(raw) if raw.id == id => match raw.data {
                        Some(data) => self.place_chunk(fetch, peer, connection, &id, data),
                        None => {
                            if let Some(f) = self.fetches.get_mut(&fetch) {
                                f.exclude(peer);
                            }
                            true
                        }
                    },
                    answer => {
                        if answer.is_some() {
                            self.penalise(peer, Offence::InvalidMessage);
                        }
                        if let Some(f) = self.fetches.get_mut(&fetch) {
                            f.exclude(peer);
                        }
                        true
                    }
                };
                if let Some(f) = self.fetches.get_mut(&fetch) {
                    f.finished(peer, index, retry);
                }
                self.pump(fetch);
            }
        }
    }

    /// Places a received chunk that should be `id` (hashing it); returns whether it must be
    /// fetched again.
    fn place_chunk(
        &mut self,
        fetch_id: u64,
        peer: PeerId,
        connection: ConnectionId,
        id: &Digest,
        data: Vec<u8>,
    ) -> bool {
        let durability = self.durability();
        let Some(fetch) = self.fetches.get_mut(&fetch_id) else {
            return false;
        };
        match fetch.reassembler.insert(id, &data) {
            Ok(_) => {
                let len = data.len() as u64;
                self.bytes_fetched += len;
                *fetch.sources.entry(peer).or_default() += 1;
                let relayed = self.paths.is_relayed(connection);
                let counters = &mut self.paths.counters;
                if relayed {
                    fetch.relayed_bytes += len;
                    counters.fetched_relayed += len;
                } else {
                    fetch.direct_bytes += len;
                    counters.fetched_direct += len;
                }
                if self.bootstrap_peers.contains(&peer) {
                    counters.fetched_from_bootstrap += len;
                }
                let store = &self.store;
                let writer = fetch
                    .writer
                    .get_or_insert_with(|| spawn_writer(store.clone(), durability));
                // A writer behind the network skips the chunk: it is stored at the end.
                let _ = writer.try_send(WriteJob::Chunk(*id, data));
                false
            }
            Err(e) => {
                tracing::warn!(%peer, "bad chunk: {e}");
                fetch.exclude(peer);
                self.penalise(peer, Offence::BadChunk);
                true
            }
        }
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        error: OutboundFailure,
    ) {
        let Some(pending) = self.requests.remove(&request_id) else {
            return;
        };
        tracing::debug!(%peer, %error, "request failed");
        match &error {
            OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.penalise(peer, Offence::MalformedFrame)
            }
            OutboundFailure::Timeout => self.penalise(peer, Offence::Timeout),
            _ => {}
        }
        match pending {
            Pending::Request(reply) => {
                let _ = reply.send(Err(network_error(error)));
            }
            Pending::Chunk { fetch, index, .. } => {
                // A connection closed under the request (a relayed one replaced by a direct
                // one, say) while the peer stays connected: ask it again, over what is left.
                let path_closed = matches!(error, OutboundFailure::ConnectionClosed)
                    && self.swarm.is_connected(&peer);
                if let Some(f) = self.fetches.get_mut(&fetch) {
                    if !path_closed {
                        f.exclude(peer);
                    }
                    f.finished(peer, index, true);
                }
                self.pump(fetch);
            }
        }
    }
}
