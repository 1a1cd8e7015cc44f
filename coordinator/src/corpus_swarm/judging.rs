//! Judging the corpus results volunteers return: checks, agreement between runs, re-checks,
//! and the chunks the coordinator settles itself.

use super::*;
use crate::state::{CorpusRunStatus, LeaseStatus, LedgerVerdict, TaskStatus};

impl SwarmBuild {
    /// Judges a result and commits the verdict; returns the acknowledgement to send after
    /// that, and the agreement it completed, if any.
    pub(super) async fn judge(
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
                tracing::info!(%peer, task = task.0, "corpus result refused: {refusal}");
                let lease = result.lease.0;
                let refused = crate::refusal::Refused {
                    peer: &key,
                    task: task.0,
                    lease,
                    kind: TaskKind::Corpus,
                    round: 0,
                    compute_ms: result.compute_ms,
                    arrived_ms: now,
                    reason: &refusal,
                    penalty: if refusal.penalised() { rep.rejected } else { 0 },
                };
                let committed = self
                    .state()
                    .transaction(|tx| crate::refusal::record(tx, &refused, now, rep.ban_below));
                if let Err(e) = committed {
                    tracing::warn!("recording a refusal: {e}");
                }
                return (ack(false, Some(refusal.to_string())), None);
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
            .map_or(CorpusRunStatus::Pending, |x| x.status);
        let event = agreement.and_then(|a| self.agreed_event(checked.chunk, &a).ok());
        if status == CorpusRunStatus::Failed {
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
    pub(super) fn commit(
        &self,
        c: &Checked,
        key: &str,
        compute_ms: u64,
        now: u64,
    ) -> Result<Decision> {
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
                status: CorpusRunStatus::Pending,
                received_ms: now,
            })?;
            tx.set_lease_status(c.lease, LeaseStatus::Done)?;
            tx.set_task_status(c.task, TaskStatus::Done)?;
            // The ledger takes the task's tokens and bounds the compute time claimed by the
            // lease's wall time (`now` is when the result arrived).
            tx.ledger_entry(
                &LedgerClaim {
                    peer: key,
                    round: 0,
                    task: c.task,
                    lease: c.lease,
                    kind: TaskKind::Corpus,
                    compute_ms,
                    accepted: true,
                    verified: LedgerVerdict::Unchecked,
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
                            tx.insert_task(CORPUS_ROUND, TaskKind::CorpusCheck, &spec, None, c.tokens)?;
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
    pub(super) fn record_agreement(
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
    pub(super) async fn settle_orphans(&self) -> Result<Vec<CorpusEvent>> {
        let orphans: Vec<Digest> = {
            let state = self.state();
            let r = state.read();
            let agreed = r.corpus_agreed(self.build)?;
            let mut running = HashSet::new();
            for status in [TaskStatus::Open, TaskStatus::Leased] {
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
    pub(super) fn agreed_event(&self, chunk: Digest, agreement: &Agreement) -> Result<CorpusEvent> {
        let runs = self.state().read().corpus_runs(self.build, &chunk)?;
        Ok(CorpusEvent::Agreed {
            chunk: chunk.to_string(),
            result: agreement.root.to_string(),
            done: agreement.done,
            total: self.plan.chunks.len(),
            failed: runs
                .iter()
                .filter(|r| r.status == CorpusRunStatus::Failed)
                .map(|r| r.peer.clone())
                .collect(),
        })
    }

    /// Computes a chunk on the coordinator (CPU path) and makes its result the agreed one.
    /// Returns the agreement, or `None` where a concurrent settle made it first.
    pub(super) async fn settle_locally(&self, chunk: Digest) -> Result<Option<Agreement>> {
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
    pub(super) async fn check(
        &self,
        client: &Client,
        peer: PeerId,
        result: &TaskResult,
    ) -> std::result::Result<Checked, Refusal> {
        let key = peer.to_string();
        let internal = |e: StateError| Refusal::Internal(e.to_string());
        let (lease, task, sender) = {
            let state = self.state();
            let r = state.read();
            (
                r.lease(result.lease.0).map_err(internal)?,
                r.task(result.task.0).map_err(internal)?,
                r.peer(&key).map_err(internal)?,
            )
        };
        let Leased { lease, task, .. } = check_lease(Work::Corpus, &key, lease, task, sender)?;
        let TaskOutput::Corpus(CorpusOutput {
            result: root,
            documents,
        }) = &result.output
        else {
            return Err(Refusal::WrongOutput(Work::Corpus));
        };
        let Ok(TaskSpec::Corpus(spec)) = decode_spec(&task.spec) else {
            return Err(Refusal::SpecUndecodable);
        };
        let Some(&index) = self.chunks.get(&spec.chunk).and_then(|v| v.first()) else {
            return Err(Refusal::ChunkNotInPlan);
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
                None => return Err(Refusal::NoManifest),
            },
            Ok(Ok(other)) => return Err(Refusal::ManifestAnswer(format!("{:?}", other.kind()))),
            Ok(Err(e)) => return Err(Refusal::ManifestAskFailed(e.to_string())),
            Err(_) => return Err(Refusal::ManifestTimedOut),
        };
        let manifest = check_signer(Work::Corpus, &signed, peer)?.clone();
        if manifest.kind != ObjectKind::CorpusResult || manifest.root != *root {
            return Err(Refusal::ManifestMismatch);
        }
        let hint = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
        let fetched = match tokio::time::timeout(
            FETCH_TIMEOUT,
            client.fetch_from(signed.clone(), vec![hint]),
        )
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(Refusal::FetchFailed(Work::Corpus, e.to_string())),
            Err(_) => return Err(Refusal::FetchTimedOut(Work::Corpus)),
        };
        if Digest::of(&fetched.data) != *root {
            return Err(Refusal::HashMismatch);
        }
        if let Err(e) = compute::accept_result(&self.plan, index, &fetched.data) {
            return Err(Refusal::WrongAnswer(error_chain(&e)));
        }
        if *documents != chunk.documents() as u64 {
            return Err(Refusal::DocumentCount {
                reported: *documents,
                expected: chunk.documents() as u64,
            });
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
}
