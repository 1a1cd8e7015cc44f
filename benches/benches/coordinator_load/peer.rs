//! The simulated volunteers of the network part: each its own identity, libp2p swarm and
//! connection, speaking the real protocol as `canopy-node`'s worker does.

mod work;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use canopy_node::network::codec::{CanopyCodec, PROTOCOL, RawChunk, Response};
use canopy_node::objects;
use canopy_protocol::messages::{
    ChunkRequest, LeaseGrant, LeaseRelease, LeaseRenew, LeaseRequest, ManifestResponse,
    ReleaseReason, TaskOutput, TaskResult, TaskSpec, TrainOutput,
};
use canopy_protocol::{CompressedUpdate, Digest, Envelope, Keypair, Message};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{BUSY_RETRIES, RESULT_BUSY, SWARM_BUSY, join_message, ms, setting, unique_update};

pub(crate) struct NetSettings {
    pub(crate) peers: usize,
    pub(crate) secs: u64,
    pub(crate) task_ms: u64,
    pub(crate) tasks_per_round: usize,
    pub(crate) timeout: Duration,
    pub(crate) ramp: usize,
    pub(crate) idle_retry_ms: u32,
    pub(crate) retry_busy_renew: bool,
}

impl NetSettings {
    pub(crate) fn from_env() -> Self {
        let peers = setting("PEERS", 1000usize).max(1);
        Self {
            peers,
            secs: setting("SECS", 240),
            task_ms: setting("TASK_MS", 10_000),
            tasks_per_round: setting("TASKS", peers).max(1),
            timeout: Duration::from_secs(setting("TIMEOUT_SECS", 20)),
            ramp: setting("RAMP", 200usize).max(1),
            idle_retry_ms: setting("IDLE_RETRY_MS", 1000),
            retry_busy_renew: setting::<u8>("RETRY_BUSY_RENEW", 1) != 0,
        }
    }
}

/// What one simulated volunteer saw.
#[derive(Default)]
pub(crate) struct PeerStats {
    pub(crate) connected: bool,
    pub(crate) joined: bool,
    pub(crate) still_connected: bool,
    pub(crate) disconnects: u64,
    pub(crate) join: Vec<f64>,
    pub(crate) grant: Vec<f64>,
    pub(crate) nowork: Vec<f64>,
    pub(crate) renew: Vec<f64>,
    pub(crate) result: Vec<f64>,
    pub(crate) release: Vec<f64>,
    /// Requests answered in the measured phase.
    pub(crate) answered: u64,
    /// `<request>:<why>` → count.
    pub(crate) lost: BTreeMap<String, u64>,
    /// `NoWork` answers by reason (the swarm's "busy" among them).
    pub(crate) nowork_reasons: BTreeMap<String, u64>,
    pub(crate) result_busy: u64,
    /// Results dropped after [`BUSY_RETRIES`] busy answers (the lease then expires).
    pub(crate) result_given_up: u64,
    pub(crate) accepted: u64,
    pub(crate) refused: BTreeMap<String, u64>,
    pub(crate) renew_refused: u64,
    pub(crate) renew_busy_retried: u64,
    pub(crate) unexpected: u64,
    pub(crate) chunks_served: u64,
    pub(crate) manifests_served: u64,
    /// Accepted or refused results: from the `TaskResult` that was judged to the
    /// coordinator's first `ChunkRequest` for its update (admission, a judging slot, the
    /// state reads), and from there to the `ResultAck` (the fetch, decoding, the held-out
    /// evaluation, the commit).
    pub(crate) judge_queue: Vec<f64>,
    pub(crate) judge_rest: Vec<f64>,
}

/// A request's fate (short-lived: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    Answered(Message, f64),
    Lost,
}

pub(crate) type Behaviour = request_response::Behaviour<CanopyCodec>;

pub(crate) struct SimPeer {
    pub(crate) keys: Keypair,
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) coordinator: PeerId,
    pub(crate) nonce: u64,
    pub(crate) joined: bool,
    /// Updates this peer sent lately, which the coordinator fetches from it.
    pub(crate) serving: Vec<(canopy_protocol::SignedManifest, Vec<u8>)>,
    pub(crate) stats: PeerStats,
    pub(crate) rng: ChaCha8Rng,
    /// Whether answers count towards the measured phase.
    pub(crate) measuring: bool,
    /// The update of the result in flight, and when the coordinator first asked for it.
    pub(crate) pending_root: Option<Digest>,
    pub(crate) chunk_asked_at: Option<Instant>,
}

/// Shared by every simulated volunteer.
pub(crate) struct Shared {
    pub(crate) template: CompressedUpdate,
    pub(crate) unique: AtomicU64,
    pub(crate) joined: AtomicUsize,
    /// When the measured phase starts and ends (sent once every peer has joined).
    pub(crate) start: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    pub(crate) task_ms: u64,
    pub(crate) timeout: Duration,
    pub(crate) retry_busy_renew: bool,
}

pub(crate) fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Join(_) => "join",
        Message::LeaseRequest(_) => "lease",
        Message::LeaseRenew(_) => "renew",
        Message::TaskResult(_) => "result",
        Message::LeaseRelease(_) => "release",
        _ => "other",
    }
}

pub(crate) fn failure_name(e: &OutboundFailure) -> &'static str {
    match e {
        OutboundFailure::Timeout => "timeout",
        OutboundFailure::ConnectionClosed => "connection_closed",
        OutboundFailure::DialFailure => "dial_failure",
        OutboundFailure::UnsupportedProtocols => "unsupported",
        OutboundFailure::Io(_) => "io",
    }
}

impl SimPeer {
    pub(crate) fn new(index: usize, coordinator: PeerId, timeout: Duration) -> Self {
        let keys = Keypair::generate().expect("a key");
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keys.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| {
                Behaviour::new(
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(timeout)
                        .with_max_concurrent_streams(64),
                )
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        Self {
            keys,
            swarm,
            coordinator,
            nonce: 0,
            joined: false,
            serving: Vec::new(),
            stats: PeerStats::default(),
            rng: ChaCha8Rng::seed_from_u64(index as u64),
            measuring: false,
            pending_root: None,
            chunk_asked_at: None,
        }
    }

    pub(crate) fn seal(&mut self, round: u64, message: &Message) -> Envelope {
        self.nonce += 1;
        Envelope::seal(&self.keys, round, self.nonce, message).expect("seal")
    }

    /// Handles anything but the answer awaited: the coordinator's chunk and manifest requests
    /// for this peer's updates, and the connection's fate.
    pub(crate) fn on_event(
        &mut self,
        event: SwarmEvent<request_response::Event<Envelope, Response>>,
    ) {
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                let Ok(verified) = request.verify() else {
                    return;
                };
                if verified.sender().peer_id() != peer {
                    return;
                }
                let round = verified.header().round;
                let reply = match verified.message() {
                    // Chunks are answered raw, as nodes do.
                    Ok(Message::ChunkRequest(ChunkRequest { id })) => {
                        self.stats.chunks_served += 1;
                        let pending = self.serving.last().map(|(s, _)| s.manifest());
                        if self.chunk_asked_at.is_none()
                            && pending.is_some_and(|m| {
                                Some(m.root) == self.pending_root && m.chunks.contains(&id)
                            })
                        {
                            self.chunk_asked_at = Some(Instant::now());
                        }
                        let chunk = RawChunk {
                            id,
                            data: self.chunk(&id),
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .send_response(channel, Response::Chunk(chunk));
                        return;
                    }
                    Ok(Message::ManifestRequest(req)) => {
                        self.stats.manifests_served += 1;
                        let manifest = self
                            .serving
                            .iter()
                            .find(|(s, _)| s.manifest().root == req.root)
                            .map(|(s, _)| s.clone());
                        Message::ManifestResponse(Box::new(ManifestResponse {
                            root: req.root,
                            manifest,
                        }))
                    }
                    _ => return,
                };
                let envelope = self.seal(round, &reply);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .send_response(channel, Response::Signed(Box::new(envelope)));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if peer_id == self.coordinator => self.stats.disconnects += 1,
            _ => {}
        }
    }

    pub(crate) fn chunk(&self, id: &Digest) -> Option<Vec<u8>> {
        self.serving.iter().find_map(|(signed, bytes)| {
            let m = signed.manifest();
            let index = m.chunks.iter().position(|c| c == id)?;
            let size = m.chunk_size as usize;
            let start = index * size;
            bytes
                .get(start..(start + size).min(bytes.len()))
                .map(<[u8]>::to_vec)
        })
    }

    /// Sends `message` to the coordinator and serves the swarm until its answer (or failure).
    pub(crate) async fn request(&mut self, round: u64, message: &Message) -> Outcome {
        let envelope = self.seal(round, message);
        let kind = kind_name(message);
        let sent = Instant::now();
        let id = self
            .swarm
            .behaviour_mut()
            .send_request(&self.coordinator, envelope);
        loop {
            match self.swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => {
                    let elapsed = ms(sent.elapsed());
                    let Response::Signed(response) = response else {
                        return self.lost(kind, "invalid_response");
                    };
                    let opened = response
                        .verify()
                        .ok()
                        .filter(|v| v.sender().peer_id() == peer)
                        .and_then(|v| v.message().ok());
                    return match opened {
                        Some(m) => {
                            if self.measuring {
                                self.stats.answered += 1;
                            }
                            Outcome::Answered(m, elapsed)
                        }
                        None => self.lost(kind, "invalid_response"),
                    };
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => return self.lost(kind, failure_name(&error)),
                other => self.on_event(other),
            }
        }
    }

    pub(crate) fn lost(&mut self, kind: &str, why: &'static str) -> Outcome {
        *self.stats.lost.entry(format!("{kind}:{why}")).or_default() += 1;
        Outcome::Lost
    }

    /// Serves the swarm for `d`, or until `until` if sooner.
    pub(crate) async fn idle(&mut self, d: Duration, until: Option<Instant>) {
        let mut end = Instant::now() + d;
        if let Some(until) = until {
            end = end.min(until);
        }
        let sleep = tokio::time::sleep_until(end.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    pub(crate) async fn connect(&mut self, addr: &Multiaddr) -> bool {
        if self.swarm.dial(addr.clone()).is_err() {
            return false;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return false,
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == self.coordinator => return true,
                    SwarmEvent::OutgoingConnectionError { .. } => return false,
                    other => self.on_event(other),
                },
            }
        }
    }

    pub(crate) async fn join(&mut self, name: &str) {
        let message = Message::Join(join_message(name));
        match self.request(0, &message).await {
            Outcome::Answered(Message::JoinAck(ack), t) if ack.accepted => {
                self.joined = true;
                self.stats.join.push(t);
            }
            Outcome::Answered(Message::NoWork(none), t) => {
                self.stats.join.push(t);
                *self
                    .stats
                    .nowork_reasons
                    .entry(format!("join: {}", none.reason))
                    .or_default() += 1;
                let wait = u64::from(none.retry_after_ms).clamp(100, 60_000);
                self.idle(Duration::from_millis(wait), None).await;
            }
            Outcome::Answered(_, _) => {
                self.stats.unexpected += 1;
                self.idle(Duration::from_secs(1), None).await;
            }
            Outcome::Lost => self.idle(Duration::from_secs(1), None).await,
        }
    }
}

/// One simulated volunteer from connection to the end of the measured phase.
pub(crate) async fn volunteer(
    index: usize,
    addr: Multiaddr,
    coordinator: PeerId,
    shared: Arc<Shared>,
) -> PeerStats {
    let mut peer = SimPeer::new(index, coordinator, shared.timeout);
    let name = format!("sim-{index}");
    peer.stats.connected = peer.connect(&addr).await;
    if !peer.stats.connected {
        return peer.stats;
    }
    let mut start = shared.start.clone();
    // Join, then wait (serving the connection) for the measured phase.
    let window = loop {
        // A peer that never gets in gives up when the measured phase is over.
        if start.borrow().is_some_and(|(_, end)| Instant::now() >= end) {
            return peer.stats;
        }
        if !peer.joined {
            peer.join(&name).await;
            if peer.joined {
                shared.joined.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if let Some(window) = *start.borrow_and_update() {
            break window;
        }
        tokio::select! {
            changed = start.changed() => if changed.is_err() { return peer.stats },
            event = peer.swarm.select_next_some() => peer.on_event(event),
        }
    };
    peer.stats.joined = true;
    let (begin, end) = window;
    peer.idle(begin.saturating_duration_since(Instant::now()), None)
        .await;
    peer.work(&name, &shared, end).await;
    peer.stats.still_connected = peer.swarm.is_connected(&coordinator);
    peer.stats
}
