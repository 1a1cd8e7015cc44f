//! The event loop's fetches: starting one, finding providers, keeping chunk requests in
//! flight, placing what arrives, and handing the object to its writer.

use super::*;

impl EventLoop {
    pub(super) fn start_fetch(
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

    pub(super) fn query_providers(&mut self, fetch_id: u64) {
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
    pub(super) fn pump(&mut self, fetch_id: u64) {
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
                            sent: Instant::now(),
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

    pub(super) fn finish_fetch(&mut self, fetch_id: u64) {
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
    pub(super) fn durability(&self) -> Durability {
        if self.config.sync_fetched {
            Durability::Synced
        } else {
            Durability::Cached
        }
    }

    pub(super) fn fail_fetch(&mut self, fetch_id: u64, reason: String) {
        if let Some(mut fetch) = self.fetches.remove(&fetch_id)
            && let Some(reply) = fetch.reply.take()
        {
            let _ = reply.send(Err(NodeError::Fetch {
                root: fetch.root(),
                reason,
            }));
        }
    }

    /// Places a received chunk that should be `id` (hashing it); returns whether it must be
    /// fetched again.
    pub(super) fn place_chunk(
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

    pub(super) fn on_outbound_failure(
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
                // A peer that sent garbage is asked no more; one whose request failed on the
                // way (a path reset, a dial refused, a timeout) is set aside until a provider
                // lookup names it again, so a path changing under a fetch cannot exhaust its
                // lookups on a peer that holds the object.
                let path_closed = matches!(error, OutboundFailure::ConnectionClosed)
                    && self.swarm.is_connected(&peer);
                let garbage = matches!(&error, OutboundFailure::Io(e)
                    if e.kind() == std::io::ErrorKind::InvalidData);
                let max = self.config.max_in_flight_per_peer;
                if let Some(f) = self.fetches.get_mut(&fetch) {
                    if garbage {
                        f.exclude(peer);
                    } else if !path_closed {
                        f.set_aside(peer);
                    }
                    f.answered_in(peer, None, max);
                    f.finished(peer, index, true);
                }
                self.pump(fetch);
            }
        }
    }
}
