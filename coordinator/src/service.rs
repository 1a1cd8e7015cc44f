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
use canopy_node::objects;
use canopy_protocol::messages::{
    JoinAck, LeaseGrant, LeaseId, LeaseRenewed, ManifestResponse, ModelAnnouncement, NoWork,
    ResultAck, TaskOutput, TaskResult, TaskSpec, Tier,
};
use canopy_protocol::{Digest, Message, ObjectKind};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::aggregate;
use crate::judge::LossVerdict;
use crate::project::{Project, ProjectError, RoundSummary, decode_spec, now_ms};
use crate::scheduler::{self, ACTIVE_MS, DATACENTER, NoTask, VOLUNTEER};
use crate::state::{
    CORPUS, CORPUS_CHECK, LedgerClaim, OUTLIER, PeerRecord, ResultRecord, TRAIN, VERIFY,
};

/// How often a peer asks again while a round closes, when few peers are about.
const CLOSING_RETRY_MS: u64 = 500;
/// Requests a second the coordinator aims to get from peers that are only waiting, however
/// many there are (see [`waiting_retry_ms`]).
const WAITING_REQUESTS_PER_SEC: u64 = 100;
/// How stale a peer's recorded last contact may get before a request of its updates it.
const LAST_SEEN_STEP_MS: u64 = 10_000;
/// How long the coordinator waits for an update's chunks.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
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
        tier: String,
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
        let accepted = r.results(Some(round.round), Some("accepted"))?.len()
            + r.results(Some(round.round), Some("pending"))?.len()
            + r.results(Some(round.round), Some(OUTLIER))?.len();
        let deadline = round.opened_ms + t.round_deadline_secs * 1000;
        if now >= deadline && accepted >= 1 {
            return Ok(true);
        }
        // Open verification tasks hold the round only while a datacenter node can run them.
        let verifiers = datacenter_active(&r, now)?;
        let mut busy = false;
        for status in ["open", "leased"] {
            busy |= r
                .tasks(Some(round.round), status)?
                .iter()
                .any(|task| task.kind == TRAIN || verifiers);
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
                self.respond(
                    id,
                    round,
                    no_work(1000, "the coordinator hit an internal error", false),
                )
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
                    let _ = self.report.try_send(ServiceEvent::Joined {
                        peer,
                        tier: tier.into(),
                    });
                }
                return Ok(reply);
            }
            Answered::Other(message) => message,
        };
        let known = state.read().peer(&key)?;
        Ok(match message {
            Message::LeaseRequest(_) => {
                let Some(p) = known else {
                    return Ok(no_work(0, "join first", true));
                };
                if project.finished() {
                    return Ok(no_work(10_000, "training has finished", false));
                }
                if self.closing {
                    return Ok(no_work(
                        waiting_retry_ms(CLOSING_RETRY_MS, self.active_peers),
                        "the round is closing; the next opens shortly",
                        false,
                    ));
                }
                if state.read().paused()? {
                    return Ok(no_work(
                        5_000,
                        "the project is paused by its coordinator",
                        false,
                    ));
                }
                let active = datacenter_active(&state.read(), now)?;
                let granted = state.transaction(|tx| {
                    scheduler::grant(
                        tx,
                        &project.config.scheduling,
                        &p,
                        current.round,
                        now,
                        active,
                    )
                })?;
                match granted {
                    Ok(g) => Message::LeaseGrant(LeaseGrant {
                        lease: LeaseId(g.lease),
                        task: canopy_protocol::messages::TaskId(g.task.id),
                        spec: decode_spec(&g.task.spec)?,
                        expires_at_ms: g.expires_ms,
                    }),
                    // Sent back to join, where it hears why (failed verifications, or a
                    // revoked invitation) and stops instead of asking for work forever.
                    Err(NoTask::Banned) => no_work(5_000, "this node is banned", true),
                    Err(NoTask::Busy) => no_work(
                        2_000,
                        "this node holds all the leases it has slots for",
                        false,
                    ),
                    Err(NoTask::Nothing) => no_work(
                        waiting_retry_ms(
                            u64::from(project.config.scheduling.idle_retry_ms),
                            self.active_peers,
                        ),
                        "no task open now; waiting for the round to close",
                        false,
                    ),
                }
            }
            other => no_work(5_000, &format!("unexpected {:?}", other.kind()), false),
        })
    }
}

/// Who sent a request: its key, and the network its connection comes from (see
/// [`crate::admission::network_of`]), if known.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The peer id, as text.
    pub key: &'a str,
    /// Its network, if the connection shows it.
    pub network: Option<&'a str>,
}

/// What [`answer_peer`] did with a request.
pub enum Answered {
    /// Answered it, and for a join the tier granted.
    Reply(Message, Option<&'static str>),
    /// Not one of the requests it answers: handed back.
    Other(Message),
}

/// The answer to a node's [`CreditQuery`](canopy_protocol::messages::CreditQuery): its
/// ledger totals, `own`, where it has any.
fn credit_report(
    own: Option<crate::state::Contribution>,
    known: bool,
    round: u64,
) -> canopy_protocol::messages::CreditReport {
    let mut report = canopy_protocol::messages::CreditReport {
        known,
        round,
        ..Default::default()
    };
    if let Some(c) = own {
        report.known = true;
        report.results = c.results;
        report.accepted = c.accepted;
        report.rejected = c.rejected;
        report.verified = c.verified;
        report.tokens = c.tokens;
        report.compute_ms = c.compute_ms;
    }
    report
}

/// Answers the requests that the corpus build and training answer alike: joins, heartbeats,
/// credit queries, lease renewals and releases, manifest requests (notes the contact first). Any other
/// message comes back as [`Answered::Other`].
pub fn answer_peer(
    state: &mut crate::state::State,
    config: &crate::config::Config,
    issuer: &canopy_protocol::PublicKey,
    caller: Caller<'_>,
    round: u64,
    now: u64,
    message: Message,
) -> Result<Answered, crate::state::StateError> {
    let key = caller.key.to_string();
    let mut known = state.read().peer(&key)?;
    // Noting every contact would write (and sync) the database on every request; a peer's
    // last contact is kept to within LAST_SEEN_STEP_MS, far finer than what reads it (a
    // peer is active when heard from in the last minute).
    if let Some(p) = known.as_mut()
        && now.saturating_sub(p.last_seen_ms) >= LAST_SEEN_STEP_MS
    {
        state.transaction(|tx| tx.touch_peer(&key, now))?;
        p.last_seen_ms = now;
    }
    let mut joined = None;
    let reply = match message {
        Message::Join(join) => {
            let admission =
                crate::admission::admit(state, config, issuer, caller, round, now, join)?;
            joined = admission.joined;
            Message::JoinAck(admission.ack)
        }
        Message::CreditQuery(_) => {
            let own = state.read().contribution_of(&key)?;
            Message::CreditReport(credit_report(own, known.is_some(), round))
        }
        Message::Heartbeat(_) => match known {
            Some(p) => Message::JoinAck(JoinAck {
                accepted: !p.banned,
                tier: if p.tier == DATACENTER {
                    Tier::Datacenter
                } else {
                    Tier::Volunteer
                },
                round,
                message: String::new(),
                work_bits: 0,
            }),
            None => no_work(0, "join first", true),
        },
        Message::LeaseRenew(renew) => {
            let lease = state.read().lease(renew.lease.0)?;
            match lease {
                Some(l) if l.peer == key && l.status == "active" => {
                    let task = state.read().task(l.task)?;
                    let tokens = task.map_or(0, |t| t.tokens);
                    let p = known.unwrap_or_else(|| unknown_peer(&key));
                    let expires = now + scheduler::lease_ms(&config.scheduling, &p, tokens);
                    state.transaction(|tx| {
                        tx.extend_lease(l.id, expires, renew.progress_permille)
                    })?;
                    Message::LeaseRenewed(LeaseRenewed {
                        lease: renew.lease,
                        expires_at_ms: expires,
                    })
                }
                _ => no_work(0, "this lease has expired or was reassigned", false),
            }
        }
        Message::LeaseRelease(release) => {
            let lease = state.read().lease(release.lease.0)?;
            if let Some(l) = lease.filter(|l| l.peer == key && l.status == "active") {
                tracing::info!(lease = l.id, task = l.task, peer = %key, reason = ?release.reason, "lease handed back");
                state.transaction(|tx| {
                    tx.set_lease_status(l.id, "released")?;
                    scheduler::reopen(tx, l.task)
                })?;
            }
            no_work(0, "lease released", false)
        }
        Message::ManifestRequest(req) => Message::ManifestResponse(Box::new(ManifestResponse {
            root: req.root,
            manifest: state.read().manifest(&req.root)?,
        })),
        other => return Ok(Answered::Other(other)),
    };
    Ok(Answered::Reply(reply, joined))
}

/// The record of a peer seen for the first time: a volunteer with no reputation yet.
pub(crate) fn unknown_peer(key: &str) -> PeerRecord {
    PeerRecord {
        peer: key.into(),
        tier: VOLUNTEER.into(),
        name: None,
        org: None,
        country: None,
        reputation: 0,
        banned: false,
        tokens_per_sec: None,
        slots: 1,
        joined_ms: 0,
        last_seen_ms: 0,
    }
}

/// How long a peer that is only waiting (for a task to open, for the round to close) is asked
/// to wait before it asks again: `base_ms`, stretched when `active` peers are about so that
/// together they send about [`WAITING_REQUESTS_PER_SEC`] such requests a second, and jittered
/// by ±25 % so that peers turned away together do not come back together. At most a minute.
pub fn waiting_retry_ms(base_ms: u64, active: u64) -> u32 {
    use rand::{Rng, SeedableRng};
    // Jitter needs no secrecy: a generator seeded from a counter and the clock.
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw ^ now_ms().rotate_left(32));
    let spread = active.saturating_mul(1000) / WAITING_REQUESTS_PER_SEC;
    let ms = base_ms
        .max(spread)
        .saturating_mul(rng.random_range(75..=125))
        / 100;
    ms.min(60_000) as u32
}

/// A "no work now" answer: ask again after `retry_after_ms`, or join first.
pub(crate) fn no_work(retry_after_ms: u32, reason: &str, join_first: bool) -> Message {
    Message::NoWork(NoWork {
        retry_after_ms,
        reason: reason.into(),
        join_first,
    })
}

/// Whether a datacenter node that is not banned was heard from in the last minute (one
/// indexed count, however many peers the project has).
pub fn datacenter_active(
    r: &crate::state::Reader<'_>,
    now: u64,
) -> Result<bool, crate::state::StateError> {
    Ok(r.peers_seen_since(Some(DATACENTER), (now + 1).saturating_sub(ACTIVE_MS))? > 0)
}

/// A refusal, with the reputation counter it feeds.
struct Refusal {
    reason: String,
    count: fn(&mut aggregate::RejectionStats),
    penalise: bool,
    /// The loss judge's verdict, for a refusal on the update's effect on held-out loss.
    judged: Option<LossVerdict>,
}

/// An accepted update's change of held-out loss and the judge's verdict on it.
#[derive(Debug, Clone, Copy)]
struct Judged {
    change: f64,
    verdict: LossVerdict,
}

fn refuse(
    reason: impl Into<String>,
    count: fn(&mut aggregate::RejectionStats),
    penalise: bool,
) -> Refusal {
    Refusal {
        reason: reason.into(),
        count,
        penalise,
        judged: None,
    }
}

/// Judges a result and commits the verdict; the returned ack is sent only after that.
async fn judge(
    project: &Arc<Project>,
    client: &Client,
    peer: PeerId,
    result: TaskResult,
) -> ResultAck {
    let task = result.task;
    // The end of the wall time that bounds the compute time the ledger records.
    let arrived = now_ms();
    let verdict = check_result(project, client, peer, &result).await;
    let key = peer.to_string();
    let now = now_ms();
    let rep = &project.config.reputation;
    let ack = |accepted: bool, reason: Option<String>| ResultAck {
        task,
        accepted,
        reason,
    };
    match verdict {
        Ok(Checked::Internal(e)) => {
            tracing::warn!(%peer, task = task.0, "could not judge a result: {e}");
            project.metrics.rejected("coordinator_error");
            ack(
                false,
                Some("the coordinator could not judge this result; it will be re-run".into()),
            )
        }
        Ok(Checked::Accepted(record, verify, judged)) => {
            let outlier = record.status == OUTLIER;
            let kind = if verify.is_some() { VERIFY } else { TRAIN };
            let update_root = record.update_root;
            let committed = project.state().transaction(|tx| {
                let mut record = (*record).clone();
                let mut verified_original = None;
                if let Some(compared) = &verify {
                    let (original, cosine) = &**compared;
                    // A verification run: judge the original, keep this one out of aggregation
                    // (its update may be the original's, byte for byte: the ledger keeps its
                    // hash, the results table does not).
                    record.status = "verifier".into();
                    record.update_root = None;
                    let verdict = RerunVerdict::of(*cosine, project.config.verification.min_cosine);
                    if let Some(orig) = original
                        && verdict == RerunVerdict::Unverifiable
                    {
                        tracing::warn!(
                            task = orig.task,
                            "the original update of a re-run could not be loaded; left unverified"
                        );
                        tx.set_ledger_verified(orig.task, &orig.peer, "unverifiable", true)?;
                    } else if let Some(orig) = original {
                        let ok = verdict == RerunVerdict::Agrees;
                        let (status, verdict) = if ok {
                            ("accepted", "verified")
                        } else {
                            ("rejected", "failed")
                        };
                        tx.set_result_status(
                            orig.lease,
                            status,
                            (!ok).then_some("failed verification by re-run"),
                        )?;
                        tx.set_ledger_verified(orig.task, &orig.peer, verdict, ok)?;
                        let mut quality = tx.peer_quality(&orig.peer)?;
                        quality.observe_rerun(ok);
                        tx.set_peer_quality(&orig.peer, &quality)?;
                        let delta = if ok {
                            rep.accepted
                        } else {
                            rep.failed_verification
                        };
                        tx.adjust_reputation(&orig.peer, delta, rep.ban_below)?;
                        verified_original = Some((orig.peer.clone(), ok));
                    }
                }
                if let TaskOutput::Train(output) = &result.output {
                    tx.put_manifest(&output.update, now)?;
                }
                // Volunteer work is sampled for a datacenter re-run while one is active to
                // run it; a sampled update waits for its verdict (`pending`) before any round
                // aggregates it.
                let rerun = verify.is_none()
                    && !outlier
                    && tx.peer(&key)?.is_none_or(|p| p.tier != DATACENTER)
                    && project.rerun_sampled(record.task)
                    && datacenter_active(&tx.reader(), now)?;
                if rerun {
                    record.status = "pending".into();
                }
                tx.insert_result(&record)?;
                let mut quality = tx.peer_quality(&key)?;
                let pattern = quality.observe(&judged.verdict);
                tx.set_peer_quality(&key, &quality)?;
                // An outlier costs nothing by itself (nor earns anything); a repeated pattern
                // of them does.
                let delta = match (outlier, pattern) {
                    (false, _) => rep.accepted,
                    (true, false) => 0,
                    (true, true) => rep.failed_verification,
                };
                if pattern {
                    tracing::info!(%peer, "outliers again and again: penalised");
                }
                if delta != 0 {
                    tx.adjust_reputation(&key, delta, rep.ban_below)?;
                }
                // The ledger takes the task's tokens and bounds the compute time claimed.
                tx.ledger_entry(
                    &LedgerClaim {
                        peer: &key,
                        round: record.round,
                        task: record.task,
                        lease: record.lease,
                        kind,
                        compute_ms: result.compute_ms,
                        accepted: !outlier,
                        verified: if verify.is_some() {
                            "verifier"
                        } else {
                            "unchecked"
                        },
                        result_hash: update_root.as_ref(),
                        reason: record.reason.as_deref(),
                        arrived_ms: arrived,
                    },
                    now,
                )?;
                tx.set_lease_status(record.lease, "done")?;
                tx.set_task_status(record.task, "done")?;
                // The throughput estimate (which sizes this peer's leases) takes the compute
                // time claimed only up to the lease's wall time, as the coordinator saw it: a
                // node cannot claim to be slower than it is to hold its tasks longer.
                let ran_ms = tx
                    .lease(record.lease)?
                    .map_or(0, |l| arrived.saturating_sub(l.granted_ms));
                tx.record_throughput(
                    &key,
                    measured_throughput(record.tokens, result.compute_ms, ran_ms),
                )?;
                if rerun && let Some(t) = tx.task(record.task)? {
                    tx.insert_task(t.round, VERIFY, &t.spec, Some(t.id), t.tokens)?;
                }
                Ok(verified_original)
            });
            match committed {
                Ok(_) if outlier => {
                    let reason = record.reason.clone();
                    tracing::info!(%peer, task = task.0, "result left out: {reason:?}");
                    project.count_rejection(|s| s.outliers += 1);
                    project.metrics.rejected("outlier");
                    if let Some(root) = record.update_root {
                        let _ = client.release(root).await;
                    }
                    ack(false, reason)
                }
                Ok(verified) => {
                    project.metrics.results_accepted.inc();
                    if verify.is_none() {
                        project.record_loss_change(judged.change);
                    }
                    if let Some((orig, ok)) = verified {
                        tracing::info!(original = %orig, passed = ok, "verification re-run compared");
                        if !ok {
                            project.count_rejection(|s| s.failed_verification += 1);
                            project.metrics.verification_failures.inc();
                        }
                    }
                    // A verifier's update has served its purpose once compared (unless it
                    // is the original's, byte for byte, which aggregation still needs).
                    let original_root = verify
                        .as_ref()
                        .and_then(|c| c.0.as_ref())
                        .and_then(|o| o.update_root);
                    if let Some(root) = record.update_root
                        && verify.is_some()
                        && original_root != Some(root)
                    {
                        let _ = client.release(root).await;
                    }
                    ack(true, None)
                }
                Err(e) => {
                    if let Some(root) = record.update_root {
                        let _ = client.release(root).await;
                    }
                    tracing::warn!("committing a result: {e}");
                    project.metrics.rejected("coordinator_error");
                    ack(
                        false,
                        Some("the coordinator could not record this result".into()),
                    )
                }
            }
        }
        Err(refusal) => {
            project.count_rejection(refusal.count);
            project
                .metrics
                .rejected(crate::dashboard::metrics::rejection_reason(refusal.count));
            tracing::info!(%peer, task = task.0, "result refused: {}", refusal.reason);
            let lease = result.lease.0;
            let committed = project.state().transaction(|tx| {
                let l = tx.lease(lease)?;
                let owned = l.as_ref().is_some_and(|l| l.peer == key);
                let round = match l.as_ref().and_then(|l| tx.task(l.task).ok().flatten()) {
                    Some(t) => t.round,
                    None => project.current().round,
                };
                // No entry for a sender that never joined; no tokens or compute time for a
                // refused result.
                tx.ledger_entry(
                    &LedgerClaim {
                        peer: &key,
                        round,
                        task: task.0,
                        lease,
                        kind: TRAIN,
                        compute_ms: result.compute_ms,
                        accepted: false,
                        verified: "unchecked",
                        result_hash: None,
                        reason: Some(&refusal.reason),
                        arrived_ms: arrived,
                    },
                    now,
                )?;
                if owned
                    && let Some(l) = l
                    && l.status == "active"
                {
                    tx.set_lease_status(l.id, "done")?;
                    crate::scheduler::reopen(tx, l.task)?;
                }
                if tx.peer(&key)?.is_some() {
                    // A gross update also counts as a strike and weighs on the peer's score.
                    let mut pattern = false;
                    if let Some(verdict) = &refusal.judged {
                        let mut quality = tx.peer_quality(&key)?;
                        pattern = quality.observe(verdict);
                        tx.set_peer_quality(&key, &quality)?;
                    }
                    // A gross effect on held-out loss is evidence of tampering, as a failed
                    // re-run is; other penalised refusals cost a rejection.
                    let mut delta = 0;
                    if refusal.penalise {
                        delta += match refusal.judged {
                            Some(LossVerdict::Gross { .. }) => rep.failed_verification,
                            _ => rep.rejected,
                        };
                    }
                    if pattern {
                        tracing::info!(%peer, "outliers again and again: penalised");
                        delta += rep.failed_verification;
                    }
                    if delta != 0 {
                        let (score, banned) = tx.adjust_reputation(&key, delta, rep.ban_below)?;
                        if banned {
                            tracing::warn!(%peer, score, "peer banned");
                        }
                    }
                }
                Ok(())
            });
            if let Err(e) = committed {
                tracing::warn!("recording a refusal: {e}");
            }
            ack(false, Some(refusal.reason))
        }
    }
}

/// Tokens a second from a task's `tokens`, the compute time a node claimed and the wall time
/// its lease ran: the claim counts only up to the wall time (and at least a millisecond).
fn measured_throughput(tokens: u64, claimed_ms: u64, ran_ms: u64) -> f64 {
    let ms = claimed_ms.min(ran_ms).max(1);
    tokens as f64 / (ms as f64 / 1000.0)
}

/// What a re-run says of the original result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RerunVerdict {
    /// The updates agree: the original is verified.
    Agrees,
    /// They disagree: the original fails verification.
    Disagrees,
    /// The original could not be compared: it is neither verified nor failed, and its sender
    /// gains no reputation from it.
    Unverifiable,
}

impl RerunVerdict {
    /// The verdict for a cosine similarity (`None`: not compared) against `min_cosine`.
    fn of(cosine: Option<f64>, min_cosine: f64) -> Self {
        match cosine {
            Some(c) if c >= min_cosine => Self::Agrees,
            Some(_) => Self::Disagrees,
            None => Self::Unverifiable,
        }
    }
}

enum Checked {
    /// The result record to commit, and for a verification run the original's result (if
    /// still on record) and the cosine similarity with it (`None` when the original's update
    /// could not be loaded to compare).
    Accepted(
        Box<ResultRecord>,
        Option<Box<(Option<ResultRecord>, Option<f64>)>>,
        Judged,
    ),
    /// The coordinator failed, not the node.
    Internal(String),
}

async fn check_result(
    project: &Arc<Project>,
    client: &Client,
    peer: PeerId,
    result: &TaskResult,
) -> Result<Checked, Refusal> {
    let key = peer.to_string();
    let (lease, task, sender) = {
        let state = project.state();
        let r = state.read();
        let internal = |e: crate::state::StateError| refuse(e.to_string(), |_| {}, false);
        (
            r.lease(result.lease.0).map_err(internal)?,
            r.task(result.task.0).map_err(internal)?,
            r.peer(&key).map_err(internal)?,
        )
    };
    let Some(sender) = sender else {
        return Err(refuse("unknown node: join first", |_| {}, false));
    };
    if sender.banned {
        return Err(refuse(
            "this node is banned",
            |s| s.banned_sender += 1,
            false,
        ));
    }
    let (Some(lease), Some(task)) = (lease, task) else {
        return Err(refuse("no such lease or task", |s| s.replay += 1, true));
    };
    if lease.peer != key || lease.task != task.id {
        return Err(refuse(
            "this lease belongs to another node or task",
            |s| s.replay += 1,
            true,
        ));
    }
    if matches!(task.kind.as_str(), CORPUS | CORPUS_CHECK) {
        // A late corpus result (its lease expired and another peer's run was used): not an
        // offence, but the build is over.
        return Err(refuse(
            "the corpus build has finished",
            |s| s.stale_dropped += 1,
            false,
        ));
    }
    if !matches!(lease.status.as_str(), "active" | "expired") {
        return Err(refuse(
            "this lease's result is already in",
            |s| s.replay += 1,
            true,
        ));
    }
    if task.status == "done" {
        // This node's lease ran out and another node finished the task first: late, not
        // dishonest, so it costs no reputation.
        return Err(refuse(
            "another node finished this task after the lease expired",
            |s| s.stale_dropped += 1,
            false,
        ));
    }
    let TaskOutput::Train(output) = &result.output else {
        return Err(refuse(
            "a corpus result for a training task",
            |s| s.wrong_shape += 1,
            true,
        ));
    };
    // An honest node reports exactly the tokens its task asked for; a claim of more is a
    // lie about the work, evidence like a bad signature (the ledger would credit the task's
    // tokens only, whatever the claim).
    if output.tokens > task.tokens {
        return Err(refuse(
            format!(
                "the result claims {} tokens of work for a task of {}: a false claim",
                output.tokens, task.tokens
            ),
            |s| s.failed_verification += 1,
            true,
        ));
    }
    let spec = match decode_spec(&task.spec) {
        Ok(TaskSpec::Train(spec)) => spec,
        _ => {
            return Ok(Checked::Internal(
                "a stored task spec does not decode".into(),
            ));
        }
    };
    // Signature and signer: the update must be signed by the node that ran the lease.
    let signed = &output.update;
    let manifest = match signed.verify() {
        Ok(m) => m,
        Err(e) => {
            return Err(refuse(
                format!("update signature: {e}"),
                |s| s.bad_signature += 1,
                true,
            ));
        }
    };
    if signed.signer().peer_id() != peer {
        return Err(refuse(
            "the update is signed by another key",
            |s| s.bad_signature += 1,
            true,
        ));
    }
    if manifest.kind != ObjectKind::Update {
        return Err(refuse(
            "the result is not an update object",
            |s| s.wrong_shape += 1,
            true,
        ));
    }
    let named_round = manifest
        .metadata
        .get("round")
        .and_then(|r| r.parse::<u64>().ok());
    let named_task = manifest
        .metadata
        .get("task")
        .and_then(|r| r.parse::<u64>().ok());
    if named_round != Some(spec.model_version) {
        return Err(refuse(
            "the update names another model version",
            |s| s.wrong_version += 1,
            true,
        ));
    }
    if named_task != Some(task.id) {
        return Err(refuse(
            "the update names another task",
            |s| s.replay += 1,
            true,
        ));
    }
    let current = project.current().round;
    if spec.model_version < current
        && project.config.training.late_updates == crate::config::LateUpdates::Drop
    {
        return Err(refuse(
            "the round of this task has closed",
            |s| s.stale_dropped += 1,
            false,
        ));
    }
    // The coordinator keeps the current and previous model versions only (see `retention`):
    // an update of an older one cannot be judged and is too stale to help anyway.
    if spec.model_version.saturating_add(1) < current {
        return Err(refuse(
            "the model version of this task is more than a round old",
            |s| s.stale_dropped += 1,
            false,
        ));
    }
    // A verification re-run may reproduce the original bit for bit: that is not a replay.
    match project.state().read().update_seen(&manifest.root) {
        Ok(true) if task.kind == VERIFY => {}
        Ok(true) => {
            return Err(refuse(
                "this update was already submitted",
                |s| s.replay += 1,
                true,
            ));
        }
        Ok(false) => {}
        Err(e) => return Ok(Checked::Internal(e.to_string())),
    }
    // Sizes before anything is fetched or allocated: no update is larger than the model's.
    let len = project.model.num_params();
    if manifest.total_len > objects::max_update_len(len) {
        return Err(refuse(
            format!(
                "the update is {} bytes, more than any update of this model",
                manifest.total_len
            ),
            |s| s.wrong_shape += 1,
            true,
        ));
    }
    // Fetch the update from the sender (and anyone else providing it), chunk by chunk.
    let hint = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
    let fetched =
        match tokio::time::timeout(FETCH_TIMEOUT, client.fetch_from(signed.clone(), vec![hint]))
            .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(refuse(format!("fetching the update: {e}"), |_| {}, false)),
            Err(_) => return Err(refuse("fetching the update timed out", |_| {}, false)),
        };
    // From here the update is in the store: an update refused on its content leaves it again.
    let root = manifest.root;
    let checked = check_fetched(
        project,
        &sender,
        &lease,
        &task,
        &spec,
        output,
        root,
        &fetched.data,
    )
    .await;
    if !matches!(checked, Ok(Checked::Accepted(..))) {
        let _ = client.release(root).await;
    }
    checked
}

/// The checks of a fetched update: shape, finiteness, its effect on held-out loss, and for a
/// verification run the comparison with the original.
#[allow(clippy::too_many_arguments)]
async fn check_fetched(
    project: &Arc<Project>,
    sender: &PeerRecord,
    lease: &crate::state::LeaseRecord,
    task: &crate::state::TaskRecord,
    spec: &canopy_protocol::messages::TrainSpec,
    output: &canopy_protocol::messages::TrainOutput,
    root: Digest,
    data: &[u8],
) -> Result<Checked, Refusal> {
    let len = project.model.num_params();
    let values = match objects::update_values(data, len) {
        Ok(v) => v,
        Err(e) => return Err(refuse(format!("{e}"), |s| s.wrong_shape += 1, true)),
    };
    let norm = match aggregate::check_update(&values, len) {
        Ok(n) => n,
        Err(aggregate::Rejection::NonFinite { index }) => {
            return Err(refuse(
                format!("non-finite value at {index}"),
                |s| s.non_finite += 1,
                true,
            ));
        }
        Err(e) => return Err(refuse(e.to_string(), |s| s.wrong_shape += 1, true)),
    };
    // The cheap signal: the loss the update alone causes on held-out text.
    let values = Arc::new(values);
    let v = values.clone();
    let p = project.clone();
    let version = spec.model_version;
    let losses = tokio::task::spawn_blocking(move || {
        p.update_loss_change(version, &v).map_err(|e| e.to_string())
    })
    .await;
    let (before, after) = match losses {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Ok(Checked::Internal(e)),
        Err(e) => return Ok(Checked::Internal(e.to_string())),
    };
    // Judged against the spread of recent accepted updates, not a fixed bound: one noisy
    // update is left out at no cost, a repeated pattern or a gross one is evidence.
    let increase = f64::from(after) - f64::from(before);
    let verdict = project.judge_loss_change(increase);
    let mut outlier = None;
    match verdict {
        LossVerdict::Fine { .. } => {}
        // Recorded, left out of aggregation, and the task done: re-running the same task
        // elsewhere would only strike every node that ran it.
        LossVerdict::Outlier { standing } => {
            outlier = Some(format!(
                "the update raises the held-out loss by {increase:.3} nats, {standing:.1} \
                 spreads above the typical update: left out of this round"
            ));
        }
        LossVerdict::Gross { .. } => {
            return Err(Refusal {
                judged: Some(verdict),
                ..refuse(
                    format!(
                        "the update raises the held-out loss by {increase:.3} nats, \
                         far beyond the spread of honest updates"
                    ),
                    |s| s.failed_verification += 1,
                    true,
                )
            });
        }
    }
    let judged = Judged {
        change: increase,
        verdict,
    };
    let record = ResultRecord {
        lease: lease.id,
        task: task.id,
        peer: sender.peer.clone(),
        round: spec.model_version,
        update_root: Some(root),
        norm: Some(norm),
        train_loss: Some(f64::from(output.train_loss)),
        tokens: task.tokens,
        status: if outlier.is_some() {
            OUTLIER
        } else {
            "accepted"
        }
        .into(),
        weight: if outlier.is_some() { 0.0 } else { 1.0 },
        reason: outlier,
        received_ms: now_ms(),
        aggregated_in: None,
        loss_change: Some(increase),
    };
    // A verification run: compare with the original's update.
    if task.kind == VERIFY {
        if sender.tier != DATACENTER {
            return Err(refuse(
                "verification tasks are for the datacenter tier",
                |_| {},
                true,
            ));
        }
        let original = task
            .verifies
            .and_then(|t| project.state().read().result_of_task(t).ok().flatten());
        // An original that cannot be loaded is not compared: the check did not happen, and it
        // must not count as passed (it did, as a cosine of 1, before).
        let cosine = match original.as_ref().and_then(|o| o.update_root) {
            Some(original_root) => match project.object(&original_root) {
                Ok(Some((_, bytes))) => Some(match objects::update_values(&bytes, len) {
                    Ok(orig) => aggregate::cosine(&orig, &values).unwrap_or(-1.0),
                    Err(_) => -1.0,
                }),
                _ => None,
            },
            None => None,
        };
        return Ok(Checked::Accepted(
            Box::new(record),
            Some(Box::new((original, cosine))),
            judged,
        ));
    }
    Ok(Checked::Accepted(Box::new(record), None, judged))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, "verification fails open": an original whose update could not be loaded was
    /// compared as a cosine of 1 and passed. Not compared now means not verified.
    #[test]
    fn a_rerun_that_cannot_compare_verifies_nothing() {
        assert_eq!(RerunVerdict::of(None, 0.8), RerunVerdict::Unverifiable);
        assert_eq!(RerunVerdict::of(Some(0.9), 0.8), RerunVerdict::Agrees);
        assert_eq!(RerunVerdict::of(Some(0.8), 0.8), RerunVerdict::Agrees);
        assert_eq!(RerunVerdict::of(Some(0.5), 0.8), RerunVerdict::Disagrees);
        assert_eq!(RerunVerdict::of(Some(-1.0), -1.0), RerunVerdict::Agrees);
    }

    /// Issue 19, "nothing a peer says about itself is trusted": the throughput that sizes a
    /// peer's leases came from the compute time it claimed, so a node claiming to be slow got
    /// long leases to sit on. The claim now counts only up to the lease's wall time.
    #[test]
    fn a_claimed_compute_time_counts_only_up_to_the_leases_wall_time() {
        // Honest: 1,000 tokens in 2 s of a lease that ran 2.5 s.
        assert_eq!(measured_throughput(1000, 2000, 2500), 500.0);
        // Claims an hour for a lease that ran 2 s.
        assert_eq!(measured_throughput(1000, 3_600_000, 2000), 500.0);
        // Nothing claimed, nothing measured: bounded, not infinite.
        assert_eq!(measured_throughput(1000, 0, 0), 1_000_000.0);
    }

    /// A thousand waiting peers polling every second would swamp the coordinator: the retry
    /// interval stretches with the peers about, and stays jittered and bounded.
    #[test]
    fn waiting_peers_are_spread_out_as_their_number_grows() {
        for _ in 0..200 {
            let few = u64::from(waiting_retry_ms(1000, 4));
            assert!((750..=1250).contains(&few), "{few}");
            let many = u64::from(waiting_retry_ms(1000, 1000));
            let spread = 1000 * 1000 / WAITING_REQUESTS_PER_SEC;
            assert!((spread * 3 / 4..=spread * 5 / 4).contains(&many), "{many}");
            assert!(waiting_retry_ms(1000, u64::MAX) <= 60_000);
        }
        let draws: std::collections::BTreeSet<u32> =
            (0..50).map(|_| waiting_retry_ms(1000, 0)).collect();
        assert!(draws.len() > 10, "not jittered: {draws:?}");
    }
}
