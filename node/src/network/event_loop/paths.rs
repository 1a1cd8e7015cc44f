//! The event loop's paths to peers: bootstrap redials, relay slots, hole punching, and
//! whether this node answers DHT queries.

use super::*;

impl EventLoop {
    /// Redials the bootstrap peers, with backoff, while none of them is connected: a node
    /// whose network dropped, or whose coordinator restarted, finds its way back by itself.
    pub(super) fn redial_bootstrap(&mut self) {
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

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
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
    pub(super) fn on_hole_punch(
        &mut self,
        peer: PeerId,
        result: Result<ConnectionId, dcutr::Error>,
    ) {
        match result {
            Ok(_) => {
                self.paths.counters.hole_punches += 1;
                tracing::info!(%peer, "direct connection by hole punching");
            }
            Err(e) => {
                self.paths.punch_failed(peer);
                tracing::info!(%peer, "hole punching failed, staying relayed: {e}");
            }
        }
    }

    /// A dial to `peer` failed. While the peer is reached only through a relay, a failed dial
    /// to one of its direct addresses is a failed hole punch: DCUtR reports those only to the
    /// side that asked for the punch, never to the side that dialled when asked.
    pub(super) fn on_dial_failed(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) {
        let direct = match error {
            libp2p::swarm::DialError::Transport(attempts) => attempts
                .iter()
                .any(|(addr, _)| !addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))),
            _ => false,
        };
        if direct && !self.paths.relayed_to(peer).is_empty() && !self.paths.has_direct(peer) {
            tracing::info!(%peer, "a direct dial to a relayed peer failed: {error}");
            self.paths.punch_failed(peer);
        }
    }

    /// Answers DHT queries (server mode) when configured to, or once reachable directly; a
    /// node reached only through a relay stays a client, so the relay does not carry the
    /// DHT's traffic and the node does not collect others' provider records.
    pub(super) fn update_kad_mode(&mut self) {
        let server = self.config.kad_server
            || self.paths.reachability() == crate::network::reachability::Reachability::Public;
        self.swarm.behaviour_mut().kad.set_mode(Some(if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
    }

    /// Takes or drops relay slots as this node's reachability requires.
    pub(super) fn manage_relays(&mut self) {
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
}
