//! The swarm: a Canopy peer on libp2p (TCP with Noise and Yamux, and QUIC; identify, ping,
//! Kademlia, gossipsub, `/canopy/1` request-response, relay client, DCUtR, AutoNAT, optional
//! mDNS and relay server).
//!
//! The swarm lives in one task (the [`event_loop`]); the rest of the program holds a [`Client`]
//! that sends it commands over a bounded channel, each carrying a `oneshot` for the answer, and
//! receives [`NetworkEvent`]s over another bounded channel.

pub(crate) mod behaviour;
pub mod codec;
mod event_loop;
mod fetch;
pub use fetch::Fetched;
pub mod providers;
mod rate;
mod reachability;
mod scores;
mod serve;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use canopy_protocol::{Digest, Keypair, Message, SignedManifest};
pub use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use self::behaviour::{
    IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL, MODELS_TOPIC, RELAY_HOP_PROTOCOL, TASKS_TOPIC,
};
pub use self::reachability::{PathCounters, Reachability};
pub use self::scores::{BAN_DURATION, BAN_THRESHOLD, Offence};
use crate::error::NodeError;
use crate::store::ChunkStore;

/// The reason a peer gives, in a `NoWork`, for a request its application had no room for: the
/// request was not seen, and may be sent again shortly.
pub const PEER_BUSY: &str = "the peer is busy; ask again shortly";

/// Whether `message` is a peer's "busy, ask again" answer ([`PEER_BUSY`]).
pub fn is_busy(message: &Message) -> bool {
    matches!(message, Message::NoWork(none) if none.reason == PEER_BUSY)
}

/// How long provider records live by default: objects are kept for a few rounds, and a
/// record of one released long ago only sends fetchers to a peer that no longer has it.
pub const DEFAULT_PROVIDER_TTL: Duration = Duration::from_secs(60 * 60);
/// The shortest provider record time to live accepted, in seconds (tests compress time).
pub const MIN_PROVIDER_TTL_SECS: u64 = 3;
/// The longest provider record time to live accepted, in seconds (libp2p's default).
pub const MAX_PROVIDER_TTL_SECS: u64 = 48 * 60 * 60;

/// How a peer's swarm is set up.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on (TCP and QUIC by default, on every interface, any port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and add to the DHT at start (each address ends in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the local network with mDNS (off by default on the public network).
    pub mdns: bool,
    /// Answer DHT queries as a server even before AutoNAT confirms a public address (bootstrap
    /// peers, the coordinator, and peers on a LAN or loopback).
    pub kad_server: bool,
    /// Act as a circuit relay for peers behind NAT (the coordinator does), and answer AutoNAT
    /// dial-back requests.
    pub relay_server: bool,
    /// Ask the router to forward a port with UPnP where it offers that.
    pub upnp: bool,
    /// Treat listen addresses as reachable by others and advertise them (in identify and in
    /// DHT provider records). Right on loopback, a LAN or a host with a public address; behind
    /// NAT, AutoNAT and identify find the external address instead.
    pub advertise_listen_addrs: bool,
    /// Most chunk bytes served to one peer per second.
    pub serve_rate_bytes_per_sec: u64,
    /// Most chunk bytes served to every peer together per second (0: no limit).
    pub max_upload_bytes_per_sec: u64,
    /// Most chunk bytes fetched from every peer together per second (0: no limit).
    pub max_download_bytes_per_sec: u64,
    /// Most chunk requests in flight to one peer: a fetch starts at 4 and grows toward this
    /// while the peer answers within a second, and shrinks again when answers slow down.
    pub max_in_flight_per_peer: usize,
    /// How long to wait for a response.
    pub request_timeout: Duration,
    /// Established connections, at most (incoming and outgoing together).
    pub max_connections: u32,
    /// Wait until fetched objects are on disk before handing them over (`fsync`): the
    /// coordinator does, as it acknowledges results once stored; a node need not, as what it
    /// fetched is checked again when read and can be fetched again.
    pub sync_fetched: bool,
    /// Events queued for the application, at most; a request that finds the queue full is
    /// answered "busy" at once.
    pub event_queue: usize,
    /// How long other peers' provider records are kept here; this peer announces its own
    /// again every third of it. Peers of one project should agree on it.
    pub provider_ttl: Duration,
    /// Where to record libp2p's own metrics (connections, dials, Kademlia, identify, ping,
    /// gossipsub, relay, hole punching), prefixed `libp2p_`; `None`: not recorded.
    pub metrics: Option<crate::metrics::SharedRegistry>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            kad_server: false,
            relay_server: false,
            upnp: true,
            advertise_listen_addrs: false,
            serve_rate_bytes_per_sec: 64 << 20,
            max_upload_bytes_per_sec: 0,
            max_download_bytes_per_sec: 0,
            max_in_flight_per_peer: 16,
            request_timeout: Duration::from_secs(20),
            max_connections: 2048,
            sync_fetched: false,
            event_queue: 256,
            provider_ttl: DEFAULT_PROVIDER_TTL,
            metrics: None,
        }
    }
}

impl NetworkConfig {
    /// A configuration for tests and local demos: loopback only, DHT server mode.
    pub fn loopback() -> Self {
        Self {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            kad_server: true,
            advertise_listen_addrs: true,
            upnp: false,
            ..Self::default()
        }
    }
}

/// Something the swarm tells the rest of the program.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// A verified message from gossip.
    Gossip {
        /// Who signed it.
        sender: PeerId,
        /// The topic.
        topic: String,
        /// The message.
        message: Message,
        /// The round in its envelope.
        round: u64,
    },
    /// A verified request (other than chunk requests, which the swarm answers itself) that
    /// waits for [`Client::respond`].
    Request {
        /// Who sent it.
        peer: PeerId,
        /// Pass back to [`Client::respond`].
        id: u64,
        /// The round in its envelope.
        round: u64,
        /// The message.
        message: Message,
        /// The address the request came from (for a relayed connection, the circuit through
        /// the relay), as the connection's remote end; `None` if not known.
        from: Option<Multiaddr>,
    },
    /// A connection to a peer opened.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer was banned for misbehaving.
    PeerBanned(PeerId),
}

/// What the swarm reports about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetworkStatus {
    /// This peer.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen_addrs: Vec<String>,
    /// Peers connected now.
    pub connected: usize,
    /// Peers in the DHT routing table.
    pub routing_table: usize,
    /// Chunk bytes sent.
    pub bytes_served: u64,
    /// Chunk bytes received and verified.
    pub bytes_fetched: u64,
    /// Objects this peer announces as their provider in the DHT.
    pub provider_records: usize,
    /// Provider records of other peers this peer keeps for the DHT.
    pub remote_provider_records: usize,
    /// Requests from others waiting for this peer's answer.
    pub pending_requests: usize,
    /// Requests answered "busy" because the application could not take them.
    pub refused_busy: u64,
    /// Whether and how other peers reach this node.
    pub reachability: Reachability,
    /// Addresses other peers confirmed this node is reachable at.
    pub public_addrs: Vec<String>,
    /// Relays holding a slot for this node (peer ids).
    pub relays: Vec<String>,
    /// Bytes and hole punches by kind of path.
    pub paths: PathCounters,
    /// Connections through a relay open now.
    pub relayed_open: usize,
    /// The total upload limit, bytes a second (0: none).
    pub max_upload_bytes_per_sec: u64,
    /// The total download limit, bytes a second (0: none).
    pub max_download_bytes_per_sec: u64,
}

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Bootstrap(oneshot::Sender<Result<(), NodeError>>),
    Provide {
        manifest: SignedManifest,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Fetch {
        manifest: SignedManifest,
        hints: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Fetched, NodeError>>,
    },
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
    Release(Digest, oneshot::Sender<u64>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    Scores(oneshot::Sender<HashMap<PeerId, i64>>),
    Status(oneshot::Sender<NetworkStatus>),
    Publish {
        topic: &'static str,
        round: u64,
        message: Message,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Request {
        peer: PeerId,
        round: u64,
        message: Message,
        reply: oneshot::Sender<Result<Message, NodeError>>,
    },
    Respond {
        id: u64,
        round: u64,
        message: Message,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running swarm. Cheap to clone; every call is answered by the swarm task.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

/// Starts a peer's swarm on the current tokio runtime. Returns the client, the event stream,
/// and the task running the swarm (it ends after [`Client::shutdown`]).
pub async fn start(
    keys: Keypair,
    store: Arc<ChunkStore>,
    config: NetworkConfig,
) -> Result<
    (
        Client,
        mpsc::Receiver<NetworkEvent>,
        tokio::task::JoinHandle<()>,
    ),
    NodeError,
> {
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
    let peer_id = keys.peer_id();
    let event_loop =
        event_loop::EventLoop::new(keys, store, config, commands_rx, events_tx).await?;
    let task = tokio::spawn(event_loop.run());
    Ok((
        Client {
            commands: commands_tx,
            peer_id,
        },
        events_rx,
        task,
    ))
}

impl Client {
    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::NetworkStopped)?;
        rx.await.map_err(|_| NodeError::NetworkStopped)
    }

    /// The addresses the swarm listens on, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Starts a DHT bootstrap (a walk towards this peer's own id that fills the routing table).
    pub async fn bootstrap(&self) -> Result<(), NodeError> {
        self.ask(Command::Bootstrap).await?
    }

    /// Stores an object's chunks, pins them, and announces this peer as a provider in the DHT.
    pub async fn provide(&self, manifest: SignedManifest, data: Vec<u8>) -> Result<(), NodeError> {
        self.ask(|reply| Command::Provide {
            manifest,
            data,
            reply,
        })
        .await?
    }

    /// Fetches an object from the peers that provide it, several chunks in flight from several
    /// peers at once, each checked against the signed manifest. A peer that serves a bad chunk
    /// is penalised and the chunk fetched elsewhere. The object is then stored and provided.
    pub async fn fetch(&self, manifest: SignedManifest) -> Result<Fetched, NodeError> {
        self.fetch_from(manifest, Vec::new()).await
    }

    /// [`Client::fetch`], also asking the peers at `hints` (addresses ending in `/p2p/<peer>`)
    /// without waiting for the DHT to list them: the sender of a result holds its update, the
    /// coordinator holds every model version.
    pub async fn fetch_from(
        &self,
        manifest: SignedManifest,
        hints: Vec<Multiaddr>,
    ) -> Result<Fetched, NodeError> {
        self.ask(|reply| Command::Fetch {
            manifest,
            hints,
            reply,
        })
        .await?
    }

    /// Lets object `root` go: the chunk store deletes its chunks (those no held object shares)
    /// and this peer stops providing it. Returns the bytes freed.
    pub async fn release(&self, root: Digest) -> Result<u64, NodeError> {
        self.ask(|reply| Command::Release(root, reply)).await
    }

    /// Looks up the peers that provide object `root` in the DHT (the whole lookup).
    pub async fn providers(&self, root: Digest) -> Result<Vec<PeerId>, NodeError> {
        self.ask(|reply| Command::Providers(root, reply)).await
    }

    /// Peers connected now.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// Peers in the DHT routing table.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::RoutingTable).await
    }

    /// Reputation scores of the peers this node has judged (negative: penalised).
    pub async fn scores(&self) -> Result<HashMap<PeerId, i64>, NodeError> {
        self.ask(Command::Scores).await
    }

    /// A summary of the swarm.
    pub async fn status(&self) -> Result<NetworkStatus, NodeError> {
        self.ask(Command::Status).await
    }

    /// Signs `message` for `round` and publishes it on a gossip topic.
    pub async fn publish(
        &self,
        topic: &'static str,
        round: u64,
        message: Message,
    ) -> Result<(), NodeError> {
        self.ask(|reply| Command::Publish {
            topic,
            round,
            message,
            reply,
        })
        .await?
    }

    /// Sends a signed request to `peer` and waits for its verified answer.
    pub async fn request(
        &self,
        peer: PeerId,
        round: u64,
        message: Message,
    ) -> Result<Message, NodeError> {
        self.ask(|reply| Command::Request {
            peer,
            round,
            message,
            reply,
        })
        .await?
    }

    /// Answers a [`NetworkEvent::Request`].
    pub async fn respond(&self, id: u64, round: u64, message: Message) -> Result<(), NodeError> {
        self.commands
            .send(Command::Respond { id, round, message })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    /// Stops the swarm, closing connections.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}

/// The libp2p key of the DHT record that lists an object's providers.
pub fn provider_key(root: &Digest) -> libp2p::kad::RecordKey {
    libp2p::kad::RecordKey::new(root.as_bytes())
}
