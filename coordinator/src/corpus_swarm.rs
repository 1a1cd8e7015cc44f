//! The corpus build on the swarm: what `canopy-coordinator run` does first when `canopy.toml`
//! has a `[corpus]` section.
//!
//! 1. **Plan** ([`SwarmBuild::open`]): the same plan as `canopy-coordinator corpus build`. Each
//!    chunk becomes an [`ObjectKind::CorpusChunk`] object signed by the coordinator, and each
//!    distinct chunk two corpus tasks ([`TaskKind::Corpus`]) in the state database, all in one
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
//!    run ([`TaskKind::CorpusCheck`], the datacenter tier first while one is active, any other peer
//!    otherwise), and the runs that disagree with the majority get `failed_verification`
//!    reputation and ledger `failed`. `corpus_builds.chunks_done` follows the agreements (what
//!    `/api/corpus` shows).
//! 3. **Decide and write** ([`SwarmBuild::finish`]): with every chunk agreed, the agreed
//!    results go through [`decide::decide`] and [`output::write_outputs`]: the outputs are
//!    byte-identical to a local build of the same sources. The data card goes into
//!    `corpus_builds`, and training then runs on `out/kept.jsonl`.

mod judging;
mod serve;
mod tasks;
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
    CorpusOutput, CorpusSpec, ManifestRequest, ResultAck, TaskOutput, TaskResult, TaskSpec,
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
use crate::refusal::{Leased, NoWorkReason, Refusal, Work, check_lease, check_signer};
use crate::sampling::Sampler;
use crate::scheduler::{self, NoTask};
use crate::service::{Answered, Caller, answer_peer, no_work};
use crate::state::{
    CORPUS_ROUND, CorpusRun, LedgerClaim, PeerRecord, State, StateError, TaskKind, TaskRecord, Tx,
};
use tasks::*;
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
                        tx.insert_task(CORPUS_ROUND, TaskKind::Corpus, &spec, None, *tokens)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::sample::{SampleOptions, write_sample};
    use crate::state::{CorpusRunStatus, LeaseStatus, TaskStatus};

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
        let granted = build
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
            .expect("grant");
        granted.map(|g| (g.task, g.lease, g.expires_ms))
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
            .tasks(Some(CORPUS_ROUND), TaskStatus::Open)
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
        assert!(
            runs.iter().all(|r| r.status == CorpusRunStatus::Accepted),
            "{runs:?}"
        );
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
        assert!(
            runs.iter().all(|r| r.status == CorpusRunStatus::Failed),
            "{runs:?}"
        );
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
                for t in tx.tasks(Some(CORPUS_ROUND), TaskStatus::Open)? {
                    if task_chunk(&t) != Some(chunk) {
                        tx.set_task_status(t.id, TaskStatus::Done)?;
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
            .transaction(|tx| tx.set_lease_status(lease, LeaseStatus::Released))
            .expect("release");
        build
            .state()
            .transaction(|tx| tx.set_task_status(tasks[1].id, TaskStatus::Open))
            .expect("reopen");
        let (task, _, _) = ask("honest", now).expect("another network gets the run");
        assert_eq!(task_chunk(&task), Some(chunk));
        // A project whose only active volunteers share one network still builds its corpus.
        build
            .state()
            .transaction(|tx| {
                tx.set_task_status(tasks[1].id, TaskStatus::Open)?;
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
        assert!(
            runs.iter().all(|r| r.status == CorpusRunStatus::Failed),
            "{runs:?}"
        );
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
