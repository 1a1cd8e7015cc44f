//! The event loop's reactions to what the swarm reports: connections, behaviour events
//! (requests, answers, DHT queries, reachability) and verified gossip.

use super::*;

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.p2p_metrics {
            crate::metrics::record(m, &event);
        }
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
                self.paths.opened(
                    connection_id,
                    peer_id,
                    relayed,
                    endpoint.get_remote_address().clone(),
                );
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
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => self.on_dial_failed(peer, &error),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    pub(super) fn on_behaviour_event(&mut self, event: BehaviourEvent) {
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

    pub(super) fn on_gossip(&mut self, message: gossipsub::Message) {
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
}
