//! The task worker: asks the coordinator for leases, runs them with the kernels shipped in
//! canopy-shaders, returns signed results, renews leases while it works, and hands them back
//! when the volunteer stops or pauses the node.
//!
//! A training task (`TrainSpec`) runs one DiLoCo inner phase: the worker asks the coordinator
//! for the signed manifests of the model version and the data shards (it accepts only ones
//! the coordinator signed), fetches their chunks from whoever provides them, takes the inner
//! AdamW steps, computes the pseudo-gradient Δ = θ_round − θ_local, compresses it as the spec
//! says, signs its manifest, provides its chunks, and sends the result. The coordinator
//! fetches the update, commits it, and only then acknowledges.
//!
//! A node may run several workers (one per GPU on a cluster node); they share the swarm and
//! the [`Shared`] state the status line reads.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canopy_protocol::messages::{
    AdapterInfo, AdapterKind, Join, LeaseGrant, LeaseId, LeaseRelease, LeaseRenew, LeaseRequest,
    ManifestRequest, ReleaseReason, TaskOutput, TaskResult, TaskSpec,
};
use canopy_protocol::{Digest, Keypair, Message, ObjectKind, SignedManifest, join_work};
use canopy_shaders::{Params, Runtime};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

use crate::error::NodeError;
use crate::network::{self, Client};

mod corpus;
mod renewal;
mod train;

use renewal::renew;

pub use train::{inner_settings, task_memory};

/// What the node is doing now, for the live line, `canopy-node status` and `--json`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkerStatus {
    /// `joining`, `idle`, `fetching`, `training`, `uploading`, `paused`, `stopped`, or
    /// `unreachable` (the coordinator does not answer).
    pub state: String,
    /// The task being worked on.
    pub task: Option<u64>,
    /// Its round (model version).
    pub round: Option<u64>,
    /// Its progress in `0..=1`.
    pub progress: f32,
    /// Tasks whose results the coordinator accepted.
    pub accepted: u64,
    /// Tasks whose results it refused.
    pub rejected: u64,
    /// Training tokens in accepted and refused results.
    pub tokens: u64,
    /// Compute time of the tasks whose results were acknowledged, in milliseconds.
    pub compute_ms: u64,
    /// Training tokens per second of the last task.
    pub tokens_per_sec: f64,
    /// The last problem, for the volunteer.
    pub last_error: Option<String>,
    /// The tier the coordinator granted.
    pub tier: Option<String>,
}

/// State the workers share with the node's main loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once to stop: running tasks are cancelled and their leases handed back.
    pub stop: AtomicBool,
    /// While set, no new work is taken and a running task is handed back.
    pub paused: AtomicBool,
    joined: AtomicBool,
    status: Mutex<WorkerStatus>,
    /// The proof of work found on join, shared by the node's workers: (bits, nonce).
    join_work: Mutex<Option<(u8, u64)>>,
}

impl Shared {
    /// A copy of the status.
    pub fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn interrupted(&self) -> Option<ReleaseReason> {
        if self.stop.load(Ordering::Relaxed) {
            Some(ReleaseReason::Shutdown)
        } else if self.paused.load(Ordering::Relaxed) {
            Some(ReleaseReason::Paused)
        } else {
            None
        }
    }
}

/// What a worker needs to know.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator; only its signatures are accepted on model versions and data.
    pub coordinator: PeerId,
    /// The node's introduction, sent when the coordinator does not know it.
    pub join: Join,
    /// Most device (or host, on the CPU path) memory one task may use, in bytes.
    pub memory_limit: Option<u64>,
    /// Most share of the time spent computing, in percent (`None`: no cap).
    pub cpu_share: Option<u8>,
}

/// Objects of past tasks (model versions and steps, updates, corpus chunks and results) a
/// node keeps providing to others, at most; older ones are released, so a node's store does
/// not grow with the rounds it has worked. Training shards are kept: they are the run's data.
pub const RETAINED_OBJECTS: usize = 8;

/// The reason a coordinator gives for a result it is too busy to judge now: the node sends
/// the same result again shortly (its lease is still valid).
pub const RESULT_BUSY: &str = "the coordinator is busy; send the result again shortly";
/// Times a node sends a result again to a busy coordinator before giving up on it.
const BUSY_RETRIES: u32 = 30;

/// One worker on one adapter.
pub struct Worker {
    client: Client,
    keys: Keypair,
    runtime: Arc<Runtime>,
    config: WorkerConfig,
    shared: Arc<Shared>,
    /// The last model version fetched, reused by the next task of the same round.
    model: Option<(Digest, Arc<Params>)>,
    /// Objects of recent tasks still provided, oldest first (see [`RETAINED_OBJECTS`]).
    retained: std::collections::VecDeque<Digest>,
}

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerStop {
    /// The coordinator refused to admit this node.
    #[error("the coordinator refused this node: {0}")]
    Refused(String),
    /// The swarm stopped under the worker.
    #[error("the node's network task has stopped")]
    NetworkStopped,
}

impl Worker {
    /// A worker computing on `runtime`.
    pub fn new(
        client: Client,
        keys: Keypair,
        runtime: Arc<Runtime>,
        config: WorkerConfig,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            client,
            keys,
            runtime,
            config,
            shared,
            model: None,
            retained: std::collections::VecDeque::new(),
        }
    }

    /// Keeps providing `root` for a while, releasing the oldest objects beyond
    /// [`RETAINED_OBJECTS`].
    pub(crate) async fn retain(&mut self, root: Digest) {
        if self.retained.contains(&root) {
            return;
        }
        self.retained.push_back(root);
        while self.retained.len() > RETAINED_OBJECTS {
            let Some(old) = self.retained.pop_front() else {
                break;
            };
            match self.client.release(old).await {
                Ok(freed) => tracing::debug!(object = %old.fmt_short(), freed, "released"),
                Err(e) => tracing::debug!("releasing an old object: {e}"),
            }
        }
    }

    fn coordinator_hint(&self) -> Vec<Multiaddr> {
        vec![Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(self.config.coordinator))]
    }

    /// Puts proof of work of `bits` into the join message, finding it unless another worker
    /// of this node did; false when the join already carried such work (the refusal then has
    /// another reason) or no node may be asked for that much.
    async fn prove_work(&mut self, bits: u8) -> Result<bool, WorkerStop> {
        let coordinator = self.config.coordinator;
        let node = self.keys.peer_id();
        let meets = |nonce: Option<u64>| {
            nonce.is_some_and(|n| join_work::meets(&coordinator, &node, n, bits))
        };
        if meets(self.config.join.work) {
            return Ok(false);
        }
        let shared = self.shared.clone();
        let found = tokio::task::spawn_blocking(move || {
            // Held while searching, so that the node's other workers wait for this one.
            let mut cached = shared.join_work.lock().unwrap_or_else(|e| e.into_inner());
            match *cached {
                Some((had, nonce)) if had >= bits => Some(nonce),
                _ => {
                    shared.update(|s| s.state = "proving work".into());
                    tracing::info!(
                        bits,
                        "the project asks new nodes for a proof of work: finding it"
                    );
                    let nonce = join_work::solve(&coordinator, &node, bits)?;
                    *cached = Some((bits, nonce));
                    Some(nonce)
                }
            }
        })
        .await
        .ok()
        .flatten();
        self.config.join.work = found;
        Ok(meets(found))
    }

    async fn ask(&self, round: u64, message: Message) -> Result<Message, NodeError> {
        self.client
            .request(self.config.coordinator, round, message)
            .await
    }

    /// Asks for work and runs it until [`Shared::stop`] is set.
    pub async fn run(mut self) -> Result<(), WorkerStop> {
        let mut backoff = Duration::from_secs(1);
        while !self.shared.stop.load(Ordering::Relaxed) {
            if self.shared.paused.load(Ordering::Relaxed) {
                self.shared.update(|s| s.state = "paused".into());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if !self.shared.joined.load(Ordering::Relaxed) {
                self.shared.update(|s| s.state = "joining".into());
                match self.ask(0, Message::Join(self.config.join.clone())).await {
                    Ok(Message::JoinAck(ack)) if ack.accepted => {
                        tracing::info!(tier = ?ack.tier, round = ack.round, "joined: {}", ack.message);
                        self.shared.joined.store(true, Ordering::Relaxed);
                        self.shared
                            .update(|s| s.tier = Some(format!("{:?}", ack.tier)));
                        backoff = Duration::from_secs(1);
                    }
                    Ok(Message::JoinAck(ack))
                        if ack.work_bits > 0 && self.prove_work(ack.work_bits).await? => {}
                    Ok(Message::JoinAck(ack)) => return Err(WorkerStop::Refused(ack.message)),
                    Ok(other) => {
                        tracing::warn!("the coordinator answered a join with {:?}", other.kind());
                        self.wait(&mut backoff).await;
                    }
                    Err(NodeError::NetworkStopped) => return Err(WorkerStop::NetworkStopped),
                    Err(e) => {
                        self.unreachable(&e);
                        self.wait(&mut backoff).await;
                    }
                }
                continue;
            }
            self.shared.update(|s| s.state = "idle".into());
            match self
                .ask(0, Message::LeaseRequest(LeaseRequest { slots: 1 }))
                .await
            {
                Ok(Message::LeaseGrant(grant)) => {
                    backoff = Duration::from_secs(1);
                    self.run_lease(grant).await?;
                }
                Ok(Message::NoWork(none)) => {
                    backoff = Duration::from_secs(1);
                    if none.join_first {
                        self.shared.joined.store(false, Ordering::Relaxed);
                    }
                    tracing::debug!("no work: {}", none.reason);
                    let wait = Duration::from_millis(u64::from(none.retry_after_ms))
                        .clamp(Duration::from_millis(100), Duration::from_secs(60));
                    self.sleep_unless_stopped(wait).await;
                }
                Ok(other) => {
                    tracing::warn!(
                        "the coordinator answered a lease request with {:?}",
                        other.kind()
                    );
                    self.wait(&mut backoff).await;
                }
                Err(NodeError::NetworkStopped) => return Err(WorkerStop::NetworkStopped),
                Err(e) => {
                    self.unreachable(&e);
                    self.wait(&mut backoff).await;
                }
            }
        }
        self.shared.update(|s| s.state = "stopped".into());
        Ok(())
    }

    fn unreachable(&self, e: &NodeError) {
        tracing::info!("coordinator unreachable: {e}");
        self.shared.update(|s| {
            s.state = "unreachable".into();
            s.last_error = Some(format!("coordinator unreachable: {e}"));
        });
    }

    /// Sleeps `backoff` (doubling it up to 30 s), waking early on stop.
    async fn wait(&self, backoff: &mut Duration) {
        self.sleep_unless_stopped(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
    }

    async fn sleep_unless_stopped(&self, total: Duration) {
        let end = Instant::now() + total;
        while Instant::now() < end && self.shared.interrupted().is_none() {
            tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now())).await;
        }
    }

    async fn run_lease(&mut self, grant: LeaseGrant) -> Result<(), WorkerStop> {
        let LeaseGrant {
            lease, task, spec, ..
        } = grant.clone();
        let round = match &spec {
            TaskSpec::Train(t) => t.model_version,
            _ => 0,
        };
        tracing::info!(task = task.0, lease = lease.0, round, "lease granted");
        self.shared.update(|s| {
            s.task = Some(task.0);
            s.round = Some(round);
            s.progress = 0.0;
        });
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU32::new(0));
        let renewals = tokio::spawn(renew(
            self.client.clone(),
            self.config.coordinator,
            grant,
            progress.clone(),
            cancel.clone(),
            self.shared.clone(),
        ));
        let started = Instant::now();
        let outcome = match spec {
            TaskSpec::Train(train) => self
                .train(&train, task.0, progress.clone(), cancel.clone())
                .await
                .map(|done| done.map(|(o, t, s)| (TaskOutput::Train(Box::new(o)), t, s))),
            TaskSpec::Corpus(corpus) => self.corpus(&corpus, task.0, cancel.clone()).await,
            _ => Err(NodeError::Coordinator(
                "this node does not run this kind of task".into(),
            )),
        };
        renewals.abort();
        let compute_ms = started.elapsed().as_millis() as u64;
        self.shared.update(|s| {
            s.task = None;
            s.progress = 0.0;
        });
        let release = |reason: ReleaseReason| Message::LeaseRelease(LeaseRelease { lease, reason });
        match outcome {
            Ok(None) => {
                let reason = self
                    .shared
                    .interrupted()
                    .unwrap_or(ReleaseReason::Failed("lease lost".into()));
                tracing::info!(task = task.0, "handing the lease back: {reason:?}");
                let _ = self.ask(round, release(reason)).await;
                Ok(())
            }
            Ok(Some((output, tokens, secs))) => {
                self.shared.update(|s| {
                    s.state = "uploading".into();
                    s.tokens_per_sec = tokens as f64 / secs.max(1e-9);
                });
                let result = Message::TaskResult(TaskResult {
                    lease,
                    task,
                    output,
                    compute_ms,
                });
                let mut answer = self.ask(round, result.clone()).await;
                // A coordinator (or its swarm) too busy to take the result says so at once:
                // send it again rather than lose the work.
                for _ in 0..BUSY_RETRIES {
                    let busy = match &answer {
                        Ok(Message::ResultAck(ack)) => {
                            !ack.accepted && ack.reason.as_deref() == Some(RESULT_BUSY)
                        }
                        Ok(message) => network::is_busy(message),
                        _ => false,
                    };
                    if !busy {
                        break;
                    }
                    self.sleep_unless_stopped(Duration::from_secs(1)).await;
                    answer = self.ask(round, result.clone()).await;
                }
                match answer {
                    Ok(Message::ResultAck(ack)) => {
                        tracing::info!(task = task.0, accepted = ack.accepted, reason = ?ack.reason, "result acknowledged");
                        self.shared.update(|s| {
                            s.tokens += tokens;
                            s.compute_ms += compute_ms;
                            if ack.accepted {
                                s.accepted += 1;
                            } else {
                                s.rejected += 1;
                                s.last_error = ack.reason.clone();
                            }
                        });
                    }
                    Ok(other) => {
                        tracing::warn!("the coordinator answered a result with {:?}", other.kind())
                    }
                    Err(NodeError::NetworkStopped) => return Err(WorkerStop::NetworkStopped),
                    Err(e) => {
                        // The lease expires and the task goes elsewhere; the update stays
                        // provided in case the coordinator fetches it after all.
                        tracing::warn!(task = task.0, "result not acknowledged: {e}");
                        self.shared.update(|s| {
                            s.last_error = Some(format!("result not acknowledged: {e}"))
                        });
                    }
                }
                Ok(())
            }
            Err(NodeError::NetworkStopped) => Err(WorkerStop::NetworkStopped),
            Err(e) => {
                tracing::warn!(task = task.0, "task failed: {e}");
                self.shared
                    .update(|s| s.last_error = Some(format!("task {} failed: {e}", task.0)));
                let why = clip_text(&e.to_string(), canopy_protocol::messages::MAX_TEXT);
                let _ = self.ask(round, release(ReleaseReason::Failed(why))).await;
                Ok(())
            }
        }
    }

    /// Asks the coordinator for the manifest of `root` and checks that the coordinator
    /// signed it and that it is of `kind`.
    async fn manifest(&self, root: Digest, kind: ObjectKind) -> Result<SignedManifest, NodeError> {
        let answer = self
            .ask(0, Message::ManifestRequest(ManifestRequest { root }))
            .await?;
        let Message::ManifestResponse(resp) = answer else {
            return Err(NodeError::Coordinator(format!(
                "answered a manifest request with {:?}",
                answer.kind()
            )));
        };
        let signed = resp
            .manifest
            .ok_or_else(|| NodeError::Coordinator(format!("has no manifest for object {root}")))?;
        let manifest = signed.verify()?;
        if signed.signer().peer_id() != self.config.coordinator {
            return Err(NodeError::BadObject(format!(
                "object {root} is not signed by the coordinator"
            )));
        }
        if manifest.root != root || manifest.kind != kind {
            return Err(NodeError::BadObject(format!(
                "object {root}: got a {:?} manifest for {}",
                manifest.kind, manifest.root
            )));
        }
        Ok(signed)
    }

    async fn object(
        &self,
        root: Digest,
        kind: ObjectKind,
    ) -> Result<(SignedManifest, Vec<u8>), NodeError> {
        let signed = self.manifest(root, kind).await?;
        let fetched = self
            .client
            .fetch_from(signed.clone(), self.coordinator_hint())
            .await?;
        Ok((signed, fetched.data))
    }
}

/// `text` with control characters replaced by spaces, cut at a character boundary to at most
/// `max` bytes: what protocol text fields accept.
pub fn clip_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// How a node describes the compute `runtime` offers, with the memory it lets tasks use.
pub fn adapter_info(runtime: &Runtime, memory_limit: Option<u64>) -> AdapterInfo {
    let report = runtime.report();
    let kind = match runtime {
        Runtime::Cpu(_) => AdapterKind::Cpu,
        Runtime::Gpu(gpu) if gpu.is_software() => AdapterKind::Software,
        Runtime::Gpu(gpu) => match gpu.info().device_type {
            canopy_shaders::wgpu::DeviceType::IntegratedGpu => AdapterKind::IntegratedGpu,
            _ => AdapterKind::DiscreteGpu,
        },
    };
    AdapterInfo {
        name: clip_text(&report.name, canopy_protocol::messages::MAX_TEXT),
        backend: clip_text(&report.backend, canopy_protocol::messages::MAX_LABEL),
        kind,
        memory_bytes: memory_limit.unwrap_or(0),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_fits_the_protocol() {
        assert_eq!(clip_text("a\nb", 10), "a b");
        let long = "é".repeat(200);
        let clipped = clip_text(&long, 255);
        assert!(clipped.len() <= 255 && clipped.chars().all(|c| c == 'é'));
    }
}
