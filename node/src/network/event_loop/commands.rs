//! The event loop's commands: what the node's client asks of the swarm.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command) {
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
}
