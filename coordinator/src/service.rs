//! The coordinator on the network: answers joins, lease requests, renewals, releases,
//! manifest requests and results; publishes each model version; closes rounds.
//!
//! A result is checked (lease, signature and signer, model version, replay), its update
//! fetched from the sender chunk by chunk and decoded (shape, finiteness), screened by the
//! loss it causes on held-out text, and, for a sample of volunteer tasks, re-run by the
//! datacenter tier and compared by cosine similarity. The verdict is committed to the state
//! database (result, ledger, reputation) before the node gets its acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use canopy_node::network::{self, Client, MODELS_TOPIC, NetworkConfig, NetworkEvent};
use canopy_protocol::messages::{ModelAnnouncement, ResultAck, Tier};
use canopy_protocol::{Digest, Message};
use libp2p::PeerId;
use tokio::sync::mpsc;

mod checks;
mod judging;
mod peer;

use judging::judge;
#[cfg(test)]
pub(crate) use peer::unknown_peer;
pub use peer::{Answered, Caller, answer_peer, datacenter_active, waiting_retry_ms};
pub(crate) use peer::{answer_lease_request, lease_answer, no_work};

use crate::project::{Project, ProjectError, RoundSummary, now_ms};
use crate::refusal::{NoWorkReason, Work};
use crate::scheduler::{self, ACTIVE_MS};
use crate::state::{ResultStatus, TaskKind, TaskStatus};

/// How often a peer asks again while a round closes, when few peers are about.
const CLOSING_RETRY_MS: u64 = 500;
/// Results being judged or waiting to be, at most; beyond it a result is answered "busy" at
/// once (the node keeps its lease and sends it again) instead of piling up in memory.
const MAX_JUDGING: usize = 256;
/// Results whose updates are fetched and evaluated at the same time, at most.
const MAX_JUDGING_AT_ONCE: usize = 4;
/// Ticks in a row whose storage errors are all transient before the coordinator gives up.
const MAX_TRANSIENT_TICKS: u32 = 120;

/// What the service reports as it runs.
#[derive(Debug, Clone)]
pub enum ServiceEvent {
    /// A round closed.
    RoundClosed(RoundSummary),
    /// A node joined.
    Joined {
        /// The node.
        peer: PeerId,
        /// Its tier.
        tier: Tier,
    },
    /// A result was judged.
    Result {
        /// The sender.
        peer: PeerId,
        /// The task.
        task: u64,
        /// Whether it was accepted.
        accepted: bool,
        /// Why not.
        reason: Option<String>,
    },
}

/// The running coordinator's network side.
pub struct Service {
    project: Arc<Project>,
    client: Client,
    events: mpsc::Receiver<NetworkEvent>,
    report: mpsc::Sender<ServiceEvent>,
    task: tokio::task::JoinHandle<()>,
    bytes_mark: (u64, u64),
    /// Admission to judging (see [`MAX_JUDGING`]).
    judging: Arc<tokio::sync::Semaphore>,
    /// The heavy part of judging (see [`MAX_JUDGING_AT_ONCE`]).
    judging_at_once: Arc<tokio::sync::Semaphore>,
    /// Whether a round is closing (in the background: requests are answered meanwhile).
    closing: bool,
    /// Peers heard from in the last minute, as of the last tick: how many may be waiting
    /// together (see [`waiting_retry_ms`]).
    active_peers: u64,
}

/// A round close running on a blocking thread.
type Closing = tokio::task::JoinHandle<Result<RoundSummary, ProjectError>>;

impl Service {
    /// Starts the swarm for `project` and publishes the current model version.
    pub async fn start(
        project: Arc<Project>,
        network: NetworkConfig,
        report: mpsc::Sender<ServiceEvent>,
    ) -> Result<Self, ProjectError> {
        let (client, events, task) =
            network::start(project.keys.clone(), project.store.clone(), network).await?;
        Self::with_network(project, client, events, task, report).await
    }

    /// [`Service::start`] on a swarm that is already running (the one the corpus build ran
    /// on, so that the nodes keep their connections and the address stays the same). The
    /// swarm's store must be the project's.
    pub async fn with_network(
        project: Arc<Project>,
        client: Client,
        events: mpsc::Receiver<NetworkEvent>,
        task: tokio::task::JoinHandle<()>,
        report: mpsc::Sender<ServiceEvent>,
    ) -> Result<Self, ProjectError> {
        let service = Self {
            project,
            client,
            events,
            report,
            task,
            bytes_mark: (0, 0),
            judging: Arc::new(tokio::sync::Semaphore::new(MAX_JUDGING)),
            judging_at_once: Arc::new(tokio::sync::Semaphore::new(MAX_JUDGING_AT_ONCE)),
            closing: false,
            active_peers: 0,
        };
        for root in service.project.shards.clone() {
            service.provide(&root).await?;
        }
        service.publish_model().await?;
        Ok(service)
    }

    /// The swarm client (listen addresses, status).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn provide(&self, root: &Digest) -> Result<(), ProjectError> {
        match self.project.object(root)? {
            Some((signed, bytes)) => Ok(self.client.provide(signed, bytes).await?),
            None => Err(ProjectError::Invalid(format!("object {root} is missing"))),
        }
    }

    async fn publish_model(&self) -> Result<(), ProjectError> {
        let current = self.project.current();
        self.provide(&current.model_root).await?;
        let manifest = self.project.state().read().manifest(&current.model_root)?;
        if let Some(manifest) = manifest {
            let announcement = Message::ModelAnnouncement(Box::new(ModelAnnouncement {
                round: current.round,
                manifest,
            }));
            // No subscriber yet is not an error: nodes also ask for the manifest.
            if let Err(e) = self
                .client
                .publish(MODELS_TOPIC, current.round, announcement)
                .await
            {
                tracing::debug!("announcing the model: {e}");
            }
        }
        Ok(())
    }

    /// Runs until `stop` resolves or every round has closed.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ProjectError> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (done_tx, mut done_rx) = mpsc::channel::<()>(64);
        // A round closes on a blocking thread while the loop goes on answering requests (it
        // used to wait, and requests piled up unanswered for the whole close).
        let mut closing: Option<Closing> = None;
        let mut transient_ticks = 0;
        while !self.project.finished() || closing.is_some() {
            tokio::select! {
                _ = &mut stop => break,
                event = self.events.recv() => match event {
                    Some(NetworkEvent::Request { peer, id, round, message, from }) => {
                        let network = from.as_ref().and_then(crate::admission::network_of);
                        self.on_request(peer, id, round, message, network, &done_tx).await;
                    }
                    Some(_) => {}
                    None => return Err(ProjectError::Invalid("the swarm stopped".into())),
                },
                // A result was judged: the round may be ready to close now.
                _ = done_rx.recv() => self.advance(&mut closing, &mut transient_ticks).await?,
                closed = async { closing.as_mut().expect("guarded").await }, if closing.is_some() => {
                    closing = None;
                    self.closing = false;
                    let summary = closed
                        .map_err(|e| ProjectError::Invalid(format!("closing the round: {e}")))?;
                    match summary {
                        Ok(summary) => self.round_closed(summary).await?,
                        Err(e) if e.is_transient() => {
                            tracing::warn!("closing the round failed; trying again: {e}");
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = tick.tick() => self.advance(&mut closing, &mut transient_ticks).await?,
            }
        }
        let _ = self.client.shutdown().await;
        let _ = self.task.await;
        Ok(())
    }

    /// One tick: see [`Service::on_tick`]. A busy database or a passing I/O error is retried
    /// on the next tick; only a lasting or a non-transient one stops the coordinator.
    async fn advance(
        &mut self,
        closing: &mut Option<Closing>,
        transient_ticks: &mut u32,
    ) -> Result<(), ProjectError> {
        match self.on_tick().await {
            Ok(started) => {
                *transient_ticks = 0;
                if let Some(started) = started {
                    self.closing = true;
                    *closing = Some(started);
                }
                Ok(())
            }
            Err(e) if e.is_transient() && *transient_ticks < MAX_TRANSIENT_TICKS => {
                *transient_ticks += 1;
                tracing::warn!(
                    attempt = *transient_ticks,
                    "a tick failed; trying again: {e}"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reports a closed round and publishes the new model version.
    async fn round_closed(&mut self, summary: RoundSummary) -> Result<(), ProjectError> {
        tracing::info!(
            round = summary.round,
            eval = summary.eval_loss,
            "round closed"
        );
        let _ = self.report.send(ServiceEvent::RoundClosed(summary)).await;
        self.publish_model().await
    }

    /// Expires leases, and starts closing the round when it is ready (returned: the close in
    /// progress). Never starts a second close while one runs.
    async fn on_tick(&mut self) -> Result<Option<Closing>, ProjectError> {
        let now = now_ms();
        let project = self.project.clone();
        let close = {
            let mut state = project.state();
            let expired = state.transaction(|tx| scheduler::expire(tx, now))?;
            project.metrics.lease_expiries.inc_by(expired.len() as u64);
            self.active_peers = state
                .read()
                .peers_seen_since(None, (now + 1).saturating_sub(ACTIVE_MS))?;
            for lease in expired {
                tracing::info!(lease = lease.id, task = lease.task, peer = %lease.peer, "lease expired; task reopened");
            }
            !self.closing && !project.finished() && self.round_ready(&state, now)?
        };
        let status = self.client.status().await.ok();
        if let Some(s) = &status {
            let m = &project.metrics;
            m.observe_bytes(s.bytes_served, s.bytes_fetched);
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            m.store_bytes.set(gauge(project.store.stats().bytes));
            m.provider_records.set(gauge(s.provider_records as u64));
            m.remote_provider_records
                .set(gauge(s.remote_provider_records as u64));
            m.pending_requests.set(gauge(s.pending_requests as u64));
        }
        if close {
            let (served, fetched) = status.map_or((0, 0), |s| (s.bytes_served, s.bytes_fetched));
            let (out, inn) = (
                served - self.bytes_mark.0.min(served),
                fetched - self.bytes_mark.1.min(fetched),
            );
            self.bytes_mark = (served, fetched);
            let round = project.current().round;
            project
                .state()
                .transaction(|tx| tx.count_round(round, 0, 0, inn, out))?;
            let p = project.clone();
            return Ok(Some(tokio::task::spawn_blocking(move || p.close_round())));
        }
        Ok(None)
    }

    /// Whether the round in progress should close now.
    fn round_ready(&self, state: &crate::state::State, now: u64) -> Result<bool, ProjectError> {
        let r = state.read();
        let current = self.project.current();
        let Some(round) = r.round(current.round)? else {
            return Ok(false);
        };
        let t = &self.project.config.training;
        // Outliers count as in: their tasks are done, and a round of nothing but outliers
        // closes (with no step) rather than waiting for ever.
        let accepted = r
            .results(Some(round.round), Some(ResultStatus::Accepted))?
            .len()
            + r.results(Some(round.round), Some(ResultStatus::Pending))?
                .len()
            + r.results(Some(round.round), Some(ResultStatus::Outlier))?
                .len();
        let deadline = round.opened_ms + t.round_deadline_secs * 1000;
        if now >= deadline && accepted >= 1 {
            return Ok(true);
        }
        // Open verification tasks hold the round only while a datacenter node can run them.
        let verifiers = datacenter_active(&r, now)?;
        let mut busy = false;
        for status in [TaskStatus::Open, TaskStatus::Leased] {
            busy |= r
                .tasks(Some(round.round), status)?
                .iter()
                .any(|task| task.kind == TaskKind::Train || verifiers);
        }
        Ok(!busy && accepted >= t.min_updates as usize)
    }

    async fn respond(&self, id: u64, round: u64, message: Message) {
        if let Err(e) = self.client.respond(id, round, message).await {
            tracing::debug!("answering a request: {e}");
        }
    }

    async fn on_request(
        &self,
        peer: PeerId,
        id: u64,
        round: u64,
        message: Message,
        network: Option<String>,
        done: &mpsc::Sender<()>,
    ) {
        let answer = match message {
            Message::TaskResult(result) => {
                // Bounded: a flood of results waits in a queue of fixed size, and beyond it
                // is told to send again, never stored without limit.
                let Ok(admitted) = self.judging.clone().try_acquire_owned() else {
                    let busy = ResultAck {
                        task: result.task,
                        accepted: false,
                        reason: Some(canopy_node::worker::RESULT_BUSY.into()),
                    };
                    self.respond(id, round, Message::ResultAck(busy)).await;
                    return;
                };
                let project = self.project.clone();
                let client = self.client.clone();
                let report = self.report.clone();
                let done = done.clone();
                let at_once = self.judging_at_once.clone();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    let Ok(_running) = at_once.acquire_owned().await else {
                        return;
                    };
                    let ack = judge(&project, &client, peer, result).await;
                    if let Err(e) = client
                        .respond(id, round, Message::ResultAck(ack.clone()))
                        .await
                    {
                        tracing::debug!("acknowledging a result: {e}");
                    }
                    let _ = report
                        .send(ServiceEvent::Result {
                            peer,
                            task: ack.task.0,
                            accepted: ack.accepted,
                            reason: ack.reason,
                        })
                        .await;
                    let _ = done.send(()).await;
                });
                return;
            }
            other => self.answer(peer, network.as_deref(), other).await,
        };
        match answer {
            Ok(message) => self.respond(id, round, message).await,
            Err(e) => {
                tracing::warn!(%peer, "handling a request: {e}");
                self.respond(id, round, no_work(1000, NoWorkReason::Internal))
                    .await;
            }
        }
    }

    async fn answer(
        &self,
        peer: PeerId,
        network: Option<&str>,
        message: Message,
    ) -> Result<Message, ProjectError> {
        let project = &self.project;
        let now = now_ms();
        let key = peer.to_string();
        let current = project.current();
        let mut state = project.state();
        let message = match answer_peer(
            &mut state,
            &project.config,
            &project.keys.public(),
            Caller { key: &key, network },
            current.round,
            now,
            message,
        )? {
            Answered::Reply(reply, joined) => {
                if let Some(tier) = joined {
                    let _ = self.report.try_send(ServiceEvent::Joined { peer, tier });
                }
                return Ok(reply);
            }
            Answered::Other(message) => message,
        };
        Ok(match message {
            Message::LeaseRequest(_) => {
                let first = if project.finished() {
                    Some((10_000, NoWorkReason::TrainingFinished))
                } else if self.closing {
                    let retry = waiting_retry_ms(CLOSING_RETRY_MS, self.active_peers);
                    Some((retry, NoWorkReason::RoundClosing))
                } else {
                    None
                };
                let idle = u64::from(project.config.scheduling.idle_retry_ms);
                peer::lease_answer(peer::answer_lease_request(
                    &mut state,
                    &key,
                    now,
                    Work::Training,
                    first,
                    waiting_retry_ms(idle, self.active_peers),
                    |tx, p, active| {
                        scheduler::grant(
                            tx,
                            &project.config.scheduling,
                            p,
                            current.round,
                            now,
                            active,
                        )
                    },
                )?)?
            }
            other => no_work(
                5_000,
                NoWorkReason::Unexpected(format!("{:?}", other.kind())),
            ),
        })
    }
}
