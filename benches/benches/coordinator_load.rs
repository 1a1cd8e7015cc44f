//! The coordinator under many volunteers, in two parts.
//!
//! **Network** (`network` in the JSON): the real `canopy-coordinator run --json` as a child
//! process, on loopback, and `COORDINATOR_LOAD_PEERS` simulated volunteers (1,000 unless
//! told) in this process. Each volunteer has its own identity, its own minimal libp2p swarm
//! (TCP, Noise, Yamux and the `/canopy/1` request-response protocol with Canopy's codec) and
//! its own connection, driven by its own tokio task. It speaks the real protocol as
//! `canopy-node`'s worker does: `Join`, then `LeaseRequest`; on a grant it "computes" for a
//! while (`COORDINATOR_LOAD_TASK_MS`, ±50 %), sends one `LeaseRenew` half-way, then a
//! `TaskResult` carrying an update it signed for that task and round, and answers the
//! coordinator's `ChunkRequest`s (and `ManifestRequest`s) for it while it waits for the
//! `ResultAck`. `NoWork` is honoured as a node honours it (its `retry_after_ms`, 0.1 to 60 s;
//! `join_first` sends a join), a busy result is sent again after a second (30 times at most).
//! Every update is a real top-k pseudo-gradient computed once from the initial weights (a
//! small step towards zero), each copy made unique in three low mantissa bits so that no two
//! results have the same root.
//!
//! The project: the tiny model, `tasks_per_round` = the peer count (`COORDINATOR_LOAD_TASKS`),
//! a round closes when every task is in, one inner step of one 16-token window (so that the
//! coordinator's held-out check of each update is cheap), top-k updates at 0.1 %, no
//! datacenter re-runs; scheduling (lease lengths, retry intervals) as the coordinator's
//! defaults. Figures, all taken at the volunteers except memory and CPU (from
//! `/proc/<coordinator pid>`):
//!
//! - `grant_ms`, `nowork_ms`, `renew_ms`, `result_ms`, `release_ms`, `join_ms`: latency of
//!   `LeaseRequest` answered with a grant / with `NoWork`, of `LeaseRenew`, of each
//!   `TaskResult` until its `ResultAck` (a busy ack included), of `LeaseRelease`, of `Join`:
//!   p50, p99, max, mean, count. `nowork_reasons` counts every `NoWork` by its reason (the
//!   swarm's "the peer is busy" is the coordinator's queue overflowing).
//! - `judge_queue_ms`, `judge_fetch_to_ack_ms`: for each judged result, from the `TaskResult`
//!   to the coordinator's first `ChunkRequest` for its update, and from there to the
//!   `ResultAck`.
//! - `lost`: requests sent but not answered within the request timeout (20 s, as
//!   `canopy-node`), or failed on the connection, by request.
//! - `rounds_per_min`: rounds the coordinator closed during the measured phase, per minute.
//! - `rss_bytes_per_peer`: (coordinator RSS once every peer has joined − RSS before the
//!   first connected) / peers; `rss_peak_bytes`: its high-water mark at the end.
//! - `cpu_ms_per_request`: coordinator user + system CPU over the measured phase divided by
//!   the requests it answered in it; `cpu_ms_service_loop_thread`: the part of the main
//!   thread, where `canopy-coordinator run` drives the service loop.
//! - `round_closed_at_s`: when each round closed, from the start of the measured phase.
//!
//! **Core** (`core`): `COORDINATOR_LOAD_CORE_PEERS` (10,000) simulated peers through the
//! coordinator's decisions in this process, with no network: a project opened with
//! `Project::open` in a temporary directory (its SQLite state on disk, as the coordinator
//! runs it) with as many tasks as peers; every peer joins (`service::answer_peer`), then every
//! peer asks for a lease (the `LeaseRequest` arm of the service: `answer_peer` notes the
//! contact, then the peer and pause reads, `datacenter_active` (one indexed count), and
//! `scheduler::grant` in a transaction), then renews it (`answer_peer`), then its result is
//! committed (the state reads of the service's result check and the transaction that records
//! an accepted result; the update's fetch and held-out evaluation are left out). Each phase
//! stops early when `COORDINATOR_LOAD_CORE_PHASE_SECS` have passed (the count says how far
//! it got). Figures: latency per operation and operations per second over all four phases,
//! and for leases the share of the time in each step.
//!
//! Experiments: `COORDINATOR_LOAD_IDLE_RETRY_MS` sets the project's
//! `scheduling.idle_retry_ms` (how long an idle node waits before asking again; 1,000 by
//! default, as the coordinator's own default; the coordinator stretches it when many peers
//! wait); `COORDINATOR_LOAD_RETRY_BUSY_RENEW=0` makes the volunteers take a "busy" answer to
//! a renewal for a lost lease, as nodes did before, where `canopy-node` (and this bench by
//! default) sends the renewal again.
//!
//! Other settings: `COORDINATOR_LOAD_SECS` (the measured phase, 240 s: long enough for a
//! round of 1,000 results to close), `_RAMP` (peers connecting per second, 200),
//! `_TIMEOUT_SECS` (20), `_CORE_TASKS` (as many as core peers), `_CORE_DIR` (where the core
//! part's database goes; `/dev/shm` takes the disk out), `_CORE_EVALS` (20), `_PARTS`
//! (`network,core`), all prefixed `COORDINATOR_LOAD`. It prints a short summary, then one
//! JSON line (`{"bench":"coordinator_load",…}`). The machine's load average is in the JSON:
//! other work on the machine shows in every figure.
//!
//! ```text
//! cargo bench -p canopy-benches --bench coordinator_load
//! COORDINATOR_LOAD_PEERS=200 COORDINATOR_LOAD_SECS=30 COORDINATOR_LOAD_PARTS=network \
//!     cargo bench -p canopy-benches --bench coordinator_load
//! ```

// The network report is one large `json!` object.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use canopy_benches::{Latency, env_setting, proc_stats};
use canopy_coordinator::config::{Config, Preset};
use canopy_coordinator::project::{self, Project, decode_spec, now_ms, preset_config};
use canopy_coordinator::scheduler;
use canopy_coordinator::service::{Answered, Caller, answer_peer, datacenter_active};
use canopy_coordinator::state::{LedgerClaim, ResultRecord, TRAIN};
use canopy_node::network::codec::{CanopyCodec, PROTOCOL, RawChunk, Response};
use canopy_node::objects;
use canopy_protocol::messages::{
    AdapterInfo, AdapterKind, Capabilities, ChunkRequest, Join, LeaseGrant, LeaseRelease,
    LeaseRenew, LeaseRequest, ManifestResponse, ReleaseReason, TaskId, TaskOutput, TaskResult,
    TaskSpec, Tier, TrainOutput,
};
use canopy_protocol::{CodecSpec, CompressedUpdate, Digest, Envelope, Keypair, Message};
use canopy_shaders::Params;
use futures::StreamExt;
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// `COORDINATOR_LOAD_<name>` from the environment, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    env_setting("COORDINATOR_LOAD", name, default)
}

/// The reason of a `ResultAck` for a result the coordinator is too busy to judge now.
const RESULT_BUSY: &str = canopy_node::worker::RESULT_BUSY;
/// Times a busy result is sent again, as `canopy-node` does.
const BUSY_RETRIES: u32 = 30;
/// What the coordinator's swarm answers, at once, a request its service's queue has no room
/// for (`canopy-node`'s event loop, word for word).
const SWARM_BUSY: &str = canopy_node::network::PEER_BUSY;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let parts: String = setting("PARTS", "network,core".to_string());
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("coordinator_load"));
    let mut summary = Vec::new();
    if parts.split(',').any(|p| p.trim() == "network") {
        let settings = NetSettings::from_env();
        let (report, lines) = network_part(&settings);
        summary.extend(lines);
        out.insert("network".into(), report);
    }
    if parts.split(',').any(|p| p.trim() == "core") {
        let (report, lines) = core_part();
        summary.extend(lines);
        out.insert("core".into(), report);
    }
    println!();
    println!("coordinator_load summary");
    for line in summary {
        println!("  {line}");
    }
    println!("{}", Value::Object(out));
}

// ---------------------------------------------------------------------------------------------
// Shared: the update every simulated volunteer sends.
// ---------------------------------------------------------------------------------------------

/// The project's update codec and a real pseudo-gradient in it: the initial weights minus the
/// same weights shrunk by 0.1 % (one small step towards zero, which cannot raise the held-out
/// loss by much), compressed as the project asks.
fn update_template(config: &Config) -> CompressedUpdate {
    let model = preset_config(config.model.preset);
    let before = Params::init(&model, config.project.seed).expect("initial weights");
    let shrunk = before.values().iter().map(|v| v * 0.999).collect();
    let after = Params::from_values(&model, shrunk).expect("shrunk weights");
    objects::pseudo_gradient(&before, &after, project::codec(config)).expect("pseudo-gradient")
}

/// `template` made unique by `unique`: 12 low mantissa bits of each of its first three top-k
/// values (finite values stay finite and barely move). Only top-k bodies are supported.
fn unique_update(template: &CompressedUpdate, unique: u64) -> CompressedUpdate {
    assert!(
        matches!(template.codec, CodecSpec::TopK { .. }),
        "the bench's project sends top-k updates"
    );
    let mut update = template.clone();
    let k = u64::from_le_bytes(update.body[..8].try_into().expect("top-k count")) as usize;
    assert!(k >= 3, "a top-k update of at least three values");
    let values = 8 + 4 * k;
    for j in 0..3 {
        let at = values + 4 * j;
        let bits = u32::from_le_bytes(update.body[at..at + 4].try_into().expect("a value"));
        let mark = ((unique >> (12 * j)) & 0xfff) as u32;
        let bits = (bits & !0xfff) | mark;
        update.body[at..at + 4].copy_from_slice(&bits.to_le_bytes());
    }
    update
}

fn join_message(name: &str) -> Join {
    Join {
        capabilities: Capabilities {
            adapters: vec![AdapterInfo {
                name: "simulated".into(),
                backend: "cpu".into(),
                kind: AdapterKind::Cpu,
                memory_bytes: 0,
            }],
            threads: 1,
            memory_bytes: 1 << 30,
            tier: Tier::Volunteer,
            software_version: "coordinator-load".into(),
        },
        display_name: Some(name.into()),
        organisation: None,
        country: None,
        invite: None,
        work: None,
    }
}

fn latency_json(l: &Latency) -> Value {
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({"p50": r(l.p50), "p99": r(l.p99), "max": r(l.max), "mean": r(l.mean), "n": l.count})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Part 1: simulated volunteers over loopback libp2p against the real coordinator process.
// ---------------------------------------------------------------------------------------------

struct NetSettings {
    peers: usize,
    secs: u64,
    task_ms: u64,
    tasks_per_round: usize,
    timeout: Duration,
    ramp: usize,
    idle_retry_ms: u32,
    retry_busy_renew: bool,
}

impl NetSettings {
    fn from_env() -> Self {
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
struct PeerStats {
    connected: bool,
    joined: bool,
    still_connected: bool,
    disconnects: u64,
    join: Vec<f64>,
    grant: Vec<f64>,
    nowork: Vec<f64>,
    renew: Vec<f64>,
    result: Vec<f64>,
    release: Vec<f64>,
    /// Requests answered in the measured phase.
    answered: u64,
    /// `<request>:<why>` → count.
    lost: BTreeMap<String, u64>,
    /// `NoWork` answers by reason (the swarm's "busy" among them).
    nowork_reasons: BTreeMap<String, u64>,
    result_busy: u64,
    /// Results dropped after [`BUSY_RETRIES`] busy answers (the lease then expires).
    result_given_up: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    renew_refused: u64,
    renew_busy_retried: u64,
    unexpected: u64,
    chunks_served: u64,
    manifests_served: u64,
    /// Accepted or refused results: from the `TaskResult` that was judged to the
    /// coordinator's first `ChunkRequest` for its update (admission, a judging slot, the
    /// state reads), and from there to the `ResultAck` (the fetch, decoding, the held-out
    /// evaluation, the commit).
    judge_queue: Vec<f64>,
    judge_rest: Vec<f64>,
}

/// A request's fate (short-lived: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Answered(Message, f64),
    Lost,
}

type Behaviour = request_response::Behaviour<CanopyCodec>;

struct SimPeer {
    keys: Keypair,
    swarm: Swarm<Behaviour>,
    coordinator: PeerId,
    nonce: u64,
    joined: bool,
    /// Updates this peer sent lately, which the coordinator fetches from it.
    serving: Vec<(canopy_protocol::SignedManifest, Vec<u8>)>,
    stats: PeerStats,
    rng: ChaCha8Rng,
    /// Whether answers count towards the measured phase.
    measuring: bool,
    /// The update of the result in flight, and when the coordinator first asked for it.
    pending_root: Option<Digest>,
    chunk_asked_at: Option<Instant>,
}

/// Shared by every simulated volunteer.
struct Shared {
    template: CompressedUpdate,
    unique: AtomicU64,
    joined: AtomicUsize,
    /// When the measured phase starts and ends (sent once every peer has joined).
    start: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    task_ms: u64,
    timeout: Duration,
    retry_busy_renew: bool,
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Join(_) => "join",
        Message::LeaseRequest(_) => "lease",
        Message::LeaseRenew(_) => "renew",
        Message::TaskResult(_) => "result",
        Message::LeaseRelease(_) => "release",
        _ => "other",
    }
}

fn failure_name(e: &OutboundFailure) -> &'static str {
    match e {
        OutboundFailure::Timeout => "timeout",
        OutboundFailure::ConnectionClosed => "connection_closed",
        OutboundFailure::DialFailure => "dial_failure",
        OutboundFailure::UnsupportedProtocols => "unsupported",
        OutboundFailure::Io(_) => "io",
    }
}

impl SimPeer {
    fn new(index: usize, coordinator: PeerId, timeout: Duration) -> Self {
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

    fn seal(&mut self, round: u64, message: &Message) -> Envelope {
        self.nonce += 1;
        Envelope::seal(&self.keys, round, self.nonce, message).expect("seal")
    }

    /// Handles anything but the answer awaited: the coordinator's chunk and manifest requests
    /// for this peer's updates, and the connection's fate.
    fn on_event(&mut self, event: SwarmEvent<request_response::Event<Envelope, Response>>) {
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

    fn chunk(&self, id: &Digest) -> Option<Vec<u8>> {
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
    async fn request(&mut self, round: u64, message: &Message) -> Outcome {
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

    fn lost(&mut self, kind: &str, why: &'static str) -> Outcome {
        *self.stats.lost.entry(format!("{kind}:{why}")).or_default() += 1;
        Outcome::Lost
    }

    /// Serves the swarm for `d`, or until `until` if sooner.
    async fn idle(&mut self, d: Duration, until: Option<Instant>) {
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

    async fn connect(&mut self, addr: &Multiaddr) -> bool {
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

    async fn join(&mut self, name: &str) {
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

    /// The measured phase: leases, renewals and results until `end`.
    async fn work(&mut self, name: &str, shared: &Shared, end: Instant) {
        self.measuring = true;
        let spread = self.rng.random_range(0..2000);
        self.idle(Duration::from_millis(spread), Some(end)).await;
        while Instant::now() < end {
            if !self.joined {
                self.join(name).await;
                continue;
            }
            let ask = Message::LeaseRequest(LeaseRequest { slots: 1 });
            match self.request(0, &ask).await {
                Outcome::Answered(Message::LeaseGrant(grant), t) => {
                    self.stats.grant.push(t);
                    self.run_lease(grant, shared, end).await;
                }
                Outcome::Answered(Message::NoWork(none), t) => {
                    self.stats.nowork.push(t);
                    *self
                        .stats
                        .nowork_reasons
                        .entry(none.reason.clone())
                        .or_default() += 1;
                    if none.join_first {
                        self.joined = false;
                    }
                    let wait = u64::from(none.retry_after_ms).clamp(100, 60_000);
                    self.idle(Duration::from_millis(wait), Some(end)).await;
                }
                Outcome::Answered(_, _) => {
                    self.stats.unexpected += 1;
                    self.idle(Duration::from_secs(1), Some(end)).await;
                }
                Outcome::Lost => self.idle(Duration::from_secs(1), Some(end)).await,
            }
        }
    }

    async fn run_lease(&mut self, grant: LeaseGrant, shared: &Shared, end: Instant) {
        let round = match &grant.spec {
            TaskSpec::Train(t) => t.model_version,
            _ => 0,
        };
        let compute = (shared.task_ms as f64 * self.rng.random_range(0.5..1.5)) as u64;
        self.idle(Duration::from_millis(compute / 2), Some(end))
            .await;
        if Instant::now() >= end {
            return;
        }
        let renew = Message::LeaseRenew(LeaseRenew {
            lease: grant.lease,
            progress_permille: 500,
        });
        let mut renewal = self.request(0, &renew).await;
        // As `canopy-node` does: a renewal the coordinator's swarm was too busy to take is
        // sent again, the lease kept (`COORDINATOR_LOAD_RETRY_BUSY_RENEW=0` gives the lease up
        // instead, as nodes did before).
        let mut retries = 0;
        while shared.retry_busy_renew && retries < BUSY_RETRIES {
            let Outcome::Answered(Message::NoWork(none), t) = &renewal else {
                break;
            };
            if none.reason != SWARM_BUSY {
                break;
            }
            self.stats.renew.push(*t);
            self.stats.renew_busy_retried += 1;
            let wait = u64::from(none.retry_after_ms).clamp(100, 60_000);
            self.idle(Duration::from_millis(wait), None).await;
            retries += 1;
            renewal = self.request(0, &renew).await;
        }
        match renewal {
            Outcome::Answered(Message::LeaseRenewed(_), t) => self.stats.renew.push(t),
            Outcome::Answered(Message::NoWork(none), t) => {
                // As `canopy-node` does: a `NoWork` to a renewal means the lease is lost; the
                // task is cancelled and the lease handed back.
                self.stats.renew.push(t);
                self.stats.renew_refused += 1;
                *self
                    .stats
                    .nowork_reasons
                    .entry(format!("renew: {}", none.reason))
                    .or_default() += 1;
                let release = Message::LeaseRelease(LeaseRelease {
                    lease: grant.lease,
                    reason: ReleaseReason::Failed("lease lost".into()),
                });
                if let Outcome::Answered(_, t) = self.request(round, &release).await {
                    self.stats.release.push(t);
                }
                return;
            }
            Outcome::Answered(_, _) => self.stats.unexpected += 1,
            Outcome::Lost => {}
        }
        self.idle(Duration::from_millis(compute - compute / 2), Some(end))
            .await;
        if Instant::now() >= end {
            return;
        }
        // The update: signed by this peer, naming this task and round, provided from here.
        let unique = shared.unique.fetch_add(1, Ordering::Relaxed);
        let update = unique_update(&shared.template, unique);
        let (signed, bytes) =
            objects::update_object(&self.keys, &update, grant.task, round).expect("update");
        self.pending_root = Some(signed.manifest().root);
        self.serving.push((signed.clone(), bytes));
        if self.serving.len() > 2 {
            self.serving.remove(0);
        }
        let result = Message::TaskResult(TaskResult {
            lease: grant.lease,
            task: grant.task,
            output: TaskOutput::Train(Box::new(TrainOutput {
                update: signed,
                train_loss: 3.0,
                tokens: 16,
            })),
            compute_ms: compute,
        });
        for attempt in 0..=BUSY_RETRIES {
            self.chunk_asked_at = None;
            let busy = match self.request(round, &result).await {
                Outcome::Answered(Message::ResultAck(ack), t) => {
                    self.stats.result.push(t);
                    if !ack.accepted && ack.reason.as_deref() == Some(RESULT_BUSY) {
                        self.stats.result_busy += 1;
                        true
                    } else {
                        if let Some(asked) = self.chunk_asked_at {
                            let now = Instant::now();
                            let sent = now - Duration::from_secs_f64(t / 1000.0);
                            self.stats
                                .judge_queue
                                .push(ms(asked.saturating_duration_since(sent)));
                            self.stats.judge_rest.push(ms(now - asked));
                        }
                        if ack.accepted {
                            self.stats.accepted += 1;
                        } else {
                            let reason = ack.reason.unwrap_or_default();
                            *self.stats.refused.entry(reason).or_default() += 1;
                        }
                        false
                    }
                }
                Outcome::Answered(Message::NoWork(none), _) => {
                    *self
                        .stats
                        .nowork_reasons
                        .entry(format!("result: {}", none.reason))
                        .or_default() += 1;
                    true
                }
                Outcome::Answered(_, _) => {
                    self.stats.unexpected += 1;
                    false
                }
                Outcome::Lost => false,
            };
            if !busy || attempt == BUSY_RETRIES {
                if busy {
                    self.stats.result_given_up += 1;
                }
                break;
            }
            self.idle(Duration::from_secs(1), None).await;
        }
    }
}

/// One simulated volunteer from connection to the end of the measured phase.
async fn volunteer(
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

fn network_part(s: &NetSettings) -> (Value, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = canopy_tests::processes::free_port();
    let tasks = s.tasks_per_round.to_string();
    let training = [
        ("rounds", "100000"),
        ("inner_steps", "1"),
        ("batch_size", "1"),
        ("seq_len", "16"),
        ("tasks_per_round", tasks.as_str()),
        ("min_updates", tasks.as_str()),
        ("compression", "\"topk\""),
        ("topk_density", "0.001"),
    ];
    let extra = format!(
        "[verification]\nrerun_fraction = 0.0\n[scheduling]\nidle_retry_ms = {}\n\
         [admission]\nnew_nodes_per_network_hour = 0\n",
        s.idle_retry_ms
    );
    let config_path = canopy_tests::processes::small_project(
        &dir.path().join("project"),
        port,
        &training,
        &extra,
    );
    let config = Config::load(&config_path).expect("the bench's project config");
    assert_eq!(config.model.preset, Preset::Tiny);
    let template = update_template(&config);
    println!(
        "coordinator_load network: {} peers, {} tasks per round, tasks of ~{} ms, {} s measured; starting the coordinator (builds it if needed)",
        s.peers, s.tasks_per_round, s.task_ms, s.secs
    );
    let mut coordinator = canopy_tests::processes::Coordinator::start(&config_path);
    let pid = coordinator.child.id();
    let addr: Multiaddr = coordinator.addr.parse().expect("coordinator address");
    let coordinator_peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("the coordinator's address names no peer: {addr}"),
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss_base = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let me = std::process::id();
    let sim_rss_base = proc_stats::status_bytes(me, "VmRSS").unwrap_or(0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let shared = Arc::new(Shared {
        template,
        unique: AtomicU64::new(1),
        joined: AtomicUsize::new(0),
        start: start_rx,
        task_ms: s.task_ms,
        retry_busy_renew: s.retry_busy_renew,
        timeout: s.timeout,
    });
    let ramp_started = Instant::now();
    let handles: Vec<_> = runtime.block_on(async {
        let mut handles = Vec::with_capacity(s.peers);
        for index in 0..s.peers {
            // Paced: `ramp` new connections per second.
            let due = ramp_started + Duration::from_secs_f64(index as f64 / s.ramp as f64);
            tokio::time::sleep_until(due.into()).await;
            handles.push(tokio::spawn(volunteer(
                index,
                addr.clone(),
                coordinator_peer,
                shared.clone(),
            )));
        }
        handles
    });
    // Every peer joined (or the wait ran out).
    let join_deadline = Instant::now() + Duration::from_secs(180);
    while shared.joined.load(Ordering::Relaxed) < s.peers && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let joined = shared.joined.load(Ordering::Relaxed);
    let join_phase_s = ramp_started.elapsed().as_secs_f64();
    // Let the coordinator settle (the join events' printing, allocator) before reading.
    std::thread::sleep(Duration::from_secs(2));
    let rss_joined = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let sim_rss_joined = proc_stats::status_bytes(me, "VmRSS").unwrap_or(0);
    println!(
        "  {joined} of {} peers joined in {join_phase_s:.1} s; coordinator RSS {:.1} -> {:.1} MiB",
        s.peers,
        rss_base as f64 / (1 << 20) as f64,
        rss_joined as f64 / (1 << 20) as f64
    );

    // The measured phase.
    let rounds_before = coordinator.events_named("round").len();
    let cpu_before = proc_stats::cpu_ms(pid).unwrap_or(0);
    // `canopy-coordinator run` drives the service loop (every request but results, which are
    // judged on spawned tasks) with `block_on`, on the process's main thread.
    let loop_cpu_before = proc_stats::thread_cpu_ms(pid, pid).unwrap_or(0);
    let load_before = proc_stats::load_average();
    let begin = Instant::now() + Duration::from_millis(200);
    let end = begin + Duration::from_secs(s.secs);
    let _ = start_tx.send(Some((begin, end)));
    let mut progress = Instant::now();
    let mut closes: Vec<f64> = Vec::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let closed = coordinator.events_named("round").len() - rounds_before;
        while closes.len() < closed {
            closes.push((begin.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        }
        if progress.elapsed() >= Duration::from_secs(15) {
            progress = Instant::now();
            println!(
                "  {:>4.0} s: {} rounds closed, coordinator RSS {:.1} MiB",
                (Instant::now() - begin).as_secs_f64(),
                coordinator.events_named("round").len() - rounds_before,
                proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0) as f64 / (1 << 20) as f64
            );
        }
    }
    let cpu_at_end = proc_stats::cpu_ms(pid).unwrap_or(0);
    let loop_cpu_ms = proc_stats::thread_cpu_ms(pid, pid)
        .unwrap_or(0)
        .saturating_sub(loop_cpu_before);
    let rounds_closed = coordinator.events_named("round").len() - rounds_before;
    let load_after = proc_stats::load_average();
    // Requests still in flight finish (answered or timed out) before the figures are taken.
    let stats: Vec<PeerStats> = runtime.block_on(async {
        let mut all = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(s) = h.await {
                all.push(s);
            }
        }
        all
    });
    let drained = Instant::now() - end;
    let cpu_after = proc_stats::cpu_ms(pid).unwrap_or(0);
    let rss_end = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let rss_peak = proc_stats::status_bytes(pid, "VmHWM").unwrap_or(0);
    drop(runtime);
    if let Ok(Some(status)) = coordinator.child.try_wait() {
        println!("  warning: the coordinator exited during the run: {status}");
    }
    drop(coordinator);

    let mut all = PeerStats::default();
    let (mut connected, mut still_connected) = (0, 0);
    for p in stats {
        connected += usize::from(p.connected);
        still_connected += usize::from(p.still_connected);
        all.disconnects += p.disconnects;
        all.join.extend(p.join);
        all.grant.extend(p.grant);
        all.nowork.extend(p.nowork);
        all.renew.extend(p.renew);
        all.result.extend(p.result);
        all.release.extend(p.release);
        all.answered += p.answered;
        for (k, v) in p.lost {
            *all.lost.entry(k).or_default() += v;
        }
        for (k, v) in p.nowork_reasons {
            *all.nowork_reasons.entry(k).or_default() += v;
        }
        for (k, v) in p.refused {
            *all.refused.entry(k).or_default() += v;
        }
        all.result_busy += p.result_busy;
        all.result_given_up += p.result_given_up;
        all.judge_queue.extend(p.judge_queue);
        all.judge_rest.extend(p.judge_rest);
        all.accepted += p.accepted;
        all.renew_refused += p.renew_refused;
        all.renew_busy_retried += p.renew_busy_retried;
        all.unexpected += p.unexpected;
        all.chunks_served += p.chunks_served;
        all.manifests_served += p.manifests_served;
    }
    let lost: u64 = all.lost.values().sum();
    let grant = Latency::of(&mut all.grant);
    let renew = Latency::of(&mut all.renew);
    let result = Latency::of(&mut all.result);
    let nowork = Latency::of(&mut all.nowork);
    let join = Latency::of(&mut all.join);
    let release = Latency::of(&mut all.release);
    let judge_queue = Latency::of(&mut all.judge_queue);
    let judge_rest = Latency::of(&mut all.judge_rest);
    let cpu_ms = cpu_at_end.saturating_sub(cpu_before);
    let rounds_per_min = rounds_closed as f64 / (s.secs as f64 / 60.0);
    let rss_per_peer = rss_joined.saturating_sub(rss_base) as f64 / joined.max(1) as f64;
    let sim_per_peer = sim_rss_joined.saturating_sub(sim_rss_base) as f64 / connected.max(1) as f64;
    let cpu_per_request = cpu_ms as f64 / all.answered.max(1) as f64;
    let requests_per_sec = all.answered as f64 / s.secs as f64;
    let refused: u64 = all.refused.values().sum();

    let report = json!({
        "peers": s.peers,
        "connected": connected,
        "joined": joined,
        "still_connected": still_connected,
        "disconnects": all.disconnects,
        "secs": s.secs,
        "task_ms": s.task_ms,
        "tasks_per_round": s.tasks_per_round,
        "join_phase_s": (join_phase_s * 10.0).round() / 10.0,
        "join_ms": latency_json(&join),
        "grant_ms": latency_json(&grant),
        "nowork_ms": latency_json(&nowork),
        "renew_ms": latency_json(&renew),
        "result_ms": latency_json(&result),
        "release_ms": latency_json(&release),
        "lost": lost,
        "lost_by_request": all.lost,
        "requests_answered": all.answered,
        "requests_per_sec": (requests_per_sec * 10.0).round() / 10.0,
        "nowork_reasons": all.nowork_reasons,
        "results_accepted": all.accepted,
        "results_refused": refused,
        "refusals": all.refused,
        "result_busy": all.result_busy,
        "result_given_up": all.result_given_up,
        "results_per_sec": (all.accepted as f64 / s.secs as f64 * 100.0).round() / 100.0,
        "judge_queue_ms": latency_json(&judge_queue),
        "judge_fetch_to_ack_ms": latency_json(&judge_rest),
        "round_closed_at_s": closes,
        "renew_refused": all.renew_refused,
        "renew_busy_retried": all.renew_busy_retried,
        "idle_retry_ms": s.idle_retry_ms,
        "retry_busy_renew": s.retry_busy_renew,
        "unexpected_answers": all.unexpected,
        "chunks_served": all.chunks_served,
        "rounds_closed": rounds_closed,
        "rounds_per_min": (rounds_per_min * 100.0).round() / 100.0,
        "rss_base_bytes": rss_base,
        "rss_joined_bytes": rss_joined,
        "rss_bytes_per_peer": rss_per_peer.round(),
        "rss_end_bytes": rss_end,
        "rss_peak_bytes": rss_peak,
        "cpu_ms": cpu_ms,
        "cpu_ms_after_drain": cpu_after.saturating_sub(cpu_before),
        "cpu_ms_service_loop_thread": loop_cpu_ms,
        "cpu_ms_per_request": (cpu_per_request * 1000.0).round() / 1000.0,
        "drain_s": (drained.as_secs_f64() * 10.0).round() / 10.0,
        "sim_rss_bytes_per_peer": sim_per_peer.round(),
        "load_avg_1m": [load_before, load_after],
    });
    let lines = vec![
        format!(
            "network: {connected}/{} peers connected, {joined} joined, {still_connected} still connected at the end; {} requests answered in {} s ({requests_per_sec:.0}/s), {lost} lost",
            s.peers, all.answered, s.secs
        ),
        format!(
            "  grant p50 {:.1} ms p99 {:.1} ms (n {}), renew p50 {:.1} p99 {:.1} (n {}), result p50 {:.1} p99 {:.1} (n {}), nowork p50 {:.1} p99 {:.1} (n {}), join p50 {:.1} p99 {:.1}",
            grant.p50,
            grant.p99,
            grant.count,
            renew.p50,
            renew.p99,
            renew.count,
            result.p50,
            result.p99,
            result.count,
            nowork.p50,
            nowork.p99,
            nowork.count,
            join.p50,
            join.p99
        ),
        format!(
            "  results accepted {} ({:.1}/s) refused {refused} busy {} given up {}; judging: queue p50 {:.0} ms, fetch to ack p50 {:.0} ms p99 {:.0} ms; {rounds_closed} rounds closed ({rounds_per_min:.2}/min) at {closes:?} s",
            all.accepted,
            all.accepted as f64 / s.secs as f64,
            all.result_busy,
            all.result_given_up,
            judge_queue.p50,
            judge_rest.p50,
            judge_rest.p99
        ),
        format!(
            "  coordinator RSS {:.1} KiB per peer (peak {:.0} MiB), CPU {:.2} ms per request; simulated peers {:.1} KiB each",
            rss_per_peer / 1024.0,
            rss_peak as f64 / (1 << 20) as f64,
            cpu_per_request,
            sim_per_peer / 1024.0
        ),
        format!(
            "  goal (p99 grant < 50 ms, none lost): {}",
            if grant.p99 < 50.0 && lost == 0 && grant.count > 0 {
                "met"
            } else {
                "missed"
            }
        ),
    ];
    (report, lines)
}

// ---------------------------------------------------------------------------------------------
// Part 2: the coordinator's core decisions in-process.
// ---------------------------------------------------------------------------------------------

fn core_config(tasks: u32) -> Config {
    let mut config = Config::default();
    config.project.name = "coordinator-load".into();
    config.model.preset = Preset::Tiny;
    config.data.generated_bytes = 300_000;
    config.data.shard_bytes = 32_768;
    let t = &mut config.training;
    t.rounds = 100_000;
    t.inner_steps = 1;
    t.batch_size = 1;
    t.seq_len = 16;
    t.tasks_per_round = tasks;
    t.min_updates = tasks;
    t.compression = canopy_coordinator::config::Compression::TopK;
    t.topk_density = 0.001;
    config.verification.rerun_fraction = 0.0;
    config.dashboard.listen = None;
    config
}

/// Time spent in each step of a lease request, in ms.
#[derive(Default)]
struct LeaseSpans {
    touch: Vec<f64>,
    reads: Vec<f64>,
    peers_scan: Vec<f64>,
    grant_tx: Vec<f64>,
    /// The baseline, on every [`BASELINE_EVERY`]th request of the same run: what a lease
    /// request did before it used indexes and noted contacts at most every 10 s (a synced
    /// write noting the contact, a load of every peer, a load of every open task).
    old_touch: Vec<f64>,
    old_peers_scan: Vec<f64>,
    old_open_tasks: Vec<f64>,
}

/// How often the core part also times the work a lease request did before (see
/// [`LeaseSpans`]), so that both are measured in one run.
const BASELINE_EVERY: usize = 20;

fn core_part() -> (Value, Vec<String>) {
    let peers: usize = setting("CORE_PEERS", 10_000usize).max(1);
    let tasks: u32 = setting("CORE_TASKS", peers as u32).max(1);
    let phase_budget = Duration::from_secs(setting("CORE_PHASE_SECS", 60));
    println!(
        "coordinator_load core: {peers} peers, {tasks} tasks, phases of at most {} s",
        phase_budget.as_secs()
    );
    // `COORDINATOR_LOAD_CORE_DIR=/dev/shm` takes the disk (and fsync) out of the figures.
    let parent: std::path::PathBuf = setting("CORE_DIR", std::env::temp_dir());
    let dir = tempfile::tempdir_in(&parent).expect("temp dir");
    let config = core_config(tasks);
    let opened = Instant::now();
    let project = Project::open(dir.path(), config).expect("project");
    println!(
        "  project opened with {tasks} tasks in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let round = project.current().round;
    let template = update_template(&project.config);
    let keys: Vec<Keypair> = (0..peers)
        .map(|_| Keypair::generate().expect("key"))
        .collect();
    let names: Vec<String> = keys.iter().map(|k| k.peer_id().to_string()).collect();

    let mut total_ops = 0usize;
    let mut total_time = Duration::ZERO;
    let mut timed = |d: Duration| {
        total_ops += 1;
        total_time += d;
        ms(d)
    };

    // Joins.
    let mut join = Vec::with_capacity(peers);
    let issuer = project.keys.public();
    let phase = Instant::now();
    for (i, key) in names.iter().enumerate() {
        if phase.elapsed() > phase_budget {
            break;
        }
        let message = Message::Join(join_message(&format!("sim-{i}")));
        let t = Instant::now();
        let answered = {
            let mut state = project.state();
            answer_peer(
                &mut state,
                &project.config,
                &issuer,
                Caller { key, network: None },
                round,
                now_ms(),
                message,
            )
            .expect("join")
        };
        join.push(timed(t.elapsed()));
        assert!(matches!(answered, Answered::Reply(Message::JoinAck(_), _)));
    }
    let joined = join.len();
    println!("  {joined} joins in {:.1} s", phase.elapsed().as_secs_f64());

    // Leases: the service's LeaseRequest arm.
    let mut grant = Vec::with_capacity(joined);
    let mut spans = LeaseSpans::default();
    let mut grants: Vec<(usize, scheduler::Granted)> = Vec::with_capacity(joined);
    let phase = Instant::now();
    for (i, key) in names.iter().enumerate().take(joined) {
        if phase.elapsed() > phase_budget {
            break;
        }
        let t = Instant::now();
        let now = now_ms();
        let mut state = project.state();
        let s0 = Instant::now();
        let answered = answer_peer(
            &mut state,
            &project.config,
            &issuer,
            Caller { key, network: None },
            round,
            now,
            Message::LeaseRequest(LeaseRequest { slots: 1 }),
        )
        .expect("lease request");
        assert!(matches!(answered, Answered::Other(_)));
        let s1 = Instant::now();
        let p = state.read().peer(key).expect("peer").expect("joined");
        let paused = state.read().paused().expect("paused");
        assert!(!paused);
        let s2 = Instant::now();
        let active = datacenter_active(&state.read(), now).expect("datacenter check");
        let s3 = Instant::now();
        let granted = state
            .transaction(|tx| {
                scheduler::grant(tx, &project.config.scheduling, &p, round, now, active)
            })
            .expect("grant");
        let s4 = Instant::now();
        drop(state);
        let g = granted.expect("an open task for every peer");
        let _spec = decode_spec(&g.task.spec).expect("spec");
        grant.push(timed(t.elapsed()));
        spans.touch.push(ms(s1 - s0));
        spans.reads.push(ms(s2 - s1));
        spans.peers_scan.push(ms(s3 - s2));
        spans.grant_tx.push(ms(s4 - s3));
        if i % BASELINE_EVERY == 0 {
            let mut state = project.state();
            let b0 = Instant::now();
            state
                .transaction(|tx| tx.touch_peer(key, now))
                .expect("touch");
            let b1 = Instant::now();
            let all = state.read().peers().expect("peers");
            let b2 = Instant::now();
            let open = state.read().tasks(Some(round), "open").expect("tasks");
            let b3 = Instant::now();
            assert!(!all.is_empty() && open.len() < tasks as usize);
            spans.old_touch.push(ms(b1 - b0));
            spans.old_peers_scan.push(ms(b2 - b1));
            spans.old_open_tasks.push(ms(b3 - b2));
        }
        grants.push((i, g));
    }
    println!(
        "  {} leases in {:.1} s",
        grants.len(),
        phase.elapsed().as_secs_f64()
    );

    // Renewals.
    let mut renew = Vec::with_capacity(grants.len());
    let phase = Instant::now();
    for (i, g) in &grants {
        if phase.elapsed() > phase_budget {
            break;
        }
        let message = Message::LeaseRenew(LeaseRenew {
            lease: canopy_protocol::messages::LeaseId(g.lease),
            progress_permille: 500,
        });
        let t = Instant::now();
        let answered = {
            let mut state = project.state();
            answer_peer(
                &mut state,
                &project.config,
                &issuer,
                Caller {
                    key: &names[*i],
                    network: None,
                },
                round,
                now_ms(),
                message,
            )
            .expect("renew")
        };
        renew.push(timed(t.elapsed()));
        assert!(matches!(
            answered,
            Answered::Reply(Message::LeaseRenewed(_), _)
        ));
    }
    println!(
        "  {} renewals in {:.1} s",
        renew.len(),
        phase.elapsed().as_secs_f64()
    );

    // Results: the service's state reads for a result, then the commit of an accepted one.
    let mut result = Vec::with_capacity(grants.len());
    let phase = Instant::now();
    let rep = project.config.reputation.clone();
    for (n, (i, g)) in grants.iter().enumerate() {
        if phase.elapsed() > phase_budget {
            break;
        }
        let key = &names[*i];
        let (signed, _) = objects::update_object(
            &keys[*i],
            &unique_update(&template, n as u64 + 1),
            TaskId(g.task.id),
            round,
        )
        .expect("update");
        let root = signed.manifest().root;
        let compute_ms = 1000;
        let t = Instant::now();
        let arrived = now_ms();
        {
            let state = project.state();
            let r = state.read();
            let lease = r.lease(g.lease).expect("lease").expect("a lease");
            let task = r.task(g.task.id).expect("task").expect("a task");
            let sender = r.peer(key).expect("peer").expect("a peer");
            assert!(lease.peer == *key && task.status == "leased" && !sender.banned);
            assert!(!r.update_seen(&root).expect("seen"));
        }
        let record = ResultRecord {
            lease: g.lease,
            task: g.task.id,
            peer: key.clone(),
            round,
            update_root: Some(root),
            norm: Some(1.0),
            train_loss: Some(3.0),
            tokens: g.task.tokens,
            status: "accepted".into(),
            reason: None,
            received_ms: now_ms(),
            weight: 1.0,
            aggregated_in: None,
            loss_change: None,
        };
        let now = now_ms();
        let tps = record.tokens as f64 / (compute_ms as f64 / 1000.0);
        project
            .state()
            .transaction(|tx| {
                tx.put_manifest(&signed, now)?;
                tx.insert_result(&record)?;
                tx.ledger_entry(
                    &LedgerClaim {
                        peer: key,
                        round,
                        task: record.task,
                        lease: record.lease,
                        kind: TRAIN,
                        compute_ms,
                        accepted: true,
                        verified: "unchecked",
                        result_hash: Some(&root),
                        reason: None,
                        arrived_ms: arrived,
                    },
                    now,
                )?;
                tx.set_lease_status(record.lease, "done")?;
                tx.set_task_status(record.task, "done")?;
                tx.adjust_reputation(key, rep.accepted, rep.ban_below)?;
                tx.record_throughput(key, tps)?;
                // The service asks whether the sender is a volunteer before sampling re-runs.
                let _volunteer = tx.peer(key)?;
                Ok(())
            })
            .expect("commit");
        result.push(timed(t.elapsed()));
    }
    println!(
        "  {} results committed in {:.1} s",
        result.len(),
        phase.elapsed().as_secs_f64()
    );

    // What judging costs besides the state: decoding and screening an update, and the
    // held-out loss with it applied (the coordinator runs four at once, on blocking threads).
    let len = project.model.num_params();
    let mut decode = Vec::new();
    let mut heldout = Vec::new();
    for n in 0..=setting("CORE_EVALS", 20u64) {
        let (_, bytes) = objects::update_object(
            &keys[0],
            &unique_update(&template, u64::MAX - n),
            TaskId(0),
            round,
        )
        .expect("update");
        let t = Instant::now();
        let values = objects::update_values(&bytes, len).expect("decode");
        canopy_coordinator::aggregate::check_update(&values, len).expect("a sound update");
        let t1 = Instant::now();
        let (before, after) = project
            .update_loss_change(round, &values)
            .expect("held-out loss");
        assert!(f64::from(after - before) < project.config.verification.max_loss_increase);
        // The first computes the version's own loss once as well.
        if n > 0 {
            decode.push(ms(t1 - t));
            heldout.push(ms(t1.elapsed()));
        }
    }
    let ops_per_sec = total_ops as f64 / total_time.as_secs_f64().max(1e-9);
    let j = Latency::of(&mut join);
    let g = Latency::of(&mut grant);
    let r = Latency::of(&mut renew);
    let c = Latency::of(&mut result);
    let span = |v: &mut Vec<f64>| latency_json(&Latency::of(v));
    let report = json!({
        "peers": peers,
        "tasks": tasks,
        "joined": joined,
        "join_ms": latency_json(&j),
        "grant_ms": latency_json(&g),
        "renew_ms": latency_json(&r),
        "result_ms": latency_json(&c),
        "grant_spans_ms": {
            "answer_peer_note_contact": span(&mut spans.touch),
            "peer_and_pause_reads": span(&mut spans.reads),
            "datacenter_active": span(&mut spans.peers_scan),
            "grant_transaction": span(&mut spans.grant_tx),
        },
        "grant_baseline_ms": {
            "every": BASELINE_EVERY,
            "touch_peer_synced": span(&mut spans.old_touch),
            "load_every_peer": span(&mut spans.old_peers_scan),
            "load_every_open_task": span(&mut spans.old_open_tasks),
        },
        "judge_decode_ms": latency_json(&Latency::of(&mut decode)),
        "judge_heldout_ms": latency_json(&Latency::of(&mut heldout)),
        "db_dir": parent.display().to_string(),
        "ops": total_ops,
        "ops_per_sec": (ops_per_sec * 10.0).round() / 10.0,
    });
    let worst = [j.p99, g.p99, r.p99, c.p99]
        .into_iter()
        .fold(0.0f64, f64::max);
    let lines = vec![
        format!(
            "core: {peers} peers, {tasks} tasks: join p50 {:.2} p99 {:.2} ms (n {}), grant p50 {:.2} p99 {:.2} (n {}), renew p50 {:.2} p99 {:.2} (n {}), result p50 {:.2} p99 {:.2} (n {}); {ops_per_sec:.0} ops/s",
            j.p50,
            j.p99,
            j.count,
            g.p50,
            g.p99,
            g.count,
            r.p50,
            r.p99,
            r.count,
            c.p50,
            c.p99,
            c.count
        ),
        format!(
            "  goal (p99 < 5 ms for every operation): {}",
            if worst < 5.0 { "met" } else { "missed" }
        ),
    ];
    drop(project);
    (report, lines)
}
