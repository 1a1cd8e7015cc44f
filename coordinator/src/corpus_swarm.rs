//! The corpus build on the swarm: what `canopy-coordinator run` does first when `canopy.toml`
//! has a `[corpus]` section.
//!
//! 1. **Plan** ([`SwarmBuild::open`]): the same plan as `canopy-coordinator corpus build`. Each
//!    chunk becomes an [`ObjectKind::CorpusChunk`] object signed by the coordinator, and each
//!    distinct chunk two corpus tasks ([`CORPUS`]) in the state database, all in one
//!    transaction with a `corpus_builds` row. The plan is deterministic, so a restarted
//!    coordinator plans again, checks that the layout is the one it started with, and carries
//!    on: chunks already agreed are not run again.
//! 2. **Compute** ([`SwarmBuild::run`]): volunteers lease the tasks; a peer never runs the same
//!    chunk twice, so the two runs of a chunk come from two distinct peers. For each result
//!    the coordinator asks the sender for the manifest of the root it named (signed by the
//!    sender, of kind `CorpusResult`), fetches the bytes, and checks that they decode and
//!    answer the chunk ([`compute::accept_result`]). The verdict ([`verdict::verdict`]) is
//!    committed before the result is acknowledged: two runs that name the same root decide the
//!    chunk (both credited, ledger kind `corpus`, `verified`); a disagreement opens a further
//!    run ([`CORPUS_CHECK`], the datacenter tier first while one is active, any other peer
//!    otherwise), and the runs that disagree with the majority get `failed_verification`
//!    reputation and ledger `failed`. `corpus_builds.chunks_done` follows the agreements (what
//!    `/api/corpus` shows).
//! 3. **Decide and write** ([`SwarmBuild::finish`]): with every chunk agreed, the agreed
//!    results go through [`decide::decide`] and [`output::write_outputs`]: the outputs are
//!    byte-identical to a local build of the same sources. The data card goes into
//!    `corpus_builds`, and training then runs on `out/kept.jsonl`.

pub mod verdict;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_node::network::{Client, NetworkEvent};
use canopy_node::store::ChunkStore;
use canopy_protocol::chunk::DEFAULT_CHUNK_SIZE;
use canopy_protocol::corpus::CorpusResult;
use canopy_protocol::messages::{
    CorpusOutput, CorpusSpec, LeaseGrant, LeaseId, ManifestRequest, ResultAck, TaskId, TaskOutput,
    TaskResult, TaskSpec,
};
use canopy_protocol::{Digest, Keypair, Manifest, Message, ObjectKind, SignedManifest};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Config, CorpusSection};
use crate::corpus::build::load_config;
use crate::corpus::plan::Plan;
use crate::corpus::{CorpusBuildError, compute, decide, output, plan};
use crate::project::{DB_FILE, decode_spec, encode_spec, now_ms};
use crate::sampling::Sampler;
use crate::scheduler::{self, DATACENTER, NoTask};
use crate::service::{Answered, Caller, answer_peer, datacenter_active};
use crate::state::{
    CORPUS, CORPUS_CHECK, CORPUS_ROUND, CorpusRun, LedgerClaim, PeerRecord, State, StateError,
    TaskRecord, Tx,
};
use verdict::Verdict;

/// A request from a node, as the swarm delivered it.
struct Inbound {
    peer: PeerId,
    id: u64,
    round: u64,
    message: Message,
    network: Option<String>,
}

/// How long the coordinator waits for a sender's manifest.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the coordinator waits for a result's chunks.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// `meta` keys.
const META_BUILD: &str = "corpus_build";
const META_LAYOUT: &str = "corpus_layout";
const META_FINISHED: &str = "corpus_finished";

/// What can go wrong running the corpus build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusSwarmError {
    /// The pipeline failed (sources, settings, outputs).
    #[error(transparent)]
    Corpus(#[from] CorpusBuildError),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store, an object or the swarm failed.
    #[error(transparent)]
    Node(#[from] canopy_node::NodeError),
    /// The build cannot go on as configured.
    #[error("{0}")]
    Invalid(String),
    /// The run's sampling secret could not be had.
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
}

type Result<T, E = CorpusSwarmError> = std::result::Result<T, E>;

/// What the build reports as it runs (`run --json` prints each as `{"corpus": …}`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CorpusEvent {
    /// The build is planned (or resumed).
    Planned {
        /// The build's id in `corpus_builds`.
        build: u64,
        /// Chunks in the plan.
        chunks: usize,
        /// Chunks already agreed (a resumed build).
        done: usize,
        /// Documents in the chunks.
        documents: usize,
    },
    /// A result was judged.
    Result {
        /// The sender.
        peer: String,
        /// The task.
        task: u64,
        /// Whether it was accepted (for now: a first run is accepted pending its pair).
        accepted: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// A chunk's runs agreed.
    Agreed {
        /// The chunk's root.
        chunk: String,
        /// The agreed result's root.
        result: String,
        /// Chunks agreed so far.
        done: usize,
        /// Chunks in all.
        total: usize,
        /// Peers whose runs disagreed with it.
        failed: Vec<String>,
    },
    /// The outputs are written.
    Finished {
        /// The build's id.
        build: u64,
        /// Input records.
        input_documents: u64,
        /// Kept documents.
        kept_documents: u64,
        /// Dropped records.
        dropped_documents: u64,
        /// The output directory.
        out: PathBuf,
    },
}

/// A corpus build that the swarm computes.
pub struct SwarmBuild {
    config: Config,
    out: PathBuf,
    plan: Plan,
    keys: Keypair,
    store: Arc<ChunkStore>,
    state: Mutex<State>,
    build: u64,
    /// The plan's chunk indices by chunk root (identical chunks share one root and one
    /// result).
    chunks: HashMap<Digest, Vec<usize>>,
    /// The secret each volunteer's order of tasks, and the chunks the coordinator checks
    /// again, are drawn with (never sent).
    sampler: Sampler,
}

impl std::fmt::Debug for SwarmBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmBuild")
            .field("build", &self.build)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

/// A checked result, ready to commit.
struct Checked {
    lease: u64,
    task: u64,
    chunk: Digest,
    result: Digest,
    signed: SignedManifest,
    tokens: u64,
}

/// A refused result.
struct Refusal {
    reason: String,
    penalise: bool,
}

/// A chunk's agreement, as the transaction that made it recorded it.
struct Agreement {
    /// The agreed result's root.
    root: Digest,
    /// Chunks of the plan agreed, this one included.
    done: usize,
}

/// What committing one run decided for its chunk.
enum Decision {
    /// This run completed the chunk's agreement.
    Agreed(Agreement),
    /// The chunk is still open, or was agreed before this run (a late run).
    Open,
    /// The runs have no majority: the coordinator settles the chunk itself.
    Local,
}

fn refuse(reason: impl Into<String>, penalise: bool) -> Refusal {
    Refusal {
        reason: reason.into(),
        penalise,
    }
}

impl SwarmBuild {
    /// Plans the build of `config.corpus` for the project in `dir`, storing its chunks in
    /// `store` and its tasks in the state database, or resumes the build already there.
    pub fn open(dir: &Path, config: &Config, store: Arc<ChunkStore>) -> Result<Self> {
        let section: &CorpusSection = config
            .corpus
            .as_ref()
            .ok_or_else(|| CorpusSwarmError::Invalid("canopy.toml has no [corpus]".into()))?;
        let sources = CorpusSection::resolve(dir, &section.sources);
        let out = CorpusSection::resolve(dir, &section.out);
        let optout = section
            .optout
            .as_ref()
            .map(|p| CorpusSection::resolve(dir, p));
        let settings = section
            .config
            .as_ref()
            .map(|p| CorpusSection::resolve(dir, p));
        let corpus_config = load_config(&sources, settings.as_deref())?;
        let plan = plan::plan(&sources, optout.as_deref(), &corpus_config)?;
        let (keys, _) = canopy_node::identity::load_or_create(dir)?;
        let mut state = State::open(&dir.join(DB_FILE))?;

        let mut chunks: HashMap<Digest, Vec<usize>> = HashMap::new();
        let mut manifests = Vec::new();
        for (i, c) in plan.chunks.iter().enumerate() {
            let manifest = Manifest::build(
                ObjectKind::CorpusChunk,
                &c.frame,
                DEFAULT_CHUNK_SIZE,
                BTreeMap::new(),
            )
            .map_err(canopy_node::NodeError::from)?;
            if manifest.root != c.digest {
                return Err(CorpusSwarmError::Invalid(format!(
                    "chunk {i}: its object root differs from its digest"
                )));
            }
            store.put_object(&manifest, &c.frame)?;
            store.hold(&manifest);
            let entry = chunks.entry(c.digest).or_default();
            if entry.is_empty() {
                manifests.push((
                    manifest
                        .clone()
                        .sign(&keys)
                        .map_err(canopy_node::NodeError::from)?,
                    c.texts.iter().map(|t| t.len() as u64).sum::<u64>(),
                ));
            }
            entry.push(i);
        }
        let params = plan.params();
        let layout = Digest::of(
            format!(
                "{}/{}/{}/{}",
                params.num_perm,
                params.shingle_words,
                params.seed,
                plan.chunks
                    .iter()
                    .map(|c| c.digest.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .as_bytes(),
        )
        .to_string();
        let now = now_ms();
        let existing = state.read().meta(META_BUILD)?;
        let build = match existing {
            Some(id) => {
                if state.read().meta(META_LAYOUT)?.as_deref() != Some(layout.as_str()) {
                    return Err(CorpusSwarmError::Invalid(
                        "the corpus sources or settings differ from those this build started \
                         with; restore them or start a new project directory"
                            .into(),
                    ));
                }
                id.parse::<u64>().map_err(|e| StateError::Corrupt {
                    what: "corpus build id",
                    reason: e.to_string(),
                })?
            }
            None => state.transaction(|tx| {
                let build = tx.start_corpus_build(plan.chunks.len() as u64, now)?;
                tx.set_meta(META_BUILD, &build.to_string())?;
                tx.set_meta(META_LAYOUT, &layout)?;
                tx.set_meta("coordinator", &keys.peer_id().to_string())?;
                for (signed, tokens) in &manifests {
                    tx.put_manifest(signed, now)?;
                    let spec = encode_spec(&TaskSpec::Corpus(CorpusSpec {
                        chunk: signed.manifest().root,
                        minhash: params,
                    }))?;
                    for _ in 0..2 {
                        tx.insert_task(CORPUS_ROUND, CORPUS, &spec, None, *tokens)?;
                    }
                }
                Ok(build)
            })?,
        };
        // Agreed results stay in the store until the outputs are written.
        for root in state.read().corpus_agreed(build)?.values() {
            if let Some(m) = state.read().manifest(root)? {
                store.hold(m.manifest());
            }
        }
        let sampler = crate::sampling::load_or_create(&mut state)?;
        Ok(Self {
            config: config.clone(),
            out,
            plan,
            keys,
            store,
            state: Mutex::new(state),
            build,
            chunks,
            sampler,
        })
    }

    /// The state database, locked.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The build's id in `corpus_builds`.
    pub fn id(&self) -> u64 {
        self.build
    }

    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The kept documents, what training reads.
    pub fn kept(&self) -> PathBuf {
        self.out.join("kept.jsonl")
    }

    /// Whether the outputs of this build are written (a restarted coordinator goes straight
    /// to training).
    pub fn finished(&self) -> Result<bool> {
        Ok(self.state().read().meta(META_FINISHED)?.as_deref()
            == Some(self.build.to_string().as_str())
            && self.kept().is_file())
    }

    /// Chunks of the plan whose result is agreed, and the plan's chunk count.
    fn progress(&self) -> Result<(usize, usize)> {
        let agreed = self.state().read().corpus_agreed(self.build)?;
        Ok(plan_progress(&self.plan, &agreed))
    }

    fn documents_in(&self) -> u64 {
        self.plan.sources.iter().map(|s| s.input).sum()
    }

    /// Provides every chunk object on the swarm.
    pub async fn provide(&self, client: &Client) -> Result<()> {
        for (root, indices) in &self.chunks {
            let Some(&i) = indices.first() else { continue };
            let signed = self.state().read().manifest(root)?;
            let Some(signed) = signed else {
                return Err(CorpusSwarmError::Invalid(format!(
                    "the manifest of corpus chunk {root} is missing"
                )));
            };
            client
                .provide(signed, self.plan.chunks[i].frame.clone())
                .await?;
        }
        Ok(())
    }

    /// Runs the build on the swarm until every chunk is agreed (then writes the outputs and
    /// returns `true`) or `stop` resolves (`false`). Answers joins, lease requests (corpus
    /// tasks only), renewals, releases, manifest requests and results.
    pub async fn run(
        self: Arc<Self>,
        client: &Client,
        events: &mut mpsc::Receiver<NetworkEvent>,
        stop: impl std::future::Future<Output = ()>,
        report: mpsc::Sender<CorpusEvent>,
    ) -> Result<bool> {
        tokio::pin!(stop);
        let (done, total) = self.progress()?;
        let _ = report
            .send(CorpusEvent::Planned {
                build: self.build,
                chunks: total,
                done,
                documents: self.plan.documents.len(),
            })
            .await;
        self.provide(client).await?;
        for agreement in self.settle_orphans().await? {
            let _ = report.send(agreement).await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (done_tx, mut done_rx) = mpsc::channel::<()>(64);
        loop {
            let (done, total) = self.progress()?;
            if done == total {
                break;
            }
            tokio::select! {
                _ = &mut stop => return Ok(false),
                event = events.recv() => match event {
                    Some(NetworkEvent::Request { peer, id, round, message, from }) => {
                        let network = from.as_ref().and_then(crate::admission::network_of);
                        let inbound = Inbound { peer, id, round, message, network };
                        self.on_request(client, inbound, &done_tx, &report).await;
                    }
                    Some(_) => {}
                    None => return Err(CorpusSwarmError::Invalid("the swarm stopped".into())),
                },
                _ = done_rx.recv() => {}
                _ = tick.tick() => {
                    let now = now_ms();
                    let expired = self.state().transaction(|tx| scheduler::expire(tx, now))?;
                    for lease in expired {
                        tracing::info!(lease = lease.id, task = lease.task, peer = %lease.peer, "corpus lease expired; task reopened");
                    }
                }
            }
        }
        let me = self.clone();
        let event = tokio::task::spawn_blocking(move || me.finish())
            .await
            .map_err(|e| CorpusSwarmError::Invalid(format!("writing the outputs: {e}")))??;
        let _ = report.send(event).await;
        Ok(true)
    }

    async fn on_request(
        self: &Arc<Self>,
        client: &Client,
        inbound: Inbound,
        done: &mpsc::Sender<()>,
        report: &mpsc::Sender<CorpusEvent>,
    ) {
        let Inbound {
            peer,
            id,
            round,
            message,
            network,
        } = inbound;
        if let Message::TaskResult(result) = message {
            let me = self.clone();
            let client = client.clone();
            let done = done.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let (ack, agreed) = me.judge(&client, peer, result).await;
                if let Err(e) = client
                    .respond(id, round, Message::ResultAck(ack.clone()))
                    .await
                {
                    tracing::debug!("acknowledging a corpus result: {e}");
                }
                let _ = report
                    .send(CorpusEvent::Result {
                        peer: peer.to_string(),
                        task: ack.task.0,
                        accepted: ack.accepted,
                        reason: ack.reason,
                    })
                    .await;
                if let Some(event) = agreed {
                    let _ = report.send(event).await;
                }
                let _ = done.send(()).await;
            });
            return;
        }
        let answer = self.answer(peer, network.as_deref(), message);
        let answer = match answer {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, "handling a request during the corpus build: {e}");
                no_work(1000, "the coordinator hit an internal error")
            }
        };
        if let Err(e) = client.respond(id, round, answer).await {
            tracing::debug!("answering a request: {e}");
        }
    }

    fn answer(&self, peer: PeerId, network: Option<&str>, message: Message) -> Result<Message> {
        let now = now_ms();
        let key = peer.to_string();
        let mut state = self.state();
        let message = match answer_peer(
            &mut state,
            &self.config,
            &self.keys.public(),
            Caller { key: &key, network },
            0,
            now,
            message,
        )? {
            Answered::Reply(reply, _) => return Ok(reply),
            Answered::Other(message) => message,
        };
        Ok(match message {
            Message::LeaseRequest(_) => {
                let Some(p) = state.read().peer(&key)? else {
                    return Ok(crate::service::no_work(0, "join first", true));
                };
                if state.read().paused()? {
                    return Ok(no_work(5_000, "the project is paused by its coordinator"));
                }
                let active = datacenter_active(&state.read(), now)?;
                let build = self.build;
                let config = &self.config.scheduling;
                let order = &self.sampler;
                match state.transaction(|tx| grant(tx, config, order, build, &p, now, active))? {
                    Ok((task, lease, expires)) => Message::LeaseGrant(LeaseGrant {
                        lease: LeaseId(lease),
                        task: TaskId(task.id),
                        spec: decode_spec(&task.spec)?,
                        expires_at_ms: expires,
                    }),
                    // Back to join, where it hears why and stops (see the training service).
                    Err(NoTask::Banned) => {
                        crate::service::no_work(5_000, "this node is banned", true)
                    }
                    Err(NoTask::Busy) => {
                        no_work(2_000, "this node holds all the leases it has slots for")
                    }
                    Err(NoTask::Nothing) => no_work(
                        1_000,
                        "no corpus task open for this node now; the corpus build goes on",
                    ),
                }
            }
            other => no_work(5_000, &format!("unexpected {:?}", other.kind())),
        })
    }

    /// Judges a result and commits the verdict; returns the acknowledgement to send after
    /// that, and the agreement it completed, if any.
    async fn judge(
        &self,
        client: &Client,
        peer: PeerId,
        result: TaskResult,
    ) -> (ResultAck, Option<CorpusEvent>) {
        let task = result.task;
        let key = peer.to_string();
        let now = now_ms();
        let rep = &self.config.reputation;
        let ack = |accepted: bool, reason: Option<String>| ResultAck {
            task,
            accepted,
            reason,
        };
        let checked = self.check(client, peer, &result).await;
        let checked = match checked {
            Ok(c) => c,
            Err(refusal) => {
                tracing::info!(%peer, task = task.0, "corpus result refused: {}", refusal.reason);
                let lease = result.lease.0;
                let committed = self.state().transaction(|tx| {
                    let l = tx.lease(lease)?;
                    // No entry for a sender that never joined; no tokens or compute time for
                    // a refused result.
                    tx.ledger_entry(
                        &LedgerClaim {
                            peer: &key,
                            round: 0,
                            task: task.0,
                            lease,
                            kind: CORPUS,
                            compute_ms: result.compute_ms,
                            accepted: false,
                            verified: "unchecked",
                            result_hash: None,
                            reason: Some(&refusal.reason),
                            arrived_ms: now,
                        },
                        now,
                    )?;
                    if let Some(l) = l.filter(|l| l.peer == key && l.status == "active") {
                        tx.set_lease_status(l.id, "done")?;
                        scheduler::reopen(tx, l.task)?;
                    }
                    if refusal.penalise && tx.peer(&key)?.is_some() {
                        tx.adjust_reputation(&key, rep.rejected, rep.ban_below)?;
                    }
                    Ok(())
                });
                if let Err(e) = committed {
                    tracing::warn!("recording a refusal: {e}");
                }
                return (ack(false, Some(refusal.reason)), None);
            }
        };
        let decision = match self.commit(&checked, &key, result.compute_ms, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("committing a corpus result: {e}");
                return (
                    ack(
                        false,
                        Some("the coordinator could not record this result".into()),
                    ),
                    None,
                );
            }
        };
        // Only the run whose commit decided the chunk reports its agreement: a concurrent
        // run of the same chunk, or a late one, sees the agreement too but did not make it.
        let agreement = match decision {
            Decision::Agreed(a) => Some(a),
            Decision::Open => None,
            Decision::Local => match self.settle_locally(checked.chunk).await {
                Ok(settled) => settled,
                Err(e) => {
                    tracing::warn!(chunk = %checked.chunk, "settling a chunk locally: {e}");
                    None
                }
            },
        };
        self.store.hold(checked.signed.manifest());
        // This run's verdict, as committed.
        let runs = self
            .state()
            .read()
            .corpus_runs(self.build, &checked.chunk)
            .unwrap_or_default();
        let status = runs
            .iter()
            .find(|x| x.lease == checked.lease)
            .map_or("pending", |x| x.status.as_str());
        let event = agreement.and_then(|a| self.agreed_event(checked.chunk, &a).ok());
        if status == "failed" {
            (
                ack(
                    false,
                    Some(
                        "the result disagrees with the result the other runs of this chunk agree on"
                            .into(),
                    ),
                ),
                event,
            )
        } else {
            (ack(true, None), event)
        }
    }

    /// Records a checked result and what it decides, in one transaction.
    fn commit(&self, c: &Checked, key: &str, compute_ms: u64, now: u64) -> Result<Decision> {
        let build = self.build;
        let rep = &self.config.reputation;
        Ok(self.state().transaction(|tx| {
            tx.put_manifest(&c.signed, now)?;
            tx.insert_corpus_run(&CorpusRun {
                lease: c.lease,
                task: c.task,
                build,
                chunk: c.chunk,
                peer: key.to_string(),
                result: c.result,
                status: "pending".into(),
                received_ms: now,
            })?;
            tx.set_lease_status(c.lease, "done")?;
            tx.set_task_status(c.task, "done")?;
            // The ledger takes the task's tokens and bounds the compute time claimed by the
            // lease's wall time (`now` is when the result arrived).
            tx.ledger_entry(
                &LedgerClaim {
                    peer: key,
                    round: 0,
                    task: c.task,
                    lease: c.lease,
                    kind: CORPUS,
                    compute_ms,
                    accepted: true,
                    verified: "unchecked",
                    result_hash: Some(&c.result),
                    reason: None,
                    arrived_ms: now,
                },
                now,
            )?;
            // A late run of a chunk already agreed is judged against the agreement.
            if let Some(root) = tx.corpus_agreed(build)?.get(&c.chunk).copied() {
                apply_agreement(tx, build, &c.chunk, &root, rep)?;
                return Ok(Decision::Open);
            }
            let runs = tx.corpus_runs(build, &c.chunk)?;
            let results: Vec<Digest> = runs.iter().map(|r| r.result).collect();
            match verdict::verdict(&results) {
                // A secret sample of the agreements volunteers reach alone is computed again
                // by the coordinator, which then judges every run against its own result.
                Verdict::Agreed(_)
                    if self.sampler.recheck(
                        c.chunk.as_bytes(),
                        self.config.verification.corpus_recheck_fraction,
                    ) && !any_datacenter_run(tx, &runs)? =>
                {
                    tracing::info!(chunk = %c.chunk.fmt_short(), "agreed corpus chunk drawn for a re-check");
                    Ok(Decision::Local)
                }
                Verdict::Agreed(root) => {
                    let done = self.record_agreement(tx, &c.chunk, &root)?;
                    Ok(Decision::Agreed(Agreement { root, done }))
                }
                Verdict::NeedRuns(n) => {
                    let pending = chunk_tasks(tx, &c.chunk)?;
                    if pending.len() < n {
                        let spec = encode_spec(&TaskSpec::Corpus(CorpusSpec {
                            chunk: c.chunk,
                            minhash: self.plan.params(),
                        }))?;
                        for _ in pending.len()..n {
                            tx.insert_task(CORPUS_ROUND, CORPUS_CHECK, &spec, None, c.tokens)?;
                        }
                        tracing::info!(chunk = %c.chunk.fmt_short(), "corpus runs disagree: a further run is open");
                    }
                    Ok(Decision::Open)
                }
                Verdict::Local => Ok(Decision::Local),
            }
        })?)
    }

    /// Makes `root` the agreed result of `chunk` and records the build's progress; returns
    /// the chunks agreed.
    fn record_agreement(
        &self,
        tx: &Tx<'_>,
        chunk: &Digest,
        root: &Digest,
    ) -> Result<usize, StateError> {
        apply_agreement(tx, self.build, chunk, root, &self.config.reputation)?;
        let (done, _) = plan_progress(&self.plan, &tx.corpus_agreed(self.build)?);
        tx.corpus_build_progress(self.build, done as u64, self.documents_in(), 0)?;
        Ok(done)
    }

    /// Settles on the coordinator every chunk that has no agreement and no task left to run:
    /// those a stopped coordinator was about to settle itself (a re-check, or runs with no
    /// majority). Returns the agreements made.
    async fn settle_orphans(&self) -> Result<Vec<CorpusEvent>> {
        let orphans: Vec<Digest> = {
            let state = self.state();
            let r = state.read();
            let agreed = r.corpus_agreed(self.build)?;
            let mut running = HashSet::new();
            for status in ["open", "leased"] {
                for t in r.tasks(Some(CORPUS_ROUND), status)? {
                    running.extend(task_chunk(&t));
                }
            }
            self.chunks
                .keys()
                .filter(|c| !agreed.contains_key(*c) && !running.contains(*c))
                .copied()
                .collect()
        };
        let mut out = Vec::new();
        for chunk in orphans {
            tracing::info!(chunk = %chunk.fmt_short(), "settling a chunk left without runs");
            if let Some(a) = self.settle_locally(chunk).await? {
                out.push(self.agreed_event(chunk, &a)?);
            }
        }
        Ok(out)
    }

    /// The report of `agreement` on `chunk`, naming the peers whose runs it failed.
    fn agreed_event(&self, chunk: Digest, agreement: &Agreement) -> Result<CorpusEvent> {
        let runs = self.state().read().corpus_runs(self.build, &chunk)?;
        Ok(CorpusEvent::Agreed {
            chunk: chunk.to_string(),
            result: agreement.root.to_string(),
            done: agreement.done,
            total: self.plan.chunks.len(),
            failed: runs
                .iter()
                .filter(|r| r.status == "failed")
                .map(|r| r.peer.clone())
                .collect(),
        })
    }

    /// Computes a chunk on the coordinator (CPU path) and makes its result the agreed one.
    /// Returns the agreement, or `None` where a concurrent settle made it first.
    async fn settle_locally(&self, chunk: Digest) -> Result<Option<Agreement>> {
        let Some(&index) = self.chunks.get(&chunk).and_then(|v| v.first()) else {
            return Err(CorpusSwarmError::Invalid(format!("no chunk {chunk}")));
        };
        let frame = self.plan.chunks[index].frame.clone();
        let params = self.plan.params();
        let (_, bytes) = tokio::task::spawn_blocking(move || {
            canopy_shaders::corpus::compute_chunk(&canopy_shaders::Cpu::new(), &frame, &params)
        })
        .await
        .map_err(|e| CorpusSwarmError::Invalid(format!("computing chunk {chunk}: {e}")))?
        .map_err(|source| CorpusBuildError::Compute { index, source })?;
        let manifest = Manifest::build(
            ObjectKind::CorpusResult,
            &bytes,
            DEFAULT_CHUNK_SIZE,
            BTreeMap::from([("chunk".to_string(), chunk.to_string())]),
        )
        .map_err(canopy_node::NodeError::from)?;
        self.store.put_object(&manifest, &bytes)?;
        self.store.hold(&manifest);
        let root = manifest.root;
        let signed = manifest
            .sign(&self.keys)
            .map_err(canopy_node::NodeError::from)?;
        let now = now_ms();
        let settled = self.state().transaction(|tx| {
            // A concurrent settle of the same chunk may have come first.
            if tx.corpus_agreed(self.build)?.contains_key(&chunk) {
                return Ok(None);
            }
            tx.put_manifest(&signed, now)?;
            let done = self.record_agreement(tx, &chunk, &root)?;
            Ok(Some(Agreement { root, done }))
        })?;
        if settled.is_some() {
            tracing::info!(chunk = %chunk.fmt_short(), "no majority among the runs: settled by the coordinator's own run");
        }
        Ok(settled)
    }

    /// Checks a result: the lease, the sender, the output, the sender-signed manifest of the
    /// root it names, and the fetched bytes against the chunk.
    async fn check(
        &self,
        client: &Client,
        peer: PeerId,
        result: &TaskResult,
    ) -> std::result::Result<Checked, Refusal> {
        let key = peer.to_string();
        let internal = |e: StateError| refuse(format!("the coordinator failed: {e}"), false);
        let (lease, task, sender) = {
            let state = self.state();
            let r = state.read();
            (
                r.lease(result.lease.0).map_err(internal)?,
                r.task(result.task.0).map_err(internal)?,
                r.peer(&key).map_err(internal)?,
            )
        };
        let Some(sender) = sender else {
            return Err(refuse("unknown node: join first", false));
        };
        if sender.banned {
            return Err(refuse("this node is banned", false));
        }
        let (Some(lease), Some(task)) = (lease, task) else {
            return Err(refuse("no such lease or task", true));
        };
        if lease.peer != key || lease.task != task.id {
            return Err(refuse("this lease belongs to another node or task", true));
        }
        if !matches!(task.kind.as_str(), CORPUS | CORPUS_CHECK) {
            return Err(refuse("this is not a corpus task", true));
        }
        if !matches!(lease.status.as_str(), "active" | "expired") {
            return Err(refuse("this lease's result is already in", true));
        }
        if task.status == "done" {
            // Late after an expired lease, not dishonest: no reputation cost.
            return Err(refuse(
                "another node finished this task after the lease expired",
                false,
            ));
        }
        let TaskOutput::Corpus(CorpusOutput {
            result: root,
            documents,
        }) = &result.output
        else {
            return Err(refuse("a training result for a corpus task", true));
        };
        let Ok(TaskSpec::Corpus(spec)) = decode_spec(&task.spec) else {
            return Err(refuse("a stored task spec does not decode", false));
        };
        let Some(&index) = self.chunks.get(&spec.chunk).and_then(|v| v.first()) else {
            return Err(refuse("the task names a chunk not in the plan", false));
        };
        let chunk = &self.plan.chunks[index];
        // The manifest of the root it named, from the sender, signed by the sender.
        let asked = tokio::time::timeout(
            MANIFEST_TIMEOUT,
            client.request(
                peer,
                0,
                Message::ManifestRequest(ManifestRequest { root: *root }),
            ),
        )
        .await;
        let signed = match asked {
            Ok(Ok(Message::ManifestResponse(resp))) => match resp.manifest {
                Some(m) => m,
                None => {
                    return Err(refuse(
                        "the sender has no manifest for the result it named",
                        true,
                    ));
                }
            },
            Ok(Ok(other)) => {
                return Err(refuse(
                    format!("answered a manifest request with {:?}", other.kind()),
                    true,
                ));
            }
            Ok(Err(e)) => {
                return Err(refuse(
                    format!("asking for the result's manifest: {e}"),
                    false,
                ));
            }
            Err(_) => return Err(refuse("asking for the result's manifest timed out", false)),
        };
        let manifest = match signed.verify() {
            Ok(m) => m.clone(),
            Err(e) => return Err(refuse(format!("result signature: {e}"), true)),
        };
        if signed.signer().peer_id() != peer {
            return Err(refuse("the result is signed by another key", true));
        }
        if manifest.kind != ObjectKind::CorpusResult || manifest.root != *root {
            return Err(refuse(
                "the manifest is not that of the corpus result named",
                true,
            ));
        }
        let hint = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
        let fetched = match tokio::time::timeout(
            FETCH_TIMEOUT,
            client.fetch_from(signed.clone(), vec![hint]),
        )
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(refuse(format!("fetching the result: {e}"), false)),
            Err(_) => return Err(refuse("fetching the result timed out", false)),
        };
        if Digest::of(&fetched.data) != *root {
            return Err(refuse("the fetched result does not hash to its root", true));
        }
        if let Err(e) = compute::accept_result(&self.plan, index, &fetched.data) {
            return Err(refuse(
                format!("the result does not answer its chunk: {}", error_chain(&e)),
                true,
            ));
        }
        if *documents != chunk.documents() as u64 {
            return Err(refuse(
                format!(
                    "{documents} documents reported for a chunk of {}",
                    chunk.documents()
                ),
                true,
            ));
        }
        let tokens = chunk.texts.iter().map(|t| t.len() as u64).sum();
        Ok(Checked {
            lease: lease.id,
            task: task.id,
            chunk: spec.chunk,
            result: *root,
            signed,
            tokens,
        })
    }

    /// Decides from the agreed results and writes the outputs; records the data card.
    pub fn finish(&self) -> Result<CorpusEvent> {
        let agreed = self.state().read().corpus_agreed(self.build)?;
        let mut results: Vec<CorpusResult> = Vec::with_capacity(self.plan.chunks.len());
        for (index, chunk) in self.plan.chunks.iter().enumerate() {
            let root = agreed.get(&chunk.digest).ok_or_else(|| {
                CorpusSwarmError::Invalid(format!("chunk {index} has no agreed result"))
            })?;
            let signed = self.state().read().manifest(root)?.ok_or_else(|| {
                CorpusSwarmError::Invalid(format!("the manifest of result {root} is missing"))
            })?;
            let bytes = self.store.get_object(signed.manifest())?.ok_or_else(|| {
                CorpusSwarmError::Invalid(format!("result {root} is missing from the store"))
            })?;
            results.push(compute::accept_result(&self.plan, index, &bytes)?);
        }
        let decisions = decide::decide(&self.plan, &results)?;
        let summary = output::write_outputs(&self.plan, &results, &decisions, &self.out)?;
        let card =
            serde_json::to_value(&summary.card).map_err(|source| CorpusBuildError::Json {
                what: "the data card",
                source,
            })?;
        let build = self.build;
        let now = now_ms();
        let total = self.plan.chunks.len() as u64;
        self.state().transaction(|tx| {
            tx.corpus_build_progress(
                build,
                total,
                summary.input_documents,
                summary.kept_documents,
            )?;
            tx.finish_corpus_build(build, &card, now)?;
            tx.cancel_round_tasks(CORPUS_ROUND)?;
            tx.set_meta(META_FINISHED, &build.to_string())
        })?;
        tracing::info!(
            kept = summary.kept_documents,
            input = summary.input_documents,
            out = %self.out.display(),
            "corpus build finished"
        );
        Ok(CorpusEvent::Finished {
            build,
            input_documents: summary.input_documents,
            kept_documents: summary.kept_documents,
            dropped_documents: summary.dropped_documents,
            out: self.out.clone(),
        })
    }
}

/// `e` with its sources, for a refusal reason.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn no_work(retry_after_ms: u32, reason: &str) -> Message {
    crate::service::no_work(retry_after_ms, reason, false)
}

/// Whether one of `runs` came from the datacenter tier (trusted: its agreement needs no
/// re-check).
fn any_datacenter_run(tx: &Tx<'_>, runs: &[CorpusRun]) -> Result<bool, StateError> {
    for run in runs {
        if tx.peer(&run.peer)?.is_some_and(|p| p.tier == DATACENTER) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Chunks of the plan with a result in `agreed`, and the plan's chunk count.
fn plan_progress(plan: &Plan, agreed: &HashMap<Digest, Digest>) -> (usize, usize) {
    let done = plan
        .chunks
        .iter()
        .filter(|c| agreed.contains_key(&c.digest))
        .count();
    (done, plan.chunks.len())
}

/// The corpus tasks of `chunk` that are open or leased.
fn chunk_tasks(tx: &Tx<'_>, chunk: &Digest) -> Result<Vec<TaskRecord>, StateError> {
    let mut out = Vec::new();
    for status in ["open", "leased"] {
        for t in tx.tasks(Some(CORPUS_ROUND), status)? {
            if task_chunk(&t).as_ref() == Some(chunk) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

fn task_chunk(task: &TaskRecord) -> Option<Digest> {
    match decode_spec(&task.spec) {
        Ok(TaskSpec::Corpus(spec)) => Some(spec.chunk),
        _ => None,
    }
}

/// Makes `root` the agreed result of `chunk`: every pending run naming it is accepted
/// (ledger `verified`, reputation `accepted`), every other pending run failed (ledger
/// `failed`, reputation `failed_verification`); open runs of the chunk are cancelled.
fn apply_agreement(
    tx: &Tx<'_>,
    build: u64,
    chunk: &Digest,
    root: &Digest,
    rep: &crate::config::ReputationConfig,
) -> Result<(), StateError> {
    tx.set_corpus_agreed(build, chunk, root)?;
    for run in tx.corpus_runs(build, chunk)? {
        if run.status != "pending" {
            continue;
        }
        if run.result == *root {
            tx.set_corpus_run_status(run.lease, "accepted")?;
            tx.set_ledger_verdict(run.task, &run.peer, "verified", true, None)?;
            tx.adjust_reputation(&run.peer, rep.accepted, rep.ban_below)?;
        } else {
            tx.set_corpus_run_status(run.lease, "failed")?;
            tx.set_ledger_verdict(
                run.task,
                &run.peer,
                "failed",
                false,
                Some("disagrees with the agreed result of its chunk"),
            )?;
            let (score, banned) =
                tx.adjust_reputation(&run.peer, rep.failed_verification, rep.ban_below)?;
            tracing::warn!(peer = %run.peer, score, banned, chunk = %chunk.fmt_short(), "a corpus result failed verification");
        }
    }
    for t in chunk_tasks(tx, chunk)? {
        tx.set_task_status(t.id, "cancelled")?;
    }
    Ok(())
}

/// Grants `peer` a lease on a corpus task of `build` it may run: never a chunk it already
/// ran or holds; further runs ([`CORPUS_CHECK`]) go to the datacenter tier while one is
/// active, and datacenter nodes take them first. Among the tasks a volunteer may run, it gets
/// the first in its own secret order ([`Sampler::order`]), not the first by id: a chunk's two
/// runs are side by side in id order, and two identities asking one after the other got both.
/// A volunteer never gets a chunk that a volunteer of its own network or invited organisation
/// ran or holds ([`Tx::corpus_nearby`]) while a volunteer of another network is active: many
/// identities on one machine or one home network count as one.
fn grant(
    tx: &Tx<'_>,
    config: &crate::config::SchedulingConfig,
    order: &Sampler,
    build: u64,
    peer: &PeerRecord,
    now: u64,
    datacenter_active: bool,
) -> Result<std::result::Result<(TaskRecord, u64, u64), NoTask>, StateError> {
    if peer.banned {
        return Ok(Err(NoTask::Banned));
    }
    let held = tx.active_leases(Some(&peer.peer))?;
    if held.len() >= crate::scheduler::usable_slots(tx, peer)? {
        return Ok(Err(NoTask::Busy));
    }
    let mut ran: HashSet<Digest> = tx
        .corpus_runs_of_peer(build, &peer.peer)?
        .into_iter()
        .map(|r| r.chunk)
        .collect();
    for l in &held {
        if let Some(t) = tx.task(l.task)?
            && let Some(c) = task_chunk(&t)
        {
            ran.insert(c);
        }
    }
    let datacenter = peer.tier == DATACENTER;
    let mut near: HashSet<Digest> = HashSet::new();
    if !datacenter {
        let since = (now + 1).saturating_sub(crate::scheduler::ACTIVE_MS);
        let nearby = tx.corpus_nearby(build, &peer.peer, since)?;
        if nearby.others_active {
            near.extend(nearby.ran.iter().filter_map(|c| c.parse::<Digest>().ok()));
            for id in nearby.holding {
                if let Some(c) = tx.task(id)?.as_ref().and_then(task_chunk) {
                    near.insert(c);
                }
            }
        }
    }
    let mut best: Option<TaskRecord> = None;
    for task in tx.tasks(Some(CORPUS_ROUND), "open")? {
        let check = task.kind == CORPUS_CHECK;
        if !datacenter && datacenter_active && (check || task.reopened) {
            continue;
        }
        if task_chunk(&task).is_none_or(|c| ran.contains(&c) || near.contains(&c)) {
            continue;
        }
        // Datacenter nodes take further runs and reopened tasks first; among equals, and
        // for volunteers, the peer's own secret order decides.
        let rank = |t: &TaskRecord| {
            (
                std::cmp::Reverse(datacenter && t.kind == CORPUS_CHECK),
                std::cmp::Reverse(datacenter && t.reopened),
                order.order(&peer.peer, t.id),
            )
        };
        best = match best {
            Some(b) if rank(&task) < rank(&b) => Some(task),
            Some(b) => Some(b),
            None => Some(task),
        };
    }
    let Some(task) = best else {
        return Ok(Err(NoTask::Nothing));
    };
    let expires = now + scheduler::lease_ms(config, peer, task.tokens);
    let lease = tx.insert_lease(task.id, &peer.peer, now, expires)?;
    Ok(Ok((task, lease, expires)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::sample::{SampleOptions, write_sample};

    /// A build of a small sample in `dir`, with `peers` joined as volunteers.
    fn small_build(dir: &Path, peers: &[&str]) -> SwarmBuild {
        sample_build(dir, peers, None)
    }

    /// [`small_build`], with the sources' `corpus.toml` set to `corpus_toml`.
    fn sample_build(dir: &Path, peers: &[&str], corpus_toml: Option<&str>) -> SwarmBuild {
        let sources = dir.join("sources");
        write_sample(&sources, &SampleOptions::small(7)).expect("sample");
        if let Some(text) = corpus_toml {
            std::fs::write(sources.join(crate::corpus::CorpusConfig::FILE_NAME), text)
                .expect("corpus.toml");
        }
        let mut config = Config::from_toml(&Config::template(), "template").expect("config");
        // Re-checks are drawn with each build's fresh secret; tests that want them ask.
        config.verification.corpus_recheck_fraction = 0.0;
        config.corpus = Some(CorpusSection {
            sources,
            out: "corpus-out".into(),
            optout: None,
            config: None,
        });
        let store = Arc::new(ChunkStore::open(&dir.join("store"), 1 << 30).expect("store"));
        let build = SwarmBuild::open(dir, &config, store).expect("open");
        build
            .state()
            .transaction(|tx| {
                for peer in peers {
                    tx.upsert_peer(&crate::service::unknown_peer(peer))?;
                }
                Ok(())
            })
            .expect("peers");
        build
    }

    /// A run of `task` by `peer` (on a fresh lease) that names `bytes` as its result.
    fn run(build: &SwarmBuild, task: &TaskRecord, peer: &str, bytes: &[u8]) -> Checked {
        let keys = Keypair::generate().expect("keys");
        let manifest = Manifest::build(
            ObjectKind::CorpusResult,
            bytes,
            DEFAULT_CHUNK_SIZE,
            BTreeMap::new(),
        )
        .expect("manifest");
        let lease = build
            .state()
            .transaction(|tx| tx.insert_lease(task.id, peer, 0, u64::MAX))
            .expect("lease");
        Checked {
            lease,
            task: task.id,
            chunk: task_chunk(task).expect("a corpus task"),
            result: manifest.root,
            signed: manifest.sign(&keys).expect("sign"),
            tokens: 1,
        }
    }

    /// What volunteer `name` is granted at `at` (no datacenter node active).
    fn ask(
        build: &SwarmBuild,
        name: &str,
        at: u64,
    ) -> std::result::Result<(TaskRecord, u64, u64), NoTask> {
        build
            .state()
            .transaction(|tx| {
                let peer = tx.peer(name)?.expect("joined");
                grant(
                    tx,
                    &build.config.scheduling,
                    &build.sampler,
                    build.build,
                    &peer,
                    at,
                    false,
                )
            })
            .expect("grant")
    }

    /// Every run of `chunk` in `build`.
    fn runs_of(build: &SwarmBuild, chunk: &Digest) -> Vec<CorpusRun> {
        build
            .state()
            .read()
            .corpus_runs(build.build, chunk)
            .expect("runs")
    }

    /// Two identities run the first chunk of `build` and return the same tampered result;
    /// what the second run's commit decides.
    fn collude(build: &SwarmBuild) -> Decision {
        let (_, tasks) = first_chunk(build);
        let first = run(build, &tasks[0], "sybil-a", b"tampered");
        let second = run(build, &tasks[1], "sybil-b", b"tampered");
        build.commit(&first, "sybil-a", 1, 1).expect("commit");
        build.commit(&second, "sybil-b", 1, 2).expect("commit")
    }

    /// The first chunk of `build` and its two planned tasks.
    fn first_chunk(build: &SwarmBuild) -> (Digest, Vec<TaskRecord>) {
        let open = build
            .state()
            .read()
            .tasks(Some(CORPUS_ROUND), "open")
            .expect("tasks");
        let chunk = task_chunk(&open[0]).expect("a corpus task");
        let tasks: Vec<TaskRecord> = open
            .into_iter()
            .filter(|t| task_chunk(t) == Some(chunk))
            .collect();
        assert_eq!(tasks.len(), 2, "each chunk is planned with two runs");
        (chunk, tasks)
    }

    #[test]
    fn only_the_run_that_completes_an_agreement_decides_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let build = small_build(tmp.path(), &["a", "b", "c"]);
        let (chunk, tasks) = first_chunk(&build);

        let first = run(&build, &tasks[0], "a", b"result");
        let second = run(&build, &tasks[1], "b", b"result");
        // A run of the same chunk whose result is judged after the agreement (a lease that
        // expired and was run again, or a result resent after a restart).
        let late = run(&build, &tasks[1], "c", b"result");
        assert!(matches!(
            build.commit(&first, "a", 1, 1).expect("first"),
            Decision::Open
        ));
        assert!(matches!(
            build.commit(&second, "b", 1, 2).expect("second"),
            Decision::Agreed(_)
        ));
        assert!(matches!(
            build.commit(&late, "c", 1, 3).expect("late"),
            Decision::Open
        ));
        let (done, _) = build.progress().expect("progress");
        assert_eq!(done, 1);
        let runs = runs_of(&build, &chunk);
        assert!(runs.iter().all(|r| r.status == "accepted"), "{runs:?}");
    }

    #[tokio::test]
    async fn a_chunk_without_a_majority_is_settled_once_by_the_coordinator() {
        let tmp = tempfile::tempdir().expect("tmp");
        let peers = ["a", "b", "c", "d"];
        let build = small_build(tmp.path(), &peers);
        let (chunk, tasks) = first_chunk(&build);
        let mut decisions = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let run = run(&build, &tasks[i % 2], peer, peer.as_bytes());
            decisions.push(build.commit(&run, peer, 1, i as u64).expect("commit"));
        }
        assert!(
            matches!(
                decisions.as_slice(),
                [
                    Decision::Open,
                    Decision::Open,
                    Decision::Open,
                    Decision::Local
                ]
            ),
            "four different results leave no majority"
        );
        assert!(build.settle_locally(chunk).await.expect("settle").is_some());
        assert!(
            build
                .settle_locally(chunk)
                .await
                .expect("settle again")
                .is_none(),
            "a second settle of the same chunk decides nothing"
        );
        let agreed = build
            .state()
            .read()
            .corpus_agreed(build.build)
            .expect("agreed");
        let runs = runs_of(&build, &chunk);
        assert!(runs.iter().all(|r| r.status == "failed"), "{runs:?}");
        assert!(runs.iter().all(|r| Some(&r.result) != agreed.get(&chunk)));
    }

    /// Issue 19, "two identities decide a corpus chunk": tasks went out in id order, a chunk's
    /// two runs side by side, so two identities asking one after the other got both runs of
    /// one chunk, every time. Each volunteer's order is now its own secret draw.
    #[test]
    fn two_identities_asking_one_after_the_other_seldom_share_a_chunk() {
        const PAIRS: usize = 8;
        let tmp = tempfile::tempdir().expect("tmp");
        let names: Vec<String> = (0..2 * PAIRS).map(|i| format!("sybil-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Small chunks: many of them.
        let build = sample_build(tmp.path(), &refs, Some("chunk_bytes = 2048\n"));
        let chunks = build.chunks.len();
        assert!(chunks >= 4 * PAIRS, "{chunks} chunks are too few to tell");
        let mut shared = 0;
        for pair in names.chunks(2) {
            let got: Vec<Option<Digest>> = pair
                .iter()
                .map(|name| {
                    let (task, _, _) = ask(&build, name, now_ms()).expect("a task");
                    task_chunk(&task)
                })
                .collect();
            if got[0] == got[1] {
                shared += 1;
            }
        }
        // By chance, a pair shares a chunk about once in `chunks` (at least 32): four pairs
        // or more out of eight would come once in tens of thousands of runs.
        assert!(
            shared <= PAIRS / 2,
            "{shared} of {PAIRS} pairs got both runs of a chunk"
        );
    }

    /// Issue 19: many identities on one home network ran both runs of a chunk whenever their
    /// secret orders met. Now a volunteer never gets a chunk its own network ran or holds
    /// while a volunteer of another network is about to run it instead.
    #[test]
    fn identities_of_one_network_never_run_both_runs_of_a_chunk_while_others_are_active() {
        let tmp = tempfile::tempdir().expect("tmp");
        let build = small_build(tmp.path(), &["sybil-a", "sybil-b", "honest", "roaming"]);
        let (chunk, tasks) = first_chunk(&build);
        let now = now_ms();
        build
            .state()
            .transaction(|tx| {
                for (peer, net) in [
                    ("sybil-a", "203.0.113.0/24"),
                    ("sybil-b", "203.0.113.0/24"),
                    ("honest", "198.51.100.0/24"),
                ] {
                    tx.set_peer_network(peer, net)?;
                }
                for peer in ["sybil-a", "sybil-b", "honest", "roaming"] {
                    tx.touch_peer(peer, now)?;
                }
                // Only the first chunk's two runs are left open; sybil-a holds the first.
                for t in tx.tasks(Some(CORPUS_ROUND), "open")? {
                    if task_chunk(&t) != Some(chunk) {
                        tx.set_task_status(t.id, "done")?;
                    }
                }
                tx.insert_lease(tasks[0].id, "sybil-a", now, u64::MAX)?;
                Ok(())
            })
            .expect("setup");
        let ask = |name: &str, at: u64| ask(&build, name, at);
        assert!(
            matches!(ask("sybil-b", now), Err(NoTask::Nothing)),
            "the second run waits for another network"
        );
        // Once sybil-a's run is in, the same holds.
        let done = run(&build, &tasks[0], "sybil-a", b"tampered");
        build.commit(&done, "sybil-a", 1, now).expect("commit");
        assert!(matches!(ask("sybil-b", now), Err(NoTask::Nothing)));
        // A node whose network is not known (behind a relay) is no neighbour of anyone.
        let (task, lease, _) = ask("roaming", now).expect("the roaming node gets the run");
        assert_eq!(task_chunk(&task), Some(chunk));
        build
            .state()
            .transaction(|tx| tx.set_lease_status(lease, "released"))
            .expect("release");
        build
            .state()
            .transaction(|tx| tx.set_task_status(tasks[1].id, "open"))
            .expect("reopen");
        let (task, _, _) = ask("honest", now).expect("another network gets the run");
        assert_eq!(task_chunk(&task), Some(chunk));
        // A project whose only active volunteers share one network still builds its corpus.
        build
            .state()
            .transaction(|tx| {
                tx.set_task_status(tasks[1].id, "open")?;
                tx.execute(
                    "UPDATE leases SET status = 'released' WHERE peer = 'honest'",
                    [],
                )?;
                Ok(())
            })
            .expect("reopen");
        let later = now + crate::scheduler::ACTIVE_MS + 1;
        build
            .state()
            .transaction(|tx| tx.touch_peer("sybil-b", later))
            .expect("touch");
        let (task, _, _) = ask("sybil-b", later).expect("alone, the network runs it");
        assert_eq!(task_chunk(&task), Some(chunk));
    }

    /// Issue 19: two colluding identities that agree on a tampered result decided its chunk,
    /// and agreed chunks were never checked. Now a secret sample is computed again by the
    /// coordinator, which judges both runs against its own result.
    #[tokio::test]
    async fn a_tampered_agreement_drawn_for_a_re_check_fails_both_runs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut build = small_build(tmp.path(), &["sybil-a", "sybil-b"]);
        let (chunk, _) = first_chunk(&build);
        build.config.verification.corpus_recheck_fraction = 1.0;
        assert!(
            matches!(collude(&build), Decision::Local),
            "a drawn agreement waits for the coordinator's own result"
        );
        let agreement = build
            .settle_locally(chunk)
            .await
            .expect("settle")
            .expect("agreed");
        let event = build.agreed_event(chunk, &agreement).expect("event");
        let CorpusEvent::Agreed { failed, .. } = event else {
            panic!("{event:?}");
        };
        assert_eq!(failed.len(), 2, "both colluding runs failed: {failed:?}");
        let runs = runs_of(&build, &chunk);
        assert!(runs.iter().all(|r| r.status == "failed"), "{runs:?}");
        for peer in ["sybil-a", "sybil-b"] {
            let rep = build
                .state()
                .read()
                .peer(peer)
                .expect("peer")
                .expect("known")
                .reputation;
            assert!(rep < 0, "{peer} paid for it: {rep}");
        }

        // Undrawn (fraction 0), the same collusion decides the chunk: what the draw is for.
        let tmp = tempfile::tempdir().expect("tmp");
        let build = small_build(tmp.path(), &["sybil-a", "sybil-b"]);
        assert!(matches!(collude(&build), Decision::Agreed(_)));
    }

    #[test]
    fn the_re_check_draw_takes_about_its_fraction_and_differs_per_secret() {
        let a = Sampler::generate().expect("secret");
        let b = Sampler::generate().expect("secret");
        let chunks: Vec<[u8; 32]> = (0..4000u32)
            .map(|i| *Digest::of(&i.to_le_bytes()).as_bytes())
            .collect();
        let drawn = chunks.iter().filter(|c| a.recheck(c, 0.05)).count();
        assert!((120..=280).contains(&drawn), "{drawn} of 4000 at 5%");
        let both = chunks
            .iter()
            .filter(|c| a.recheck(c, 0.05) && b.recheck(c, 0.05))
            .count();
        assert!(
            both < 40,
            "two secrets draw nearly independent samples: {both}"
        );
    }
}
