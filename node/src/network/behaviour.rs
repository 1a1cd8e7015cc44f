//! The composed libp2p behaviour of a Canopy peer.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity, kad, mdns, ping, relay, request_response, upnp,
};

use super::NetworkConfig;
use super::codec::{CanopyCodec, PROTOCOL};
use super::providers::{ProviderLimits, ProviderStore};

/// Connections one peer may hold with this one, at most.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections being set up (handshakes in progress), at most, each way.
const MAX_PENDING_CONNECTIONS: u32 = 256;

/// Reservations a relay holds for peers behind NAT, at most.
const RELAY_MAX_RESERVATIONS: usize = 256;
/// Relayed connections a relay carries at once, at most, and per peer.
const RELAY_MAX_CIRCUITS: usize = 64;
const RELAY_MAX_CIRCUITS_PER_PEER: usize = 8;
/// How long one relayed connection may last before the relay closes it (a peer that still
/// needs it dials again; most are upgraded to direct connections well before).
const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(10 * 60);
/// Bytes one relayed connection may carry, each way, before the relay closes it.
const RELAY_MAX_CIRCUIT_BYTES: u64 = 256 << 20;

/// The relay protocol a peer lists in identify when it serves as a relay.
pub const RELAY_HOP_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

/// Kademlia protocol of the Canopy DHT (separate from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/canopy/kad/1.0.0");
/// What identify reports as the protocol version.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "canopy/1";
/// Gossipsub topic for model announcements.
pub const MODELS_TOPIC: &str = "canopy/models/1";
/// Gossipsub topic for task announcements.
pub const TASKS_TOPIC: &str = "canopy/tasks/1";

/// Every protocol a Canopy peer speaks. Identify, ping, Kademlia and gossipsub are the standard
/// libp2p protocols, so any libp2p implementation can identify and ping a Canopy node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<ProviderStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) canopy: request_response::Behaviour<CanopyCodec>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::v2::client::Behaviour,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetworkConfig,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                .with_agent_version(format!("canopy-node/{}", crate::VERSION)),
        );
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(30));
        kad_config.set_provider_record_ttl(Some(config.provider_ttl));
        kad_config.set_provider_publication_interval(Some(config.provider_ttl / 3));
        let store = ProviderStore::new(peer_id, ProviderLimits::default());
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        // Never left to libp2p's automatic choice, which would make a node behind NAT a DHT
        // server as soon as its relayed address is confirmed: the event loop switches a node
        // to server once it is reachable directly.
        kad.set_mode(Some(if config.kad_server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .max_transmit_size(1 << 20)
            .heartbeat_interval(Duration::from_millis(500))
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| format!("gossipsub: {e}"))?;
        let canopy = request_response::Behaviour::new(
            [(PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );
        let relay_server = config.relay_server.then(|| {
            relay::Behaviour::new(
                peer_id,
                relay::Config {
                    max_reservations: RELAY_MAX_RESERVATIONS,
                    max_circuits: RELAY_MAX_CIRCUITS,
                    max_circuits_per_peer: RELAY_MAX_CIRCUITS_PER_PEER,
                    max_circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
                    max_circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
                    ..relay::Config::default()
                },
            )
        });
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| format!("mdns: {e}"))?,
            )
        } else {
            None
        };
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
            .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS));
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            blocked: allow_block_list::Behaviour::default(),
            identify,
            ping: ping::Behaviour::default(),
            kad,
            gossipsub,
            canopy,
            relay_client,
            relay_server: relay_server.into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::v2::client::Behaviour::default(),
            // A relay is publicly reachable by definition: it also dials peers back to tell
            // them whether they are.
            autonat_server: config
                .relay_server
                .then(autonat::v2::server::Behaviour::default)
                .into(),
            upnp: config.upnp.then(upnp::tokio::Behaviour::default).into(),
            mdns: mdns.into(),
        })
    }
}
