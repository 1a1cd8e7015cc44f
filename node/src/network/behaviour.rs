//! The composed libp2p behaviour of a Canopy peer.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity, kad, mdns, ping, relay, request_response,
};

use super::NetworkConfig;
use super::codec::{CanopyCodec, PROTOCOL};
use super::providers::{ProviderLimits, ProviderStore};

/// Connections one peer may hold with this one, at most.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections being set up (handshakes in progress), at most, each way.
const MAX_PENDING_CONNECTIONS: u32 = 256;

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
    pub(crate) autonat: autonat::Behaviour,
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
        let store = ProviderStore::new(peer_id, ProviderLimits::default());
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        if config.kad_server {
            kad.set_mode(Some(kad::Mode::Server));
        }
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
        let relay_server = config
            .relay_server
            .then(|| relay::Behaviour::new(peer_id, relay::Config::default()));
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
            autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
            mdns: mdns.into(),
        })
    }
}
