//! The event loop's answers: opening signed requests, serving chunks (raw, paced by the
//! upload limits), handing other requests to the application, and taking responses.

use super::*;

impl EventLoop {
    /// Checks an envelope from `peer`: signature, payload, sender key. Penalises on failure.
    pub(super) fn open(&mut self, peer: PeerId, envelope: &Envelope) -> Option<(u64, Message)> {
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
    pub(super) fn serve_chunk(
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
    pub(super) fn send_paced(&mut self) {
        while let Some(d) = self.upload.next_due(Instant::now()) {
            let data = self.store.get(&d.id).ok().flatten();
            self.serve_chunk(d.connection, d.channel, d.id, data);
        }
    }

    pub(super) fn on_request(
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
                let from = self.paths.remote_addr(connection).cloned();
                let queued = self.emit(NetworkEvent::Request {
                    peer,
                    id,
                    round,
                    message,
                    from,
                });
                // A request the application will never see must not stay stored (a full
                // queue used to leak its slot until, 1,024 drops later, nothing was answered):
                // it is answered at once with "busy, ask again".
                if !queued && let Some(channel) = self.inbound.remove(&id) {
                    self.refused_busy += 1;
                    let busy = Message::NoWork(NoWork {
                        retry_after_ms: 1000,
                        reason: crate::network::PEER_BUSY.into(),
                        join_first: false,
                    });
                    self.send_sealed(channel, round, &busy, "a request while busy");
                }
            }
        }
    }

    pub(super) fn on_response(
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
            Pending::Chunk {
                fetch,
                index,
                id,
                sent,
            } => {
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
                let max = self.config.max_in_flight_per_peer;
                if let Some(f) = self.fetches.get_mut(&fetch) {
                    f.answered_in(peer, (!retry).then(|| sent.elapsed()), max);
                    f.finished(peer, index, retry);
                }
                self.pump(fetch);
            }
        }
    }
}
